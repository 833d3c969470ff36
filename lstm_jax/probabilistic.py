"""Probabilistic output heads: likelihoods with sampling, and quantile outputs.

Generic pieces, no task specifics:

- `GaussianHead` / `StudentTHead`: project features <float32>[..., features] to the
  parameters of a distribution (`loc`, `scale` > 0, and `df` > 2 for Student-t).
- `gaussian_nll`, `student_t_nll`: the negative log likelihood, elementwise (they match
  `scipy.stats.norm.logpdf` / `scipy.stats.t.logpdf` with a minus sign).
- `gaussian_sample`, `student_t_sample`: draws with the same parameterisation.
- `QuantileHead` + `pinball_loss`: direct quantile outputs (monotone by construction) and
  the quantile (pinball) loss.

The distribution's parameters are a plain dict of arrays, so that `nll(params, y)` and
`sample(key, params)` dispatch by `likelihood` name ('gaussian' or 'student_t').
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

Array = jax.Array
Params = dict[str, Array]

LIKELIHOODS = ('gaussian', 'student_t')
_MIN_SCALE = 1e-4  # Keeps the NLL finite when a window is constant.


def _positive(x: Array, minimum: float = _MIN_SCALE) -> Array:
  return jax.nn.softplus(x) + minimum


# ------------------------------------------------------------------------ likelihoods


def gaussian_nll(y: Array, loc: Array, scale: Array) -> Array:
  """-log N(y; loc, scale^2), elementwise; all arguments broadcast."""
  z = (y - loc) / scale
  return 0.5 * z * z + jnp.log(scale) + 0.5 * jnp.log(2.0 * jnp.pi)


def student_t_nll(y: Array, loc: Array, scale: Array, df: Array) -> Array:
  """-log t_df(y; loc, scale), the location-scale Student-t, elementwise."""
  z = (y - loc) / scale
  log_norm = (jsp.gammaln(0.5 * (df + 1.0)) - jsp.gammaln(0.5 * df)
              - 0.5 * jnp.log(df * jnp.pi) - jnp.log(scale))
  return -(log_norm - 0.5 * (df + 1.0) * jnp.log1p(z * z / df))


def gaussian_sample(key: Array, loc: Array, scale: Array,
                    shape: Sequence[int] = ()) -> Array:
  """Draws <float32>[*shape, *broadcast(loc, scale)] from N(loc, scale^2)."""
  full = tuple(shape) + jnp.broadcast_shapes(loc.shape, scale.shape)
  return loc + scale * jax.random.normal(key, full)


def student_t_sample(key: Array, loc: Array, scale: Array, df: Array,
                     shape: Sequence[int] = ()) -> Array:
  """Draws <float32>[*shape, *broadcast(...)] from the location-scale Student-t."""
  full = tuple(shape) + jnp.broadcast_shapes(loc.shape, scale.shape, df.shape)
  return loc + scale * jax.random.t(key, jnp.broadcast_to(df, full), full)


def nll(likelihood: str, params: Params, y: Array) -> Array:
  """The elementwise NLL of `y` under `params` (as returned by a head)."""
  if likelihood == 'gaussian':
    return gaussian_nll(y, params['loc'], params['scale'])
  if likelihood == 'student_t':
    return student_t_nll(y, params['loc'], params['scale'], params['df'])
  raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.')


def sample(likelihood: str, key: Array, params: Params, shape: Sequence[int] = ()) -> Array:
  """One draw per element of `params` (times a leading `shape`)."""
  if likelihood == 'gaussian':
    return gaussian_sample(key, params['loc'], params['scale'], shape)
  if likelihood == 'student_t':
    return student_t_sample(key, params['loc'], params['scale'], params['df'], shape)
  raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.')


def affine(params: Params, loc: Array, scale: Array) -> Params:
  """The distribution of `loc + scale * Y` for Y ~ params (undoes a per-window scaling)."""
  out = dict(params)
  out['loc'] = loc + scale * params['loc']
  out['scale'] = scale * params['scale']
  return out


class GaussianHead(nn.Module):
  """features <float32>[..., F] -> {'loc', 'scale'} each <float32>[...]."""

  @nn.compact
  def __call__(self, features: Array) -> Params:
    raw = nn.Dense(2, name='proj')(features)
    return {'loc': raw[..., 0], 'scale': _positive(raw[..., 1])}


class StudentTHead(nn.Module):
  """features <float32>[..., F] -> {'loc', 'scale', 'df'}; df > 2 so the variance exists."""

  @nn.compact
  def __call__(self, features: Array) -> Params:
    raw = nn.Dense(3, name='proj')(features)
    return {'loc': raw[..., 0], 'scale': _positive(raw[..., 1]),
            'df': 2.0 + _positive(raw[..., 2], 0.0)}


def likelihood_head(likelihood: str) -> nn.Module:
  """The head module for a likelihood name."""
  if likelihood == 'gaussian':
    return GaussianHead(name='likelihood')
  if likelihood == 'student_t':
    return StudentTHead(name='likelihood')
  raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.')


# -------------------------------------------------------------------------- quantiles


class QuantileHead(nn.Module):
  """features <float32>[..., F] -> quantiles <float32>[..., Q], non-decreasing in Q.

  Monotone by construction (a base value plus cumulative softplus increments) so the
  quantiles never cross, which a plain Dense(Q) does not guarantee.
  """
  num_quantiles: int

  @nn.compact
  def __call__(self, features: Array) -> Array:
    raw = nn.Dense(self.num_quantiles, name='proj')(features)
    if self.num_quantiles == 1:
      return raw
    steps = jax.nn.softplus(raw[..., 1:])
    return jnp.concatenate([raw[..., :1], raw[..., :1] + jnp.cumsum(steps, -1)], -1)


def pinball_loss(y: Array, quantiles: Array, levels: Array) -> Array:
  """The quantile (pinball) loss, elementwise.

  Args:
    y: <float32>[...] targets.
    quantiles: <float32>[..., Q] predicted quantiles.
    levels: <float32>[Q] quantile levels in (0, 1).

  Returns:
    <float32>[..., Q]: max(tau * (y - q), (tau - 1) * (y - q)).
  """
  diff = y[..., None] - quantiles
  levels = jnp.asarray(levels, quantiles.dtype)
  return jnp.maximum(levels * diff, (levels - 1.0) * diff)


__all__ = ['LIKELIHOODS', 'GaussianHead', 'StudentTHead', 'QuantileHead', 'affine',
           'gaussian_nll', 'student_t_nll', 'gaussian_sample', 'student_t_sample', 'nll',
           'sample', 'likelihood_head', 'pinball_loss']
