"""The long-range experiment: configs, the harness Task, and a short run via experiments.main."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import long_range as configs
from experiments import long_range as exp
from experiments import long_range_data as data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_config_args_and_sweep():
  c = configs.get_config('adding:lstm_chrono:500')
  assert (c.experiment, c.data.task, c.data.lag) == ('long_range', 'adding', 500)
  assert c.model.forget_bias_init == 'chrono' and c.model.chrono_max_length == 500
  assert configs.get_config('copy:lstm_chrono:100').model.chrono_max_length == 120
  assert configs.get_config('adding:lstm_fb0:50').model.forget_bias == 0.0
  assert configs.get_config('order:lstm_NFG:100').model.forget_gate is False
  assert configs.get_config('digits:rnn:7').data.lag == 64
  args = [o['config'] for o in configs.sweep()]
  assert len(args) == len(set(args))
  for lag in configs.LAGS:
    for cell in ('lstm', 'gru', 'rnn', 'lstm_fb0', 'lstm_fb1', 'lstm_chrono'):
      assert f'adding:{cell}:{lag}' in args
  with pytest.raises(ValueError):
    configs.get_config('nope:lstm:10')


@pytest.mark.parametrize('arg', ['adding:rnn:12', 'copy:gru:5', 'pdigits:lstm_CIFG:0'])
def test_task_contract(arg):
  if 'digits' in arg:
    pytest.importorskip('sklearn')
  config = configs.get_config(arg)
  config.model.hidden_size = 4
  config.data.eval_batch_size, config.data.eval_batches = 20, 2  # 20 -> padded to 24
  task = exp.build_task(config)
  params = task.model.init({'params': jax.random.key(0)}, **task.init_batch)['params']
  # Resumption: the stream started at step 3 is the stream from 0 without its first 3.
  from_zero, from_three = task.train_batches(0), task.train_batches(3)
  for _ in range(3):
    next(from_zero)
  a, b = next(from_zero), next(from_three)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert len(a['x']) == config.batch_size
  loss, metrics = task.loss_fn(params, a, jax.random.key(1), True)
  assert np.isfinite(loss) and 'loss' in metrics
  total = 0.0
  for batch in task.eval_batches():
    sums = task.eval_fn(params, batch)
    total += float(sums['loss'][1])
    assert len(batch['x']) % 8 == 0
  expected = 359 if 'digits' in arg else config.data.eval_batch_size * config.data.eval_batches
  assert total == expected  # padding rows weigh nothing


def test_short_run_through_main_learns(tmp_path):
  """experiments.main on a short adding problem: the loss goes down, below the baseline."""
  workdir = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'experiments.main',
         '--config=configs/long_range.py:adding:lstm:10', f'--workdir={workdir}',
         '--config.model.hidden_size=16', '--config.batch_size=32',
         '--config.total_steps=150', '--config.eval_every=150', '--config.log_every=25',
         '--config.checkpoint_every=150', '--config.optimizer.learning_rate=0.01',
         '--config.data.eval_batch_size=200', '--config.data.eval_batches=1']
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train = [l['metrics']['loss'] for l in lines if l['split'] == 'train']
  final_eval = [l['metrics']['mse'] for l in lines if l['split'] == 'eval'][-1]
  assert train[-1] < 0.5 * train[0]
  assert final_eval < 0.5 * data.ADDING_BASELINE_MSE
  report = json.loads((workdir / 'report.json').read_text())
  norms = report['report']['grad_norm_final']
  assert len(norms) == 10 and all(np.isfinite(norms))
