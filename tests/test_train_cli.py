"""The training CLI end to end: outputs in the workdir, and clean user errors."""

from __future__ import annotations

import json

import pytest


def test_end_to_end_outputs(train_cli, tmp_path):
  workdir = tmp_path / 'run'
  proc = train_cli.run(workdir)  # tiny: 12 steps, eval at 6 and 12, checkpoints every 4.
  assert 'Traceback' not in proc.stderr

  config = json.loads((workdir / 'config.json').read_text())
  assert config['experiment'] == 'synthetic' and config['total_steps'] == 12

  train = train_cli.records(workdir, 'train')
  assert [r['step'] for r in train] == list(range(1, 13))
  for r in train:
    assert set(r['metrics']) >= {'loss', 'accuracy', 'grad_norm', 'learning_rate'}
    assert r['steps_per_sec'] > 0 and r['time'] > 0
  evals = train_cli.records(workdir, 'eval')
  assert [r['step'] for r in evals] == [6, 12]
  losses = [r['metrics']['loss'] for r in train]
  assert losses[-1] < losses[0]  # It learns.

  report = json.loads((workdir / 'report.json').read_text())
  assert report['step'] == 12
  assert report['eval'] == pytest.approx(evals[-1]['metrics'])
  assert len(report['report']['accuracy_by_position']) == 8  # data.max_length of tiny.
  assert report['best_checkpoint']['metric'] == 'eval/loss'
  # keep_checkpoints=2: the latest two (8, 12) plus the best eval (12 here).
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps == [8, 12]
  assert report['best_checkpoint']['step'] == 12
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert (workdir / 'learning_curves.png').read_bytes()[:4] == b'\x89PNG'

  # Running again on a finished workdir: restores, re-evaluates, no duplicate lines.
  proc = train_cli.run(workdir)
  assert 'resuming from step 12' in proc.stderr
  assert [r['step'] for r in train_cli.records(workdir, 'train')] == list(range(1, 13))


# More values are checked in-process in test_train_units.py; these go through the CLI.
BAD = [
    (['--config.nope=1'], "unknown config field 'nope'"),
    (['--config.optimizer.betas=1'], "fields at optimizer: grad_clip_norm"),
    (['--config.total_steps=abc'], '--config.total_steps=abc'),
    (['--config.total_steps=-3'], 'total_steps must be >= 1'),
    (['--config.optimizer.name=lion'], "optimizer.name must be one of 'adam', 'adamw', 'sgd'"),
    (['--config.experiment=nope'], "experiment must be one of"),
    (['--config.best_metric=eval/bleu'], "choose one of 'eval/accuracy', 'eval/loss'"),
    (['--config.batch_size=10'], 'batch_size (10) must be divisible by the number of devices (4'),
    (['--config.data.min_length=0'], 'data.min_length'),
    (['--config.data.eval_batch_size=0'],
     'data.eval_batch_size (0) must be a positive multiple of the number of devices (4)'),
    (['--config.model.hidden_size=0'], 'the model rejected the config (check model.*): '
     'num_layers and hidden_size must be >= 1'),
]


@pytest.mark.parametrize('overrides,message', BAD, ids=[b[0][0] for b in BAD])
def test_bad_config_is_a_clean_error(train_cli, tmp_path, overrides, message):
  proc = train_cli.run(tmp_path / 'run', *overrides, devices=4, check=False, timeout=60)
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert proc.stderr.startswith('error: '), proc.stderr
  assert message in proc.stderr
  # Validation happens before training: nothing was compiled or written.
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_bad_files_are_clean_errors(train_cli, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  for args, config, message in [
      ([], 'configs/synthetic.py:huge', "ARG must be 'default' or 'tiny'"),
      ([], 'configs/no_such_config.py', 'No such file'),
  ]:
    proc = train_cli.run(tmp_path / 'run', *args, config=config, check=False, timeout=60)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
  proc = train_cli.run(blocker / 'run', check=False, timeout=60)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
  assert 'cannot write to workdir' in proc.stderr
