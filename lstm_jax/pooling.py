"""Masked pooling over time: one vector per sequence from a padded sequence of vectors.

    from lstm_jax import pooling
    z = pooling.pool(h, lengths, 'mean')                      # <float32>[batch, features]
    z = pooling.AttentionPool(name='pool')(h, lengths)        # learned weights over time

All functions read only each sequence's valid prefix (steps t < length): whatever sits in
the padding (zeros, NaN, anything) cannot change the result, so predictions do not depend
on how far a batch is padded.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
POOLINGS = ('last', 'mean', 'max', 'attention')


def valid_mask(lengths: Optional[Array], time: int) -> Array:
  """<bool>[batch, time]: True at steps t < lengths[b]; all True if lengths is None."""
  if lengths is None:
    return jnp.ones((1, time), bool)
  return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]


def last(h: Array, lengths: Optional[Array], directions: int = 1) -> Array:
  """The state after each sequence's last valid step.

  For a bidirectional output ([forward | reverse] halves, `directions=2`) the forward half
  is read at step length - 1 and the reverse half at step 0, where each direction has
  seen the whole valid sequence.

  Args:
    h: <float32>[batch, time, features]; features divisible by `directions`.
    lengths: <int>[batch] in [1, time], or None (all of length `time`).
    directions: 1, or 2 for concatenated forward/reverse halves.

  Returns:
    <float32>[batch, features].
  """
  batch, time, features = h.shape
  if lengths is None:
    lengths = jnp.full((batch,), time, jnp.int32)
  idx = jnp.clip(jnp.asarray(lengths) - 1, 0, time - 1)
  forward = jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]
  if directions == 1:
    return forward
  if directions != 2 or features % 2:
    raise ValueError(f'directions must be 1 or 2 (features even); got {directions} and '
                     f'{features} features.')
  half = features // 2
  return jnp.concatenate([forward[:, :half], h[:, 0, half:]], axis=-1)


def mean(h: Array, lengths: Optional[Array]) -> Array:
  """<float32>[batch, time, features] -> [batch, features]: the mean over valid steps."""
  mask = valid_mask(lengths, h.shape[1])[..., None]
  # `where`, not a product: NaN in the padding must not reach the sum.
  total = jnp.sum(jnp.where(mask, h, 0.0), axis=1)
  count = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(h.dtype)
  return total / count


def max_pool(h: Array, lengths: Optional[Array]) -> Array:
  """<float32>[batch, time, features] -> [batch, features]: the max over valid steps."""
  mask = valid_mask(lengths, h.shape[1])[..., None]
  return jnp.max(jnp.where(mask, h, -jnp.inf), axis=1)


def masked_softmax(scores: Array, lengths: Optional[Array]) -> Array:
  """<float32>[batch, time] scores -> weights summing to 1 over valid steps, 0 elsewhere."""
  mask = valid_mask(lengths, scores.shape[1])
  scores = jnp.where(mask, scores, -jnp.inf)
  # max over valid steps only; a length-0 row would be all -inf, so guard with 0.
  shift = jax.lax.stop_gradient(jnp.max(scores, axis=1, keepdims=True))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  e = jnp.where(mask, jnp.exp(scores - shift), 0.0)
  return e / jnp.maximum(jnp.sum(e, axis=1, keepdims=True), 1e-30)


class AttentionPool(nn.Module):
  """Additive self-attentive pooling: w = softmax_t(v . tanh(W h_t + b)), z = sum_t w_t h_t.

  Attributes:
    attention_size: width of the tanh layer.
  """
  attention_size: int = 64

  @nn.compact
  def __call__(self, h: Array, lengths: Optional[Array]) -> tuple[Array, Array]:
    """h: <float32>[batch, time, features], lengths: <int>[batch] ->
    (<float32>[batch, features] pooled, <float32>[batch, time] weights)."""
    hidden = jnp.tanh(nn.Dense(self.attention_size, name='proj')(h))
    scores = nn.Dense(1, use_bias=False, name='score')(hidden)[..., 0]
    weights = masked_softmax(scores, lengths)
    # `where` again: padding weights are 0 but 0 * NaN would still be NaN.
    mask = valid_mask(lengths, h.shape[1])[..., None]
    pooled = jnp.sum(jnp.where(mask, h, 0.0) * weights[..., None], axis=1)
    return pooled, weights


def pool(h: Array, lengths: Optional[Array], kind: str, directions: int = 1) -> Array:
  """Parameter-free pooling by name: 'last', 'mean' or 'max' (see the functions above).

  Args:
    h: <float32>[batch, time, features].
    lengths: <int>[batch] or None.
    kind: one of 'last', 'mean', 'max' ('attention' has parameters: use AttentionPool).
    directions: for 'last', 2 if h holds concatenated forward/reverse halves.

  Returns:
    <float32>[batch, features].
  """
  if kind == 'last':
    return last(h, lengths, directions)
  if kind == 'mean':
    return mean(h, lengths)
  if kind == 'max':
    return max_pool(h, lengths)
  raise ValueError(f'pooling must be one of {POOLINGS} (attention via AttentionPool); got '
                   f'{kind!r}.')
