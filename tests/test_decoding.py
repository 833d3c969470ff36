"""Greedy and beam search (`lstm_jax.decoding`), all under jax.jit, on tiny models."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import LSTM, LSTMState
from lstm_jax.attention import LuongAttention
from lstm_jax.decoding import beam_search, gnmt_length_penalty, greedy_search

PAD = EOS = 0


# --- a tiny random LSTM language model as step_fn ---------------------------------------

class TinyLM(nn.Module):
  vocab: int = 7
  hidden: int = 8

  def setup(self):
    self.embed = nn.Embed(self.vocab, 5)
    self.lstm = LSTM(hidden_size=self.hidden)
    self.out = nn.Dense(self.vocab)

  def __call__(self, tokens, state):
    """tokens <int32>[n], state (h, c) batch-major [n, H] -> (log_probs [n, V], state)."""
    layered = LSTMState(h=state[0][None], c=state[1][None])  # [layers, n, H].
    y, layered = self.lstm.step(self.embed(tokens), layered)
    return jax.nn.log_softmax(self.out(y)), (layered.h[0], layered.c[0])


def tiny_lm(seed: int):
  model = TinyLM()
  state = (jnp.zeros((1, 8)), jnp.zeros((1, 8)))
  variables = model.init(jax.random.key(seed), jnp.zeros((1,), jnp.int32), state)
  # Sharpen the weights so that sequences differ and EOS comes at different steps.
  variables = jax.tree.map(lambda a: 2 * a, variables)
  return model, variables


@pytest.mark.parametrize('seed', [0, 2])
def test_beam_one_equals_greedy_on_random_lstm(seed):
  model, variables = tiny_lm(seed)
  batch, max_len, bos = 6, 9, 6

  @jax.jit
  def decode(variables):
    step = lambda tok, s: model.apply(variables, tok, s)
    state = (jax.random.normal(jax.random.key(100 + seed), (batch, 8)),
             jnp.zeros((batch, 8)))
    return (greedy_search(step, state, bos, EOS, max_len, PAD),
            beam_search(step, state, bos, EOS, max_len, beam_size=1, pad_id=PAD))

  greedy, beam = decode(variables)
  assert greedy.shape == (batch, max_len) and greedy.dtype == jnp.int32
  assert beam.sequences.shape == (batch, 1, max_len)
  np.testing.assert_array_equal(beam.sequences[:, 0], greedy)
  assert np.all(np.isfinite(beam.scores))
  assert len(set(np.asarray(beam.lengths[:, 0]))) > 1  # Some end early, some do not.
  # Lengths: up to and including the first EOS, max_len if none.
  for seq, n in zip(np.asarray(greedy), np.asarray(beam.lengths[:, 0])):
    eos = np.flatnonzero(seq == EOS)
    assert n == (eos[0] + 1 if eos.size else max_len)
    assert np.all(seq[n:] == PAD)


# --- a hand-set bigram table: beam search beats greedy ---------------------------------

A, B, BOS = 1, 2, 3


def bigram_step(table: np.ndarray):
  log_table = jnp.log(jnp.asarray(table, jnp.float32))
  return lambda tokens, state: (log_table[tokens], state)


def classic_table() -> np.ndarray:
  eps = 1e-6
  table = np.full((4, 4), eps)
  table[BOS, [EOS, A, B]] = [eps, 0.6, 0.4]  # Greedy takes A...
  table[A, [EOS, A, B]] = [0.3, 0.35, 0.35]  # ...which has no good continuation,
  table[B, [EOS, A, B]] = [0.9, 0.05, 0.05]  # ...while B EOS has p = 0.36.
  table[EOS] = 0.25
  return table / table.sum(1, keepdims=True)


def test_beam_search_finds_sequence_greedy_misses():
  step = bigram_step(classic_table())
  state = jnp.zeros((2, 1))  # A dummy state: batch of 2 identical examples.
  greedy = jax.jit(lambda s: greedy_search(step, s, BOS, EOS, 3, PAD))(state)
  beam = jax.jit(lambda s: beam_search(step, s, BOS, EOS, 3, beam_size=2, pad_id=PAD))(state)
  np.testing.assert_array_equal(greedy, [[A, A, A]] * 2)
  np.testing.assert_array_equal(beam.sequences[:, 0], [[B, EOS, PAD]] * 2)
  np.testing.assert_allclose(beam.log_probs[:, 0], np.log(0.4 * 0.9), rtol=1e-4)
  np.testing.assert_array_equal(beam.lengths[:, 0], [2, 2])
  # Step 2 keeps B EOS (.36) and A A (.21, tied with A B; A EOS .18 is pruned), so the
  # second beam is A A then A or B (p = .6 * .35 * .35); scores sorted best first.
  np.testing.assert_array_equal(beam.sequences[:, 1, :2], [[A, A]] * 2)
  np.testing.assert_allclose(beam.log_probs[:, 1], np.log(0.6 * 0.35 * 0.35), rtol=1e-4)
  assert np.all(np.diff(np.asarray(beam.scores), axis=1) <= 0)


# --- exhaustive check on a prefix-dependent random model -------------------------------

VOCAB, MAX_LEN, STATES, BOS_H = 3, 4, 101, 2


def hashed_table(seed: int) -> np.ndarray:
  logits = 2.0 * np.random.default_rng(seed).normal(size=(STATES, VOCAB))
  return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def hashed_step(table: np.ndarray):
  """log p(. | whole prefix): the state is a hash of the prefix, <int32>[n]."""
  log_table = jnp.asarray(table, jnp.float32)

  def step(tokens, h):
    h = (h * 31 + tokens + 1) % STATES
    return log_table[h], h
  return step


def brute_force(table: np.ndarray, alpha: float) -> list[tuple[float, tuple[int, ...]]]:
  """(score, sequence), best first, for every sequence that ends at its first EOS or at
  MAX_LEN tokens."""
  hypotheses = []
  for n in range(1, MAX_LEN + 1):
    for seq in itertools.product(range(VOCAB), repeat=n):
      if EOS in seq[:-1] or (n < MAX_LEN and seq[-1] != EOS):
        continue
      h, tok, logp = 0, BOS_H, 0.0
      for y in seq:
        h = (h * 31 + tok + 1) % STATES
        logp += table[h, y]
        tok = y
      hypotheses.append((logp / ((5 + n) / 6) ** alpha, seq))
  return sorted(hypotheses, key=lambda x: -x[0])


@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0])
def test_beam_search_matches_brute_force(alpha):
  # Enough beams to never prune: (VOCAB-1)**MAX_LEN live + the finished ones < 32.
  decode = jax.jit(lambda table, s: beam_search(hashed_step(table), s, BOS_H, EOS, MAX_LEN,
                                                beam_size=32, length_penalty=alpha))
  for table in [hashed_table(seed) for seed in range(3)]:
    out = decode(jnp.asarray(table), jnp.zeros((1,), jnp.int32))
    hypotheses = brute_force(table, alpha)
    assert len(hypotheses) == 31
    # The best one, and in fact every hypothesis in order (this checks the state
    # gathering: a beam fed another beam's state would score wrongly).
    np.testing.assert_allclose(out.scores[0, 0], hypotheses[0][0], rtol=1e-5)
    np.testing.assert_allclose(out.scores[0, :31], [h[0] for h in hypotheses], rtol=1e-5)
    assert out.scores[0, 31] == -np.inf
    for b, (_, seq) in enumerate(hypotheses):
      n = int(out.lengths[0, b])
      assert tuple(np.asarray(out.sequences[0, b, :n])) == seq
      assert np.all(np.asarray(out.sequences[0, b, n:]) == PAD)
    penalty = np.asarray(gnmt_length_penalty(out.lengths[0], alpha))
    np.testing.assert_allclose(out.scores[0], out.log_probs[0] / penalty, rtol=1e-6)


def test_small_beam_batched_and_sorted():
  """A batch of different examples with beam 2 (< exhaustive): valid, sorted, no NaN."""
  table = hashed_table(5)
  decode = jax.jit(lambda s: beam_search(hashed_step(table), s, BOS_H, EOS, MAX_LEN,
                                         beam_size=2, length_penalty=1.0))
  out = decode(jnp.arange(4, dtype=jnp.int32) * 7)
  assert out.sequences.shape == (4, 2, MAX_LEN)
  assert np.all(np.isfinite(out.scores))
  assert np.all(np.diff(np.asarray(out.scores), axis=1) <= 0)
  # Beam 2 never beats the exhaustive search on the same example.
  full = jax.jit(lambda s: beam_search(hashed_step(table), s, BOS_H, EOS, MAX_LEN,
                                       beam_size=32, length_penalty=1.0))(
      jnp.arange(4, dtype=jnp.int32) * 7)
  assert np.all(np.asarray(out.scores[:, 0]) <= np.asarray(full.scores[:, 0]) + 1e-6)


def test_gnmt_length_penalty():
  np.testing.assert_allclose(gnmt_length_penalty(jnp.array([1, 7]), 0.6),
                             [1.0, 2.0 ** 0.6], rtol=1e-6)
  np.testing.assert_allclose(gnmt_length_penalty(jnp.array([3]), 0.0), [1.0])


# --- the seq2seq pattern: an attention decoder over a closed-over, pre-tiled memory -----

class TinyAttentionDecoder(nn.Module):
  """LSTM decoder with Luong attention and input feeding (Luong et al. 2015, sec. 3.3)."""
  vocab: int = 6
  hidden: int = 8

  @nn.compact
  def __call__(self, tokens, state, memory, mask):
    h, c, feed = state
    x = jnp.concatenate([nn.Embed(self.vocab, 4)(tokens), feed], -1)
    y, layered = LSTM(hidden_size=self.hidden).step(x, LSTMState(h=h[None], c=c[None]))
    context, _ = LuongAttention(kind='general')(y, memory, mask)
    feed = jnp.tanh(nn.Dense(self.hidden, use_bias=False)(jnp.concatenate([context, y], -1)))
    log_probs = jax.nn.log_softmax(3 * nn.Dense(self.vocab)(feed))
    return log_probs, (layered.h[0], layered.c[0], feed)


def test_attention_decoder_batched_equals_one_at_a_time():
  batch, src_len, beam, max_len, bos = 3, 5, 3, 6, 5
  memory = jax.random.normal(jax.random.key(0), (batch, src_len, 8))
  mask = jnp.arange(src_len)[None] < jnp.array([5, 2, 4])[:, None]
  model = TinyAttentionDecoder()
  zeros = (jnp.zeros((batch, 8)),) * 3
  variables = model.init(jax.random.key(1), jnp.zeros((batch,), jnp.int32), zeros, memory,
                         mask)

  @jax.jit
  def decode(variables, memory, mask):
    n = memory.shape[0]
    state = (jnp.tanh(memory.sum(1)), jnp.zeros((n, 8)), jnp.zeros((n, 8)))
    tiled = [jnp.repeat(a, beam, axis=0) for a in (memory, mask)]  # Batch-major rows.
    beam_step = lambda tok, s: model.apply(variables, tok, s, *tiled)
    greedy_step = lambda tok, s: model.apply(variables, tok, s, memory, mask)
    return (beam_search(beam_step, state, bos, EOS, max_len, beam, length_penalty=0.6),
            greedy_search(greedy_step, state, bos, EOS, max_len))

  out, greedy = decode(variables, memory, mask)
  assert out.sequences.shape == (batch, beam, max_len)
  assert np.all(np.isfinite(out.scores))
  assert greedy.shape == (batch, max_len)
  assert len({tuple(s) for s in np.asarray(out.sequences[:, 0])}) > 1  # Inputs matter.
  for b in range(batch):
    alone, _ = decode(variables, memory[b:b + 1], mask[b:b + 1])
    np.testing.assert_array_equal(alone.sequences[0], out.sequences[b])
    np.testing.assert_allclose(alone.scores[0], out.scores[b], rtol=1e-5, atol=1e-6)
