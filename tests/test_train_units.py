"""In-process checks of the harness's pieces: config validation, optimizers, metric files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lstm_jax.train import ConfigError, base_config, validate
from lstm_jax.train import writers
from lstm_jax.train.optim import make_optimizer


def _config(**overrides):
  c = base_config()
  c.experiment = 'synthetic'
  c.update_from_flattened_dict(overrides)
  return c


def test_base_config_is_valid():
  validate(_config())


@pytest.mark.parametrize('key,value,message', [
    ('total_steps', 0, 'total_steps must be >= 1'),
    ('batch_size', -4, 'batch_size must be >= 1'),
    ('total_steps', 1.5, 'total_steps must be of type int'),
    ('seed', True, 'seed must be of type int'),
    ('best_mode', 'lowest', "best_mode must be one of 'min', 'max'"),
    ('best_metric', 'loss', "best_metric must name an eval metric"),
    ('optimizer.name', 'lion', "optimizer.name must be one of 'adam', 'adamw', 'sgd', 'rmsprop'"),
    ('optimizer.schedule', 'step', "optimizer.schedule must be one of 'constant'"),
    ('optimizer.learning_rate', 0.0, 'optimizer.learning_rate must be > 0'),
    ('optimizer.learning_rate', 'fast', 'optimizer.learning_rate must be of type float'),
    ('optimizer.momentum', 1.0, 'optimizer.momentum must be in [0, 1)'),
    ('optimizer.grad_clip_norm', -1.0, 'optimizer.grad_clip_norm must be >= 0'),
    ('parallelism.mode', 'tpu', "parallelism.mode must be one of 'mesh', 'pmap'"),
    ('parallelism.distributed', 'yes', "parallelism.distributed must be one of"),
    ('parallelism.distributed', 'explicit', 'needs parallelism.coordinator_address'),
    ('parallelism.cpu_devices', -1, 'parallelism.cpu_devices must be >= 0'),
    ('optimizer.lr', 0.5, "unknown config field 'optimizer.lr'; fields at optimizer: "
     'grad_clip_norm, learning_rate,'),
    ('eval_evry', 3, "unknown config field 'eval_evry' (did you mean 'eval_every'?)"),
    ('experiment', '', 'experiment must name an experiment'),
])
def test_validate_rejects(key, value, message):
  config = _config()
  with config.unlocked():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    # Bypass ConfigDict's own type check to see that validate() catches it too.
    node._fields[leaf] = value
  with pytest.raises(ConfigError, match=None) as info:
    validate(config)
  assert message in str(info.value)


def test_warmup_must_fit():
  with pytest.raises(ConfigError, match='warmup_steps'):
    validate(_config(**{'total_steps': 10, 'optimizer.warmup_steps': 10,
                        'optimizer.schedule': 'warmup_cosine'}))


@pytest.mark.parametrize('name', ['adam', 'adamw', 'sgd', 'rmsprop'])
@pytest.mark.parametrize('schedule', ['constant', 'warmup_cosine', 'linear'])
def test_optimizers_and_schedules(name, schedule):
  import jax.numpy as jnp
  c = _config(**{'optimizer.name': name, 'optimizer.schedule': schedule,
                 'optimizer.warmup_steps': 10, 'optimizer.grad_clip_norm': 1.0,
                 'optimizer.weight_decay': 1e-4, 'total_steps': 100})
  tx, schedule_fn = make_optimizer(c.optimizer, c.total_steps)
  assert float(schedule_fn(0)) == pytest.approx(0.0, abs=1e-9)  # Warmup starts at 0.
  assert float(schedule_fn(10)) == pytest.approx(1e-3)  # Peak after warmup.
  if schedule != 'constant':
    assert float(schedule_fn(100)) == pytest.approx(0.0, abs=1e-9)
  params = {'w': jnp.ones(3)}
  updates, _ = tx.update({'w': jnp.full(3, 100.0)}, tx.init(params), params)
  assert np.all(np.isfinite(updates['w']))


def test_metrics_truncation_and_dedupe(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  lines = [{'step': s, 'split': 'train', 'metrics': {'loss': float(s)}} for s in (1, 2, 3, 4)]
  path.write_text(''.join(json.dumps(l) + '\n' for l in lines) + '{"step": 5, "spl')
  writers._truncate_jsonl(str(path), 2)  # What a resume from step 2 does.
  assert [json.loads(l)['step'] for l in path.read_text().splitlines()] == [1, 2]
  with open(path, 'a') as f:  # A file appended to without truncation: readers dedupe.
    f.write(json.dumps({'step': 2, 'split': 'train', 'metrics': {'loss': 9.0}}) + '\n')
  records = writers.read_metrics(str(path))
  assert [(r['step'], r['metrics']['loss']) for r in records] == [(1, 1.0), (2, 9.0)]


def test_config_file_moves_before_overrides():
  from lstm_jax.train.cli import config_file_first
  argv = ['main', '--config.a=1', '--workdir=w', '--config=c.py:x', '--config.b=2']
  assert config_file_first(argv) == ['main', '--config=c.py:x', '--config.a=1', '--workdir=w',
                                     '--config.b=2']
  assert config_file_first(['main', '--config.a=1', '--config', 'c.py']) == [
      'main', '--config', 'c.py', '--config.a=1']


def test_cpu_devices_cannot_change_a_running_jax():
  import jax
  from lstm_jax import parallel
  running = len(jax.devices('cpu'))  # Starts JAX if nothing here has yet.
  assert parallel.set_cpu_devices(1) == 1  # The default touches nothing.
  assert parallel.set_cpu_devices(running) == running  # Already so: fine.
  with pytest.raises(RuntimeError, match=f'cannot split the CPU into {running + 1}; set the '
                     'count before any JAX computation'):
    parallel.set_cpu_devices(running + 1)


def test_experiment_sections_are_not_unknown_fields():
  c = _config()
  with c.unlocked():
    c.decode = base_config().optimizer.copy_and_resolve_references()  # Any ConfigDict.
    c.model.anything = 1
  validate(c)


def test_progress_eta_runs_from_the_compiled_step_and_past_a_day(monkeypatch):
  clock = [1000.0]
  monkeypatch.setattr(writers.time, 'time', lambda: clock[0])
  progress = writers.Progress(1_000_000, 0)
  clock[0] += 30.0  # Compiling the first step: not part of the pace.
  progress.start_clock(1)
  assert progress._eta(1) == '?'
  clock[0] += 100.0  # 1000 steps in 100 s; 998,999 to go at 0.1 s: 27 h 44 min 59 s.
  assert progress._eta(1001) == '27:44:59'


def test_distributed_auto_needs_both_process_variables(monkeypatch):
  from lstm_jax import parallel
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '127.0.0.1:1')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
  with pytest.raises(ValueError, match='JAX_PROCESS_ID is not set'):
    parallel.initialize_distributed('auto')
