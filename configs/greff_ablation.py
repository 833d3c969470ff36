"""The reduced Greff et al. 2017 ablation ("LSTM: A Search Space Odyssey") run on CPU.

    python -m experiments.sweep --config=configs/greff_ablation.py:chorales --workdir=results/ablation/chorales --parallel=2
    python -m experiments.sweep --config=configs/greff_ablation.py:adding --workdir=results/ablation/adding --parallel=2

ARG = TASK[:VARIANT]: TASK 'chorales' (experiments/chorales.py, music21's Bach chorales,
NLL per step) or 'adding' (experiments/long_range.py's adding problem, lag ADDING_LAG);
VARIANT one of V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR (default V). Budget per run:
a 1-layer LSTM of HIDDEN[TASK] units, STEPS[TASK] Adam steps; `sweep(arg)` = the 9 variants x SEEDS[TASK].
On chorales the variant is the field model.variant; on adding it is the config ARG (the
long_range config builds its model from ARG), so adding points are named 'arg=adding:NFG'.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterator, Optional

import ml_collections

VARIANTS = ('V', 'NIG', 'NFG', 'NOG', 'NIAF', 'NOAF', 'NP', 'CIFG', 'FGR')
TASKS = ('chorales', 'adding')
SEEDS = {'chorales': 5, 'adding': 3}
HIDDEN = {'chorales': 64, 'adding': 32}
STEPS = {'chorales': 1000, 'adding': 1500}
ADDING_LAG = 30


def _sibling(name: str):
  """configs/NAME.py as a module (configs/ is not a package; load it by path)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_greff_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _parse(arg: Optional[str]) -> tuple[str, str]:
  task, _, variant = (arg or 'chorales').partition(':')
  variant = variant or 'V'
  if task not in TASKS:
    raise ValueError(f'TASK must be one of {TASKS}, got {task!r}.')
  if variant not in VARIANTS:
    raise ValueError(f'VARIANT must be one of {VARIANTS}, got {variant!r}.')
  return task, variant


def get_config(arg: str = 'chorales') -> ml_collections.ConfigDict:
  task, variant = _parse(arg)
  if task == 'chorales':
    c = _sibling('chorales').get_config('default')
    c.model.variant = variant
    c.batch_size = 16
    c.data.train_length = 32
  else:
    c = _sibling('long_range').get_config(f'adding:lstm_{variant}:{ADDING_LAG}')
    c.batch_size = 32
    c.data.eval_batches = 2  # 500 fresh sequences.
  c.model.hidden_size = HIDDEN[task]
  c.total_steps = STEPS[task]
  c.log_every = 25
  c.eval_every = 100
  c.checkpoint_every = STEPS[task]  # Only the final one: the ablation never resumes mid-run.
  c.keep_checkpoints = 1
  return c


def sweep(arg: Optional[str] = None) -> Iterator[dict]:
  """The 9 variants x SEEDS[TASK] seeds of TASK (the VARIANT part of ARG is ignored)."""
  from lstm_jax import sweeps  # Imported here: get_config stays cheap.
  task, _ = _parse(arg)
  if task == 'chorales':
    grid = sweeps.product({'model.variant': VARIANTS})
  else:
    grid = sweeps.product({'config': [f'adding:{v}' for v in VARIANTS]})
  yield from sweeps.seeds(grid, SEEDS[task])
