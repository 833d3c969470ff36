"""One training step end to end through `python -m experiments.main` for each corpus:
the TFDS cache, report.json, per-example predictions and the confusion-matrix plot."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {'fsdd': (600, 10), 'japanese_vowels': (370, 9)}


def _command(name, workdir, data_dir):
  return [sys.executable, '-m', 'experiments.main',
          f'--config=configs/speech.py:{name}:tiny', f'--workdir={workdir}',
          '--config.total_steps=1', f'--config.data.data_dir={data_dir}']


def test_one_step_runs_through_main(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  data_dir = tmp_path / 'tfds'
  # Both corpora at once: the subprocesses' start-up (imports, compiles) dominates.
  procs = {name: subprocess.Popen(_command(name, tmp_path / name, data_dir), cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
           for name in SIZES}
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert 'test accuracy' in out
    workdir = tmp_path / name
    report = json.load(open(workdir / 'report.json'))['report']
    num_test, classes = SIZES[name]
    assert report['num_test'] == num_test and 0.0 <= report['test_accuracy'] <= 1.0
    assert sum(map(sum, report['confusion_test'])) == num_test
    assert len(report['confusion_test']) == classes
    rows = list(csv.DictReader(open(workdir / 'predictions_test.csv')))
    assert len(rows) == num_test and len([k for k in rows[0] if k.startswith('p_')]) == classes
    accuracy = sum(int(r['correct']) for r in rows) / num_test
    assert accuracy == pytest.approx(report['test_accuracy'], abs=1e-6)
    assert (workdir / 'confusion_test.png').stat().st_size > 0
    assert (data_dir / f'speech_{name}' / '1.0.0' / 'dataset_info.json').exists()


def test_splits_are_stratified_and_disjoint():
  from experiments.speech import data
  labels = np.repeat(np.arange(10), 10).astype(np.int32)
  kept, held = data.stratified_split(labels, 0.2, seed=0)
  assert len(held) == 20 and np.all(np.bincount(labels[held]) == 2)
  assert not set(kept) & set(held) and len(kept) + len(held) == 100
  again, _ = data.stratified_split(labels, 0.2, seed=0)
  np.testing.assert_array_equal(kept, again)


def test_kws_clips_are_deterministic_and_sized():
  import shutil
  if not shutil.which('espeak-ng'):
    pytest.skip('espeak-ng not installed')
  from experiments.speech import kws
  from lstm_jax import features
  clips = [kws.make_clip(np.random.default_rng(7), c, kws.TEST_VARIANTS) for c in (0, 10, 11)]
  again = kws.make_clip(np.random.default_rng(7), 0, kws.TEST_VARIANTS)
  np.testing.assert_array_equal(clips[0], again)
  assert all(c.shape == (kws.SR,) and c.dtype == np.float32 for c in clips)
  assert np.abs(clips[2]).max() < np.abs(clips[0]).max()  # Silence: noise only, quieter.
  assert features.log_mel(clips[0], kws.SR).shape == (101, 40)
  assert not set(kws.TRAIN_VARIANTS) & set(kws.TEST_VARIANTS)
