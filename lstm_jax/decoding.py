"""Greedy and beam-search decoding for autoregressive models, jit-compilable.

The model is a pure step function

    step_fn(tokens <int32>[n], state) -> (log_probs <float32>[n, vocab], new_state)

where `state` is any pytree whose leaves all have a leading axis n (the batch; for beam
search, batch * beam_size). `log_probs` should be normalised (log-softmax): scores are
sums of them. Decoding starts by feeding `bos_id`; a hypothesis ends at its first
`eos_id` (included in the output and in its length) or after `max_len` tokens. Positions
past the end hold `pad_id`. Neither function is jitted itself: jit the caller, closing
over `step_fn` and passing parameters as arguments:

    @jax.jit
    def translate(params, state):
      step_fn = lambda tokens, s: decoder_step(params, tokens, s)
      return beam_search(step_fn, state, BOS, EOS, max_len=50, beam_size=5,
                         length_penalty=0.6)

An `LSTM` state is stacked on a leading [layers * directions] axis: swap it behind the
batch axis for the decoding state (`jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), s)`)
and back inside `step_fn`. Beam search orders rows batch-major (row b * beam_size + j is
beam j of example b), so per-example constants (encoder outputs, source mask) need not
travel in the state, which is gathered every step: close over them pre-tiled with
`jnp.repeat(x, beam_size, axis=0)`.

Tiny worked example (a fixed bigram table; tokens 0 = EOS/pad, 1 = A, 2 = B, 3 = BOS):

    P(.|BOS) = [0, .6, .4, 0], P(.|A) = [.3, .35, .35, 0], P(.|B) = [.9, .05, .05, 0]
    step_fn = lambda tok, s: (jnp.log(table)[tok], s)
    greedy_search(step_fn, state, 3, 0, max_len=3)   # -> [[1, 1, 1]]  p = .6*.35*.35
    beam_search(step_fn, state, 3, 0, 3, beam_size=2).sequences[:, 0]
                                                     # -> [[2, 0, 0]]  p = .4*.9 = .36

Greedy commits to A (.6) and never recovers; the beam keeps B alive and finds B EOS.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
StepFn = Callable[[Array, Any], tuple[Array, Any]]
NEG_INF = -jnp.inf


def batch_size_of(state: Any) -> int:
  """The leading axis n shared by all leaves of `state`."""
  sizes = {leaf.shape[0] for leaf in jax.tree.leaves(state)}
  if len(sizes) != 1:
    raise ValueError(f'every leaf of the state needs the same leading axis, got {sizes}.')
  return sizes.pop()


def gnmt_length_penalty(lengths: Array, alpha: float) -> Array:
  """GNMT length penalty (Wu et al. 2016, eq. 14): lp(|Y|) = ((5 + |Y|) / 6) ** alpha."""
  return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def greedy_search(step_fn: StepFn, init_state: Any, bos_id: int, eos_id: int,
                  max_len: int, pad_id: int = 0) -> Array:
  """Picks the most likely token at every step.

  Args:
    step_fn: see the module docstring.
    init_state: pytree with leading axis batch.
    bos_id, eos_id, pad_id: the start, end and padding tokens.
    max_len: the most tokens generated per sequence (static).

  Returns:
    <int32>[batch, max_len]: each sequence up to and including its first EOS, then pad.
    Example: with eos 0 and pad 0, `[[5, 7, 0, 0]]` is "5 7 EOS" in max_len 4.
  """
  if max_len < 1:
    raise ValueError(f'max_len must be >= 1, got {max_len}.')
  batch = batch_size_of(init_state)

  def cond(carry):
    t, _, finished, _, _ = carry
    return (t < max_len) & ~jnp.all(finished)

  def body(carry):
    t, tokens, finished, seqs, state = carry
    log_probs, state = step_fn(tokens, state)
    best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    best = jnp.where(finished, pad_id, best)
    seqs = seqs.at[:, t].set(best)
    return t + 1, best, finished | (best == eos_id), seqs, state

  carry = (jnp.int32(0), jnp.full((batch,), bos_id, jnp.int32), jnp.zeros((batch,), bool),
           jnp.full((batch, max_len), pad_id, jnp.int32), init_state)
  return lax.while_loop(cond, body, carry)[3]


class BeamSearchOutput(NamedTuple):
  """The beams of `beam_search`, best first.

  Attributes:
    sequences: <int32>[batch, beam, max_len], up to and including EOS, then pad.
    scores: <float32>[batch, beam], log_probs / gnmt_length_penalty(lengths, alpha).
    log_probs: <float32>[batch, beam], the summed token log-probabilities.
    lengths: <int32>[batch, beam], tokens including EOS (max_len if none).
  Beams that never held a live hypothesis (beam larger than the number of sequences)
  score -inf and come last.
  """
  sequences: Array
  scores: Array
  log_probs: Array
  lengths: Array


def _tile(state: Any, beam: int) -> Any:
  """[batch, ...] -> [batch * beam, ...], batch-major."""
  return jax.tree.map(lambda a: jnp.repeat(a, beam, axis=0), state)


def _gather(state: Any, flat_index: Array) -> Any:
  """Rows `flat_index` <int32>[batch * beam] of every leaf."""
  return jax.tree.map(lambda a: jnp.take(a, flat_index, axis=0), state)


def beam_search(step_fn: StepFn, init_state: Any, bos_id: int, eos_id: int, max_len: int,
                beam_size: int, length_penalty: float = 0.0,
                pad_id: int = 0) -> BeamSearchOutput:
  """Batched beam search with finished-beam handling and the GNMT length penalty.

  One set of `beam_size` beams per example. At each step every live beam proposes all
  `vocab` continuations (score + log p) and every finished beam exactly one, itself
  extended by `pad_id` at zero cost and unchanged length; the top `beam_size` of these
  candidates survive, ranked by log_probs / lp(length) with lp the GNMT penalty
  ((5 + length) / 6) ** alpha (`gnmt_length_penalty`; alpha = `length_penalty`, 0 ranks
  by raw log-probability; live candidates all have length t + 1, so among them the
  penalty only matters against finished beams).
  The state rows are tiled to batch * beam_size and gathered by parent beam each step.
  The loop stops once every beam of every example is finished (or max_len); unfinished
  beams then count as complete with length max_len. With beam_size 1 this is exactly
  `greedy_search`; with a beam at least as large as the number of hypotheses it is an
  exhaustive search.

  Args:
    step_fn: see the module docstring.
    init_state: pytree with leading axis batch (tiled here to batch * beam_size).
    bos_id, eos_id, pad_id: the start, end and padding tokens (pad_id < vocab).
    max_len: the most tokens generated per hypothesis (static).
    beam_size: the number of beams (static).
    length_penalty: alpha >= 0.

  Returns:
    BeamSearchOutput, beams sorted best-first by score.
  """
  if beam_size < 1 or max_len < 1:
    raise ValueError(f'beam_size and max_len must be >= 1, got {beam_size} and {max_len}.')
  batch = batch_size_of(init_state)
  k = beam_size
  rows = jnp.arange(batch)[:, None]

  def cond(carry):
    t, _, _, finished, _, _, _ = carry
    return (t < max_len) & ~jnp.all(finished)

  def body(carry):
    t, tokens, logp, finished, lengths, seqs, state = carry
    step_logp, state = step_fn(tokens.reshape(batch * k), state)
    vocab = step_logp.shape[-1]
    step_logp = step_logp.reshape(batch, k, vocab).astype(jnp.float32)
    # A finished beam proposes only itself + pad, at zero cost.
    pad_only = jnp.where(jnp.arange(vocab) == pad_id, 0.0, NEG_INF)
    step_logp = jnp.where(finished[..., None], pad_only, step_logp)
    cand_logp = (logp[..., None] + step_logp).reshape(batch, k * vocab)
    cand_len = jnp.where(finished, lengths, t + 1)
    cand_len = jnp.broadcast_to(cand_len[..., None], (batch, k, vocab)).reshape(batch, -1)
    cand_score = cand_logp / gnmt_length_penalty(cand_len, length_penalty)
    _, top = lax.top_k(cand_score, k)                              # [batch, k]
    parent, token = top // vocab, (top % vocab).astype(jnp.int32)
    parent_finished = jnp.take_along_axis(finished, parent, axis=1)
    token = jnp.where(parent_finished, pad_id, token)
    seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1).at[:, :, t].set(token)
    # A -inf hypothesis (an empty beam) is dead: count it as finished for stopping.
    new_logp = jnp.take_along_axis(cand_logp, top, axis=1)
    new_finished = parent_finished | (token == eos_id) | (new_logp == NEG_INF)
    new_len = jnp.take_along_axis(cand_len, top, axis=1)
    state = _gather(state, (rows * k + parent).reshape(-1))
    return t + 1, token, new_logp, new_finished, new_len, seqs, state

  carry = (jnp.int32(0),
           jnp.full((batch, k), bos_id, jnp.int32),
           jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF), (batch, 1)),
           jnp.zeros((batch, k), bool),
           jnp.zeros((batch, k), jnp.int32),
           jnp.full((batch, k, max_len), pad_id, jnp.int32),
           _tile(init_state, k))
  _, _, logp, _, lengths, seqs, _ = lax.while_loop(cond, body, carry)
  # Beams still live here reached max_len: their lengths are max_len already.
  scores = logp / gnmt_length_penalty(lengths, length_penalty)
  order = jnp.argsort(-scores, axis=1, stable=True)
  take = lambda a: jnp.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)),
                                       axis=1)
  return BeamSearchOutput(take(seqs), take(scores), take(logp), take(lengths))


__all__ = ['greedy_search', 'beam_search', 'BeamSearchOutput', 'gnmt_length_penalty',
           'batch_size_of']
