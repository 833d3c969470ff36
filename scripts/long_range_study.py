"""Runs the long-term-dependency study and regenerates its table and plots.

    .venv/bin/python scripts/long_range_study.py --plan reduced     # what was run (docs)
    .venv/bin/python scripts/long_range_study.py --plan full        # the whole grid
    .venv/bin/python scripts/long_range_study.py --report-only      # table + plots from JSON

Each run trains one config of `configs/long_range.py` (`TASK:CELL:LAG`) until the task is
solved (`experiments.long_range.is_solved` on the fixed evaluation set), or until its step
or wall-clock budget is spent, and writes `results/long_range/runs/NAME.json`: the
evaluation history, steps to solve, final error, wall time, and ||dL/dh_t|| over t at
initialisation and at a few points during training (`lstm_jax.analysis`). Existing run
files are kept (delete one, or pass --force, to rerun it), so an interrupted study resumes.
The report step then writes the markdown table into docs/long_range.md (between the
`results` markers) and the PNGs into results/long_range/.

The training loop here is deliberately minimal (Adam from the config, jit step, periodic
evaluation, early stop when solved); the data stream is a function of (seed, step), so a
run is reproducible step for step. Wall times include evaluation and gradient probes but
not compilation (timed separately as `compile_s`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import long_range as configs  # noqa: E402
from experiments import long_range as exp  # noqa: E402

RESULTS = ROOT / 'results' / 'long_range'
DOC = ROOT / 'docs' / 'long_range.md'
BEGIN, END = '<!-- results:begin -->', '<!-- results:end -->'

# The reduced study run on a shared 2-core CPU: (config arg, overrides). Smaller models
# than the configs' default (64 units instead of 128) to fit the CPU budget. The keys
# 'max_steps' and 'max_seconds' override the command line's budget for that run.
REDUCED_COMMON = {'model.hidden_size': 64, 'batch_size': 50}
COPY_BUDGET = {'max_steps': 30000, 'max_seconds': 1500}  # copy learns slowly: more steps
LONG_WALL = {'max_steps': 4000, 'max_seconds': 900}
ORDER_BUDGET = {'max_steps': 8000, 'max_seconds': 1200}
REDUCED = [
    ('adding:lstm:200', {}), ('adding:gru:200', {}), ('adding:rnn:200', {}),
    ('adding:lstm_fb0:200', {}), ('adding:lstm_chrono:200', {}),
    ('adding:gru:500', {}), ('adding:rnn:500', {}),
    ('adding:lstm:500', {'max_steps': 10000, 'max_seconds': 540}),
    ('adding:lstm_chrono:500', {'max_steps': 10000, 'max_seconds': 540}),
    *[(f'copy:{cell}:100', COPY_BUDGET) for cell in ('lstm', 'lstm_chrono', 'gru', 'rnn')],
    # Shorter and longer lags, the other tasks, and the Greff et al. variants. Budgets are in
    # steps (with a generous wall cap) so that a busy machine changes wall times, not results.
    *[(f'adding:{cell}:{lag}', LONG_WALL) for lag in (50, 100) for cell in ('lstm', 'gru', 'rnn')],
    ('adding:lstm_chrono:1000', {'max_steps': 6000, 'max_seconds': 1800}),
    *[(f'order:{cell}:100', ORDER_BUDGET) for cell in ('lstm', 'gru', 'rnn')],
    *[(f'{task}:{cell}:64', LONG_WALL) for task in ('digits', 'pdigits')
      for cell in ('lstm', 'gru', 'rnn')],
    *[(f'adding:lstm_{variant}:100', LONG_WALL)
      for variant in ('V', 'NIG', 'NFG', 'NOG', 'NIAF', 'NOAF', 'NP', 'CIFG', 'FGR')],
]
GRAD_PROBE_STEPS = (0, 200, 500, 1000, 2000, 4000, 8000)
GRAD_PROBE_BATCH = 32


def make_config(arg: str, overrides: dict[str, Any]):
  config = configs.get_config(arg)
  config.update_from_flattened_dict(overrides)
  return config


_gradient_probe = exp.gradient_norms


def train_run(config, max_steps: int, max_seconds: float, log=print) -> dict[str, Any]:
  """Trains one config; returns the run record (see the module docstring)."""
  model = exp.make_model(config)
  params = exp.init_params(config, model, jax.random.key(config.seed))
  optimizer = exp.make_optimizer(config)
  opt_state = optimizer.init(params)
  task = config.data.task

  @jax.jit
  def train_step(params, opt_state, x, y):
    def loss_fn(p):
      return exp.loss_and_metrics(task, model.apply({'params': p}, x), y)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  @jax.jit
  def eval_step(params, x, y):
    return exp.loss_and_metrics(task, model.apply({'params': params}, x), y)[1]

  d = config.data
  evals = exp.eval_batches(task, config.seed, d.eval_batch_size, d.eval_batches, d.lag)
  probe = {k: v[:GRAD_PROBE_BATCH] for k, v in evals[0].items()}

  def evaluate(params) -> dict[str, float]:
    totals: dict[str, float] = {}
    for b in evals:
      for k, v in eval_step(params, b['x'], b['y']).items():
        totals[k] = totals.get(k, 0.0) + float(v) / len(evals)
    return totals

  t0 = time.perf_counter()
  batch = exp.get_batch(task, config.seed, 0, config.batch_size, d.lag)
  jax.block_until_ready(train_step(params, opt_state, batch['x'], batch['y']))
  evaluate(params)
  compile_s = time.perf_counter() - t0

  grads = {0: _gradient_probe(config, model, params, probe)}
  history = [dict(step=0, wall_s=0.0, **evaluate(params))]
  solved_at: Optional[int] = None
  start = time.perf_counter()
  step = 0
  while step < max_steps:
    batch = exp.get_batch(task, config.seed, step, config.batch_size, d.lag)
    params, opt_state, _ = train_step(params, opt_state, batch['x'], batch['y'])
    step += 1
    if step in GRAD_PROBE_STEPS:
      grads[step] = _gradient_probe(config, model, params, probe)
    out_of_time = time.perf_counter() - start > max_seconds
    if step % config.eval_every == 0 or step == max_steps or out_of_time:
      metrics = evaluate(params)
      history.append(dict(step=step, wall_s=time.perf_counter() - start, **metrics))
      log(f'{d.name} step {step} ' + ' '.join(f'{k}={v:.4g}' for k, v in metrics.items()))
      if solved_at is None and exp.is_solved(task, metrics):
        solved_at = step
        break  # Solving is what is measured: stop there to save CPU.
      if out_of_time:
        break
  wall_s = time.perf_counter() - start
  if step not in grads:
    grads[step] = _gradient_probe(config, model, params, probe)
  return dict(
      name=d.name, arg=f'{task}:{d.cell}:{d.lag}', task=task,
      cell=d.cell, lag=d.lag, hidden_size=config.model.hidden_size,
      batch_size=config.batch_size, learning_rate=config.optimizer.learning_rate,
      max_steps=max_steps, max_seconds=max_seconds, steps=step, solved_at=solved_at,
      final=history[-1], baseline=exp.baseline(task, d.lag), wall_s=wall_s,
      compile_s=compile_s, history=history, grad_norms={str(k): v for k, v in grads.items()},
      solved_criterion=list(exp.task_spec(task)['solved']),
      device=str(jax.devices()[0].platform), cpu_count=os.cpu_count())


# -------------------------------------------------------------------------- reporting


def load_runs(directory: pathlib.Path) -> list[dict[str, Any]]:
  return [json.loads(p.read_text()) for p in sorted(directory.glob('*.json'))]


def _error_name(task: str) -> str:
  return 'mse' if task == 'adding' else ('xent' if task == 'copy' else 'accuracy')


def markdown_table(runs: Iterable[dict[str, Any]]) -> str:
  """One row per run: the numbers the docs quote."""
  lines = ['| task | T | cell | H | batch | steps run | solved at step | final test error '
           '| baseline | wall s (excl. compile) | budget |',
           '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
  order = {'adding': 0, 'copy': 1, 'order': 2, 'order3': 3, 'digits': 4, 'pdigits': 5}
  for r in sorted(runs, key=lambda r: (order.get(r['task'], 9), r['lag'], r['cell'])):
    name = _error_name(r['task'])
    final = f"{name} {r['final'][name]:.4f}"
    if r['task'] == 'copy':
      final += f", recall acc {r['final']['recall_accuracy']:.3f}"
    base = '' if r['baseline'] is None else f"{r['baseline']:.4f}"
    solved = '-' if r['solved_at'] is None else str(r['solved_at'])
    budget = f"{r['max_steps']} steps / {r['max_seconds']:.0f} s"
    lines.append(f"| {r['task']} | {r['lag']} | {r['cell']} | {r['hidden_size']} | "
                 f"{r['batch_size']} | {r['steps']} | {solved} | {final} | {base} | "
                 f"{r['wall_s']:.0f} | {budget} |")
  return '\n'.join(lines)


def write_doc_table(table: str, doc: pathlib.Path = DOC) -> None:
  doc.parent.mkdir(parents=True, exist_ok=True)
  text = doc.read_text() if doc.exists() else f'# Long-term dependencies\n\n{BEGIN}\n{END}\n'
  if BEGIN not in text:
    text += f'\n{BEGIN}\n{END}\n'
  head, rest = text.split(BEGIN, 1)
  tail = rest.split(END, 1)[1]
  doc.write_text(f'{head}{BEGIN}\n{table}\n{END}{tail}')


def plot_runs(runs: list[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
  """Learning curves per (task, T) and gradient-norm curves per run."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  written = []
  groups: dict[tuple[str, int], list] = {}
  for r in runs:
    groups.setdefault((r['task'], r['lag']), []).append(r)
  for (task, lag), group in sorted(groups.items()):
    name = _error_name(task)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in sorted(group, key=lambda r: r['cell']):
      ax.plot([h['step'] for h in r['history']], [h[name] for h in r['history']],
              label=r['cell'])
    if group[0]['baseline'] is not None and name != 'accuracy':
      ax.axhline(group[0]['baseline'], color='k', ls='--', lw=1, label='baseline')
    if name != 'accuracy':
      ax.set_yscale('log')
    ax.set(xlabel='training step', ylabel=f'test {name}', title=f'{task}, T = {lag}')
    ax.legend()
    path = out / f'curves_{task}_T{lag}.png'
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in sorted(group, key=lambda r: r['cell']):
      steps = sorted(int(k) for k in r['grad_norms'])
      init, last = r['grad_norms']['0'], r['grad_norms'][str(steps[-1])]
      axes[0].plot(np.maximum(init, 1e-30), label=r['cell'])
      axes[1].plot(np.maximum(last, 1e-30), label=f"{r['cell']} (step {steps[-1]})")
    for ax, when in zip(axes, ('at initialisation', 'after training')):
      ax.set(yscale='log', xlabel='t (input step)', title=f'{task}, T = {lag}: {when}')
      ax.legend(fontsize=8)
    axes[0].set_ylabel('||dL/dh_t||  (exact 0 drawn at 1e-30)')
    path = out / f'gradnorm_{task}_T{lag}.png'
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

  for r in runs:  # Gradient norms during training, one plot per run.
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in sorted(r['grad_norms'], key=int):
      ax.plot(np.maximum(r['grad_norms'][k], 1e-30), label=f'step {k}')
    ax.set(yscale='log', xlabel='t', ylabel='||dL/dh_t||',
           title=f"{r['task']} T={r['lag']} {r['cell']}: during training")
    ax.legend(fontsize=8)
    path = out / 'runs' / f"gradnorm_{r['name']}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    written.append(path)
  return written


def gradient_summary(runs: list[dict[str, Any]]) -> str:
  """||dL/dh_0|| / max_t ||dL/dh_t|| at init and at the end: what reaches the first step.

  0 means the gradient at t = 0 underflowed float32 (below ~1e-38 of the peak).
  """
  lines = ['| task | T | cell | init: first step / peak | end of training: first step / peak |',
           '| --- | ---: | --- | ---: | ---: |']
  for r in sorted(runs, key=lambda r: (r['task'], r['lag'], r['cell'])):
    last = str(max(int(k) for k in r['grad_norms']))

    def ratio(g):
      return g[0] / max(g) if max(g) > 0 else float('nan')
    lines.append(f"| {r['task']} | {r['lag']} | {r['cell']} | "
                 f"{ratio(r['grad_norms']['0']):.2e} | {ratio(r['grad_norms'][last]):.2e} |")
  return '\n'.join(lines)


def report(results: pathlib.Path = RESULTS, doc: pathlib.Path = DOC) -> None:
  runs = load_runs(results / 'runs')
  if not runs:
    print('no runs yet')
    return
  table = (markdown_table(runs) + '\n\nGradient reaching the first input step '
           '(`lstm_jax.analysis`, task loss on 32 test sequences):\n\n'
           + gradient_summary(runs))
  write_doc_table(table, doc)
  for path in plot_runs(runs, results):
    print('wrote', path)
  (results / 'summary.json').write_text(json.dumps(
      [{k: v for k, v in r.items() if k not in ('history', 'grad_norms')} for r in runs],
      indent=1))
  print(table)


def plan_runs(plan: str) -> list[tuple[str, dict[str, Any]]]:
  if plan == 'reduced':
    return [(arg, {**REDUCED_COMMON, **extra}) for arg, extra in REDUCED]
  if plan == 'full':
    return [(o['config'], {}) for o in configs.sweep()]
  raise ValueError(f'unknown plan {plan!r}')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--plan', default='reduced', choices=('reduced', 'full'))
  parser.add_argument('--only', nargs='*', help='config args of the plan to run')
  parser.add_argument('--max-steps', type=int, default=None,
                      help='step budget of every run (default: the plan\'s, else 4000)')
  parser.add_argument('--max-seconds', type=float, default=None,
                      help='wall budget of every run (default: the plan\'s, else 180)')
  parser.add_argument('--force', action='store_true', help='rerun runs that have a JSON')
  parser.add_argument('--report-only', action='store_true')
  parser.add_argument('--results', type=pathlib.Path, default=RESULTS)
  parser.add_argument('--doc', type=pathlib.Path, default=DOC)
  args = parser.parse_args(argv)
  runs_dir = args.results / 'runs'
  runs_dir.mkdir(parents=True, exist_ok=True)
  if not args.report_only:
    for arg, overrides in plan_runs(args.plan):
      if args.only and arg not in args.only:
        continue
      overrides = dict(overrides)
      max_steps = args.max_steps or overrides.pop('max_steps', 4000)
      max_seconds = args.max_seconds or overrides.pop('max_seconds', 180.0)
      overrides.pop('max_steps', None)
      overrides.pop('max_seconds', None)
      config = make_config(arg, overrides)
      path = runs_dir / f'{config.data.name}.json'
      if path.exists() and not args.force:
        print('exists, skipping:', path)
        continue
      record = train_run(config, max_steps, max_seconds, log=lambda s: print(s, flush=True))
      record['overrides'] = overrides
      path.write_text(json.dumps(record))
      print('wrote', path, flush=True)
  report(args.results, args.doc)


if __name__ == '__main__':
  main()
