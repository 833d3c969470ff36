"""What a run leaves in its workdir besides checkpoints: metrics, TensorBoard, plots.

metrics.jsonl has one JSON object per log event:
  {"step": 100, "split": "train", "metrics": {"loss": 0.41, ...}, "time": <unix seconds>,
   "elapsed": <seconds since this process started training>, "steps_per_sec": 12.5}
`step` counts finished updates. On resume from step s the file is rewritten first without
its lines of step > s (they belong to steps that will run again), so the file is always the
curve of one uninterrupted run; `read_metrics` also keeps only the last line per
(split, step) for files written some other way. TensorBoard gets `purge_step=s + 1`,
which makes it discard the stale events the same way. A train line averages the steps
since the previous one, so after a resume from a step that is not a multiple of
`log_every` (a SIGTERM save) the first line averages fewer steps than it would have.

Only process 0 writes (`jax.process_index() == 0`); on the others these are no-ops.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, Optional

import jax


def read_metrics(path: str) -> list[dict[str, Any]]:
  """The lines of a metrics.jsonl, deduplicated by (split, step) (the last one wins)."""
  by_key: dict[tuple[str, int], dict] = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut short by a kill.
      by_key[(record['split'], record['step'])] = record
  return sorted(by_key.values(), key=lambda r: (r['step'], r['split']))


def _truncate_jsonl(path: str, max_step: int) -> None:
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)['step'] <= max_step:
          kept.append(line if line.endswith('\n') else line + '\n')
      except (json.JSONDecodeError, KeyError, TypeError):
        pass  # A line cut short by a kill.
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.writelines(kept)
  os.replace(tmp, path)


def _import_summary_writer():
  """tensorboardX's SummaryWriter, imported without torch.

  tensorboardX imports torch when it is installed (only to accept torch tensors), which
  costs seconds at every start; we only log floats.
  """
  if 'torch' in sys.modules or 'tensorboardX.writer' in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules['torch'] = None  # Makes `import torch` raise ImportError, which it handles.
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules['torch']
  return SummaryWriter


def _json_number(x: float) -> Any:
  x = float(x)
  return x if math.isfinite(x) else str(x)  # JSON has no NaN; keep the file parseable.


class MetricWriter:
  """metrics.jsonl + TensorBoard (tensorboardX, no TensorFlow) for process 0."""

  def __init__(self, workdir: str, resume_step: int):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._start = time.time()
    self._tb = None
    if not self.active:
      return
    _truncate_jsonl(self.path, resume_step)
    SummaryWriter = _import_summary_writer()
    # Also from step 0: a run that died before its first checkpoint left events that the
    # restart rewrites.
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=resume_step + 1)

  def write(self, step: int, split: str, metrics: Mapping[str, float],
            steps_per_sec: Optional[float] = None) -> None:
    if not self.active:
      return
    record = {'step': int(step), 'split': split,
              'metrics': {k: _json_number(v) for k, v in sorted(metrics.items())},
              'time': round(time.time(), 3), 'elapsed': round(time.time() - self._start, 3),
              'steps_per_sec': None if steps_per_sec is None else round(steps_per_sec, 3)}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for k, v in metrics.items():
      self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
    if steps_per_sec is not None:
      self._tb.add_scalar(f'{split}/steps_per_sec', steps_per_sec, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def plot_curves(workdir: str) -> Optional[str]:
  """WORKDIR/learning_curves.png: one panel per metric, train and eval against step."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if jax.process_index() != 0 or not os.path.exists(path):
    return None
  # Figure without pyplot: no GUI backend, no global state, a second faster.
  from matplotlib.figure import Figure

  records = read_metrics(path)
  series: dict[str, dict[str, tuple[list, list]]] = {}
  for r in records:
    for k, v in r['metrics'].items():
      if isinstance(v, (int, float)):
        xs, ys = series.setdefault(k, {}).setdefault(r['split'], ([], []))
        xs.append(r['step'])
        ys.append(v)
  names = [k for k in sorted(series) if k not in ('learning_rate',)] or sorted(series)
  if not names:
    return None
  names.sort(key=lambda k: k != 'loss')  # Loss first.
  cols = min(3, len(names))
  rows = math.ceil(len(names) / cols)
  fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, name in zip(axes.flat, names):
    for split, (xs, ys) in sorted(series[name].items()):
      ax.plot(xs, ys, label=split, marker='o' if split != 'train' else None, markersize=3)
    if name == 'loss' and all(y > 0 for s in series[name].values() for y in s[1]):
      ax.set_yscale('log')
    ax.set_title(name)
    ax.set_xlabel('step')
    ax.legend()
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(names):]:
    ax.axis('off')
  out = os.path.join(workdir, 'learning_curves.png')
  fig.savefig(out, dpi=90)
  return out


class Progress:
  """A one-line progress bar on a TTY, else a log line per call (loss, steps/s, ETA)."""

  def __init__(self, total_steps: int, start_step: int):
    self.total = total_steps
    self.tty = sys.stderr.isatty() and jax.process_index() == 0
    self._t0, self._s0 = time.time(), start_step

  def start_clock(self, step: int) -> None:
    """Measures the pace from here (call it once the step has compiled)."""
    self._t0, self._s0 = time.time(), step

  def _eta(self, step: int) -> str:
    done = step - self._s0
    if done <= 0:
      return '?'
    hours, rest = divmod(int((time.time() - self._t0) / done * (self.total - step)), 3600)
    return f'{hours:02d}:{rest // 60:02d}:{rest % 60:02d}'

  def update(self, step: int, loss: float, steps_per_sec: float) -> None:
    if jax.process_index() != 0:
      return
    text = f'step {step}/{self.total} loss {loss:.4g} {steps_per_sec:.1f} steps/s ETA {self._eta(step)}'
    if self.tty:
      width = 30
      filled = int(width * step / max(self.total, 1))
      sys.stderr.write(f'\r[{"#" * filled}{"." * (width - filled)}] {text}\033[K')
      sys.stderr.flush()
    else:
      print(text, file=sys.stderr, flush=True)

  def message(self, text: str) -> None:
    if jax.process_index() != 0:
      return
    if self.tty:
      sys.stderr.write('\r\033[K')
    print(text, file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.tty:
      sys.stderr.write('\n')
