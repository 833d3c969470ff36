"""Masked pooling and the speech classifier: padding never changes the result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import pooling


def _padded(x, lengths, pad_to, fill):
  """x <float32>[b, t, f] -> padded to pad_to steps, `fill` past each length."""
  b, t, f = x.shape
  out = np.full((b, pad_to, f), fill, np.float32)
  out[:, :t] = x
  for i, n in enumerate(lengths):
    out[i, n:] = fill
  return out


def test_pool_functions_match_numpy():
  rng = np.random.default_rng(0)
  h = rng.standard_normal((3, 6, 4)).astype(np.float32)
  lengths = np.array([6, 2, 4])
  mean = pooling.mean(jnp.asarray(h), lengths)
  last = pooling.last(jnp.asarray(h), lengths)
  mx = pooling.max_pool(jnp.asarray(h), lengths)
  bi = pooling.last(jnp.asarray(h), lengths, directions=2)
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(mean[i], h[i, :n].mean(0), rtol=1e-6)
    np.testing.assert_allclose(last[i], h[i, n - 1])
    np.testing.assert_allclose(mx[i], h[i, :n].max(0))
    np.testing.assert_allclose(bi[i], np.concatenate([h[i, n - 1, :2], h[i, 0, 2:]]))


def test_masked_softmax_ignores_padding():
  scores = jnp.array([[1.0, 2.0, 50.0], [0.5, -jnp.inf, jnp.nan]])
  w = pooling.masked_softmax(scores, jnp.array([2, 1]))
  np.testing.assert_allclose(w[0, :2], jax.nn.softmax(jnp.array([1.0, 2.0])), rtol=1e-6)
  np.testing.assert_array_equal(w[:, 2], [0.0, 0.0])
  np.testing.assert_allclose(w[1], [1.0, 0.0, 0.0])


@pytest.mark.parametrize('kind,bidirectional', [('last', False), ('last', True),
                                                ('mean', True), ('attention', True)])
def test_classifier_logits_do_not_depend_on_padding(kind, bidirectional):
  from experiments.speech.model import SpeechClassifier
  rng = np.random.default_rng(1)
  lengths = np.array([5, 2, 7], np.int32)
  x = rng.standard_normal((3, 7, 3)).astype(np.float32)
  # Two layers with a projection (LSTMP) only once: each case costs compiles.
  model = SpeechClassifier(num_classes=4, hidden_size=5, num_layers=2 if kind == 'last' else 1,
                           bidirectional=bidirectional, proj_size=3, pooling=kind,
                           attention_size=4)
  short = _padded(x, lengths, 7, 0.0)
  variables = model.init(jax.random.key(0), short, seq_lengths=lengths)
  ref = model.apply(variables, short, seq_lengths=lengths)
  for pad_to, fill in [(12, np.nan)]:  # NaN padding: would poison any leak.
    other = model.apply(variables, _padded(x, lengths, pad_to, fill), seq_lengths=lengths)
    np.testing.assert_allclose(np.asarray(other), np.asarray(ref), rtol=1e-5, atol=1e-6)
  # One utterance alone (no batch mates, no padding) gives the same logits too.
  alone = model.apply(variables, x[1:2, :2], seq_lengths=lengths[1:2])
  np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(ref[1]), rtol=1e-5, atol=1e-6)
