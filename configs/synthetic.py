"""Synthetic running count mod 3, tagged by an LSTM: the harness's smoke test (~20 s CPU).

    python -m experiments.main --config=configs/synthetic.py --workdir=workdirs/synthetic

ARG 'tiny' (`--config=configs/synthetic.py:tiny`) is a seconds-long version for tests.
"""

from __future__ import annotations

import ml_collections

from lstm_jax.train.config import base_config


def get_config(arg: str = 'default') -> ml_collections.ConfigDict:
  if arg not in ('default', 'tiny'):
    raise ValueError(f"ARG must be 'default' or 'tiny', got {arg!r}.")
  c = base_config()
  c.experiment = 'synthetic'
  c.seed = 0
  c.total_steps = 600
  c.batch_size = 32
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.keep_checkpoints = 2

  c.model.hidden_size = 32
  c.model.num_layers = 1
  c.model.dropout = 0.0

  c.data.min_length = 4
  c.data.max_length = 20
  c.data.num_eval = 500
  c.data.eval_batch_size = 128  # Global; the last batch is padded (weight 0).
  c.data.inject_nan_step = -1  # Tests: NaN inputs at this step.

  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-2
  c.optimizer.schedule = 'warmup_cosine'
  c.optimizer.warmup_steps = 50
  c.optimizer.grad_clip_norm = 1.0

  if arg == 'tiny':
    c.total_steps = 12
    c.batch_size = 16
    c.log_every = 1
    c.eval_every = 6
    c.checkpoint_every = 4
    c.model.hidden_size = 8
    c.data.min_length = 3
    c.data.max_length = 8
    c.data.num_eval = 20
    c.data.eval_batch_size = 16
    c.optimizer.schedule = 'constant'
    c.optimizer.warmup_steps = 0
  return c
