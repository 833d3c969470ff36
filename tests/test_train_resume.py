"""Interruptions: SIGTERM, kill -9, corrupt checkpoints and NaN losses."""

from __future__ import annotations

import os
import shutil
import signal

from conftest import REFERENCE, REFERENCE_STEPS, reference_until


def _checkpoint_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def test_sigterm_and_kill9_then_resume_match_uninterrupted(train_cli, reference_run, tmp_path):
  expected = train_cli.losses(reference_run)
  workdir = tmp_path / 'run'
  # SIGTERM: the run saves a checkpoint at the step it stopped at and exits cleanly.
  proc = train_cli.start(workdir, *REFERENCE)
  train_cli.wait_for_step(workdir, proc, 25)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err[-3000:]
  assert 'stopped by SIGTERM/preemption at step' in err
  stopped = int(err.split('stopped by SIGTERM/preemption at step ')[1].split(';')[0])
  assert stopped < REFERENCE_STEPS and stopped in _checkpoint_steps(workdir)

  # kill -9: no chance to save; resumes from the last periodic checkpoint.
  proc = train_cli.start(workdir, *REFERENCE)
  killed_at = train_cli.wait_for_step(workdir, proc, stopped + 25)
  proc.kill()
  proc.wait(timeout=30)
  assert killed_at < REFERENCE_STEPS

  proc = train_cli.run(workdir, *REFERENCE)
  assert 'resuming from step' in proc.stderr
  losses = train_cli.losses(workdir)  # Also asserts that no step is logged twice.
  assert sorted(losses) == list(range(1, REFERENCE_STEPS + 1))
  # Same device count, same programs: bit-identical, not merely close.
  assert losses == expected
  assert train_cli.losses(workdir, 'eval') == train_cli.losses(reference_run, 'eval')


def test_corrupt_latest_checkpoint_falls_back(train_cli, reference_losses, tmp_path):
  workdir = tmp_path / 'run'
  train_cli.run(workdir, *reference_until(60))
  ckpts = workdir / 'checkpoints'
  assert _checkpoint_steps(workdir)[-2:] == [50, 60]
  for path in (ckpts / '60').rglob('*'):
    if path.is_file() and path.parent.name != 'metrics':
      path.write_bytes(os.urandom(64))
  # A save killed half-way leaves an unfinalized tmp directory: it must be ignored.
  partial = ckpts / '65.orbax-checkpoint-tmp-1234'
  shutil.copytree(ckpts / '50', partial)

  proc = train_cli.run(workdir, *REFERENCE)
  assert 'Traceback' not in proc.stderr
  assert 'checkpoint(s) at step(s) [60] could not be read' in proc.stderr
  assert 'Resuming from step 50' in proc.stderr
  moved = list((workdir / 'checkpoints_corrupt').iterdir())
  assert [p.name.split('.')[0] for p in moved] == ['60']  # Moved aside, not deleted.
  assert partial.is_dir()  # Ignored and left alone.
  losses = train_cli.losses(workdir)
  assert sorted(losses) == list(range(1, REFERENCE_STEPS + 1))
  assert losses == reference_losses

  # A readable checkpoint that does not fit the config is the user's call, not corruption.
  proc = train_cli.run(workdir, *REFERENCE, '--config.model.hidden_size=16', check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert 'does not fit this config: params/' in proc.stderr, proc.stderr
  assert (ckpts / str(REFERENCE_STEPS)).is_dir()  # Nothing moved.


def test_corrupt_array_data_falls_back_quietly(train_cli, tmp_path):
  # Readable metadata, garbage array data: the restore fails mid-read while other reads are
  # in flight, which must not spray tracebacks from Orbax's closed event loop.
  workdir = tmp_path / 'run'
  args = ('--config.checkpoint_every=10', '--config.eval_every=1000')
  train_cli.run(workdir, '--config.total_steps=20', *args)
  data_files = [p for p in (workdir / 'checkpoints' / '20').rglob('*')
                if p.is_file() and p.parent.name == 'd']
  assert data_files
  for path in data_files:
    path.write_bytes(os.urandom(64))
  proc = train_cli.run(workdir, '--config.total_steps=30', *args)
  assert 'checkpoint(s) at step(s) [20] could not be read' in proc.stderr
  assert 'Resuming from step 10' in proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]


def test_nan_guard(train_cli, tmp_path):
  workdir = tmp_path / 'run'
  proc = train_cli.run(workdir, '--config.data.inject_nan_step=9', check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  # Batch 9 (0-based) feeds the 10th update; tiny checkpoints every 4 steps, so 8 is good.
  assert 'non-finite train/loss (nan) at step 10' in proc.stderr, proc.stderr
  assert 'Last good checkpoint: step 8' in proc.stderr
  assert max(_checkpoint_steps(workdir)) == 8


def _tensorboard_events(workdir):
  """Every Event in the run's TensorBoard files (TFRecord framing, tensorboardX's proto)."""
  from tensorboardX.proto import event_pb2
  events = []
  for path in sorted((workdir / 'tensorboard').glob('events.out.tfevents.*')):
    data = path.read_bytes()
    at = 0
    while at < len(data):
      length = int.from_bytes(data[at:at + 8], 'little')
      events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
      at += 12 + length + 4
  return events


def test_restart_before_the_first_checkpoint_purges_old_events(train_cli, tmp_path):
  # A run stopped (NaN) before any checkpoint restarts from 0 and rewrites steps 1-5;
  # TensorBoard must drop the old ones (a SessionLog START at step 1 tells it to).
  workdir = tmp_path / 'run'
  sparse = ('--config.checkpoint_every=100', '--config.eval_every=100', '--config.log_every=1')
  proc = train_cli.run(workdir, *sparse, '--config.data.inject_nan_step=5', check=False)
  assert proc.returncode == 2 and 'Last good checkpoint: none' in proc.stderr, proc.stderr
  train_cli.run(workdir, *sparse)
  starts = [e.step for e in _tensorboard_events(workdir)
            if e.HasField('session_log') and e.session_log.status == e.session_log.START]
  assert 1 in starts, starts


def test_resume_beyond_total_steps_is_a_clean_error(train_cli, tmp_path):
  workdir = tmp_path / 'run'
  train_cli.run(workdir)  # The tiny config: 12 steps.
  proc = train_cli.run(workdir, '--config.total_steps=8', check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
  assert 'checkpoint at step 12, beyond total_steps=8' in proc.stderr
