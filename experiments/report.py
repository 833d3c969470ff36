"""Aggregates a sweep directory into a table (markdown + CSV) and plots.

    python -m experiments.report DIR [--out=DIR] [--metrics=a,b] [--minimize=m] [--maximize=m]
        [--baseline=KEY=VALUE]

Reads DIR/sweep.json (written by experiments/sweep.py; without it, every DIR/*/config.json
and the config fields that differ between them), then each point's report.json (final
eval metrics) and metrics.jsonl (speed, curves). Writes to --out (default DIR):

  report.md, report.csv   one row per setting of the swept keys, seed folded away: each
                          final eval metric as mean ± std over seeds (sample std, ddof=1;
                          0 for one seed), n = finished seeds, the best mean of each metric
                          marked (**bold** ★ in markdown, a <metric>_best column in CSV).
  plots/curves_<metric>.png    learning curves of every point (eval metric vs step;
                               one colour per setting, one line per seed).
  plots/<metric>_vs_<key>.png  the final metric against each swept key's values (mean ±
                               std over seeds; one series per setting of the other keys).

The config's best_metric (e.g. eval/loss) also gets a column best_<metric>: its best value
over each run's eval curve (early stopping on the eval set), read from metrics.jsonl.
--baseline=KEY=VALUE adds columns: the change of best_metric and best_<metric> against that
setting (difference of means) and the two-sided p-value of Welch's t-test over seeds.

A metric's direction: --minimize/--maximize if named there, else the config's best_mode
for its best_metric, else 'max' for names containing 'accuracy' and 'min' otherwise.
Points without report.json (failed or unfinished) are listed under the table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from absl import app, flags

SEED = 'seed'
_OUT = flags.DEFINE_string('out', None, 'Output directory (default: the sweep directory).')
_METRICS = flags.DEFINE_list('metrics', None, 'Eval metrics to tabulate (default: all).')
_MINIMIZE = flags.DEFINE_list('minimize', [], 'Metrics where lower is better.')
_MAXIMIZE = flags.DEFINE_list('maximize', [], 'Metrics where higher is better.')
_PLOTS = flags.DEFINE_bool('plots', True, 'Write the PNG plots.')
_BASELINE = flags.DEFINE_string('baseline', None, 'KEY=VALUE of the reference setting (e.g. '
                                'model.variant=V): adds a column with each setting\'s change '
                                'of the config\'s best_metric against it and the p-value of '
                                'Welch\'s t-test over seeds.')


@dataclasses.dataclass
class Run:
  """One point of the sweep and what it left in its workdir."""
  name: str
  overrides: dict[str, Any]
  workdir: Path
  final: Optional[dict[str, float]]  # report.json's eval metrics; None if unfinished.
  config: dict[str, Any]
  curves: list[dict[str, Any]]  # metrics.jsonl records.


def _flatten(d: dict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _read_json(path: Path) -> Optional[dict]:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
  """metrics.jsonl records, deduplicated by (split, step), in step order ([] if absent)."""
  if not path.exists():
    return []
  try:
    from lstm_jax.train.writers import read_metrics as lib_read
    return lib_read(str(path))
  except ImportError:  # Only to read results without the library's dependencies.
    records = {}
    for line in path.read_text().splitlines():
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        continue
      records[(r['split'], r['step'])] = r
    return sorted(records.values(), key=lambda r: (r['step'], r['split']))


def discover(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
  """(name, overrides) of every point: from sweep.json, else from the config.json files."""
  manifest = _read_json(sweep_dir / 'sweep.json')
  if manifest:
    return [(p['name'], p['overrides']) for p in manifest['points']]
  configs = {p.parent.name: _flatten(_read_json(p) or {})
             for p in sorted(sweep_dir.glob('*/config.json'))}
  keys = sorted({k for c in configs.values() for k in c})
  varying = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
  return [(name, {k: c.get(k) for k in varying}) for name, c in configs.items()]


def add_best_of_curve(runs: Sequence[Run], metric: str, mode: str) -> bool:
  """Adds final['best_<metric>'] = the best eval value over each run's curve (early
  stopping on the eval set, as Greff et al. select by validation); True if any had one."""
  added = False
  for r in runs:
    vals = [float(c['metrics'][metric]) for c in r.curves if c.get('split') == 'eval'
            and c['metrics'].get(metric) is not None and math.isfinite(c['metrics'][metric])]
    if vals and r.final is not None:
      r.final[f'best_{metric}'] = min(vals) if mode == 'min' else max(vals)
      added = True
  return added


def load_runs(sweep_dir: Path) -> list[Run]:
  runs = []
  for name, overrides in discover(sweep_dir):
    wd = sweep_dir / name
    report = _read_json(wd / 'report.json')
    runs.append(Run(name, overrides, wd, report.get('eval') if report else None,
                    _flatten(_read_json(wd / 'config.json') or {}),
                    read_metrics(wd / 'metrics.jsonl')))
  return runs


def group_keys(runs: Sequence[Run]) -> list[str]:
  """The swept keys other than the seed, in first-seen order, that vary across points."""
  keys: list[str] = []
  for r in runs:
    keys.extend(k for k in r.overrides if k not in keys and k != SEED)
  return [k for k in keys if len({repr(r.overrides.get(k)) for r in runs}) > 1] or \
      [k for k in keys]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, 0.0
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def direction(metric: str, runs: Sequence[Run], minimize: Sequence[str] = (),
              maximize: Sequence[str] = ()) -> str:
  """'min' or 'max' for a metric (see the module docstring)."""
  if metric in minimize:
    return 'min'
  if metric in maximize:
    return 'max'
  for r in runs:
    if r.config.get('best_metric') == f'eval/{metric}' and r.config.get('best_mode'):
      return r.config['best_mode']
  return 'max' if 'accuracy' in metric else 'min'


@dataclasses.dataclass
class Row:
  setting: tuple  # Values of the group keys.
  runs: list[Run]
  stats: dict[str, tuple[float, float, int]]  # metric -> (mean, std, n)


def aggregate(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> list[Row]:
  """One Row per setting of `keys` in sweep order, metrics over its finished seeds."""
  rows: dict[tuple, Row] = {}
  for r in runs:
    setting = tuple(r.overrides.get(k) for k in keys)
    rows.setdefault(repr(setting), Row(setting, [], {})).runs.append(r)  # type: ignore
  for row in rows.values():
    for m in metrics:
      vals = [float(r.final[m]) for r in row.runs
              if r.final and m in r.final and r.final[m] is not None
              and math.isfinite(float(r.final[m]))]
      if vals:
        row.stats[m] = (*mean_std(vals), len(vals))
  return list(rows.values())


def best_rows(rows: Sequence[Row], metric: str, mode: str) -> set[int]:
  """Indices of the rows whose mean is best (ties all marked)."""
  means = [(i, r.stats[metric][0]) for i, r in enumerate(rows) if metric in r.stats]
  if not means:
    return set()
  target = (min if mode == 'min' else max)(v for _, v in means)
  return {i for i, v in means if v == target}


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
  """Two-sided p-value of Welch's t-test (None with < 2 values a side or no scipy)."""
  if len(a) < 2 or len(b) < 2:
    return None
  try:
    from scipy import stats
  except ImportError:
    return None
  p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
  return p if math.isfinite(p) else None


def _values(row: 'Row', metric: str) -> list[float]:
  return [float(r.final[metric]) for r in row.runs
          if r.final and r.final.get(metric) is not None and math.isfinite(float(r.final[metric]))]


def deltas(rows: Sequence['Row'], keys: Sequence[str], metric: str, baseline: str
           ) -> dict[int, str]:
  """Row index -> 'Δ (p=...)' of `metric` against the row where KEY=VALUE (`baseline`)."""
  key, _, value = baseline.partition('=')
  if key not in keys:
    raise ValueError(f'--baseline: {key!r} is not a swept key ({", ".join(keys)}).')
  base = [r for r in rows if str(r.setting[list(keys).index(key)]) == value]
  if not base:
    raise ValueError(f'--baseline: no setting has {key}={value}.')
  ref = _values(base[0], metric)
  out = {}
  for i, row in enumerate(rows):
    vals = _values(row, metric)
    if not vals or not ref or row is base[0]:
      out[i] = '—' if row is not base[0] else 'baseline'
      continue
    d = sum(vals) / len(vals) - sum(ref) / len(ref)
    p = welch_p(vals, ref)
    out[i] = f'{d:+.3g}' + (f' (p={p:.2g})' if p is not None else '')
  return out


def _fmt(x: float) -> str:
  return f'{x:.4g}' if abs(x) >= 1e-3 or x == 0 else f'{x:.2e}'


def _speed(run: Run) -> Optional[float]:
  s = [r['steps_per_sec'] for r in run.curves if r.get('split') == 'train'
       and r.get('steps_per_sec')]
  return sum(s) / len(s) if s else None


def tables(rows: Sequence[Row], keys: Sequence[str], metrics: Sequence[str],
           modes: dict[str, str], delta: Optional[list[tuple[str, dict[int, str]]]] = None
           ) -> tuple[str, str]:
  """(markdown, csv) of the rows; each (header, row -> text) of `delta` adds a column."""
  best = {m: best_rows(rows, m, modes[m]) for m in metrics}
  header = [*keys, 'n'] + [f'{m} ({"↓" if modes[m] == "min" else "↑"})' for m in metrics] + \
      [h for h, _ in delta or []] + ['steps/s']
  md = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow([*keys, 'n'] + [c for m in metrics for c in (f'{m}_mean', f'{m}_std',
                                                                f'{m}_best')] + ['steps_per_sec'])
  for i, row in enumerate(rows):
    n = max((s[2] for s in row.stats.values()), default=0)
    speeds = [s for s in map(_speed, row.runs) if s]
    speed = sum(speeds) / len(speeds) if speeds else None
    cells, csv_cells = [], []
    for m in metrics:
      if m not in row.stats:
        cells.append('—')
        csv_cells += ['', '', '']
        continue
      mean, std, _ = row.stats[m]
      text = f'{_fmt(mean)} ± {std:.2g}'
      cells.append(f'**{text}** ★' if i in best[m] else text)
      csv_cells += [repr(mean), repr(std), str(i in best[m])]
    values = [str(v) for v in row.setting]
    extra = [d.get(i, '—') for _, d in delta or []]
    md.append('| ' + ' | '.join([*values, f'{n}/{len(row.runs)}', *cells, *extra,
                                 f'{speed:.0f}' if speed else '—']) + ' |')
    writer.writerow([*values, n, *csv_cells, '' if speed is None else f'{speed:.1f}'])
  return '\n'.join(md) + '\n', buf.getvalue()


def _label(setting: tuple, keys: Sequence[str]) -> str:
  return ', '.join(f'{k.split(".")[-1]}={v}' for k, v in zip(keys, setting)) or 'all'


def plot(rows: Sequence[Row], keys: Sequence[str], metrics: Sequence[str], out: Path
         ) -> list[Path]:
  """The learning-curve and metric-vs-value PNGs; returns their paths."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  out.mkdir(parents=True, exist_ok=True)
  written = []
  cmap = plt.get_cmap('tab10' if len(rows) <= 10 else 'tab20')
  for m in metrics:
    has_curve = any(c.get('split') == 'eval' and m in c['metrics']
                    for row in rows for r in row.runs for c in r.curves)
    fig, ax = plt.subplots(figsize=(8, 5)) if has_curve else (None, None)
    for i, row in enumerate(rows if has_curve else ()):  # best_<metric>: no curve of its own.
      for j, run in enumerate(row.runs):
        pts = [(r['step'], r['metrics'][m]) for r in run.curves
               if r.get('split') == 'eval' and r['metrics'].get(m) is not None]
        if pts:
          ax.plot(*zip(*pts), color=cmap(i % cmap.N), alpha=0.8, lw=1,
                  label=_label(row.setting, keys) if j == 0 else None)
    if has_curve:
      ax.set_xlabel('step')
      ax.set_ylabel(f'eval/{m}')
      ax.set_title(f'Learning curves: eval/{m} (one line per seed)')
      ax.legend(fontsize=7, ncol=2)
      fig.tight_layout()
      path = out / f'curves_{m}.png'
      fig.savefig(path, dpi=110)
      plt.close(fig)
      written.append(path)
    for k_index, key in enumerate(keys):
      values = list(dict.fromkeys(repr(r.setting[k_index]) for r in rows))
      labels = {repr(r.setting[k_index]): str(r.setting[k_index]) for r in rows}
      others = [i for i in range(len(keys)) if i != k_index]
      series: dict[tuple, list[tuple[int, float, float]]] = {}
      for row in rows:
        if m in row.stats:
          other = tuple(row.setting[i] for i in others)
          series.setdefault(other, []).append(
              (values.index(repr(row.setting[k_index])), *row.stats[m][:2]))
      fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(values) + 2), 4))
      for s_index, (other, pts) in enumerate(series.items()):
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, fmt='o-' if len(series) > 1 else 'o', capsize=4,
                    label=_label(other, [keys[i] for i in others]) if others else None)
      ax.set_xticks(range(len(values)), [labels[v] for v in values], rotation=30)
      ax.set_xlabel(key)
      ax.set_ylabel(f'final eval/{m} (mean ± std over seeds)')
      if others:
        ax.legend(fontsize=7)
      fig.tight_layout()
      path = out / f'{m}_vs_{key.replace("/", "_")}.png'
      fig.savefig(path, dpi=110)
      plt.close(fig)
      written.append(path)
  return written


def make_report(sweep_dir: Path, out: Optional[Path] = None,
                metrics: Optional[Sequence[str]] = None, minimize: Sequence[str] = (),
                maximize: Sequence[str] = (), plots: bool = True,
                baseline: Optional[str] = None) -> str:
  """Writes report.md, report.csv (and plots) for a sweep directory; returns the markdown."""
  out = out or sweep_dir
  runs = load_runs(sweep_dir)
  if not runs:
    raise ValueError(f'{sweep_dir}: no sweep.json and no */config.json: not a sweep directory.')
  finished = [r for r in runs if r.final]
  if metrics is None:
    metrics = sorted({m for r in finished for m in r.final if m != 'step'})
  keys = group_keys(runs)
  main_metric = next((r.config['best_metric'].removeprefix('eval/') for r in runs
                      if r.config.get('best_metric')), metrics[0] if metrics else 'loss')
  main_mode = direction(main_metric, runs, minimize, maximize)
  if add_best_of_curve(finished, main_metric, main_mode) and f'best_{main_metric}' not in metrics:
    metrics = [*metrics, f'best_{main_metric}']
  modes = {m: direction(m, runs, minimize, maximize) for m in metrics}
  modes[f'best_{main_metric}'] = main_mode
  rows = aggregate(runs, keys, metrics)
  delta = None
  if baseline:
    delta_columns = [m for m in (main_metric, f'best_{main_metric}') if m in metrics]
    delta = [(f'Δ {m} vs {baseline} (Welch p)', deltas(rows, keys, m, baseline))
             for m in delta_columns]
  md, table_csv = tables(rows, keys, metrics, modes, delta)
  missing = [r for r in runs if not r.final]
  lines = [f'Sweep `{sweep_dir}`: {len(finished)}/{len(runs)} points finished; metrics are '
           'final eval values (best_*: the best value of the eval curve), mean ± std over '
           'seeds (★ = best mean).', '', md]
  if missing:
    lines += ['Not finished (no report.json): '
              + ', '.join(f'`{r.name}` (log: {r.workdir / "log.txt"})' for r in missing), '']
  out.mkdir(parents=True, exist_ok=True)
  if plots:
    written = plot(rows, keys, metrics, out / 'plots')
    lines += ['Plots: ' + ', '.join(f'`{p.relative_to(out)}`' for p in written), '']
  text = '\n'.join(lines)
  (out / 'report.md').write_text(text)
  (out / 'report.csv').write_text(table_csv)
  return text


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('usage: python -m experiments.report DIR [--out=DIR] '
                         '[--metrics=a,b] [--minimize=m] [--maximize=m] [--baseline=K=V]')
  try:
    text = make_report(Path(argv[1]), Path(_OUT.value) if _OUT.value else None,
                       _METRICS.value, _MINIMIZE.value, _MAXIMIZE.value, _PLOTS.value,
                       _BASELINE.value)
  except ValueError as e:
    raise SystemExit(f'error: {e}')
  print(text)


if __name__ == '__main__':
  app.run(main)
