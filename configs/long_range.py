"""Long-term-dependency study: `--config=configs/long_range.py:TASK:CELL:LAG`.

TASK: adding | copy | order | order3 | digits | pdigits (see experiments/long_range.py).
CELL: lstm (forget bias 1) | lstm_fb0 | lstm_fb1 | lstm_chrono (chrono init with
  chrono_max_length = the task's sequence length) | lstm_<GREFF> (a Greff et al. variant,
  e.g. lstm_NFG, lstm_CIFG) | gru | rnn (vanilla tanh).
LAG: T (the digits ignore it: 64 steps).

Examples: `adding:lstm:200`, `copy:rnn:100`, `adding:lstm_chrono:500`, `pdigits:gru:64`.
`sweep()` yields the override dicts of the full grid of the study.
"""

from __future__ import annotations

from typing import Iterator

import ml_collections

LAGS = (50, 100, 200, 500, 1000)
CELLS = ('lstm', 'gru', 'rnn')
FORGET_INITS = ('lstm_fb0', 'lstm_fb1', 'lstm_chrono')
TASKS = ('adding', 'copy', 'order', 'order3', 'digits', 'pdigits')


def sequence_length(task: str, lag: int) -> int:
  """The number of steps the model reads (copy adds 20 to the lag; digits are 64)."""
  if task == 'copy':
    return lag + 20
  if task in ('digits', 'pdigits'):
    return 64
  return lag


def model_config(cell: str, task: str, lag: int, hidden_size: int) -> dict:
  """The `lstm_jax.RNN` keyword arguments for a CELL token."""
  from lstm_jax.cells import greff_variant  # Imported here: configs stay cheap to load.
  model = dict(hidden_size=hidden_size)
  if cell in ('gru', 'rnn'):
    return dict(model, cell_type=cell)
  model['cell_type'] = 'lstm'
  if cell == 'lstm':
    return model
  suffix = cell.removeprefix('lstm_')
  if suffix == 'fb0':
    model['forget_bias'] = 0.0
  elif suffix == 'fb1':
    model['forget_bias'] = 1.0
  elif suffix == 'chrono':
    model.update(forget_bias_init='chrono', chrono_max_length=sequence_length(task, lag))
  else:
    model.update(greff_variant(suffix))
  return model


def get_config(arg: str = 'adding:lstm:200') -> ml_collections.ConfigDict:
  from lstm_jax.train.config import base_config
  task, cell, lag = (arg.split(':') + ['', '', ''])[:3]
  task = task or 'adding'
  cell = cell or 'lstm'
  lag = int(lag or 200)
  if task not in TASKS:
    raise ValueError(f'TASK must be one of {TASKS}, got {task!r}.')
  if task in ('digits', 'pdigits'):
    lag = 64
  config = base_config()
  config.experiment = 'long_range'
  config.seed = 0
  # Exactly the lstm_jax.RNN keyword arguments.
  config.model = ml_collections.ConfigDict(model_config(cell, task, lag, hidden_size=128))

  config.data.task = task
  config.data.lag = lag
  config.data.cell = cell  # The CELL token, for run names and tables.
  config.data.name = f'{task}-{cell}-T{lag}'
  config.data.eval_batch_size = 250
  config.data.eval_batches = 4  # 1000 fresh sequences (the digits: their 359 test images).

  config.batch_size = 64
  config.total_steps = 5000
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.grad_clip_norm = 1.0  # Keeps the tanh RNN's rare gradient spikes finite.
  config.eval_every = 100  # Fine enough to read 'steps to solve' from eval/ metrics.
  config.log_every = 50
  config.checkpoint_every = 1000
  return config


def sweep() -> Iterator[dict]:
  """The full grid: every task x cell x lag, then the forget-bias inits on adding/copy."""
  for task in TASKS:
    lags = (64,) if task in ('digits', 'pdigits') else LAGS
    for lag in lags:
      for cell in CELLS:
        yield {'config': f'{task}:{cell}:{lag}'}
  for task in ('adding', 'copy'):
    for lag in LAGS:
      for cell in FORGET_INITS:
        yield {'config': f'{task}:{cell}:{lag}'}
