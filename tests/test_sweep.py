"""Sweeps: expansion and naming, skipping finished points, failure isolation, SLURM script,
the report table on fabricated workdirs, and a tiny sweep end to end (synthetic:tiny)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST_COMPILE
from experiments import report, sweep
from lstm_jax import sweeps

REPO = Path(__file__).resolve().parents[1]


# --- expansion and naming -------------------------------------------------------------

def test_product_zip_seeds():
  grid = sweeps.product({'model.variant': ['V', 'NFG']}, optimizer__learning_rate=[1e-3, 1e-2])
  assert grid == [{'model.variant': 'V', 'optimizer.learning_rate': 1e-3},
                  {'model.variant': 'V', 'optimizer.learning_rate': 1e-2},
                  {'model.variant': 'NFG', 'optimizer.learning_rate': 1e-3},
                  {'model.variant': 'NFG', 'optimizer.learning_rate': 1e-2}]
  assert sweeps.zip_({'a': [1, 2], 'b': ['x', 'y']}) == [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  with pytest.raises(ValueError, match='one length'):
    sweeps.zip_({'a': [1, 2], 'b': [1]})
  with pytest.raises(ValueError, match='string'):
    sweeps.product({'a': 'abc'})
  assert sweeps.seeds([{'a': 1}, {'a': 2}], 2) == [
      {'a': 1, 'seed': 0}, {'a': 1, 'seed': 1}, {'a': 2, 'seed': 0}, {'a': 2, 'seed': 1}]
  assert sweeps.seeds([{}], [3, 7]) == [{'seed': 3}, {'seed': 7}]
  assert sweeps.cross(sweeps.zip_(a=[1, 2], b=[3, 4]), sweeps.product(c=[5])) == [
      {'a': 1, 'b': 3, 'c': 5}, {'a': 2, 'b': 4, 'c': 5}]
  assert sweeps.chain([{'a': 1}], [{'b': 2}]) == [{'a': 1}, {'b': 2}]


def test_eta_counts_what_running_points_have_done():
  assert sweep.eta([], [5.0], 3, 2) is None
  assert sweep.eta([60.0], [50.0], 0, 2) == 10.0  # The last point, nearly done.
  assert sweep.eta([60.0], [70.0], 0, 2) == 0.0  # Slower than the mean: no negative ETA.
  # Two slots: 10 s and 40 s left; three queued points of 60 s: 70, 100, 130.
  assert sweep.eta([50.0, 70.0], [50.0, 20.0], 3, 2) == 130.0
  assert sweep.eta([30.0], [], 4, 2) == 60.0  # Nothing running yet.


def test_names_are_stable_safe_and_unique():
  p = {'seed': 1, 'model.variant': 'NFG', 'config': 'adding:V', 'x': 'a/b c'}
  name = sweeps.point_name(p)
  assert name == 'arg=adding_V,model.variant=NFG,seed=1,x=a_b_c'
  assert name == sweeps.point_name(dict(reversed(list(p.items()))))  # Order-free.
  long = sweeps.point_name({'k': 'v' * 500})
  assert len(long) <= 200 and long == sweeps.point_name({'k': 'v' * 500})
  with pytest.raises(ValueError, match='share the name'):
    sweeps.check_points([{'a': 1}, {'a': 1}])
  assert sweeps.overrides_to_flags({'config': 'x', 'lr': 0.1, 'b': True}) == [
      '--config.b=True', '--config.lr=0.1']
  assert sweeps.swept_keys([{'a': 1, 'b': 2}, {'a': 1, 'b': 3}]) == ['b']


def test_config_sweeps_expand():
  _, arg, points = sweep.load_sweep(str(REPO / 'configs/greff_ablation.py:chorales'))
  assert arg == "chorales" and len(points) == 45
  assert {p['model.variant'] for p in points} == {'V', 'NIG', 'NFG', 'NOG', 'NIAF', 'NOAF',
                                                  'NP', 'CIFG', 'FGR'}
  _, _, points = sweep.load_sweep(str(REPO / 'configs/greff_ablation.py:adding'))
  built = sweep.build_points(str(REPO / 'configs/greff_ablation.py'), 'adding', points,
                             Path('/tmp/w'))
  assert built[0].args[2].endswith('greff_ablation.py:adding:V')  # 'config' key = ARG.


# --- runner ----------------------------------------------------------------------------

def _tiny_sweep_config(tmp_path: Path, bad: bool) -> Path:
  """A config file: synthetic:tiny, sweep = 2 seeds (+ a point with a bad override)."""
  path = tmp_path / 'tiny_sweep.py'
  path.write_text(f'''
import importlib.util
_spec = importlib.util.spec_from_file_location('_syn', {str(REPO / 'configs/synthetic.py')!r})
_syn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_syn)

def get_config(arg='tiny'):
  return _syn.get_config(arg)

def sweep():
  yield {{'seed': 0}}
  yield {{'seed': 1}}
  if {bad}:
    yield {{'seed': 2, 'optimizer.name': 'bogus'}}
''')
  return path


def _env(tmp_path: Path) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', XLA_FLAGS=FAST_COMPILE)
  return env


def _run_sweep(tmp_path, config, workdir, *extra):
  return subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={config}',
                         f'--workdir={workdir}', '--parallel=3', '--set=total_steps=3',
                         '--set=eval_every=3', *extra], cwd=REPO, env=_env(tmp_path),
                        capture_output=True, text=True, timeout=300)


def test_sweep_end_to_end_isolates_failures_and_resumes(tmp_path):
  config = _tiny_sweep_config(tmp_path, bad=True)
  workdir = tmp_path / 'sweep'
  out = _run_sweep(tmp_path, config, workdir)
  assert out.returncode == 1, out.stdout + out.stderr
  bad = workdir / 'optimizer.name=bogus,seed=2'
  assert f'optimizer.name=bogus,seed=2: see {bad / "log.txt"}' in out.stdout
  assert 'optimizer.name' in (bad / 'log.txt').read_text()  # The error landed in its log.
  for seed in (0, 1):
    rep = json.loads((workdir / f'seed={seed}' / 'report.json').read_text())
    assert rep['step'] == 3  # --set reached every point.
  assert '2/3 points finished' in out.stdout and 'ETA' in out.stdout

  # Rerun: the finished points are skipped, only the failed one runs (and fails) again.
  again = _run_sweep(tmp_path, config, workdir)
  assert again.returncode == 1
  assert '3 points, 2 finished already, 1 to run' in again.stdout

  text = report.make_report(workdir, plots=False)
  assert '| seed=0' not in text  # Seed is folded away...
  assert '2/2' in text  # ...into n = 2 finished seeds of the good setting.
  assert 'optimizer.name=bogus,seed=2' in text  # The failure is listed.


def test_skips_finished_points(tmp_path):
  points = sweep.build_points('c.py', None, [{'seed': 0}, {'seed': 1}], tmp_path)
  points[0].workdir.mkdir(parents=True)
  (points[0].workdir / 'report.json').write_text('{}')
  logs = []
  # 'false' as the interpreter: the one point that runs fails; the finished one never runs.
  failed = sweep.run_local(points, 2, 'false', log=logs.append)
  assert [p.name for p in failed] == ['seed=1']
  assert logs[0].startswith('sweep: 2 points, 1 finished already, 1 to run')
  assert not (points[0].workdir / 'log.txt').exists()


def test_slurm_dry_run_writes_array_script(tmp_path):
  config = _tiny_sweep_config(tmp_path, bad=False)
  out = _run_sweep(tmp_path, config, tmp_path / 's', '--slurm', '--dry_run')
  assert out.returncode == 0, out.stderr
  script = (tmp_path / 's' / 'sweep.sbatch').read_text()
  assert '#SBATCH --array=0-1%3' in script and '#SBATCH --requeue' in script
  assert "--workdir=" in script and 'seed=1' in script
  assert subprocess.run(['bash', '-n', str(tmp_path / 's' / 'sweep.sbatch')]).returncode == 0
  assert not (tmp_path / 's' / 'seed=0').exists()  # Nothing ran.


# --- report ----------------------------------------------------------------------------

def _fake_sweep(root: Path) -> None:
  """Variants A, B x seeds 0, 1 with known final numbers; B/1 never finished."""
  values = {('A', 0): (1.0, 0.5), ('A', 1): (3.0, 0.7), ('B', 0): (0.5, 0.9)}
  points = [{'model.variant': v, 'seed': s} for v in 'AB' for s in (0, 1)]
  (root).mkdir(parents=True, exist_ok=True)
  (root / 'sweep.json').write_text(json.dumps(
      {'points': [{'name': sweeps.point_name(p), 'overrides': p} for p in points]}))
  for p in points:
    wd = root / sweeps.point_name(p)
    wd.mkdir()
    (wd / 'config.json').write_text(json.dumps({'best_metric': 'eval/loss',
                                                'best_mode': 'min'}))
    key = (p['model.variant'], p['seed'])
    if key in values:
      loss, acc = values[key]
      (wd / 'report.json').write_text(json.dumps({'eval': {'loss': loss, 'accuracy': acc}}))
      (wd / 'metrics.jsonl').write_text(''.join(json.dumps(
          {'step': s, 'split': split, 'metrics': {'loss': loss + 1 / s, 'accuracy': acc},
           'time': 0, 'elapsed': s, 'steps_per_sec': 10.0}) + '\n'
          for s in (1, 2) for split in ('train', 'eval')))


def test_report_table_on_known_numbers(tmp_path):
  _fake_sweep(tmp_path / 'sw')
  text = report.make_report(tmp_path / 'sw', out=tmp_path / 'out')
  # A: loss mean 2, sample std sqrt(2) = 1.4; accuracy 0.6 ± 0.14. B: one seed.
  # best_loss = the lowest eval loss of each curve (loss + 1/step at steps 1, 2).
  assert '| A | 2/2 | 0.6 ± 0.14 | 2 ± 1.4 | 2.5 ± 1.4 | 10 |' in text
  assert '| B | 1/2 | **0.9 ± 0** ★ | **0.5 ± 0** ★ | **1 ± 0** ★ | 10 |' in text
  assert 'accuracy (↑)' in text and 'loss (↓)' in text
  rows = list(csv.DictReader(open(tmp_path / 'out' / 'report.csv')))
  assert rows[0]['model.variant'] == 'A' and float(rows[0]['loss_mean']) == 2.0
  assert rows[1]['loss_best'] == 'True' and rows[0]['loss_best'] == 'False'
  plots = {p.name for p in (tmp_path / 'out' / 'plots').iterdir()}
  assert {'curves_loss.png', 'loss_vs_model.variant.png'} <= plots
  # A --maximize flag flips the direction.
  flipped = report.make_report(tmp_path / 'sw', out=tmp_path / 'o2', maximize=['loss'],
                               plots=False)
  assert '**2 ± 1.4** ★' in flipped
  # --baseline: B's change of the best_metric (loss) against A; one seed, so no p-value.
  based = report.make_report(tmp_path / 'sw', out=tmp_path / 'o3', plots=False,
                             baseline='model.variant=A')
  assert '| B | 1/2 | **0.9 ± 0** ★ | **0.5 ± 0** ★ | **1 ± 0** ★ | -1.5 | -1.5 | 10 |' in based
  assert '| A | 2/2 | 0.6 ± 0.14 | 2 ± 1.4 | 2.5 ± 1.4 | baseline | baseline | 10 |' in based
