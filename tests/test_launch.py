"""The launch scripts, run for real (no mocks).

`launch/local.sh` always runs. The SLURM and Open MPI tests need root and Debian's
slurmctld/slurmd/munge/openmpi-bin, so they run only with LSTM_JAX_CLUSTER_TESTS=1
(`.ci/run` installs the packages and sets it): a one-node SLURM cluster on 127.0.0.1 is
started by `launch/slurm_local_cluster.sh`, the project's own `launch/slurm.sbatch` is
submitted with 2 tasks, and the daemons are stopped by PID at the end. Every step runs
under a timeout.

A 2-process run must give the losses of the 1-process reference run (same global batch),
within the tolerance of test_train_parallel.py: the sum over the batch is reduced in a
different order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, REFERENCE_STEPS, REPO, TINY, reference_until

CLUSTER = os.environ.get('LSTM_JAX_CLUSTER_TESTS') == '1'
needs_cluster = pytest.mark.skipif(
    not CLUSTER, reason='set LSTM_JAX_CLUSTER_TESTS=1 (root; installs SLURM, munge, Open MPI)')


def _assert_losses_match(losses: dict[int, float], reference: dict[int, float]) -> None:
  assert sorted(losses) == sorted(reference)
  steps = sorted(reference)
  np.testing.assert_allclose([losses[s] for s in steps], [reference[s] for s in steps],
                             rtol=2e-5, atol=1e-6)


def _assert_both_processes(log: str) -> None:
  for i in range(2):
    assert f'jax.distributed: process {i} of 2' in log, log[-3000:]


def test_local_launcher_matches_one_process(train_cli, reference_losses, tmp_path):
  workdir = tmp_path / 'run'
  env = train_cli.env(devices=1, NUM_PROCESSES='2', PYTHON=sys.executable)
  proc = subprocess.run(['bash', 'launch/local.sh', f'--config={TINY}',
                         f'--workdir={workdir}', *REFERENCE], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240)
  logs = ''.join(p.read_text() for p in sorted((workdir / 'logs').glob('process_*.log')))
  assert proc.returncode == 0, proc.stderr + logs[-3000:]
  _assert_both_processes(logs)
  _assert_losses_match(train_cli.losses(workdir), reference_losses)


def test_local_launcher_stops_the_group_when_one_process_dies(train_cli, tmp_path):
  """One process killed mid-run: the launcher stops the other and fails, within bounds."""
  workdir = tmp_path / 'run'
  env = train_cli.env(devices=1, NUM_PROCESSES='2', PYTHON=sys.executable)
  launcher = subprocess.Popen(
      ['bash', 'launch/local.sh', f'--config={TINY}', f'--workdir={workdir}',
       *reference_until(100_000), '--config.parallelism.heartbeat_timeout_seconds=10'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    train_cli.wait_for_step(workdir, launcher, 5, timeout=120)
    victim = _training_pids(workdir)[-1]
    os.kill(victim, 9)
    start = time.time()
    _, err = launcher.communicate(timeout=60)
  finally:
    launcher.kill()
  assert launcher.returncode != 0
  assert time.time() - start < 60
  assert 'stopping the others' in err
  assert not _training_pids(workdir)


def _training_pids(workdir: Path) -> list[int]:
  out = subprocess.run(['pgrep', '-f', f'experiments.main .*--workdir={workdir}'],
                       capture_output=True, text=True).stdout
  return [int(p) for p in out.split()]


# ------------------------------------------------------------------------------ SLURM


@pytest.fixture(scope='module')
def slurm_conf(tmp_path_factory):
  directory = tmp_path_factory.mktemp('slurm')
  script = str(REPO / 'launch/slurm_local_cluster.sh')
  subprocess.run(['bash', script, 'install'], check=True, timeout=900)
  subprocess.run(['bash', script, 'start', str(directory)], check=True, timeout=120)
  try:
    yield directory / 'slurm.conf'
  finally:
    subprocess.run(['bash', script, 'stop', str(directory)], timeout=60)


def _sbatch(train_cli, conf: Path, workdir: Path, *overrides: str, wait: bool = True,
            timeout: float = 300) -> tuple[int, str, Path]:
  """Submits launch/slurm.sbatch with 2 tasks; returns (exit status, job id, output)."""
  env = train_cli.env(devices=1, SLURM_CONF=str(conf), CONFIG=TINY, WORKDIR=str(workdir),
                      PYTHON=sys.executable, COORDINATOR_BIND_HOST='127.0.0.1')
  output = workdir.parent / f'{workdir.name}-slurm-%j.out'
  command = ['sbatch', '--parsable', '--ntasks-per-node=2', f'--output={output}',
             *(['--wait'] if wait else []), 'launch/slurm.sbatch', *overrides]
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)
  job = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else '?'
  return proc.returncode, job, Path(str(output).replace('%j', job))


@needs_cluster
def test_slurm_job_trains_like_one_process(train_cli, slurm_conf, reference_losses,
                                           tmp_path):
  workdir = tmp_path / 'run'
  status, _, output = _sbatch(train_cli, slurm_conf, workdir, *REFERENCE)
  log = output.read_text()
  assert status == 0, log[-4000:]
  _assert_both_processes(log)
  _assert_losses_match(train_cli.losses(workdir), reference_losses)
  # One consistent checkpoint: no half-written directories, and a single process
  # restores the final step from it (and has nothing left to do).
  names = [p.name for p in (workdir / 'checkpoints').iterdir()]
  assert not [n for n in names if 'tmp' in n], names
  rerun = train_cli.run(workdir, *REFERENCE)
  assert f'resuming from step {REFERENCE_STEPS}' in rerun.stderr
  _assert_losses_match(train_cli.losses(workdir), reference_losses)



@needs_cluster
def test_slurm_task_killed_fails_job_then_resubmission_resumes(train_cli, slurm_conf,
                                                                tmp_path):
  steps = 400
  run = (*reference_until(steps), '--config.parallelism.heartbeat_timeout_seconds=10')
  workdir = tmp_path / 'run'
  status, job, output = _sbatch(train_cli, slurm_conf, workdir, *run, wait=False)
  assert status == 0, 'sbatch refused the job'
  squeue = lambda: subprocess.run(['squeue', '-h', '-j', job], capture_output=True,
                                  text=True, env=dict(os.environ, SLURM_CONF=str(slurm_conf)),
                                  timeout=30).stdout.strip()
  deadline = time.time() + 180
  while not _training_pids(workdir) or not (workdir / 'metrics.jsonl').exists():
    assert time.time() < deadline, 'the job did not start training'
    time.sleep(0.2)
  # Kill once a checkpoint is finalized (Orbax renames its temporary directory to the step).
  finalized = lambda: [p for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()]
  while not (workdir / 'checkpoints').exists() or not finalized():
    assert time.time() < deadline, output.read_text()[-3000:] if output.exists() else ''
    time.sleep(0.05)
  os.kill(_training_pids(workdir)[-1], 9)
  killed = time.time()
  while squeue():
    assert time.time() - killed < 90, 'the job did not end after a task was killed'
    time.sleep(0.5)
  state = subprocess.run(['scontrol', 'show', 'job', job], capture_output=True, text=True,
                         env=dict(os.environ, SLURM_CONF=str(slurm_conf)), timeout=30).stdout
  assert 'JobState=FAILED' in state or 'JobState=CANCELLED' in state, state
  assert not _training_pids(workdir)
  done_before = max(train_cli.losses(workdir))
  assert done_before < steps

  status, _, output = _sbatch(train_cli, slurm_conf, workdir, *run)
  log = output.read_text()
  assert status == 0, log[-4000:]
  assert 'resuming from step ' in log and 'resuming from step 0' not in log
  reference = tmp_path / 'reference'
  train_cli.run(reference, *run)
  _assert_losses_match(train_cli.losses(workdir), train_cli.losses(reference))


# ---------------------------------------------------------------------------- Open MPI


@needs_cluster
def test_mpirun_trains_like_one_process(train_cli, reference_losses, tmp_path):
  if not shutil.which('mpirun'):
    subprocess.run(['bash', '-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive '
                    'apt-get install -y -qq --no-install-recommends openmpi-bin >/dev/null'],
                   check=True, timeout=900)
  workdir = tmp_path / 'run'
  env = train_cli.env(devices=1, NUM_PROCESSES='2', PYTHON=sys.executable,
                      MPIRUN_ARGS='--oversubscribe --mca oob_tcp_if_include lo '
                                  '--mca btl_tcp_if_include lo')
  proc = subprocess.run(['bash', 'launch/mpirun.sh', f'--config={TINY}',
                         f'--workdir={workdir}', *REFERENCE], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  _assert_both_processes(proc.stdout + proc.stderr)
  _assert_losses_match(train_cli.losses(workdir), reference_losses)
