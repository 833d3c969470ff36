"""Greedy and beam search (`lstm_jax.decoding`), all under jax.jit, on tiny models."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import LSTM, LSTMState
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


def brute_force(table: np.ndarray, alpha: float) -> tuple[float, tuple[int, ...]]:
  """The best score over every sequence ending at its first EOS or at MAX_LEN tokens."""
  best = (-np.inf, ())
  for n in range(1, MAX_LEN + 1):
    for seq in itertools.product(range(VOCAB), repeat=n):
      if EOS in seq[:-1] or (n < MAX_LEN and seq[-1] != EOS):
        continue
      h, tok, logp = 0, BOS_H, 0.0
      for y in seq:
        h = (h * 31 + tok + 1) % STATES
        logp += table[h, y]
        tok = y
      best = max(best, (logp / ((5 + n) / 6) ** alpha, seq))
  return best


@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0])
def test_beam_search_matches_brute_force(alpha):
  # Enough beams to never prune: (VOCAB-1)**MAX_LEN live + the finished ones < 32.
  decode = jax.jit(lambda table, s: beam_search(hashed_step(table), s, BOS_H, EOS, MAX_LEN,
                                                beam_size=32, length_penalty=alpha))
  for table in [hashed_table(seed) for seed in range(3)]:
    out = decode(jnp.asarray(table), jnp.zeros((1,), jnp.int32))
    score, seq = brute_force(table, alpha)
    np.testing.assert_allclose(out.scores[0, 0], score, rtol=1e-5)
    n = int(out.lengths[0, 0])
    assert tuple(np.asarray(out.sequences[0, 0, :n])) == seq
    np.testing.assert_allclose(
        out.scores[0], out.log_probs[0] / np.asarray(gnmt_length_penalty(out.lengths[0], alpha)),
        rtol=1e-6)


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
