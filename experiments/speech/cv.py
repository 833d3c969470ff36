"""Model selection by stratified k-fold cross-validation on the TRAINING split only, then
the chosen setting trained on the whole training split and scored once on test.

    python -m experiments.speech.cv --config=configs/speech.py:japanese_vowels \\
        --workdir=workdirs/jv_cv --out=results/speech [--folds=5] [--seeds=0,1,2]

1. Candidates: the config module's `cv_grid(arg)`, a list of dotted overrides (e.g.
   {'data.deltas': 1, 'model.pooling': 'mean'}), listed simplest first.
2. For each candidate and fold k: `experiments.main`'s run with data.cv_folds=folds,
   data.cv_fold=k (`experiments.speech.data.make_splits`: val = fold k of stratified
   folds of the training split, train = the other folds, the test split is not loaded),
   in WORKDIR/cv/CANDIDATE/fold_k. The score is the final parameters' accuracy on the
   held-out fold (report.json's val_accuracy).
3. The chosen candidate: the highest cross-validated accuracy (total errors over all
   folds); ties go to the lower mean held-out loss, then to the earlier (simpler)
   candidate.
4. It is trained on all training utterances (data.val_fraction=0, no CV) with each of
   --seeds in WORKDIR/final/CANDIDATE/seed_S and scored on test; nothing about test
   feeds back.

Writes into --out: NAME_cv.csv (one row per candidate and fold), NAME_cv.md (the
summary, choice marked), NAME_cv.png (fold accuracies per candidate), NAME_test.csv /
NAME_test.md (test accuracy per seed of the chosen setting, and whether it is the
config's default), NAME_confusion_test.png (the first seed's). Runs whose report.json
exists are read, not rerun: an interrupted command resumes.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import sys
import time
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line; defined only when run as a program, so that importing this module
  (tests) does not clash with other modules' flags."""
  flags.DEFINE_string('config', None, 'Config file with cv_grid(), FILE.py[:ARG].')
  flags.DEFINE_string('workdir', None, 'Run directories (checkpoints: not for committing).')
  flags.DEFINE_string('out', None, 'Where the tables and figures go.')
  flags.DEFINE_integer('folds', 5, 'Cross-validation folds.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of the final runs on test.')
  flags.DEFINE_string('data_dir', '', 'data.data_dir (the TFDS cache).')


def load_config_module(spec: str) -> tuple[Any, str]:
  """'FILE.py[:ARG]' -> (the module, ARG)."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_cv_config', os.path.abspath(path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module, arg


def with_overrides(config: ml_collections.ConfigDict, overrides: dict
                   ) -> ml_collections.ConfigDict:
  """A copy of config with dotted keys set ({'data.deltas': 1})."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f'{key} is not a config field.')
    node[leaf] = value
  return config


def get_dotted(config: ml_collections.ConfigDict, key: str) -> Any:
  """config['data.deltas'] -> config.data.deltas."""
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def candidate_name(overrides: dict) -> str:
  """{'data.deltas': 1, 'model.pooling': 'mean'} -> 'deltas=1,pooling=mean'."""
  return ','.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in overrides.items())


def run_once(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """report.json of a finished run in workdir, training it first if needed."""
  path = os.path.join(workdir, 'report.json')
  if not os.path.exists(path):
    import experiments.speech as speech
    from lstm_jax.train import run
    start = time.time()
    run(config, workdir, speech.build_task)
    with open(os.path.join(workdir, 'wall_time.json'), 'w') as f:
      json.dump({'seconds': round(time.time() - start, 1)}, f)
  with open(path) as f:
    return json.load(f)


def choose(summary: list[dict]) -> int:
  """Index of the best candidate: highest cross-validated accuracy, then lowest mean
  held-out loss, then the earliest.

  The accuracy compared is the pooled one, 1 - total errors / total held-out utterances
  (every candidate sees the same folds; with equal folds it is the mean fold accuracy),
  computed from integers: the means of rounded fold accuracies can differ in the 6th
  digit for equal error counts, which would break a tie by rounding noise.
  """
  keys = [(s['errors'] / s['utterances'], s['mean_loss'], i) for i, s in enumerate(summary)]
  return min(keys)[2]


def summarize(rows: list[dict], names: list[str]) -> list[dict]:
  """Per candidate: mean and std of the fold accuracies, total errors, mean loss."""
  out = []
  for name in names:
    mine = [r for r in rows if r['candidate'] == name]
    acc = np.array([r['val_accuracy'] for r in mine])
    out.append({'candidate': name, 'folds': len(mine),
                'mean_accuracy': float(acc.mean()), 'std_accuracy': float(acc.std(ddof=1)),
                'errors': int(sum(r['val_errors'] for r in mine)),
                'utterances': int(sum(r['num_val'] for r in mine)),
                'mean_loss': float(np.mean([r['val_loss'] for r in mine]))})
  return out


def write_csv(path: str, rows: list[dict]) -> None:
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def plot_cv(rows: list[dict], summary: list[dict], chosen: int, path: str, title: str
            ) -> None:
  """Fold accuracies (dots) and their means (bars) per candidate; the chosen one dark."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(summary), 3.4))
  for i, s in enumerate(summary):
    ax.bar(i, 100 * s['mean_accuracy'], 0.6, color='C0' if i == chosen else 'C7',
           alpha=0.8)
    accs = [100 * r['val_accuracy'] for r in rows if r['candidate'] == s['candidate']]
    ax.plot(np.full(len(accs), i) + np.linspace(-0.15, 0.15, len(accs)), accs, 'k.', ms=5)
  low = min(100 * r['val_accuracy'] for r in rows)
  ax.set_ylim(max(0.0, low - 2.0), 100.5)
  ax.set_xticks(range(len(summary)), [s['candidate'].replace(',', '\n') for s in summary],
                fontsize=8)
  ax.set_ylabel('held-out fold accuracy (%)')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


class _NoMetricsWarning(logging.logging.Filter):
  """Orbax warns at every save between evals that it got no metrics: expected here."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


def cross_validate(base: ml_collections.ConfigDict, grid: list[dict], folds: int,
                   workdir: str) -> list[dict]:
  """One row per candidate and fold: held-out size, errors, accuracy and loss."""
  rows = []
  for overrides in grid:
    cand = candidate_name(overrides)
    for fold in range(folds):
      # Eval and checkpoints only at the end: they cannot change the result (batches and
      # dropout keys are functions of (seed, step)) and cost time in 20-odd runs.
      config = with_overrides(base, dict(overrides, **{
          'data.cv_folds': folds, 'data.cv_fold': fold,
          'eval_every': base.total_steps, 'checkpoint_every': base.total_steps}))
      result = run_once(config, os.path.join(workdir, 'cv', cand, f'fold_{fold}'))
      report = result['report']
      assert 'test_accuracy' not in report, 'cross-validation must not score test'
      rows.append({'candidate': cand, 'fold': fold, 'num_val': report['num_val'],
                   'val_errors': report['val_errors'],
                   'val_accuracy': report['val_accuracy'],
                   'val_loss': round(result['eval']['loss'], 6)})
      print(f'cv {cand} fold {fold}: {report["val_accuracy"]:.4f}', flush=True)
  return rows


def final_runs(base: ml_collections.ConfigDict, overrides: dict, seeds: list[int],
              workdir: str) -> list[dict]:
  """The setting trained on all training utterances, per seed: test size, errors,
  accuracy. Workdirs WORKDIR/final/CANDIDATE/seed_S."""
  tests = []
  for seed in seeds:
    config = with_overrides(base, dict(overrides, **{'data.val_fraction': 0.0,
                                                     'seed': seed}))
    run_dir = os.path.join(workdir, 'final', candidate_name(overrides), f'seed_{seed}')
    report = run_once(config, run_dir)['report']
    tests.append({'seed': seed, 'num_test': report['num_test'],
                  'test_errors': report['test_errors'],
                  'test_accuracy': report['test_accuracy'], 'workdir': run_dir})
  return tests


def cv_markdown(name: str, summary: list[dict], chosen: int, folds: int, command: str
                ) -> str:
  lines = [f'# {name}: {folds}-fold cross-validation on the training split', '',
           f'Command: `{command}`', '',
           f'Each candidate is trained on {folds - 1} of {folds} stratified folds of the '
           'training utterances and scored (final parameters) on the held-out fold, for '
           'every fold; the test split is not loaded. Chosen: fewest errors over all '
           'folds (ties: lowest mean held-out loss, then the earlier candidate).', '',
           '| candidate | mean fold accuracy | std | errors / utterances | mean held-out '
           'loss | chosen |', '| --- | --- | --- | --- | --- | --- |']
  for i, s in enumerate(summary):
    lines.append(f'| {s["candidate"]} | {100 * s["mean_accuracy"]:.2f}% | '
                 f'{100 * s["std_accuracy"]:.2f} | {s["errors"]} / {s["utterances"]} | '
                 f'{s["mean_loss"]:.4f} | {"**yes**" if i == chosen else ""} |')
  return '\n'.join(lines) + '\n'


def final_markdown(name: str, candidate: str, tests: list[dict], is_default: bool) -> str:
  acc = np.array([t['test_accuracy'] for t in tests])
  std = acc.std(ddof=1) if len(tests) > 1 else 0.0
  lines = [f'# {name}: the CV-chosen setting on test', '',
           f'Setting: {candidate}, trained on all training utterances '
           f'(data.val_fraction=0); the config\'s default: {"yes" if is_default else "NO"}.',
           '', '| seed | test accuracy | errors |', '| --- | --- | --- |']
  lines += [f'| {t["seed"]} | {100 * t["test_accuracy"]:.2f}% | {t["test_errors"]} / '
            f'{t["num_test"]} |' for t in tests]
  lines.append(f'| mean (std) | {100 * acc.mean():.2f}% ({100 * std:.2f}) | '
               f'{sum(t["test_errors"] for t in tests)} / '
               f'{sum(t["num_test"] for t in tests)} |')
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  logging.get_absl_logger().addFilter(_NoMetricsWarning())
  for flag in ('config', 'workdir', 'out'):
    if not FLAGS[flag].value:
      raise app.UsageError(f'--{flag} is required.')
  module, arg = load_config_module(FLAGS.config)
  if not hasattr(module, 'cv_grid'):
    sys.exit(f'error: {FLAGS.config} defines no cv_grid(arg).')
  base = module.get_config(arg)
  base.data.data_dir = FLAGS.data_dir
  name, out = base.data.name, FLAGS.out
  grid = module.cv_grid(arg)
  names = [candidate_name(o) for o in grid]
  os.makedirs(out, exist_ok=True)

  rows = cross_validate(base, grid, FLAGS.folds, FLAGS.workdir)
  summary = summarize(rows, names)
  chosen = choose(summary)
  write_csv(os.path.join(out, f'{name}_cv.csv'), rows)
  command = (f'python -m experiments.speech.cv --config={FLAGS.config} '
             f'--folds={FLAGS.folds} --seeds={",".join(FLAGS.seeds)} --workdir=DIR '
             '--out=DIR')
  with open(os.path.join(out, f'{name}_cv.md'), 'w') as f:
    f.write(cv_markdown(name, summary, chosen, FLAGS.folds, command))
  plot_cv(rows, summary, chosen, os.path.join(out, f'{name}_cv.png'),
          f'{name}: {FLAGS.folds}-fold CV on the training split (chosen: {names[chosen]})')

  # The chosen setting, trained on every training utterance, scored on test per seed.
  tests = final_runs(base, grid[chosen], [int(s) for s in FLAGS.seeds], FLAGS.workdir)
  shutil.copy(os.path.join(tests[0]['workdir'], 'confusion_test.png'),
              os.path.join(out, f'{name}_confusion_test.png'))
  write_csv(os.path.join(out, f'{name}_test.csv'),
            [{k: v for k, v in t.items() if k != 'workdir'} for t in tests])
  is_default = (base.data.val_fraction == 0.0 and
                all(get_dotted(base, k) == v for k, v in grid[chosen].items()))
  text = final_markdown(name, names[chosen], tests, is_default)
  with open(os.path.join(out, f'{name}_test.md'), 'w') as f:
    f.write(text)
  print(text, flush=True)
  if not is_default:
    print(f'note: the chosen setting ({names[chosen]}, val_fraction=0) is not the default '
          f'of {FLAGS.config}; update the config.', flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
