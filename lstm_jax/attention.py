"""Encoder-decoder attention over a padded sequence of keys (for attention seq2seq).

    from lstm_jax.attention import BahdanauAttention, LuongAttention
    attend = LuongAttention(kind='general')
    context, weights = attend.apply(variables, query, keys, mask)

Shapes: `query` <float32>[batch, q] (the decoder state), `keys` <float32>[batch, time, k]
(the encoder outputs, also the values unless `values` is given), `mask` <bool>[batch, time]
(True at valid source positions). Both modules return
`(context <float32>[batch, k_v], weights <float32>[batch, time])`, where

    a_t = softmax_t(score(query, key_t)) over the valid t,   context = sum_t a_t value_t.

Masked positions get exactly zero weight, whatever the keys and values hold there (NaN
included), and a fully masked row gets zero weights and a zero context (no NaN, finite
gradients). The attentional hidden state, input feeding etc. belong to the decoder.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
LUONG_KINDS = ('dot', 'general')


def masked_softmax(scores: Array, mask: Optional[Array]) -> Array:
  """<float32>[batch, time] scores -> weights: softmax over mask==True, exactly 0 elsewhere.

  A row with no valid position gets all-zero weights. The masked scores never enter
  `exp` (they are replaced before it), so neither -inf nor NaN can reach the gradients.
  """
  if mask is None:
    mask = jnp.ones(scores.shape, bool)
  shift = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
  shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
  e = jnp.where(mask, jnp.exp(jnp.where(mask, scores - shift, 0.0)), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(total > 0, total, 1.0)


def weighted_sum(weights: Array, values: Array, mask: Optional[Array]) -> Array:
  """<float32>[batch, time] weights, <float32>[batch, time, k] values -> [batch, k].

  Padded values are zeroed with `where` first: 0 * NaN would still be NaN.
  """
  if mask is not None:
    values = jnp.where(mask[..., None], values, 0.0)
  return jnp.einsum('bt,btk->bk', weights, values)


def _check(query: Array, keys: Array, mask: Optional[Array]) -> None:
  if query.ndim != 2 or keys.ndim != 3 or query.shape[0] != keys.shape[0]:
    raise ValueError('query must be [batch, q] and keys [batch, time, k]; got shapes '
                     f'{query.shape} and {keys.shape}.')
  if mask is not None and mask.shape != keys.shape[:2]:
    raise ValueError(f'mask must be [batch, time] = {keys.shape[:2]}, got {mask.shape}.')


class LuongAttention(nn.Module):
  """Multiplicative attention (Luong, Pham & Manning 2015, "Effective Approaches to
  Attention-based Neural Machine Translation", eq. 8):

      score(h_t, h_s) = h_t . h_s          kind='dot'      (needs q == k)
      score(h_t, h_s) = h_t . W_a h_s      kind='general'  (W_a <float32>[q, k], no bias)

  with h_t the decoder state (query) and h_s the encoder outputs (keys). 'general' is
  computed as (h_t W_a) . h_s: one [q, k] product per decoder step, nothing per key.

  Attributes:
    kind: 'dot' or 'general'.
  """
  kind: str = 'general'
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query: Array, keys: Array, mask: Optional[Array] = None,
               values: Optional[Array] = None) -> tuple[Array, Array]:
    """Attends over `keys`.

    Args:
      query: <float32>[batch, q].
      keys: <float32>[batch, time, k].
      mask: <bool>[batch, time], True at valid positions; None: all valid.
      values: <float32>[batch, time, k_v], or None to use `keys`.

    Returns:
      (context <float32>[batch, k_v], weights <float32>[batch, time]).
    """
    if self.kind not in LUONG_KINDS:
      raise ValueError(f'kind must be one of {LUONG_KINDS}, got {self.kind!r}.')
    _check(query, keys, mask)
    if self.kind == 'general':
      query = nn.Dense(keys.shape[-1], use_bias=False, param_dtype=self.param_dtype,
                       name='W_a')(query)
    elif query.shape[-1] != keys.shape[-1]:
      raise ValueError(f"kind='dot' needs query and key sizes to match, got "
                       f'{query.shape[-1]} and {keys.shape[-1]}.')
    safe_keys = keys if mask is None else jnp.where(mask[..., None], keys, 0.0)
    scores = jnp.einsum('bk,btk->bt', query, safe_keys)
    weights = masked_softmax(scores, mask)
    return weighted_sum(weights, keys if values is None else values, mask), weights


class BahdanauAttention(nn.Module):
  """Additive attention (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by
  Jointly Learning to Align and Translate", eq. 6 / appendix A.1.2):

      score(s, h_j) = v_a . tanh(W_a s + U_a h_j)

  with s the decoder state (query, [q]), h_j the encoder outputs (keys, [k]),
  W_a <float32>[q, units], U_a <float32>[k, units], v_a <float32>[units] (no biases, as
  in the paper). U_a h_j does not depend on the decoder step: compute it once per source
  sequence with `precompute_keys` and pass it as `projected_keys` at every step.

      projected = attend.apply(v, keys, method=BahdanauAttention.precompute_keys)
      context, weights = attend.apply(v, s, keys, mask, projected_keys=projected)

  Attributes:
    units: the width of the tanh layer.
  """
  units: int
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.W_a = nn.Dense(self.units, use_bias=False, param_dtype=self.param_dtype)
    self.U_a = nn.Dense(self.units, use_bias=False, param_dtype=self.param_dtype)
    self.v_a = nn.Dense(1, use_bias=False, param_dtype=self.param_dtype)

  def precompute_keys(self, keys: Array) -> Array:
    """<float32>[batch, time, k] -> U_a keys <float32>[batch, time, units]."""
    return self.U_a(keys)

  def __call__(self, query: Array, keys: Array, mask: Optional[Array] = None,
               values: Optional[Array] = None,
               projected_keys: Optional[Array] = None) -> tuple[Array, Array]:
    """Attends over `keys`.

    Args:
      query: <float32>[batch, q].
      keys: <float32>[batch, time, k].
      mask: <bool>[batch, time], True at valid positions; None: all valid.
      values: <float32>[batch, time, k_v], or None to use `keys`.
      projected_keys: `precompute_keys(keys)`, <float32>[batch, time, units], or None
        to compute it here.

    Returns:
      (context <float32>[batch, k_v], weights <float32>[batch, time]).
    """
    _check(query, keys, mask)
    if projected_keys is None:
      safe_keys = keys if mask is None else jnp.where(mask[..., None], keys, 0.0)
      projected_keys = self.precompute_keys(safe_keys)
    elif mask is not None:
      projected_keys = jnp.where(mask[..., None], projected_keys, 0.0)
    hidden = jnp.tanh(self.W_a(query)[:, None, :] + projected_keys)
    scores = self.v_a(hidden)[..., 0]
    weights = masked_softmax(scores, mask)
    return weighted_sum(weights, keys if values is None else values, mask), weights


__all__ = ['LuongAttention', 'BahdanauAttention', 'masked_softmax', 'weighted_sum']
