"""Connected-digit recognition with CTC, built from FSDD's isolated-digit MFCCs.

    python -m experiments.main --config=configs/speech.py:fsdd_ctc --workdir=DIR

An example is a string of 2-5 digits: the MFCC frames of that many FSDD utterances in a
row, with a short pause between two utterances (0-`max_gap` copies of the quietest frame,
lowest c0, of the utterance before it: a pause in that recording's own conditions). The
label is the digit string. Training strings are drawn only from training-split utterances,
afresh for every batch (batch s is a pure function of (seed, s)); the validation and test
sets are fixed (`data.num_val_strings`, `data.num_test_strings`, seeded by
data.split_seed) and drawn only from the validation / test utterances of the FSDD split
(`data.make_splits`, as for the isolated-digit classifier, so that no test utterance is
ever trained on; speakers are shared, as FSDD ships no speaker ids).

Model: `model.FrameTagger`, a BiLSTM with per-frame logits over blank + 10 digits (class 0
is the blank, digit d is class d + 1), trained with `lstm_jax.ctc.ctc_loss` (optax's, with
length masks) and decoded greedily (best path: collapse repeats, drop blanks). Metrics:
label (digit) error rate = total edit distance / total reference digits, and string
accuracy (the whole string right). Eval during training runs on validation; `report`
scores the final parameters on validation and test and writes into the workdir:

  predictions_{val,test}.csv  one row per string: its index, the FSDD source indices of
                              its utterances, reference, hypothesis, edits, frames;
  ctc_test.png                error by string length and one test string's posteriors.

Config fields read here (configs/speech.py:fsdd_ctc): data.min_digits, data.max_digits,
data.max_gap, data.max_frames (training strings longer than this are redrawn; val and
test strings are never cut or dropped), data.num_val_strings, data.num_test_strings, and
the FSDD fields of experiments/speech (split, cmvn, deltas, augmentation).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import experiments.speech as speech
from experiments.speech.model import FrameTagger
from lstm_jax import ctc
from lstm_jax import parallel
from lstm_jax.data import pad_sequences
from lstm_jax.train import ConfigError, Task

BLANK = 0  # CTC blank; digit d is class d + 1.
NUM_CLASSES = 11


@dataclasses.dataclass(frozen=True)
class Utterances:
  """One split's isolated utterances, normalized.

  Attributes:
    seqs: n arrays <float32>[time_i, features].
    digits: <int32>[n] in 0..9.
    index: <int64>[n] positions in FSDD's source order.
    pause: <float32>[n, features] each utterance's quietest frame (lowest c0).
  """
  seqs: list
  digits: np.ndarray
  index: np.ndarray
  pause: np.ndarray

  @classmethod
  def of(cls, seqs: list, digits: np.ndarray, index: np.ndarray) -> 'Utterances':
    # Column 0 is c0 (log energy) before and after CMVN: normalization is a positive
    # affine map per column, so the argmin does not move.
    pause = np.stack([s[np.argmin(s[:, 0])] for s in seqs]).astype(np.float32)
    return cls(list(seqs), np.asarray(digits, np.int32), np.asarray(index, np.int64), pause)


def draw_string(rng: np.random.Generator, n_utterances: int, min_digits: int,
                max_digits: int, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
  """One random string: (utterance ids <int64>[k], pause lengths <int64>[k - 1]) with
  k uniform in [min_digits, max_digits], ids uniform with replacement, pauses uniform in
  [0, max_gap] frames."""
  k = int(rng.integers(min_digits, max_digits + 1))
  ids = rng.integers(0, n_utterances, k)
  gaps = rng.integers(0, max_gap + 1, k - 1)
  return ids, gaps


def concatenate(utts: Utterances, ids: np.ndarray, gaps: np.ndarray) -> np.ndarray:
  """<float32>[time, features]: utterances `ids` in order, `gaps[i]` copies of utterance
  ids[i]'s quietest frame between utterances i and i + 1."""
  parts = []
  for i, u in enumerate(ids):
    parts.append(utts.seqs[u])
    if i < len(gaps) and gaps[i]:
      parts.append(np.repeat(utts.pause[u][None], gaps[i], axis=0))
  return np.concatenate(parts, axis=0)


def string_batch(utts: Utterances, strings: list, max_frames: int, max_digits: int
                 ) -> dict:
  """Padded arrays for a list of (ids, gaps) strings.

  Returns:
    {'x': <float32>[n, max_frames, f], 'lengths': <int32>[n], 'labels': <int32>[n,
     max_digits] CTC classes (digit + 1) right-padded with BLANK, 'label_lengths':
     <int32>[n], 'utterances': <int64>[n, max_digits] FSDD source indices, -1 padded}.
  """
  x, lengths = pad_sequences([concatenate(utts, ids, gaps) for ids, gaps in strings],
                             max_frames)
  n = len(strings)
  labels = np.full((n, max_digits), BLANK, np.int32)
  sources = np.full((n, max_digits), -1, np.int64)
  for i, (ids, _) in enumerate(strings):
    labels[i, :len(ids)] = utts.digits[ids] + 1
    sources[i, :len(ids)] = utts.index[ids]
  return {'x': x, 'lengths': lengths, 'labels': labels,
          'label_lengths': np.array([len(ids) for ids, _ in strings], np.int32),
          'utterances': sources}


def string_frames(utts: Utterances, ids: np.ndarray, gaps: np.ndarray) -> int:
  """The length in frames of the string (ids, gaps), without building it."""
  return int(sum(len(utts.seqs[u]) for u in ids) + np.sum(gaps))


def fixed_strings(utts: Utterances, n: int, seed: list, d: ml_collections.ConfigDict
                  ) -> dict:
  """A fixed evaluation set of `n` strings drawn by default_rng(seed), padded to its own
  longest string (nothing is cut or dropped), plus 'index' <int64>[n] = 0..n-1."""
  rng = np.random.default_rng(seed)
  strings = [draw_string(rng, len(utts.seqs), d.min_digits, d.max_digits, d.max_gap)
             for _ in range(n)]
  longest = max(string_frames(utts, ids, gaps) for ids, gaps in strings)
  out = string_batch(utts, strings, longest, d.max_digits)
  out['index'] = np.arange(n, dtype=np.int64)
  return out


def train_strings(utts: Utterances, rng: np.random.Generator, size: int,
                  d: ml_collections.ConfigDict) -> dict:
  """`size` fresh training strings of at most d.max_frames frames (longer draws are
  redrawn), padded to d.max_frames so every batch has one shape."""
  strings = []
  while len(strings) < size:
    ids, gaps = draw_string(rng, len(utts.seqs), d.min_digits, d.max_digits, d.max_gap)
    if string_frames(utts, ids, gaps) <= d.max_frames:
      strings.append((ids, gaps))
  return string_batch(utts, strings, d.max_frames, d.max_digits)


def check_config(d: ml_collections.ConfigDict) -> None:
  if not 1 <= d.min_digits <= d.max_digits:
    raise ConfigError(f'need 1 <= data.min_digits <= data.max_digits; got {d.min_digits}, '
                      f'{d.max_digits}.')
  if d.max_gap < 0:
    raise ConfigError(f'data.max_gap must be >= 0; got {d.max_gap}.')
  for key in ('num_val_strings', 'num_test_strings'):
    if d[key] < 1:
      raise ConfigError(f'data.{key} must be >= 1; got {d[key]}.')
  if not d.val_fraction > 0:
    raise ConfigError('data.val_fraction must be > 0: validation strings are drawn from '
                      'the validation utterances.')


def build_task(config: ml_collections.ConfigDict) -> Task:
  d, m = config.data, config.model
  check_config(d)
  splits = {k: Utterances.of(*v) for k, v in speech.normalized_splits(config).items()}
  train = splits['train']
  typical = np.percentile([len(s) for s in train.seqs], 99)
  if d.max_frames < d.max_digits * typical + (d.max_digits - 1) * d.max_gap:
    # Then many long strings would be redrawn, and the cap, not the draw, would shape the
    # training data.
    raise ConfigError(f'data.max_frames ({d.max_frames}) is too small for '
                      f'{d.max_digits}-digit strings: the 99th percentile of the training '
                      f'utterances is {typical:.0f} frames.')
  data = {'val': fixed_strings(splits['val'], d.num_val_strings, [d.split_seed, 101], d),
          'test': fixed_strings(splits['test'], d.num_test_strings, [d.split_seed, 102], d)}
  model = FrameTagger(num_classes=NUM_CLASSES, hidden_size=m.hidden_size,
                      num_layers=m.num_layers, bidirectional=m.bidirectional,
                      proj_size=m.proj_size or None, dropout=m.dropout,
                      input_dropout=m.input_dropout, head_dropout=m.head_dropout)
  keys = ('x', 'lengths', 'labels', 'label_lengths')

  def train_batches(start_step: int) -> Iterator[dict]:
    rows = parallel.process_slice(config.batch_size)
    step = start_step
    while True:
      rng = np.random.default_rng([config.seed, step])  # Batch s = f(seed, s).
      batch = {k: v for k, v in train_strings(train, rng, config.batch_size, d).items()
               if k in keys}
      batch = speech.augment(rng, batch, d)
      yield {k: v[rows] for k, v in batch.items()}
      step += 1

  def logits_of(params, batch, rng=None, train_mode=False):
    return model.apply({'params': params}, batch['x'], seq_lengths=batch['lengths'],
                       deterministic=not train_mode,
                       rngs={'dropout': rng} if rng is not None else None)

  def scores(logits, batch):
    """Per string: (CTC loss, edits, whole string right) as float32 [batch] arrays."""
    loss = ctc.ctc_loss(logits, batch['lengths'], batch['labels'], batch['label_lengths'],
                        blank_id=BLANK)
    tokens, n = ctc.greedy_decode(logits, batch['lengths'], blank_id=BLANK)
    edits = ctc.edit_distance(batch['labels'], batch['label_lengths'], tokens, n)
    return loss, edits.astype(jnp.float32), (edits == 0).astype(jnp.float32)

  def loss_fn(params, batch, rng, train: bool):
    logits = logits_of(params, batch, rng, train)
    loss, edits, right = scores(logits, batch)
    refs = jnp.sum(batch['label_lengths']).astype(jnp.float32)
    return jnp.mean(loss), {'label_error_rate': jnp.sum(edits) / refs,
                            'string_accuracy': jnp.mean(right)}

  def eval_fn(params, batch):
    loss, edits, right = scores(logits_of(params, batch), batch)
    w = batch['weight']
    refs = jnp.sum(batch['label_lengths'] * w)
    return {'loss': (jnp.sum(loss * w), jnp.sum(w)),
            'label_error_rate': (jnp.sum(edits * w), refs),
            'string_accuracy': (jnp.sum(right * w), jnp.sum(w))}

  def eval_batches():
    return speech.padded_batches(data['val'], d.eval_batch_size, keys)

  def report(params, workdir: str) -> dict[str, Any]:
    return write_report(model, params, data, config, workdir)

  init = {'x': data['val']['x'][:2], 'seq_lengths': data['val']['lengths'][:2]}
  return Task(model=model, init_batch=init, train_batches=train_batches,
              eval_batches=eval_batches, loss_fn=loss_fn, eval_fn=eval_fn, report=report)


def decode_split(model: FrameTagger, params, split: dict, batch_size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tokens <int32>[n, time], token lengths <int32>[n], log-posteriors
  <float32>[n, time, 11]) of the greedy decoding of a whole split, on this host."""
  @jax.jit
  def run(p, x, lengths):
    logits = model.apply({'params': p}, x, seq_lengths=lengths)
    tokens, n = ctc.greedy_decode(logits, lengths, blank_id=BLANK)
    return tokens, n, jax.nn.log_softmax(logits, -1)
  outs = [run(params, split['x'][s:s + batch_size], split['lengths'][s:s + batch_size])
          for s in range(0, len(split['lengths']), batch_size)]
  return tuple(np.concatenate([np.asarray(o[i]) for o in outs]) for i in range(3))


def digits_of(classes: np.ndarray) -> str:
  """CTC classes (digit + 1) -> the digit string, e.g. [5, 1, 8] -> '407'."""
  return ''.join(str(int(c) - 1) for c in classes)


def write_report(model: FrameTagger, params, data: dict, config: ml_collections.ConfigDict,
                 workdir: str) -> dict[str, Any]:
  """Scores the final parameters on val and test; writes the CSVs and the figure."""
  d = config.data
  out: dict[str, Any] = {
      'corpus': 'fsdd connected digits (CTC)',
      'split': (speech.split_description(config, {k: len(v['lengths'])
                                                   for k, v in data.items()}) +
                f'; strings of {d.min_digits}-{d.max_digits} utterances with 0-{d.max_gap}'
                ' pause frames; val/test strings use val/test utterances only'),
      'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params))),
      'params': 'final (not the best checkpoint)'}
  for name in ('val', 'test'):
    split = data[name]
    tokens, n, logp = decode_split(model, params, split, d.eval_batch_size)
    edits = np.asarray(ctc.edit_distance(split['labels'], split['label_lengths'], tokens, n))
    ref_len = split['label_lengths']
    out[f'{name}_label_error_rate'] = round(ctc.error_rate(edits, ref_len), 6)
    out[f'{name}_string_accuracy'] = round(float(np.mean(edits == 0)), 6)
    out[f'num_{name}_strings'] = int(len(edits))
    out[f'num_{name}_digits'] = int(np.sum(ref_len))
    out[f'{name}_edits'] = int(np.sum(edits))
    # Net length error: > 0 more digits decoded than spoken (insertions dominate).
    out[f'{name}_decoded_minus_reference_digits'] = int(np.sum(n) - np.sum(ref_len))
    by_len = {}
    for k in range(d.min_digits, d.max_digits + 1):
      sel = ref_len == k
      if sel.any():
        by_len[str(k)] = {'strings': int(sel.sum()),
                          'label_error_rate': round(ctc.error_rate(edits[sel],
                                                                   ref_len[sel]), 6),
                          'string_accuracy': round(float(np.mean(edits[sel] == 0)), 6)}
    out[f'{name}_by_num_digits'] = by_len
    if jax.process_index() == 0:
      write_predictions(os.path.join(workdir, f'predictions_{name}.csv'), split, tokens, n,
                        edits)
      if name == 'test':
        plot_ctc(by_len, split, logp, os.path.join(workdir, 'ctc_test.png'),
                 f'FSDD connected digits, test: LER {out["test_label_error_rate"]:.2%}, '
                 f'string accuracy {out["test_string_accuracy"]:.2%} '
                 f'(n={len(edits)})')
  if jax.process_index() == 0:
    print(f'fsdd_ctc: val LER {out["val_label_error_rate"]:.4f}, test LER '
          f'{out["test_label_error_rate"]:.4f}, test string accuracy '
          f'{out["test_string_accuracy"]:.4f} ({out["num_test_strings"]} strings)',
          flush=True)
  return out


def write_predictions(path: str, split: dict, tokens: np.ndarray, n: np.ndarray,
                      edits: np.ndarray) -> None:
  """CSV: index, utterances (FSDD source indices, '-'-joined), reference, prediction,
  edits, correct, length (frames)."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['index', 'utterances', 'reference', 'prediction', 'edits', 'correct',
                'length'])
    for i in range(len(n)):
      k = int(split['label_lengths'][i])
      w.writerow([int(split['index'][i]), '-'.join(map(str, split['utterances'][i, :k])),
                  digits_of(split['labels'][i, :k]), digits_of(tokens[i, :int(n[i])]),
                  int(edits[i]), int(edits[i] == 0), int(split['lengths'][i])])


def plot_ctc(by_len: dict, split: dict, logp: np.ndarray, path: str, title: str) -> None:
  """Left: label error rate and string accuracy by number of digits. Right: the per-frame
  posteriors of test string 0 (blank in grey)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={'width_ratios': [1, 2]})
  ks = sorted(by_len, key=int)
  x = np.arange(len(ks))
  a.bar(x - 0.2, [100 * by_len[k]['label_error_rate'] for k in ks], 0.4,
        label='label error rate')
  a.bar(x + 0.2, [100 * (1 - by_len[k]['string_accuracy']) for k in ks], 0.4,
        label='string error rate')
  a.set_xticks(x, [f'{k}\n(n={by_len[k]["strings"]})' for k in ks])
  a.set_xlabel('digits in the string')
  a.set_ylabel('%')
  a.legend(fontsize=8)
  t = int(split['lengths'][0])
  post = np.exp(logp[0, :t])
  b.plot(post[:, BLANK], color='0.6', lw=1, label='blank')
  for c in range(1, NUM_CLASSES):
    if post[:, c].max() > 0.1:
      b.plot(post[:, c], lw=1.5, label=str(c - 1))
  k = int(split['label_lengths'][0])
  b.set_title(f'test string 0: "{digits_of(split["labels"][0, :k])}", per-frame '
              'posteriors', fontsize=9)
  b.set_xlabel('frame')
  b.set_ylim(0, 1.02)
  b.legend(fontsize=7, ncol=2, loc='center right')
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
