"""Experiments: one module per task family, each exposing `build_task(config) -> Task`.

`EXPERIMENTS` maps `config.experiment` to the module; modules are imported only when
chosen, so one experiment's heavy imports (datasets, ...) never slow down another.
Adding a task = one module here + one `configs/NAME.py` + one line below.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lstm_jax.train.errors import ConfigError

EXPERIMENTS = {
    'synthetic': 'experiments.synthetic',
    'long_range': 'experiments.long_range',
    'forecasting': 'experiments.forecasting',
    'chorales': 'experiments.chorales',
    'speech': 'experiments.speech',
    'translation': 'experiments.translation',
}


def get_experiment(name: str) -> ModuleType:
  """The experiment module registered as `name`."""
  if name not in EXPERIMENTS:
    raise ConfigError(f'experiment must be one of {", ".join(map(repr, sorted(EXPERIMENTS)))}; '
                      f'got {name!r}.')
  module = importlib.import_module(EXPERIMENTS[name])
  if not hasattr(module, 'build_task'):
    raise ConfigError(f'experiment {name!r} ({EXPERIMENTS[name]}) defines no build_task(config).')
  return module
