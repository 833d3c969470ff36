"""Luong and Bahdanau attention (`lstm_jax.attention`) against NumPy float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax.attention import BahdanauAttention, LuongAttention

BATCH, TIME, K = 4, 6, 5
Q = {'dot': K, 'general': 3, 'bahdanau': 3}  # dot needs q == k.
LENGTHS = np.array([6, 3, 1, 0])  # The last row is fully masked.


def inputs(seed: int = 0, nan_padding: bool = True, q: int = K):
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(BATCH, q)).astype(np.float32)
  keys = rng.normal(size=(BATCH, TIME, K)).astype(np.float32)
  mask = np.arange(TIME)[None] < LENGTHS[:, None]
  if nan_padding:  # Whatever sits in the padding must not matter.
    keys = np.where(mask[..., None], keys, np.nan).astype(np.float32)
  return jnp.asarray(query), jnp.asarray(keys), jnp.asarray(mask)


def reference(scores: np.ndarray, keys: np.ndarray, mask: np.ndarray):
  """float64 masked softmax and weighted sum; zero weights on a fully masked row."""
  weights = np.zeros_like(scores)
  for b in range(scores.shape[0]):
    valid = mask[b]
    if valid.any():
      e = np.exp(scores[b, valid] - scores[b, valid].max())
      weights[b, valid] = e / e.sum()
  context = np.einsum('bt,btk->bk', weights, np.where(mask[..., None], keys, 0.0))
  return context, weights


def ref_scores(kind: str, params, query, keys):
  q, k = np.float64(query), np.where(np.isnan(keys), 0.0, np.float64(keys))
  if kind == 'dot':
    return np.einsum('bq,btq->bt', q, k)
  if kind == 'general':
    w = np.float64(params['W_a']['kernel'])  # [q, k]: score = q W_a k.
    return np.einsum('bq,qk,btk->bt', q, w, k)
  w_q = np.float64(params['W_a']['kernel'])
  u_k = np.float64(params['U_a']['kernel'])
  v = np.float64(params['v_a']['kernel'])[:, 0]
  return np.tanh((q @ w_q)[:, None, :] + k @ u_k) @ v


MODULES = {'dot': LuongAttention(kind='dot'), 'general': LuongAttention(kind='general'),
           'bahdanau': BahdanauAttention(units=7)}


@pytest.mark.parametrize('kind', list(MODULES))
def test_matches_numpy_reference(kind):
  module = MODULES[kind]
  query, keys, mask = inputs(q=Q[kind])
  variables = module.init(jax.random.key(1), query, keys, mask)
  context, weights = jax.jit(module.apply)(variables, query, keys, mask)
  assert context.shape == (BATCH, K) and weights.shape == (BATCH, TIME)
  assert context.dtype == weights.dtype == jnp.float32
  assert np.all(np.isfinite(context)) and np.all(np.isfinite(weights))

  params = variables.get('params', {})
  ref_context, ref_weights = reference(ref_scores(kind, params, query, keys),
                                       np.asarray(keys, np.float64), np.asarray(mask))
  np.testing.assert_allclose(weights, ref_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(context, ref_context, rtol=1e-5, atol=1e-5)
  # Exactly zero on padding; sums to 1 over valid steps; fully masked row all zero.
  w = np.asarray(weights)
  assert np.all(w[~np.asarray(mask)] == 0.0)
  np.testing.assert_allclose(w[:3].sum(1), 1.0, rtol=1e-6)
  assert np.all(w[3] == 0.0) and np.all(np.asarray(context)[3] == 0.0)


@pytest.mark.parametrize('kind', list(MODULES))
def test_gradients_finite(kind):
  module = MODULES[kind]
  query, keys, mask = inputs(q=Q[kind])
  variables = module.init(jax.random.key(2), query, keys, mask)

  @jax.jit
  def grads(variables, query, keys):
    def loss(variables, query, keys):
      context, weights = module.apply(variables, query, keys, mask)
      return jnp.sum(context ** 2) + jnp.sum(weights * jnp.arange(TIME))
    return jax.grad(loss, argnums=(0, 1, 2))(variables, query, keys)

  g_vars, g_query, g_keys = grads(variables, query, keys)
  for leaf in jax.tree.leaves((g_vars, g_query)):
    assert np.all(np.isfinite(leaf))
  g_keys = np.asarray(g_keys)
  assert np.all(np.isfinite(g_keys))
  assert np.all(g_keys[~np.asarray(mask)] == 0.0)  # No gradient into the padding.
  assert np.any(g_keys[np.asarray(mask)] != 0.0)


def test_bahdanau_precomputed_keys_and_separate_values():
  module = BahdanauAttention(units=7)
  query, keys, mask = inputs(3, nan_padding=False, q=3)
  values = jax.random.normal(jax.random.key(4), (BATCH, TIME, 3))
  variables = module.init(jax.random.key(5), query, keys, mask)

  @jax.jit
  def both(variables):
    projected = module.apply(variables, keys, method=BahdanauAttention.precompute_keys)
    assert projected.shape == (BATCH, TIME, 7)
    return (module.apply(variables, query, keys, mask, values=values),
            module.apply(variables, query, keys, mask, values=values,
                         projected_keys=projected))

  (c1, w1), (c2, w2) = both(variables)
  assert c1.shape == (BATCH, 3)
  np.testing.assert_allclose(c1, c2, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(w1, w2, rtol=1e-6, atol=1e-6)
  expected = np.einsum('bt,btk->bk', np.float64(w1), np.float64(values))
  np.testing.assert_allclose(c1, expected, rtol=1e-5, atol=1e-6)


def test_no_mask_means_all_valid_and_dot_size_check():
  query, keys, _ = inputs(6, nan_padding=False)
  module = LuongAttention(kind='dot')
  full = jnp.ones((BATCH, TIME), bool)
  a = module.apply({}, query, keys)
  b = module.apply({}, query, keys, full)
  np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
  with pytest.raises(ValueError, match='sizes to match'):
    module.apply({}, query[:, :3], keys)
  with pytest.raises(ValueError, match='kind'):
    LuongAttention(kind='concat').init(jax.random.key(0), query, keys)
