"""The forecasting LSTM: one encoder-decoder stack, two heads.

Inputs per window step p in [0, context + horizon) (see `windows.py` for the batch):

    [ z at lag L for each L in lags | availability of each lag | time features | static ]

with z = (y - loc) / scale the per-window scaled target. The same `lstm_jax.LSTM` reads the
context and then the horizon, so known-future covariates and calendar features reach the
decoder steps. Heads:

- 'deepar' (Salinas et al. 2020): a likelihood head (Gaussian or Student-t) predicts z_p
  from the inputs up to p. Training uses teacher forcing over the whole window (context
  and horizon); forecasting encodes the context, then draws sample paths step by step,
  feeding each draw back as the lag-1 input (`sample_paths`).
- 'quantile' (direct multi-horizon, as MQ-RNN, Wen et al. 2017): lags that would reach
  into the horizon are zeroed (their availability flag says so), and a monotone quantile
  head outputs all levels at every horizon step in one pass; pinball loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import LSTM, probabilistic

Array = jax.Array


def lag_features(z: Array, obs: Array, lags: Sequence[int], max_lag: int, start: int,
                 length: int, context: int, direct: bool) -> Array:
  """Lag values and availability flags for window steps [start, start + length).

  Args:
    z: <float32>[B, max_lag + context + horizon] scaled target (history, then the
      future or the sampled paths; future entries are ignored where unavailable).
    obs: <float32>[B, same]: 1 where z was observed.
    start, length: static ints, the window steps wanted.
    direct: True masks every lag that reaches step >= context (the horizon).

  Returns:
    <float32>[B, length, 2 * len(lags)].
  """
  values, flags = [], []
  steps = start + jnp.arange(length)
  for lag in lags:
    pos = max_lag + start - lag
    v = jax.lax.dynamic_slice_in_dim(z, pos, length, axis=1)
    f = jax.lax.dynamic_slice_in_dim(obs, pos, length, axis=1)
    if direct:
      f = f * (steps - lag < context)[None].astype(f.dtype)
    values.append(v * f)
    flags.append(f)
  return jnp.stack(values + flags, -1)


def static_features(loc: Array, scale: Array) -> Array:
  """<float32>[B, 2]: the window's level and spread, so the model knows what it undid."""
  return jnp.stack([jnp.log(scale), loc / scale / 10.0], -1)


class ForecastNet(nn.Module):
  """LSTM stack + head. `lstm` holds the `lstm_jax.LSTM` keyword arguments."""
  lstm: dict
  head: str = 'deepar'             # 'deepar' | 'quantile'
  likelihood: str = 'student_t'    # for 'deepar'
  num_quantiles: int = 0           # for 'quantile'

  def setup(self):
    self.rnn = LSTM(**self.lstm)
    if self.head == 'deepar':
      self.out = probabilistic.likelihood_head(self.likelihood)
    elif self.head == 'quantile':
      self.out = probabilistic.QuantileHead(self.num_quantiles)
    else:
      raise ValueError(f"model.head must be 'deepar' or 'quantile', got {self.head!r}.")

  def __call__(self, x: Array, initial_state: Any = None,
               deterministic: bool = True) -> tuple[Any, Any]:
    """x <float32>[B, T, D] -> (head output per step, final state)."""
    ys, state = self.rnn(x, initial_state=initial_state, deterministic=deterministic)
    return self.out(ys), state


def build_inputs(batch: dict, lags: Sequence[int], context: int, horizon: int,
                 direct: bool) -> tuple[Array, Array, Array]:
  """(x <float32>[B, C + H, D], z_full, obs_full) from a windows batch (teacher forcing)."""
  max_lag = max(lags)
  z_hist = (batch['history'] - batch['loc'][:, None]) / batch['scale'][:, None]
  z_fut = (batch['future'] - batch['loc'][:, None]) / batch['scale'][:, None]
  z = jnp.concatenate([z_hist, z_fut], 1)
  obs = jnp.concatenate([batch['history_observed'], batch['future_observed']], 1)
  lagged = lag_features(z, obs, lags, max_lag, 0, context + horizon, context, direct)
  static = static_features(batch['loc'], batch['scale'])
  static = jnp.broadcast_to(static[:, None], (z.shape[0], context + horizon, 2))
  return jnp.concatenate([lagged, batch['time'], static], -1), z, obs


def window_losses(model: ForecastNet, variables: Any, batch: dict, lags: Sequence[int],
                  context: int, horizon: int, levels: Array,
                  rng: Array | None = None) -> Array:
  """<float32>[B]: each window's mean loss over its observed steps.

  'deepar': the NLL of z at every window step (context and horizon, teacher forcing);
  'quantile': the pinball loss averaged over levels at the horizon steps. `rng` turns on
  dropout (training).
  """
  direct = model.head == 'quantile'
  x, z, obs = build_inputs(batch, lags, context, horizon, direct)
  rngs = {'dropout': rng} if rng is not None else None
  out, _ = model.apply(variables, x, deterministic=rng is None, rngs=rngs)
  max_lag = max(lags)
  target, weight = z[:, max_lag:], obs[:, max_lag:]
  if direct:
    loss = probabilistic.pinball_loss(target[:, context:], out[:, context:], levels).mean(-1)
    weight = weight[:, context:]
  else:
    loss = probabilistic.nll(model.likelihood, out, target)
  return jnp.sum(loss * weight, 1) / jnp.maximum(jnp.sum(weight, 1), 1.0)


def predict_quantiles(model: ForecastNet, variables: Any, batch: dict, lags: Sequence[int],
                      context: int, horizon: int) -> Array:
  """Direct head: <float32>[B, H, Q] quantiles in data units."""
  x, _, _ = build_inputs(batch, lags, context, horizon, True)
  q, _ = model.apply(variables, x)
  return q[:, context:] * batch['scale'][:, None, None] + batch['loc'][:, None, None]


def sample_paths(model: ForecastNet, variables: Any, batch: dict, lags: Sequence[int],
                 context: int, horizon: int, num_samples: int, rng: Array) -> Array:
  """DeepAR head: <float32>[num_samples, B, H] sample paths in data units.

  Encodes the context once per window, then decodes all samples as one batch of
  B * num_samples, feeding each step's draw back into the lag inputs.
  """
  max_lag = max(lags)
  b = batch['history'].shape[0]
  future_free = dict(batch, future=jnp.zeros_like(batch['future']),
                     future_observed=jnp.ones_like(batch['future_observed']))
  x, z, obs = build_inputs(future_free, lags, context, horizon, False)
  _, state = model.apply(variables, x[:, :context])
  rep = lambda a: jnp.repeat(a, num_samples, axis=0)  # [B, ...] -> [B * N, ...]
  state = jax.tree.map(lambda a: jnp.repeat(a, num_samples, axis=1), state)
  z, obs, x_time = rep(z), rep(obs), rep(x[:, context:, 2 * len(lags):])

  def step(carry, p):
    z, state, key = carry
    key, sub = jax.random.split(key)
    lagged = lag_features(z, obs, lags, max_lag, context + p, 1, context, False)[:, 0]
    x_t = jnp.concatenate([lagged, jax.lax.dynamic_index_in_dim(x_time, p, 1, False)], -1)
    out, state = model.apply(variables, x_t[:, None], initial_state=state)
    draw = probabilistic.sample(model.likelihood, sub, jax.tree.map(lambda a: a[:, 0], out))
    # The draw becomes the observed value at window step context + p for later lags.
    z = jax.lax.dynamic_update_slice_in_dim(z, draw[:, None], max_lag + context + p, 1)
    return (z, state, key), draw

  _, draws = jax.lax.scan(step, (z, state, rng), jnp.arange(horizon))
  draws = draws.reshape(horizon, b, num_samples).transpose(2, 1, 0)  # [N, B, H]
  return draws * batch['scale'][None, :, None] + batch['loc'][None, :, None]
