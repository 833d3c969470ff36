"""One training step end to end through `python -m experiments.main` for each corpus
(and the CTC connected-digits task): the TFDS cache, report.json, per-example
predictions and the plots; the splits behind cross-validation, KWS validation voices and
connected-digit strings."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAST_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {'fsdd': (600, 10), 'japanese_vowels': (370, 9)}


def _command(name, workdir, data_dir):
  return [sys.executable, '-m', 'experiments.main',
          f'--config=configs/speech.py:{name}:tiny', f'--workdir={workdir}',
          '--config.total_steps=1', f'--config.data.data_dir={data_dir}']


def _check_classifier(name, workdir, data_dir):
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


def _check_ctc(workdir):
  from experiments.speech import data
  report = json.load(open(workdir / 'report.json'))['report']
  corpus = data.Corpus('fsdd', data.read_fsdd())  # The raw file: no TFDS needed here.
  splits = data.make_splits(corpus, 0.2, 0.1, 0)
  for name in ('val', 'test'):
    rows = list(csv.DictReader(open(workdir / f'predictions_{name}.csv')))
    assert len(rows) == report[f'num_{name}_strings'] == 500
    edits = sum(int(r['edits']) for r in rows)
    digits = sum(len(r['reference']) for r in rows)
    assert digits == report[f'num_{name}_digits']
    assert edits / digits == pytest.approx(report[f'{name}_label_error_rate'], abs=1e-6)
    assert (np.mean([r['reference'] == r['prediction'] for r in rows]) ==
            pytest.approx(report[f'{name}_string_accuracy'], abs=1e-6))
    # Each string is built from utterances of its own split only, its label their digits.
    allowed = set(splits[name][2].tolist())
    all_labels = corpus.splits['pool'][1]
    for r in rows:
      sources = [int(i) for i in r['utterances'].split('-')]
      assert 2 <= len(sources) <= 5 and set(sources) <= allowed
      assert r['reference'] == ''.join(str(all_labels[i]) for i in sources)
  assert (workdir / 'ctc_test.png').stat().st_size > 0


def test_one_step_runs_through_main(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', XLA_FLAGS=FAST_COMPILE)
  data_dir = tmp_path / 'tfds'
  # All at once: the subprocesses' start-up (imports, compiles) dominates. fsdd_ctc gets
  # its own cache so that two processes never build the same dataset at once.
  data_dirs = {'fsdd_ctc': tmp_path / 'tfds_ctc'}
  procs = {name: subprocess.Popen(_command(name, tmp_path / name,
                                           data_dirs.get(name, data_dir)), cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
           for name in (*SIZES, 'fsdd_ctc')}
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    if name == 'fsdd_ctc':
      assert 'test LER' in out
      _check_ctc(tmp_path / name)
    else:
      assert 'test accuracy' in out
      _check_classifier(name, tmp_path / name, data_dir)


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


def test_stratified_folds_partition_each_class_evenly():
  from experiments.speech import data
  labels = np.repeat(np.arange(9), 30).astype(np.int32)  # JapaneseVowels' training split.
  fold = data.stratified_folds(labels, 5, seed=1)
  assert fold.shape == (270,) and set(fold.tolist()) == set(range(5))
  for k in range(5):
    assert np.all(np.bincount(labels[fold == k], minlength=9) == 6)
  np.testing.assert_array_equal(fold, data.stratified_folds(labels, 5, seed=1))
  assert not np.array_equal(fold, data.stratified_folds(labels, 5, seed=2))


def test_cross_validation_splits_never_touch_test():
  from experiments.speech import data
  rng = np.random.default_rng(0)
  seqs = [rng.normal(size=(5, 2)).astype(np.float32) for _ in range(40)]
  labels = np.repeat(np.arange(4), 10).astype(np.int32)
  corpus = data.Corpus('toy', {'train': (seqs[:30], labels[:30]),
                               'test': (seqs[30:], labels[30:])})
  seen = []
  for k in range(5):
    s = data.make_splits(corpus, 0.2, 0.1, seed=0, cv_folds=5, cv_fold=k)
    assert len(s['test'][1]) == 0  # Test is not even handed out.
    train_idx, val_idx = s['train'][2], s['val'][2]
    assert not set(train_idx) & set(val_idx) and len(train_idx) + len(val_idx) == 30
    seen += val_idx.tolist()
  assert sorted(seen) == list(range(30))  # Every training utterance is held out once.
  # A corpus with its own 'val' split (KWS) keeps it and trains on all of 'train'.
  kws_like = data.Corpus('toy', {'train': (seqs[:20], labels[:20]),
                                 'val': (seqs[20:30], labels[20:30]),
                                 'test': (seqs[30:], labels[30:])})
  s = data.make_splits(kws_like, 0.2, 0.1, seed=0)
  assert len(s['train'][1]) == 20 and len(s['val'][1]) == 10 and len(s['test'][1]) == 10
  assert s['val'][0][0] is seqs[20]


def test_kws_voices_are_disjoint_across_splits():
  from experiments.speech import kws
  voices = {split: set(v) for split, v, _ in kws.SPLITS}
  assert set(voices) == {'train', 'val', 'test'}
  assert not voices['train'] & voices['val'] and not voices['train'] & voices['test']
  assert not voices['val'] & voices['test']
  # The test voices and streams are unchanged (so are the test clips).
  assert dict((s, (v, i)) for s, v, i in kws.SPLITS)['test'] == (kws.TEST_VARIANTS, 1)
  assert kws.TEST_VARIANTS == ('m5', 'm6', 'f3', 'f5', 'Alicia', 'max', 'paul', 'belinda')


def test_connected_digit_strings_and_pauses():
  from experiments.speech import connected_digits as cd
  import ml_collections
  rng = np.random.default_rng(0)
  seqs = []
  for n in (4, 6, 5):
    s = rng.normal(size=(n, 3)).astype(np.float32)
    s[n // 2, 0] = -10.0  # The quietest frame (lowest c0).
    seqs.append(s)
  utts = cd.Utterances.of(seqs, np.array([7, 0, 7]), np.array([100, 200, 300]))
  np.testing.assert_array_equal(utts.pause[1], seqs[1][3])
  x = cd.concatenate(utts, np.array([1, 0, 2]), np.array([2, 0]))
  np.testing.assert_array_equal(x, np.concatenate(
      [seqs[1], seqs[1][3:4], seqs[1][3:4], seqs[0], seqs[2]]))
  assert cd.string_frames(utts, np.array([1, 0, 2]), np.array([2, 0])) == len(x) == 17
  batch = cd.string_batch(utts, [(np.array([1, 0, 2]), np.array([2, 0])),
                                 (np.array([2, 2]), np.array([1]))], 20, 5)
  assert batch['x'].shape == (2, 20, 3) and batch['lengths'].tolist() == [17, 11]
  assert batch['labels'].tolist() == [[1, 8, 8, 0, 0], [8, 8, 0, 0, 0]]  # digit + 1.
  assert batch['label_lengths'].tolist() == [3, 2]
  assert batch['utterances'][0].tolist() == [200, 100, 300, -1, -1]
  d = ml_collections.ConfigDict({'min_digits': 2, 'max_digits': 5, 'max_gap': 3,
                                 'max_frames': 15})
  fixed = cd.fixed_strings(utts, 50, [0, 101], d)
  again = cd.fixed_strings(utts, 50, [0, 101], d)
  np.testing.assert_array_equal(fixed['x'], again['x'])  # Deterministic from the seed.
  assert fixed['x'].shape[1] == fixed['lengths'].max() > 15  # Eval strings are never cut.
  assert set(fixed['label_lengths'].tolist()) == {2, 3, 4, 5}
  train = cd.train_strings(utts, np.random.default_rng(1), 30, d)
  assert train['x'].shape == (30, 15, 3) and train['lengths'].max() <= 15


def test_japanese_vowels_default_is_the_committed_cv_choice():
  """configs/speech.py:japanese_vowels must be the setting that the committed
  cross-validation table selects (results/speech/japanese_vowels_cv.csv)."""
  from experiments.speech import cv
  module, _ = cv.load_config_module(os.path.join(ROOT, 'configs', 'speech.py'))
  grid = module.cv_grid('japanese_vowels')
  names = [cv.candidate_name(o) for o in grid]
  with open(os.path.join(ROOT, 'results', 'speech', 'japanese_vowels_cv.csv')) as f:
    rows = [dict(r, val_errors=int(r['val_errors']), num_val=int(r['num_val']),
                 val_accuracy=float(r['val_accuracy']), val_loss=float(r['val_loss']))
            for r in csv.DictReader(f)]
  assert sorted({r['candidate'] for r in rows}) == sorted(names)
  assert all(sum(r['num_val'] for r in rows if r['candidate'] == n) == 270 for n in names)
  chosen = grid[cv.choose(cv.summarize(rows, names))]
  config = module.get_config('japanese_vowels')
  assert all(cv.get_dotted(config, k) == v for k, v in chosen.items()), chosen
  assert config.data.val_fraction == 0.0 and config.data.cv_folds == 0
  # The tie-break is by loss, exactly: equal error counts are a tie whatever the rounding.
  tie = [{'errors': 5, 'utterances': 270, 'mean_loss': 0.06},
         {'errors': 5, 'utterances': 270, 'mean_loss': 0.05},
         {'errors': 6, 'utterances': 270, 'mean_loss': 0.01}]
  assert cv.choose(tie) == 1
