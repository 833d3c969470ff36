"""The same global batch gives the same losses whatever the devices, processes or mode;
in pmap mode each device draws its own dropout masks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from conftest import REFERENCE, REFERENCE_STEPS, REPO, reference_until
from lstm_jax import parallel


def _assert_same(losses: dict, reference: dict, steps=None) -> None:
  steps = sorted(steps or reference)
  assert sorted(losses) == steps, (sorted(losses), steps)
  np.testing.assert_allclose([losses[s] for s in steps], [reference[s] for s in steps],
                             rtol=2e-5, atol=1e-6)


def test_8_devices_match_1_and_restore_on_1(train_cli, reference_losses, tmp_path):
  # 8 forced host devices for the first half; the checkpoint they write is restored on
  # 1 device for the second half. Both halves must follow the 1-device run.
  workdir = tmp_path / 'run'
  half = REFERENCE_STEPS // 2
  proc = train_cli.run(workdir, *reference_until(half), devices=8)
  assert 'on 8 device(s)' in proc.stderr
  _assert_same(train_cli.losses(workdir), reference_losses, range(1, half + 1))
  proc = train_cli.run(workdir, *REFERENCE, devices=1)
  assert f'resuming from step {half} on 1 device(s)' in proc.stderr
  _assert_same(train_cli.losses(workdir), reference_losses)


def test_cpu_devices_split_the_cpu_and_match_1(train_cli, reference_losses, tmp_path):
  # The config overrides XLA_FLAGS (train_cli sets 1 device). 0 = one device per core,
  # where the tiny config's batch of 16 splits evenly over the cores.
  cores = parallel.cpu_cores()  # What cpu_devices=0 splits the CPU into.
  value, devices = (0, cores) if 16 % cores == 0 else (2, 2)
  proc = train_cli.run(tmp_path / 'run', *REFERENCE, f'--config.parallelism.cpu_devices={value}')
  assert f'on {devices} device(s)' in proc.stderr
  _assert_same(train_cli.losses(tmp_path / 'run'), reference_losses)


def test_pmap_matches_jit(train_cli, reference_losses, tmp_path):
  workdir = tmp_path / 'run'
  proc = train_cli.run(workdir, *REFERENCE, '--config.parallelism.mode=pmap', devices=4)
  assert 'mode=pmap' in proc.stderr and 'on 4 device(s)' in proc.stderr
  _assert_same(train_cli.losses(workdir), reference_losses)


def test_2_processes_x_2_devices_match_1_process(train_cli, reference_losses, tmp_path):
  workdir = tmp_path / 'run'
  port = train_cli.free_port()
  procs = [train_cli.start(
      workdir, *REFERENCE, '--config.parallelism.distributed=explicit',
      f'--config.parallelism.coordinator_address=127.0.0.1:{port}',
      f'--config.parallelism.coordinator_bind_address=127.0.0.1:{port}',
      '--config.parallelism.num_processes=2', f'--config.parallelism.process_id={i}',
      '--config.parallelism.heartbeat_timeout_seconds=10', devices=2) for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=150))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  assert '2 process(es)' in outputs[0][1] and 'on 4 device(s)' in outputs[0][1]
  _assert_same(train_cli.losses(workdir), reference_losses)


PMAP_DROPOUT_SCRIPT = '''
import types
import jax, jax.numpy as jnp, numpy as np, optax
from lstm_jax import parallel
from lstm_jax.train.state import TrainState
from lstm_jax.train.trainer import make_steps

def loss_fn(params, batch, rng, train):
  keep = jax.random.bernoulli(rng, 0.5, batch['x'].shape)  # a dropout mask
  kept = jnp.mean(keep.astype(jnp.float32))
  return jnp.mean(params['w'] * batch['x'] * keep), {'kept': kept, 'kept_sq': kept ** 2}

task = types.SimpleNamespace(loss_fn=loss_fn, eval_fn=None)
tx = optax.sgd(0.1)
mesh = parallel.make_mesh()
train, _ = make_steps(task, tx, lambda step: 0.1, 0, 'pmap', mesh)
state = TrainState.create({'w': jnp.ones(())}, tx)
rows = np.ones((8, 64), np.float32)  # the same examples on every device
_, metrics = train(state, parallel.pmap_batch({'x': rows}, mesh))
# Metrics are means over devices: mean(kept^2) - mean(kept)^2 is the spread of the
# devices' kept fractions, exactly 0 if they all drew the same mask.
print(float(metrics['kept_sq'] - metrics['kept'] ** 2))
'''


def test_pmap_devices_draw_their_own_dropout_masks(train_cli):
  proc = subprocess.run([sys.executable, '-c', PMAP_DROPOUT_SCRIPT], cwd=REPO,
                        env=train_cli.env(devices=4), capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  spread = float(proc.stdout.strip().splitlines()[-1])
  assert spread > 1e-4, spread
