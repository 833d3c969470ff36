"""Runs every point of a config's `sweep()`, locally in parallel or as a SLURM job array.

    python -m experiments.sweep --config=configs/NAME.py[:ARG] --workdir=DIR
        [--parallel=N] [--slurm] [--dry_run] [--set=KEY=VALUE ...]

The config module's `sweep()` (or `sweep(arg)`, which gets ARG) yields dicts of dotted
overrides ({'model.variant': 'NFG', 'seed': 1}; the key 'config' replaces ARG). Each point
runs as

    python -m experiments.main --config=FILE:ARG --workdir=DIR/NAME --config.KEY=VALUE ...

with NAME = lstm_jax.sweeps.point_name(overrides) (sorted 'key=value' pairs, stable and
filesystem-safe), its stdout and stderr in DIR/NAME/log.txt. DIR/sweep.json lists the
points (experiments/report.py reads it).

  * Points whose DIR/NAME/report.json exists are finished and skipped: rerunning the same
    command resumes an interrupted sweep (a half-done point resumes from its checkpoint).
  * A failed point does not stop the others; failures are listed at the end with their
    logs, and the exit status is 1 if any point failed.
  * --slurm writes DIR/sweep.sbatch (one array task per unfinished point, --parallel caps
    how many run at once) following launch/slurm.sbatch's conventions, and submits it with
    sbatch; with --dry_run it only writes it. Locally, --dry_run prints the commands.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib.util
import inspect
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from absl import app, flags

from lstm_jax import sweeps

REPO = Path(__file__).resolve().parents[1]

_CONFIG = flags.DEFINE_string('config', None, 'Config file with a sweep(), FILE.py[:ARG].')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory: one sub-workdir per point.')
_PARALLEL = flags.DEFINE_integer('parallel', None, 'Points run at once: locally (default 1), '
                                 'or the array throttle %N with --slurm (default: none).')
_SLURM = flags.DEFINE_bool('slurm', False, 'Write DIR/sweep.sbatch (a job array, one task per '
                           'unfinished point) and submit it with sbatch.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands (with --slurm: write '
                             'the sbatch file) without running anything.')
_SET = flags.DEFINE_multi_string('set', [], 'KEY=VALUE override for every point (e.g. '
                                 '--set=total_steps=50), after the point\'s own; not part of the point names.')
_PYTHON = flags.DEFINE_string('python', None, 'Interpreter for the points (default: this one; '
                              'with --slurm: $PYTHON or .venv/bin/python on the node).')


@dataclasses.dataclass
class Point:
  """One run of the sweep: its overrides, directory and command line."""
  name: str
  overrides: dict[str, Any]
  workdir: Path
  args: list[str]  # experiments.main's arguments (no interpreter).

  @property
  def log(self) -> Path:
    return self.workdir / 'log.txt'

  def finished(self) -> bool:
    return (self.workdir / 'report.json').exists()


def load_sweep(spec: str) -> tuple[str, Optional[str], list[dict[str, Any]]]:
  """'FILE.py[:ARG]' -> (absolute file, ARG or None, the points of its sweep())."""
  path, _, arg = spec.partition(':')
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise ValueError(f'--config: no such file {path}')
  module_spec = importlib.util.spec_from_file_location('_sweep_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'sweep'):
    raise ValueError(f'{spec} defines no sweep(); add one yielding override dicts.')
  takes_arg = len(inspect.signature(module.sweep).parameters) > 0
  points = list(module.sweep(arg or None) if takes_arg else module.sweep())
  if not points:
    raise ValueError(f'{spec}: sweep() yielded no points.')
  sweeps.check_points(points)
  return path, (arg or None), points


def build_points(config_file: str, arg: Optional[str], overrides: Sequence[dict[str, Any]],
                 workdir: Path, extra: Sequence[str] = ()) -> list[Point]:
  """The Points of a sweep: names, workdirs and experiments.main arguments."""
  out = []
  for name, o in sweeps.iter_names(overrides):
    point_arg = o.get(sweeps.CONFIG_ARG, arg)
    config = config_file + (f':{point_arg}' if point_arg else '')
    wd = workdir / name
    args = ['-m', 'experiments.main', f'--config={config}', f'--workdir={wd}',
            *sweeps.overrides_to_flags(o), *(f'--config.{e}' for e in extra)]
    out.append(Point(name, o, wd, args))
  return out


def write_manifest(workdir: Path, spec: str, points: Sequence[Point]) -> None:
  """DIR/sweep.json: the config and every point's name and overrides, for the report."""
  workdir.mkdir(parents=True, exist_ok=True)
  manifest = {'config': spec, 'swept_keys': sweeps.swept_keys([p.overrides for p in points]),
              'points': [{'name': p.name, 'overrides': p.overrides} for p in points]}
  (workdir / 'sweep.json').write_text(json.dumps(manifest, indent=2, default=str) + '\n')


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def eta(durations: Sequence[float], running_for: Sequence[float], queued: int,
        parallel: int) -> Optional[float]:
  """Seconds until the sweep ends, if every point takes the mean of `durations`.

  Each running point needs the mean minus what it has run (`running_for`, at least 0);
  queued points take the first slot to come free, `parallel` slots in all. E.g. mean 60 s,
  2 slots, one point 50 s in and none queued: 10 s (not 60 * 1 / 2 = 30 s).
  """
  if not durations:
    return None
  mean = sum(durations) / len(durations)
  slots = [max(mean - t, 0.0) for t in running_for]
  slots += [0.0] * (max(parallel, 1) - len(slots))  # Free slots.
  heapq.heapify(slots)
  for _ in range(queued):
    heapq.heapreplace(slots, slots[0] + mean)
  return max(slots)


def run_local(points: Sequence[Point], parallel: int, python: str,
              log=print) -> list[Point]:
  """Runs the unfinished points, `parallel` at a time; returns the failed ones."""
  todo = [p for p in points if not p.finished()]
  skipped = len(points) - len(todo)
  log(f'sweep: {len(points)} points, {skipped} finished already, {len(todo)} to run, '
      f'{parallel} at a time')
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  running: dict[str, tuple[Point, subprocess.Popen, float, Any]] = {}
  failed: list[Point] = []
  durations: list[float] = []
  done = 0
  queue = list(todo)
  try:
    while queue or running:
      while queue and len(running) < parallel:
        p = queue.pop(0)
        p.workdir.mkdir(parents=True, exist_ok=True)
        f = open(p.log, 'a')
        f.write(f'$ {shlex.join([python, *p.args])}\n')
        f.flush()
        proc = subprocess.Popen([python, *p.args], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, env=env)
        running[p.name] = (p, proc, time.time(), f)
      time.sleep(0.2)
      for name in list(running):
        p, proc, start, f = running[name]
        rc = proc.poll()
        if rc is None:
          continue
        f.close()
        del running[name]
        done += 1
        elapsed = time.time() - start
        ok = rc == 0 and p.finished()
        if ok:
          durations.append(elapsed)
        else:
          failed.append(p)
        to_go = len(queue) + len(running)
        now = time.time()
        left = eta(durations, [now - r[2] for r in running.values()], len(queue), parallel)
        log(f'[{done}/{len(todo)}] {"ok    " if ok else "FAILED"} {name} '
            f'({_format_seconds(elapsed)}{"" if ok else f", exit {rc}"}); '
            f'{len(failed)} failed, {to_go} to go'
            + (f', ETA {_format_seconds(left)}' if left is not None and to_go else ''))
  except KeyboardInterrupt:
    for p, proc, _, f in running.values():
      proc.terminate()  # experiments.main checkpoints on SIGTERM: the rerun resumes.
      proc.wait()
      f.close()
    raise
  return failed


SBATCH_TEMPLATE = """#!/usr/bin/env bash
# Written by experiments/sweep.py: one array task per unfinished point of
#   {spec}
# Resubmit (or rerun experiments.sweep --slurm) to resume; finished points are skipped.
#SBATCH --job-name=lstm-jax-sweep
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --array={array}
#SBATCH --chdir={repo}
#SBATCH --output={workdir}/slurm-%A_%a.out
set -euo pipefail
python=${{PYTHON:-{python}}}
case "$SLURM_ARRAY_TASK_ID" in
{cases}
  *) echo "no sweep point for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
mkdir -p "$point"
if [ -f "$point/report.json" ]; then echo "finished already: $point"; exit 0; fi
echo "array task $SLURM_ARRAY_TASK_ID (job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}): $point" >> "$point/log.txt"
srun --kill-on-bad-exit=1 "$python" "${{args[@]}}" --config.parallelism.distributed=auto >> "$point/log.txt" 2>&1
"""


def sbatch_script(spec: str, points: Sequence[Point], workdir: Path, parallel: int,
                  python: str) -> str:
  """A SLURM array script running `points`, task i = points[i]."""
  cases = []
  for i, p in enumerate(points):
    cases.append(f'  {i}) point={shlex.quote(str(p.workdir))}; '
                 f'args=({shlex.join(p.args)}) ;;')
  array = f'0-{len(points) - 1}' + (f'%{parallel}' if parallel > 0 else '')
  return SBATCH_TEMPLATE.format(spec=spec, array=array, repo=REPO, workdir=workdir,
                                python=python, cases='\n'.join(cases))


def _raise_interrupt(signum, frame) -> None:
  raise KeyboardInterrupt


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}')
  if not _CONFIG.value or not _WORKDIR.value:
    sys.exit('error: --config=FILE.py[:ARG] and --workdir=DIR are required (see --help).')
  parallel = _PARALLEL.value if _PARALLEL.value is not None else (0 if _SLURM.value else 1)
  if parallel < 0 or (parallel == 0 and not _SLURM.value):
    sys.exit('error: --parallel must be >= 1.')
  for e in _SET.value:
    if '=' not in e:
      sys.exit(f'error: --set needs KEY=VALUE, got {e!r}')
  try:
    config_file, arg, overrides = load_sweep(_CONFIG.value)
  except ValueError as e:
    sys.exit(f'error: {e}')
  workdir = Path(_WORKDIR.value).resolve()
  points = build_points(config_file, arg, overrides, workdir, _SET.value)

  if _SLURM.value:
    todo = [p for p in points if not p.finished()]
    if not todo:
      print(f'sweep: all {len(points)} points finished already.')
      return
    workdir.mkdir(parents=True, exist_ok=True)
    write_manifest(workdir, _CONFIG.value, points)
    script = workdir / 'sweep.sbatch'
    script.write_text(sbatch_script(_CONFIG.value, todo, workdir, parallel,
                                    _PYTHON.value or '.venv/bin/python'))
    print(f'sweep: {len(points)} points, {len(points) - len(todo)} finished; wrote {script} '
          f'({len(todo)} array tasks)')
    if _DRY_RUN.value:
      return
    out = subprocess.run(['sbatch', str(script)], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
      sys.exit(f'error: sbatch failed ({out.returncode}): {out.stderr.strip()}')
    print(out.stdout.strip())
    return

  python = _PYTHON.value or sys.executable
  # SIGTERM (a scheduler, a `kill`) stops the points like Ctrl-C does: they checkpoint.
  signal.signal(signal.SIGTERM, _raise_interrupt)
  if _DRY_RUN.value:
    for p in points:
      state = 'finished' if p.finished() else 'todo'
      print(f'# {p.name} [{state}]\n{shlex.join([python, *p.args])}')
    return
  write_manifest(workdir, _CONFIG.value, points)
  start = time.time()
  failed = run_local(points, parallel, python)
  print(f'sweep: done in {_format_seconds(time.time() - start)}; '
        f'{len(points) - len(failed)}/{len(points)} points finished.')
  if failed:
    print(f'{len(failed)} point(s) FAILED:')
    for p in failed:
      print(f'  {p.name}: see {p.log}')
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
