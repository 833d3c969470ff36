"""Neural machine translation with an attention LSTM encoder-decoder (docs/translation.md).

    python -m experiments.main --config=configs/translation.py:en-fr --workdir=DIR
    python -m experiments.main --config=configs/translation.py:ding:de-en:noattn --workdir=DIR

`build_task(config)` loads a parallel corpus with its joint SentencePiece vocabulary
(`data.load_parallel`; TFDS cache in data.data_dir) and trains `model.Seq2Seq` with
teacher forcing on length-bucketed batches (`data.BucketedBatches`). Eval during training
is the per-token cross-entropy and accuracy on the validation split (never test).
`report` decodes the TEST split with greedy and beam search (jit-compiled, batched, GNMT
length penalty, output limit decode.max_len_ratio * source length + decode.max_len_offset),
detokenises, scores with sacrebleu (`scoring.py`, with the copy-the-source baseline) and
writes into the workdir:

  test.src.txt, test.ref.txt           sources and references, one line per test example;
  test.hyp.greedy.txt, test.hyp.beam.txt  the hypotheses, same order;
  scores.json                          BLEU/chrF per system, signatures, test perplexity;
  attention.png                        attention heat-maps of 4 test sentences (not for
                                       attention='none').

Config fields read here (configs/translation.py): data.{corpus, src, tgt, vocab_size,
max_len, boundaries, data_dir, eval_batch_size, eval_examples, test_examples},
model.{embed_size, hidden_size, encoder_layers, attention, attention_units,
input_feeding, dropout, tied_embeddings}, loss.label_smoothing,
decode.{beam_size, length_penalty, max_len_ratio, max_len_offset, eval_batch_size}.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.translation import data as tdata
from experiments.translation.model import (ATTENTIONS, ENCODER_KEYS, Seq2Seq, num_params,
                                           token_stats, training_loss)
from experiments.translation.tokenizer import BOS, EOS, PAD
from lstm_jax import decoding
from lstm_jax.train import ConfigError, Task, check_eval_batch_size

HEATMAP_SENTENCES = 4
PROGRESS_SECONDS = 10.0  # Decoding progress lines at most this often.


# ----------------------------------------------------------------------------- config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Experiment-specific checks, before any data is loaded; raises ConfigError."""
  d, m, dec = config.data, config.model, config.decode
  if d.corpus not in tdata.CORPORA:
    raise ConfigError(f'data.corpus must be one of {sorted(tdata.CORPORA)}; got {d.corpus!r}.')
  langs = tdata.CORPORA[d.corpus]
  if d.src not in langs or d.tgt not in langs or d.src == d.tgt:
    raise ConfigError(f'data.src and data.tgt must be two different languages of '
                      f'{d.corpus!r} {langs}; got {d.src!r} -> {d.tgt!r}.')
  if m.attention not in ATTENTIONS:
    raise ConfigError(f'model.attention must be one of {", ".join(map(repr, ATTENTIONS))}; '
                      f'got {m.attention!r}.')
  if m.hidden_size < 2 or m.hidden_size % 2:
    raise ConfigError('model.hidden_size must be even (the bidirectional encoder has '
                      f'hidden_size // 2 units per direction); got {m.hidden_size!r}.')
  for name, value in (('model.embed_size', m.embed_size),
                      ('model.encoder_layers', m.encoder_layers),
                      ('decode.beam_size', dec.beam_size),
                      ('decode.eval_batch_size', dec.eval_batch_size),
                      ('data.eval_batch_size', d.eval_batch_size),
                      ('data.max_len', d.max_len), ('data.vocab_size', d.vocab_size)):
    if value < 1:
      raise ConfigError(f'{name} must be >= 1; got {value!r}.')
  for name, value in (('model.dropout', m.dropout),
                      ('loss.label_smoothing', config.loss.label_smoothing)):
    if not 0.0 <= value < 1.0:
      raise ConfigError(f'{name} must be in [0, 1); got {value!r}.')
  if m.attention_units < 0 or d.eval_examples < 0 or d.test_examples < 0:
    raise ConfigError('model.attention_units, data.eval_examples and data.test_examples '
                      'must be >= 0 (0 = default / all).')
  if dec.length_penalty < 0 or dec.max_len_ratio <= 0 or dec.max_len_offset < 1:
    raise ConfigError('decode.length_penalty must be >= 0, decode.max_len_ratio > 0 and '
                      f'decode.max_len_offset >= 1; got {dec.length_penalty!r}, '
                      f'{dec.max_len_ratio!r}, {dec.max_len_offset!r}.')
  bounds = tuple(d.boundaries)
  if not bounds or list(bounds) != sorted(set(bounds)) or bounds[0] < 1:
    raise ConfigError(f'data.boundaries must be increasing positive lengths; got {bounds!r}.')
  check_eval_batch_size('data.eval_batch_size', d.eval_batch_size)


def make_model(config: ml_collections.ConfigDict, vocab_size: int) -> Seq2Seq:
  """The Seq2Seq described by config.model over a vocabulary of `vocab_size` pieces."""
  m = config.model
  return Seq2Seq(vocab_size=vocab_size, embed_size=m.embed_size, hidden_size=m.hidden_size,
                 encoder_layers=m.encoder_layers, attention=m.attention,
                 input_feeding=m.input_feeding, dropout=m.dropout,
                 tied_embeddings=m.tied_embeddings, attention_units=m.attention_units)


# ------------------------------------------------------------------------- batching


def subset(split: Any, n: int) -> Any:
  """The first n examples of a split (all when n is 0 or larger than the split)."""
  if not n or n >= len(split.src):
    return split
  return dataclasses.replace(split, src_text=split.src_text[:n], tgt_text=split.tgt_text[:n],
                             src=split.src[:n], tgt=split.tgt[:n])


def padded_length(n: int, smallest: int = 16) -> int:
  """The power of two >= max(n, smallest): the padded length of a decoding batch. Few
  distinct lengths = few compilations of each search (padding costs little: attention
  over S is cheap next to the LSTM and the softmax)."""
  return max(smallest, 1 << max(int(n) - 1, 0).bit_length())


def decode_batches(split: Any, batch_size: int) -> list[dict]:
  """Every example of `split` once, in batches of `batch_size` sorted by length (similar
  lengths decode together), all rows on every process (the report decodes everything
  everywhere; only process 0 writes). Sources are never cut.

  Batches as `data.make_batch` (padding rows repeat a real row with weight 0 and index
  -1), padded to L = padded_length(the batch's longest source or target + EOS).
  """
  lengths = tdata.example_lengths(split)
  order = np.argsort(lengths, kind='stable')
  out = []
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    rows = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])
    real = np.arange(batch_size) < len(idx)
    out.append(tdata.make_batch(split, rows, padded_length(lengths[idx].max()), real))
  return out


# ------------------------------------------------------------------------- decoding


def output_limits(src_len: np.ndarray, ratio: float, offset: int) -> np.ndarray:
  """<int32>[B] most output pieces (EOS included) per sentence: ratio * |src| + offset."""
  return (np.ceil(ratio * np.asarray(src_len)) + offset).astype(np.int32)


def limited_step_fn(model: Seq2Seq, params: Any,
                    constants: Optional[dict[str, jax.Array]] = None) -> Callable:
  """`decode_step` wrapped for `lstm_jax.decoding`, forcing EOS once a sentence reaches
  its own output limit (state['limit']); state['t'] counts the steps taken.

  `constants`: the encoder entries of the decoding state ('mask', 'memory', ...), one row
  per decoding row (tiled beam_size times for beam search). Closed over instead of
  carried in the state, so that beam search does not gather them at every step; None
  when state['model'] holds them.
  """
  constants = constants or {}

  def step(tokens, state):
    log_probs, inner = model.apply({'params': params}, tokens,
                                   {**constants, **state['model']},
                                   method=Seq2Seq.decode_step)
    inner = {k: v for k, v in inner.items() if k not in constants}
    force = (state['t'] + 1 >= state['limit'])[:, None]
    eos_only = jnp.where(jnp.arange(log_probs.shape[-1]) == EOS, 0.0, -jnp.inf)
    return (jnp.where(force, eos_only, log_probs),
            {'model': inner, 't': state['t'] + 1, 'limit': state['limit']})
  return step


def make_translators(model: Seq2Seq, config: ml_collections.ConfigDict) -> dict[str, Callable]:
  """{'greedy': f, 'beam': f}, f(params, src, src_len, limit, max_len) -> <int32>[B, max_len]
  output pieces (EOS, then PAD), jit-compiled once per (shape, max_len)."""
  dec = config.decode

  def start(params, src, src_len, limit, beam_size):
    """(step function, initial state) with the encoder output tiled for `beam_size`."""
    inner = model.apply({'params': params}, src, src_len, method=Seq2Seq.init_decode_state)
    constants = {k: jnp.repeat(inner.pop(k), beam_size, axis=0)
                 for k in ENCODER_KEYS if k in inner}
    state = {'model': inner, 't': jnp.zeros_like(limit), 'limit': limit}
    return limited_step_fn(model, params, constants), state

  def greedy(params, src, src_len, limit, max_len):
    step, state = start(params, src, src_len, limit, 1)
    return decoding.greedy_search(step, state, BOS, EOS, max_len, PAD)

  def beam(params, src, src_len, limit, max_len):
    step, state = start(params, src, src_len, limit, dec.beam_size)
    out = decoding.beam_search(step, state, BOS, EOS, max_len, dec.beam_size,
                               dec.length_penalty, PAD)
    return out.sequences[:, 0]

  return {name: jax.jit(f, static_argnames='max_len')
          for name, f in (('greedy', greedy), ('beam', beam))}


def strip(ids: np.ndarray) -> list[int]:
  """Output pieces up to (not including) the first EOS or PAD."""
  out = []
  for i in ids.tolist():
    if i in (EOS, PAD):
      break
    out.append(i)
  return out


def translate(translator: Callable, params: Any, batches: list[dict], n: int,
              config: ml_collections.ConfigDict, label: str) -> list[list[int]]:
  """Runs `translator` over `batches`; returns the n outputs (piece ids, no EOS) in split
  order. Prints a progress line every PROGRESS_SECONDS and at the end (process 0)."""
  dec = config.decode
  outputs: list = [None] * n
  t0 = last = time.time()
  for k, b in enumerate(batches):
    limit = output_limits(b['src_len'], dec.max_len_ratio, dec.max_len_offset)
    max_len = int(output_limits(np.array([b['src'].shape[1]]), dec.max_len_ratio,
                                dec.max_len_offset)[0])  # Static: one compile per bucket.
    ids = np.asarray(translator(params, b['src'], b['src_len'], limit, max_len=max_len))
    for row, i in enumerate(b['index']):
      if i >= 0:
        outputs[i] = strip(ids[row])
    now = time.time()
    if jax.process_index() == 0 and (now - last >= PROGRESS_SECONDS
                                     or k + 1 == len(batches)):
      last = now
      print(f'decoding test ({label}): batch {k + 1}/{len(batches)}, '
            f'{now - t0:.0f} s', flush=True)
  return outputs


# ---------------------------------------------------------------------------- report


def test_perplexity(eval_fn: Callable, params: Any, batches: list[dict]) -> dict[str, float]:
  """Teacher-forced per-token cross-entropy, perplexity and accuracy on the batches, from
  the task's `eval_fn` ({'loss': (sum, count), 'accuracy': (sum, count), ...})."""
  stats = jax.jit(eval_fn)
  totals = {'loss': [0.0, 0.0], 'accuracy': [0.0, 0.0]}
  for b in batches:
    out = stats(params, b)
    for k in totals:
      totals[k][0] += float(out[k][0])
      totals[k][1] += float(out[k][1])
  loss = totals['loss'][0] / max(totals['loss'][1], 1.0)
  return {'test_loss': round(loss, 5), 'test_perplexity': round(math.exp(loss), 4),
          'test_accuracy': round(totals['accuracy'][0] / max(totals['accuracy'][1], 1.0), 5)}


def attention_maps(model: Seq2Seq, params: Any, srcs: list[np.ndarray],
                   outputs: list[list[int]]) -> list[np.ndarray]:
  """<float32>[len(output) + 1, len(src)] attention of each output piece (EOS last) over
  the source, recomputed by teacher-forcing the decoded outputs (equal to decoding's;
  tested), all sentences in one padded batch (one compilation)."""
  S = max(len(s) for s in srcs)
  T = max(len(o) for o in outputs) + 1
  src = np.zeros((len(srcs), S), np.int32)
  tgt_in = np.zeros((len(srcs), T), np.int32)
  for r, (s, o) in enumerate(zip(srcs, outputs)):
    src[r, :len(s)] = s
    tgt_in[r, :len(o) + 1] = [BOS] + list(o)
  src_len = np.array([len(s) for s in srcs], np.int32)
  _, attn = jax.jit(lambda p, *a: model.apply({'params': p}, *a))(params, src, src_len, tgt_in)
  attn = np.asarray(attn)
  return [attn[r, :len(o) + 1, :len(s)] for r, (s, o) in enumerate(zip(srcs, outputs))]


def plot_attention(maps: list[np.ndarray], src_pieces: list[list[str]],
                   out_pieces: list[list[str]], title: str, path: str) -> None:
  """Heat-maps, one panel per sentence: source pieces on x, output pieces on y."""
  from matplotlib.figure import Figure
  k = len(maps)
  cols = 2 if k > 1 else 1
  rows = -(-k // cols)
  fig = Figure(figsize=(7.5 * cols, 6.5 * rows), layout='constrained')
  axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
  for ax, a, xs, ys in zip(axes, maps, src_pieces, out_pieces):
    ax.imshow(a, cmap='Greys', vmin=0.0, vmax=1.0, aspect='auto')
    ax.set_xticks(range(len(xs)), xs, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ys)), ys, fontsize=7)
    ax.set_xlabel('source')
    ax.set_ylabel('output')
  for ax in axes[k:]:
    ax.axis('off')
  fig.suptitle(title, fontsize=10)
  fig.savefig(path, dpi=100)


def heatmap_examples(srcs: Sequence[np.ndarray], n: int = HEATMAP_SENTENCES,
                     lo: int = 6, hi: int = 24) -> list[int]:
  """The first n test examples with a source of lo..hi pieces (readable panels), topped
  up with the first examples if fewer qualify."""
  picked = [i for i, s in enumerate(srcs) if lo <= len(s) <= hi][:n]
  picked += [i for i in range(len(srcs)) if i not in picked][:n - len(picked)]
  return sorted(picked)


# ------------------------------------------------------------------------------ task


def build_task(config: ml_collections.ConfigDict) -> Task:
  check_config(config)
  d, dec = config.data, config.decode
  data = tdata.load_parallel(d.corpus, d.src, d.tgt, vocab_size=d.vocab_size,
                             data_dir=d.data_dir)
  tok = data.tokenizer
  model = make_model(config, tok.vocab_size)
  boundaries = tuple(int(b) for b in d.boundaries)
  train_batches = tdata.BucketedBatches(data.train, batch_size=config.batch_size,
                                        boundaries=boundaries, seed=config.seed,
                                        max_len=d.max_len)
  # The loss normaliser (see model.training_loss): the mean target length (EOS included)
  # of the training pairs the batches draw from (those that fit data.max_len).
  tokens_per_example = float(np.mean(
      [len(data.train.tgt[i]) + 1 for i in np.concatenate(train_batches.buckets)]))
  label_smoothing = float(config.loss.label_smoothing)
  validation = subset(data.validation, d.eval_examples)
  eval_set = tdata.eval_batches(validation, batch_size=d.eval_batch_size,
                                boundaries=boundaries)

  def forward(params, batch, rng=None, train=False):
    return model.apply({'params': params}, batch['src'], batch['src_len'], batch['tgt_in'],
                       train, rngs={'dropout': rng} if train else None)

  def loss_fn(params, batch, rng, train: bool):
    logits, _ = forward(params, batch, rng, train)
    loss = training_loss(logits, batch['tgt_out'], batch['tgt_len'], batch['weight'],
                         label_smoothing, tokens_per_example)
    stats = token_stats(logits, batch['tgt_out'], batch['tgt_len'], batch['weight'])
    metrics = {'nll' if k == 'loss' else k: s / jnp.maximum(c, 1.0)
               for k, (s, c) in stats.items()}
    return loss, metrics

  def eval_fn(params, batch):
    logits, _ = forward(params, batch)
    stats = token_stats(logits, batch['tgt_out'], batch['tgt_len'], batch['weight'])
    return {**stats, 'nll': stats['loss']}  # 'nll' shares a plot panel with train/nll.

  def report(params, workdir: str) -> dict[str, Any]:
    # Imported here so that `python -m experiments.translation.scoring` (which imports this
    # package first) does not find its own module already loaded.
    from experiments.translation import scoring
    test = subset(data.test, d.test_examples)
    n = len(test.src)
    batches = decode_batches(test, dec.eval_batch_size)
    translators = make_translators(model, config)
    out: dict[str, Any] = {
        'corpus': d.corpus, 'direction': f'{d.src}-{d.tgt}', 'num_test': n,
        'sizes': {k: len(getattr(data, k).src) for k in ('train', 'validation', 'test')},
        'num_params': num_params(params), 'attention': config.model.attention,
        'params': 'final (not the best checkpoint)',
        'decode': {'beam_size': dec.beam_size, 'length_penalty': dec.length_penalty,
                   'max_len': f'{dec.max_len_ratio} * source pieces + {dec.max_len_offset}'}}
    out.update(test_perplexity(eval_fn, params, batches))
    hyps, seconds = {}, {}
    for name, fn in translators.items():
      t0 = time.time()
      hyps[name] = translate(fn, params, batches, n, config, name)
      seconds[name] = round(time.time() - t0, 1)
    texts = {name: [tok.decode(ids) for ids in h] for name, h in hyps.items()}
    scores = scoring.score_systems(texts, test.tgt_text)
    scores['copy'] = scoring.copy_baseline(test.src_text, test.tgt_text)
    out.update(scores)
    out['decode_seconds'] = seconds
    if jax.process_index() == 0:
      scoring.write_lines(os.path.join(workdir, scoring.SOURCE_FILE), test.src_text)
      scoring.write_lines(os.path.join(workdir, scoring.REFERENCE_FILE), test.tgt_text)
      for name, lines in texts.items():
        scoring.write_lines(os.path.join(workdir, scoring.HYPOTHESIS_FILES[name]), lines)
      with open(os.path.join(workdir, 'scores.json'), 'w') as f:
        json.dump(out, f, indent=2)
        f.write('\n')
      if config.model.attention != 'none' and n:
        picked = heatmap_examples(test.src)
        outs = [hyps['greedy'][i] for i in picked]
        maps = attention_maps(model, params, [test.src[i] for i in picked], outs)
        plot_attention(maps, [[tok.piece(p) for p in test.src[i]] for i in picked],
                       [[tok.piece(p) for p in o] + ['</s>'] for o in outs],
                       f'{d.corpus} {d.src}-{d.tgt}, {config.model.attention} attention '
                       '(greedy output)', os.path.join(workdir, 'attention.png'))
      print(f'{d.corpus} {d.src}-{d.tgt} test ({n} sentences): BLEU greedy '
            f'{scores["greedy"]["bleu"]:.2f}, beam {scores["beam"]["bleu"]:.2f}, copy '
            f'{scores["copy"]["bleu"]:.2f}; chrF greedy {scores["greedy"]["chrf"]:.2f}, '
            f'beam {scores["beam"]["chrf"]:.2f}, copy {scores["copy"]["chrf"]:.2f}; '
            f'perplexity {out["test_perplexity"]:.2f}', flush=True)
    return out

  first = eval_set[0]
  init = {'src': first['src'][:2], 'src_len': first['src_len'][:2],
          'tgt_in': first['tgt_in'][:2]}
  return Task(model=model, init_batch=init, train_batches=train_batches,
              eval_batches=lambda: eval_set, loss_fn=loss_fn, eval_fn=eval_fn,
              report=report)
