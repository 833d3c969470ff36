"""Likelihood heads: NLLs match scipy.stats, samples follow the stated distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lstm_jax import probabilistic as P


def test_gaussian_nll_matches_scipy():
  rng = np.random.default_rng(0)
  y, loc, scale = rng.normal(size=50), rng.normal(size=50), rng.uniform(0.1, 3, 50)
  got = np.asarray(P.gaussian_nll(jnp.array(y), jnp.array(loc), jnp.array(scale)))
  np.testing.assert_allclose(got, -stats.norm.logpdf(y, loc, scale), rtol=1e-5, atol=1e-5)


def test_student_t_nll_matches_scipy():
  rng = np.random.default_rng(1)
  y, loc = rng.normal(size=50) * 3, rng.normal(size=50)
  scale, df = rng.uniform(0.1, 3, 50), rng.uniform(2.1, 30, 50)
  got = np.asarray(P.student_t_nll(*map(jnp.array, (y, loc, scale, df))))
  np.testing.assert_allclose(got, -stats.t.logpdf(y, df, loc, scale), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('likelihood', ['gaussian', 'student_t'])
def test_samples_follow_the_distribution(likelihood):
  params = {'loc': jnp.array(1.5), 'scale': jnp.array(2.0), 'df': jnp.array(5.0)}
  draws = np.asarray(P.sample(likelihood, jax.random.key(0), params, (20000,)))
  ref = (stats.norm(1.5, 2.0) if likelihood == 'gaussian' else stats.t(5.0, 1.5, 2.0))
  assert stats.kstest(draws, ref.cdf).pvalue > 0.01
  assert abs(draws.mean() - 1.5) < 0.06
  np.testing.assert_allclose(draws.var(), ref.var(), rtol=0.1)


def test_heads_shapes_and_constraints():
  x = jnp.ones((3, 4, 5))
  for head in (P.GaussianHead(), P.StudentTHead()):
    out, _ = head.init_with_output(jax.random.key(0), x)
    assert out['loc'].shape == (3, 4) and bool(jnp.all(out['scale'] > 0))
  out, _ = P.StudentTHead().init_with_output(jax.random.key(0), x * 100)
  assert bool(jnp.all(out['df'] > 2))
  q, _ = P.QuantileHead(7).init_with_output(jax.random.key(0), jax.random.normal(
      jax.random.key(1), (3, 4, 5)) * 10)
  assert q.shape == (3, 4, 7) and bool(jnp.all(jnp.diff(q, axis=-1) >= 0))


def test_pinball_loss_by_hand():
  y = jnp.array([1.0, 3.0])
  q = jnp.array([[2.0, 2.0], [2.0, 2.0]])
  got = P.pinball_loss(y, q, jnp.array([0.1, 0.9]))
  # y < q: (1 - tau) * (q - y); y > q: tau * (y - q).
  np.testing.assert_allclose(np.asarray(got), [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)


def test_affine_unscaling():
  p = P.affine({'loc': jnp.array(1.0), 'scale': jnp.array(2.0)}, jnp.array(10.0),
               jnp.array(3.0))
  assert float(p['loc']) == 13.0 and float(p['scale']) == 6.0
