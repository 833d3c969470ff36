"""JSB-style chorales (music21's Bach chorales as piano rolls), next-frame Bernoulli NLL.

    python -m experiments.main --config=configs/chorales.py --workdir=workdirs/chorales
    python -m experiments.main --config=configs/chorales.py:tiny --workdir=/tmp/ch  # seconds

`model.variant` picks a Greff et al. 2017 variant (V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG,
FGR; see lstm_jax.cells.GREFF_VARIANTS). `sweep()` is the full variant x 5-seed ablation;
configs/greff_ablation.py is the reduced one run on CPU. Needs `pip install music21`.
"""

from __future__ import annotations

from typing import Iterator

import ml_collections

from lstm_jax import sweeps
from lstm_jax.train.config import base_config

VARIANTS = ('V', 'NIG', 'NFG', 'NOG', 'NIAF', 'NOAF', 'NP', 'CIFG', 'FGR')


def get_config(arg: str = 'default') -> ml_collections.ConfigDict:
  if arg not in ('default', 'tiny'):
    raise ValueError(f"ARG must be 'default' or 'tiny', got {arg!r}.")
  c = base_config()
  c.experiment = 'chorales'
  c.seed = 0
  c.total_steps = 3000
  c.batch_size = 32
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  c.keep_checkpoints = 1
  c.best_metric = 'eval/nll_per_step'
  c.best_mode = 'min'

  c.model.hidden_size = 128
  c.model.num_layers = 1
  c.model.variant = 'V'  # A key of lstm_jax.cells.GREFF_VARIANTS.
  c.model.forget_bias = 1.0

  c.data.step = 1.0  # Quarter notes per time step (0.5 = eighth notes).
  c.data.train_length = 64  # Frames predicted per training window.
  c.data.eval_length = 272  # The longest chorale at quarter-note steps: all of each.
  c.data.eval_split = 'valid'  # 'test' for final numbers.
  c.data.eval_batch_size = 64
  c.data.cache_dir = ''  # '' = $LSTM_JAX_DATA or ~/.cache/lstm_jax.

  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-2
  c.optimizer.grad_clip_norm = 1.0

  if arg == 'tiny':
    c.total_steps = 4
    c.batch_size = 4
    c.log_every = 1
    c.eval_every = 4
    c.checkpoint_every = 4
    c.model.hidden_size = 8
    c.data.train_length = 16
    c.data.eval_length = 32
    c.data.eval_batch_size = 16
  return c


def sweep() -> Iterator[dict]:
  """Every Greff et al. variant over 5 seeds (45 runs)."""
  yield from sweeps.seeds(sweeps.product({'model.variant': VARIANTS}), 5)
