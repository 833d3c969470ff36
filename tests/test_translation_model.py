"""The translation model, its losses, decoding wiring and scoring, on hand-made batches
(no dataset): teacher forcing = step-by-step decoding, padding invariance, label smoothing
against NumPy float64, tied embeddings, the attention-free baseline, sacrebleu scores."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import sacrebleu

from experiments.translation import (decode_batches, limited_step_fn, make_translators,
                                     output_limits, padded_length, scoring)
from experiments.translation.model import ATTENTIONS, Seq2Seq, token_stats, training_loss
from lstm_jax import decoding

V, E, H = 23, 6, 8
SRC_LEN = np.array([7, 3, 1], np.int32)
TGT_LEN = np.array([5, 2, 4], np.int32)


def _batch(seed: int = 0, S: int = 7, T: int = 5):
  rng = np.random.default_rng(seed)
  src = rng.integers(4, V, (3, S)).astype(np.int32)
  src[np.arange(S)[None] >= SRC_LEN[:, None]] = 0
  tgt_in = rng.integers(4, V, (3, T)).astype(np.int32)
  tgt_in[:, 0] = 1
  tgt_out = np.concatenate([tgt_in[:, 1:], np.full((3, 1), 2, np.int32)], 1)
  return src, tgt_in, tgt_out


def _init(model, src, tgt_in, seed=0):
  # jit everywhere: eager Flax dispatches op by op and is many times slower here.
  init = jax.jit(lambda rngs, *a: model.init(rngs, *a)['params'])
  return init({'params': jax.random.key(seed), 'dropout': jax.random.key(1)},
              src, SRC_LEN, tgt_in)


def _forward(model, params, src, tgt_in, src_len=SRC_LEN):
  return jax.jit(lambda p, *a: model.apply({'params': p}, *a))(params, src, src_len, tgt_in)


@pytest.mark.parametrize('attention', ATTENTIONS)
@pytest.mark.parametrize('input_feeding', [True, False])
def test_teacher_forcing_equals_step_by_step_decoding(attention, input_feeding):
  model = Seq2Seq(vocab_size=V, embed_size=E, hidden_size=H, attention=attention,
                  input_feeding=input_feeding, dropout=0.3, encoder_layers=2)
  src, tgt_in, _ = _batch()
  params = _init(model, src, tgt_in)

  @jax.jit
  def run(p):
    logits, attn = model.apply({'params': p}, src, SRC_LEN, tgt_in)
    state = model.apply({'params': p}, src, SRC_LEN, method=Seq2Seq.init_decode_state)
    steps, weights = [], []
    for t in range(tgt_in.shape[1]):
      log_probs, state = model.apply({'params': p}, jnp.asarray(tgt_in[:, t]), state,
                                     method=Seq2Seq.decode_step)
      steps.append(log_probs)
      weights.append(state['weights'])
    return logits, attn, steps, weights

  logits, attn, steps, weights = run(params)
  np.testing.assert_allclose(np.stack(steps, 1), jax.nn.log_softmax(logits), atol=2e-6)
  np.testing.assert_allclose(np.stack(weights, 1), attn, atol=1e-6)
  assert logits.shape == (3, 5, V) and attn.shape == (3, 5, 7)
  assert logits.dtype == jnp.float32 and attn.dtype == jnp.float32


@pytest.mark.parametrize('attention', ATTENTIONS)
def test_source_padding_never_changes_outputs(attention):
  model = Seq2Seq(vocab_size=V, embed_size=E, hidden_size=H, attention=attention)
  src, tgt_in, _ = _batch()
  params = _init(model, src, tgt_in)
  logits, attn = _forward(model, params, src, tgt_in)
  # Other tokens in the padding: bitwise the same outputs.
  noisy = src.copy()
  pad = np.arange(src.shape[1])[None] >= SRC_LEN[:, None]
  noisy[pad] = np.random.default_rng(5).integers(0, V, pad.sum())
  logits2, attn2 = _forward(model, params, noisy, tgt_in)
  np.testing.assert_array_equal(logits2, logits)
  np.testing.assert_array_equal(attn2, attn)
  if attention == 'none':
    assert not np.any(attn)
  # More padding columns: the same up to float rounding.
  wide = np.concatenate([src, np.full((3, 4), 9, np.int32)], 1)
  logits3, attn3 = _forward(model, params, wide, tgt_in)
  np.testing.assert_allclose(logits3, logits, atol=1e-5)
  np.testing.assert_allclose(attn3[:, :, :7], attn, atol=1e-6)
  assert not np.any(attn3[:, :, 7:])


@pytest.mark.parametrize('attention', ['dot', 'general', 'bahdanau'])
def test_attention_is_zero_on_source_padding_and_sums_to_one(attention):
  model = Seq2Seq(vocab_size=V, embed_size=E, hidden_size=H, attention=attention)
  src, tgt_in, _ = _batch(3)
  params = _init(model, src, tgt_in)
  _, attn = _forward(model, params, src, tgt_in)
  attn = np.asarray(attn)
  for b, n in enumerate(SRC_LEN):
    assert np.all(attn[b, :, n:] == 0.0)
    np.testing.assert_allclose(attn[b, :, :n].sum(-1), 1.0, atol=1e-6)


def test_label_smoothed_loss_and_token_stats_match_numpy():
  rng = np.random.default_rng(0)
  B, T, vocab, ls, norm = 3, 4, 5, 0.1, 2.5
  logits = rng.normal(size=(B, T, vocab)).astype(np.float32)
  targets = rng.integers(0, vocab, (B, T)).astype(np.int32)
  lengths = np.array([4, 2, 1], np.int32)
  weight = np.array([1.0, 1.0, 0.0], np.float32)
  # NumPy float64: q = (1 - ls) one_hot + ls / V; xent = -sum q log softmax.
  x = logits.astype(np.float64)
  logp = x - x.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  q = (1 - ls) * np.eye(vocab)[targets] + ls / vocab
  xent = -(q * logp).sum(-1)
  mask = np.arange(T)[None] < lengths[:, None]
  expected = np.mean((xent * mask).sum(1) * weight) / norm
  got = training_loss(jnp.asarray(logits), targets, lengths, weight, ls, norm)
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  # Metrics: unsmoothed NLL and accuracy over real tokens of weighted rows.
  real = mask * weight[:, None]
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  stats = token_stats(jnp.asarray(logits), targets, lengths, weight)
  np.testing.assert_allclose(float(stats['loss'][0]), (nll * real).sum(), rtol=1e-6)
  assert float(stats['loss'][1]) == real.sum() == 6
  correct = (logits.argmax(-1) == targets) * real
  assert float(stats['accuracy'][0]) == correct.sum()


@pytest.mark.parametrize('embed', [E, H])
def test_tied_embeddings_share_one_parameter(embed):
  src, tgt_in, tgt_out = _batch()
  out_only = 21  # A token that is only ever a prediction target, never an input.
  src[src == out_only] = 4
  tgt_in[tgt_in == out_only] = 4
  tgt_out[0, 0] = out_only

  def grads(tied):
    model = Seq2Seq(vocab_size=V, embed_size=embed, hidden_size=H, tied_embeddings=tied)
    params = _init(model, src, tgt_in)

    def loss(p):
      logits, _ = model.apply({'params': p}, src, SRC_LEN, tgt_in)
      return training_loss(logits, tgt_out, TGT_LEN, jnp.ones(3), 0.0, 1.0)
    return params, jax.jit(jax.grad(loss))(params)

  params, g = grads(True)
  assert 'output' not in params and params['output_bias'].shape == (V,)
  assert ('to_embed' in params) == (embed != H)
  # Through the output layer only: the row's gradient is nonzero iff the table is tied.
  assert np.abs(g['embed']['embedding'][out_only]).sum() > 0
  params, g = grads(False)
  assert params['output']['kernel'].shape == (H, V)
  assert np.abs(g['embed']['embedding'][out_only]).sum() == 0


def test_attention_free_baseline_has_no_attention_parameters():
  src, tgt_in, _ = _batch()
  sizes = {}
  for attention in ATTENTIONS:
    model = Seq2Seq(vocab_size=V, embed_size=E, hidden_size=H, attention=attention)
    params = jax.eval_shape(model.init, jax.random.key(0), src, SRC_LEN, tgt_in)['params']
    sizes[attention] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    if attention == 'none':
      assert set(params['decoder']) == {'input_kernel', 'recurrent_kernel', 'bias', 'W_c'}
  # Same size as 'dot' (which has no parameters of its own), 'general' adds W_a.
  assert sizes['none'] == sizes['dot'] == sizes['general'] - H * H


def test_bad_attention_is_rejected():
  model = Seq2Seq(vocab_size=V, embed_size=E, hidden_size=H, attention='concat')
  src, tgt_in, _ = _batch()
  with pytest.raises(ValueError, match='attention must be one of'):
    jax.eval_shape(model.init, jax.random.key(0), src, SRC_LEN, tgt_in)


# -------------------------------------------------------------------------- decoding


def _decode_setup():
  model = Seq2Seq(vocab_size=V, embed_size=E, hidden_size=H, attention='general')
  src, tgt_in, _ = _batch()
  params = _init(model, src, tgt_in)
  limit = jnp.asarray(output_limits(SRC_LEN, 1.0, 1))  # [8, 4, 2]
  inner = model.apply({'params': params}, src, SRC_LEN, method=Seq2Seq.init_decode_state)
  state = {'model': inner, 't': jnp.zeros(3, jnp.int32), 'limit': limit}
  return model, params, state, limit


def test_decoding_respects_per_sentence_limits_and_beam_one_is_greedy():
  model, params, state, limit = _decode_setup()
  step = limited_step_fn(model, params)
  greedy = np.asarray(jax.jit(lambda s: decoding.greedy_search(step, s, 1, 2, 10))(state))
  lengths = [list(row).index(2) + 1 if 2 in row else 10 for row in greedy]
  assert all(n <= lim for n, lim in zip(lengths, np.asarray(limit)))
  beam = jax.jit(lambda s: decoding.beam_search(step, s, 1, 2, 10, beam_size=1))(state)
  np.testing.assert_array_equal(beam.sequences[:, 0], greedy)
  beam4 = jax.jit(lambda s: decoding.beam_search(step, s, 1, 2, 10, beam_size=4,
                                                 length_penalty=0.6))(state)
  assert np.all(beam4.lengths <= np.asarray(limit)[:, None])


def test_translators_closing_over_the_encoder_output_decode_the_same():
  model, params, state, limit = _decode_setup()
  src, _, _ = _batch()
  config = ml_collections.ConfigDict({'decode': {'beam_size': 3, 'length_penalty': 0.6}})
  translators = make_translators(model, config)
  step = limited_step_fn(model, params)  # The encoder output carried in the state.
  expected = {
      'greedy': jax.jit(lambda s: decoding.greedy_search(step, s, 1, 2, 10, 0))(state),
      'beam': jax.jit(lambda s: decoding.beam_search(step, s, 1, 2, 10, 3, 0.6, 0))(
          state).sequences[:, 0]}
  for name, fn in translators.items():
    np.testing.assert_array_equal(fn(params, src, SRC_LEN, limit, max_len=10), expected[name])


@dataclasses.dataclass
class _Split:
  src_text: list
  tgt_text: list
  src: list
  tgt: list


def test_decode_batches_cover_every_example_once_sorted_by_length():
  rng = np.random.default_rng(0)
  lens = [5, 1, 20, 9, 3]
  split = _Split([''] * 5, [''] * 5, [rng.integers(4, V, n) for n in lens],
                 [rng.integers(4, V, n + 1) for n in lens])
  batches = decode_batches(split, 2)
  index = np.concatenate([b['index'] for b in batches])
  assert sorted(index[index >= 0].tolist()) == list(range(5)) and (index == -1).sum() == 1
  # Sorted by max(src, tgt + 1) = [6, 2, 22, 11, 5]: batches (1, 4), (0, 3), (2,).
  assert [b['src'].shape[1] for b in batches] == [16, 16, 32]
  for b in batches:
    for r, i in enumerate(b['index']):
      if i < 0:
        assert b['weight'][r] == 0
        continue
      n, t = lens[i], split.tgt[i]
      np.testing.assert_array_equal(b['src'][r, :n], split.src[i])
      assert not b['src'][r, n:].any() and b['tgt_len'][r] == len(t) + 1
      assert b['src_len'][r] == n
      np.testing.assert_array_equal(b['tgt_in'][r, :len(t) + 1], [1, *t])
      np.testing.assert_array_equal(b['tgt_out'][r, :len(t) + 1], [*t, 2])
  assert [padded_length(n) for n in (0, 1, 16, 17, 64, 65)] == [16, 16, 16, 32, 64, 128]


# --------------------------------------------------------------------------- scoring


HYPS = ['the cat sat on the mat .', 'a quick brown fox', 'hello world']
REFS = ['the cat sat on a mat .', 'the quick brown fox jumps', 'hello world']


def test_scores_equal_sacrebleu_directly():
  got = scoring.corpus_scores(HYPS, REFS)
  assert got['bleu'] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-4)
  assert got['chrf'] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-4)
  assert got['bleu_signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')
  same = scoring.corpus_scores(REFS, REFS)
  assert same['bleu'] == pytest.approx(100.0) and same['chrf'] == pytest.approx(100.0)
  # By hand: 4 words, 1-gram precision 4/4 ... 4-gram 1/1, hypothesis as long as the
  # reference -> 100; one wrong word of four: p = 3/4, 1/3, 0/2 (smoothed) -> small.
  assert scoring.corpus_scores(['a b c d'], ['a b c d'])['bleu'] == pytest.approx(100.0)
  assert scoring.corpus_scores(['x y z w'], ['a b c d'])['bleu'] == pytest.approx(0.0)
  with pytest.raises(ValueError):
    scoring.corpus_scores(HYPS, REFS[:2])


def test_copy_baseline_and_rescoring_from_files(tmp_path):
  sources = ['le chat', 'Jean 3:16 Dieu a tant aimé le monde', 'Amen .']
  refs = ['the cat', 'John 3:16 For God so loved the world', 'Amen .']
  copy = scoring.copy_baseline(sources, refs)
  assert copy == scoring.corpus_scores(sources, refs) and 0 < copy['bleu'] < 100
  scoring.write_lines(tmp_path / scoring.SOURCE_FILE, sources)
  scoring.write_lines(tmp_path / scoring.REFERENCE_FILE, refs)
  scoring.write_lines(tmp_path / scoring.HYPOTHESIS_FILES['beam'], ['the\ncat', '', 'Amen .'])
  assert scoring.read_lines(tmp_path / scoring.HYPOTHESIS_FILES['beam']) == [
      'the cat', '', 'Amen .']
  rescored = scoring.rescore(str(tmp_path))
  assert set(rescored) == {'beam', 'copy'} and rescored['copy'] == copy
  assert rescored['beam'] == scoring.corpus_scores(['the cat', '', 'Amen .'], refs)


# ---------------------------------------------------------------------------- config


def _config_module():
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', 'translation.py')
  spec = importlib.util.spec_from_file_location('translation_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_config_forms():
  cfg = _config_module()
  c = cfg.get_config('en-fr')
  assert (c.data.corpus, c.data.src, c.data.tgt, c.model.attention) == (
      'bible', 'en', 'fr', 'general')
  c = cfg.get_config('ding:de-en:noattn:tiny')
  assert (c.data.corpus, c.data.src, c.data.tgt, c.model.attention) == (
      'ding', 'de', 'en', 'none')
  assert c.total_steps == 2 and c.data.vocab_size == 500
  assert cfg.get_config('bible:de-en').data.src == 'de'
  for bad in ('', 'en', 'en-en', 'ding:en-fr', 'en-fr:big', 'en-fr:tiny:tiny', 'xx:en-fr'):
    with pytest.raises(ValueError, match='ARG must be'):
      cfg.get_config(bad)
