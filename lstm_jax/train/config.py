"""The fields every run shares, their defaults, and their validation.

Each `configs/NAME.py:get_config()` starts from `base_config()` and fills in `model.*` and
`data.*` (which belong to the experiment) and overrides what it needs. `validate` runs
before anything is compiled, so a bad value fails in a second with a message naming it.
"""

from __future__ import annotations

import difflib
from typing import Any

import ml_collections
from ml_collections import config_dict

from lstm_jax.train.errors import ConfigError

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'rmsprop')
SCHEDULES = ('constant', 'warmup_cosine', 'linear')
BEST_MODES = ('min', 'max')
PARALLEL_MODES = ('mesh', 'pmap')
DISTRIBUTED = ('none', 'auto', 'explicit')


def base_config() -> ml_collections.ConfigDict:
  """The shared defaults. Every field here is type-checked by `validate`."""
  c = ml_collections.ConfigDict()
  c.experiment = ''  # A key of experiments.EXPERIMENTS.
  c.seed = 0  # Parameters from PRNGKey(seed); step s uses fold_in(PRNGKey(seed), s).
  c.total_steps = 1000
  c.batch_size = 32  # Global: split over processes, then over each process's devices.
  c.log_every = 50  # Train metrics (means over the interval) every this many steps.
  c.eval_every = 500  # Eval (and a checkpoint, so the best can be kept) every N steps.
  c.checkpoint_every = 500  # Periodic checkpoints; the final step is always saved.
  c.keep_checkpoints = 3  # The latest N, plus the best by best_metric.
  c.best_metric = 'eval/loss'
  c.best_mode = 'min'  # 'min' or 'max'.

  c.model = ml_collections.ConfigDict()  # Experiment-specific.
  c.data = ml_collections.ConfigDict()  # Experiment-specific.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'  # adam | adamw | sgd | rmsprop.
  c.optimizer.learning_rate = 1e-3  # Peak learning rate.
  c.optimizer.schedule = 'constant'  # constant | warmup_cosine | linear (decay to 0).
  c.optimizer.warmup_steps = 0  # Linear warmup from 0 (all schedules).
  c.optimizer.grad_clip_norm = 0.0  # Clip gradients to this global norm; 0 = off.
  c.optimizer.weight_decay = 0.0  # Decoupled for adamw; added to the gradient otherwise.
  c.optimizer.momentum = 0.9  # sgd (heavy ball) and rmsprop; 0 = plain sgd.
  c.optimizer.nesterov = False  # sgd only.

  c.parallelism = ml_collections.ConfigDict()
  # 'mesh': jit over a Mesh of all devices, batch sharded on 'data', params replicated.
  # 'pmap': the same computation through jax.pmap (a check, and for old habits).
  c.parallelism.mode = 'mesh'
  # CPU only: split the host into this many XLA devices for data parallelism over cores
  # (0 = one per core); 1 = JAX's default single CPU device. The loss then differs from a
  # one-device run in the last bits, as any change of device count does.
  c.parallelism.cpu_devices = 1
  # 'none': one process. 'auto': jax.distributed.initialize() detects SLURM, Open MPI,
  # TPU pods, or reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID; runs
  # as one process if it finds nothing. 'explicit': the three fields below.
  c.parallelism.distributed = 'none'
  c.parallelism.coordinator_address = config_dict.placeholder(str)  # 'host:port'.
  c.parallelism.coordinator_bind_address = config_dict.placeholder(str)
  c.parallelism.num_processes = config_dict.placeholder(int)
  c.parallelism.process_id = config_dict.placeholder(int)
  c.parallelism.heartbeat_timeout_seconds = 100  # A dead peer is noticed after this.
  c.parallelism.initialization_timeout = 300
  return c


def _type_name(value: Any) -> str:
  return type(value).__name__


def _check_unknown(config: Any, reference: Any, prefix: str) -> None:
  """Fields the harness does not know: an error, except experiment sections (ConfigDicts
  such as `decode`) at the top level; `model` and `data` belong to the experiment."""
  for key in config.keys():
    if key in reference or (not prefix and isinstance(config[key], ml_collections.ConfigDict)):
      continue
    close = difflib.get_close_matches(key, list(reference.keys()), n=1)
    hint = f' (did you mean {prefix + close[0]!r}?)' if close else ''
    raise ConfigError(f'unknown config field {prefix + key!r}{hint}; fields at '
                      f'{prefix.rstrip(".") or "the top level"}: '
                      f'{", ".join(sorted(reference.keys()))}.')


def _check_types(config: Any, reference: Any, prefix: str = '') -> None:
  """Every field of `reference` present in `config` has the reference's type, and
  `config` has no field the reference lacks (see _check_unknown)."""
  _check_unknown(config, reference, prefix)
  for key, ref in reference.items():
    name = prefix + key
    if key not in config:
      raise ConfigError(f'config is missing the field {name!r} (start get_config() from '
                        'lstm_jax.train.base_config()).')
    value = config[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f'{name} must be a ConfigDict, got {_type_name(value)}.')
      if key not in ('model', 'data'):
        _check_types(value, ref, name + '.')
      continue
    if value is None:
      continue
    expected = type(ref) if ref is not None else None
    if expected is None:
      continue
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
      ok = True
    if not ok:
      raise ConfigError(f'{name} must be of type {expected.__name__}, got '
                        f'{_type_name(value)} {value!r}.')


def _one_of(name: str, value: Any, allowed: tuple) -> None:
  if value not in allowed:
    raise ConfigError(f'{name} must be one of {", ".join(map(repr, allowed))}; got {value!r}.')


def _at_least(name: str, value: Any, low: float) -> None:
  if value < low:
    raise ConfigError(f'{name} must be >= {low}; got {value!r}.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the shared fields before anything is built; raises ConfigError.

  What depends on the devices (batch divisibility) is checked by the trainer once
  `jax.distributed` is up, still before compiling.
  """
  reference = base_config()
  # Placeholders have no value to take a type from: check them by hand.
  for key in ('coordinator_address', 'coordinator_bind_address'):
    value = config.parallelism.get(key)
    if value is not None and not isinstance(value, str):
      raise ConfigError(f'parallelism.{key} must be a string, got {value!r}.')
  for key in ('num_processes', 'process_id'):
    value = config.parallelism.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
      raise ConfigError(f'parallelism.{key} must be an int, got {value!r}.')
  _check_types(config, reference)

  if not config.experiment:
    raise ConfigError('experiment must name an experiment (set it in get_config()).')
  for name in ('total_steps', 'batch_size', 'log_every', 'eval_every', 'checkpoint_every',
               'keep_checkpoints'):
    _at_least(name, config[name], 1)
  _at_least('seed', config.seed, 0)
  if not config.best_metric.startswith('eval/'):
    raise ConfigError("best_metric must name an eval metric, 'eval/NAME' (e.g. 'eval/loss'); "
                      f'got {config.best_metric!r}.')
  _one_of('best_mode', config.best_mode, BEST_MODES)

  opt = config.optimizer
  _one_of('optimizer.name', opt.name, OPTIMIZERS)
  _one_of('optimizer.schedule', opt.schedule, SCHEDULES)
  if not opt.learning_rate > 0:
    raise ConfigError(f'optimizer.learning_rate must be > 0; got {opt.learning_rate!r}.')
  _at_least('optimizer.warmup_steps', opt.warmup_steps, 0)
  if opt.warmup_steps >= config.total_steps and opt.schedule != 'constant':
    raise ConfigError(f'optimizer.warmup_steps ({opt.warmup_steps}) must be < total_steps '
                      f'({config.total_steps}) with schedule {opt.schedule!r}.')
  _at_least('optimizer.grad_clip_norm', opt.grad_clip_norm, 0.0)
  _at_least('optimizer.weight_decay', opt.weight_decay, 0.0)
  if not 0.0 <= opt.momentum < 1.0:
    raise ConfigError(f'optimizer.momentum must be in [0, 1); got {opt.momentum!r}.')

  par = config.parallelism
  _one_of('parallelism.mode', par.mode, PARALLEL_MODES)
  _one_of('parallelism.distributed', par.distributed, DISTRIBUTED)
  _at_least('parallelism.cpu_devices', par.cpu_devices, 0)
  _at_least('parallelism.heartbeat_timeout_seconds', par.heartbeat_timeout_seconds, 1)
  _at_least('parallelism.initialization_timeout', par.initialization_timeout, 1)
  if par.distributed == 'explicit':
    missing = [k for k in ('coordinator_address', 'num_processes', 'process_id')
               if par.get(k) is None]
    if missing:
      raise ConfigError("parallelism.distributed='explicit' needs "
                        + ', '.join(f'parallelism.{k}' for k in missing) + '.')
    _at_least('parallelism.num_processes', par.num_processes, 1)
    if not 0 <= par.process_id < par.num_processes:
      raise ConfigError(f'parallelism.process_id must be in [0, {par.num_processes}); '
                        f'got {par.process_id}.')
