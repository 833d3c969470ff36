"""End to end through `experiments.main` (subprocess), and the model's forecasts ignore
the values they forecast."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_run_through_main(tmp_path):
  workdir = tmp_path / 'wd'
  cmd = [sys.executable, '-m', 'experiments.main',
         '--config=configs/forecasting.py:vic_elec:tiny', f'--workdir={workdir}',
         '--config.total_steps=1', f'--config.data.data_dir={tmp_path / "tfds"}']
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '| lstm |' in out.stdout and '| snaive_week |' in out.stdout
  report = json.load(open(workdir / 'report.json'))['report']
  assert set(report['table']) >= {'lstm', 'naive', 'snaive_day', 'snaive_week'}
  assert report['num_windows'] == 4 and (workdir / 'forecasts.png').exists()


def test_bad_csv_exits_with_user_error(tmp_path):
  cmd = [sys.executable, '-m', 'experiments.main',
         '--config=configs/forecasting.py:csv:tiny', f'--workdir={tmp_path / "wd"}',
         '--config.data.path=/nonexistent.csv', '--config.data.target_columns=y']
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and 'data.path' in out.stderr


def test_forecasts_do_not_see_the_future():
  from configs import forecasting as cfg
  from experiments import forecasting as fc
  from experiments.forecasting import model as fmodel
  from experiments.forecasting import windows
  from experiments.forecasting.test_support import toy_prepared
  prep = toy_prepared()
  for head in ('deepar', 'quantile'):
    c = cfg.get_config('csv:tiny')
    c.model.head = head
    model = fc.make_model(c)
    batch = windows.make_windows(prep, np.array([0, 0]), np.array([900, 924]))
    spec = prep.spec
    x, _, _ = fmodel.build_inputs(batch, spec.lags, spec.context, spec.horizon,
                                  head == 'quantile')
    v = model.init(jax.random.key(0), x)
    changed = dict(batch, future=batch['future'] + 1e3)
    if head == 'deepar':
      run = lambda b: fmodel.sample_paths(model, v, b, spec.lags, spec.context,
                                          spec.horizon, 5, jax.random.key(1))
    else:
      run = lambda b: fmodel.predict_quantiles(model, v, b, spec.lags, spec.context,
                                               spec.horizon)
    np.testing.assert_array_equal(np.asarray(run(batch)), np.asarray(run(changed)))
