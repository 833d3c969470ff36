"""Time splits and windows: what the model sees for one (series, origin) pair.

A forecast origin `o` splits a series: positions < o are history, [o, o + horizon) the
values to forecast. A window for origin o covers `max_lag + context` history steps and
the horizon:

    history  <float32>[B, max_lag + context]   target values at [o - max_lag - context, o)
    future   <float32>[B, horizon]             target values at [o, o + horizon): labels only
    time     <float32>[B, context + horizon, F] covariates per step: calendar, known
                                               covariates (all steps), past-only covariates
                                               (zero from o on), an is-future flag,
                                               a one-hot series id
    loc, scale <float32>[B]                    per-window scaling from the context only

Nothing at or after o reaches `history`, `time`'s past-only columns, `loc` or `scale`:
`tests/test_forecasting_windows.py` checks this by perturbing the future.

Splits are by time only. The evaluation origins of a split (`eval_origins`) are
`num_origins` origins `stride` steps apart; the last forecast ends at the series' end
('test'), or, for 'val', just before the first test origin. Training windows end at or
before the first origin of the evaluated split, so no value inside any of its horizons
(or after) is trained on. Training batch `step` is a pure function of (seed, step).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.forecasting import data as fdata

Batch = dict[str, np.ndarray]
_EPS = 1e-3


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """Window geometry and feature choices (from `config.data` / `config.model`)."""
  context: int
  horizon: int
  lags: tuple[int, ...]
  scaling: str = 'standard'  # 'standard' (mean, std) or 'mean' (DeepAR: 0, mean |y|).

  @property
  def max_lag(self) -> int:
    return max(self.lags)


def eval_origins(length: int, horizon: int, num_origins: int, stride: int,
                 split: str = 'test') -> np.ndarray:
  """Origins <int64>[num_origins], ascending, of the 'test' or 'val' split."""
  last_test = length - horizon
  test = last_test - stride * np.arange(num_origins)[::-1]
  if split == 'test':
    origins = test
  elif split == 'val':
    origins = test[0] - horizon - stride * np.arange(num_origins)[::-1]
  else:
    raise fdata.UserError('eval.split', f"must be 'test' or 'val', got {split!r}.")
  return origins.astype(np.int64)


def check_history(length: int, spec: WindowSpec, origins: np.ndarray, min_train: int,
                  name: str) -> None:
  """Raises `UserError` if the series is too short for the windows and a training set."""
  first = int(origins[0])
  need = spec.max_lag + spec.context + spec.horizon + min_train
  if first < need:
    raise fdata.UserError('data', f'{name}: {length} time steps are too few: the first '
                          f'evaluation origin is at step {first}, but max(lags) '
                          f'{spec.max_lag} + context {spec.context} + horizon '
                          f'{spec.horizon} + {min_train} training origins need {need} '
                          'steps before it. Use a shorter context/horizon/lags or fewer '
                          'evaluation origins (eval.num_origins).')


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A `SeriesSet` with its features precomputed once (all NumPy)."""
  series: fdata.SeriesSet
  spec: WindowSpec
  covariates: np.ndarray   # <float32>[S, T, C]: calendar + normalised known + past.
  num_known: int           # Columns [0, num_known) of covariates are known in future.
  train_end: int           # Training windows' horizons end at or before this step.


def prepare(series: fdata.SeriesSet, spec: WindowSpec, train_end: int) -> Prepared:
  """Normalises covariates with statistics of the training span [0, train_end) only."""
  def norm(x):
    if x.shape[-1] == 0:
      return x
    head = x[:, :train_end].reshape(-1, x.shape[-1])
    return (x - head.mean(0)) / (head.std(0) + _EPS)
  calendar = np.broadcast_to(fdata.calendar_features(series.timestamps)[None],
                             (series.num_series,) + (series.length, 6))
  known = np.concatenate([calendar, norm(series.known)], -1)
  covariates = np.concatenate([known, norm(series.past)], -1).astype(np.float32)
  return Prepared(series, spec, covariates, known.shape[-1], train_end)


def num_time_features(prepared: Prepared) -> int:
  """F: covariates + is-future flag + series one-hot."""
  return prepared.covariates.shape[-1] + 1 + prepared.series.num_series


def make_windows(prepared: Prepared, series_idx: np.ndarray, origins: np.ndarray) -> Batch:
  """The model inputs and labels of B (series, origin) pairs; see the module docstring.

  Args:
    series_idx: <int>[B].
    origins: <int>[B], each in [max_lag + context, T - horizon].
  """
  spec, s = prepared.spec, prepared.series
  c, h, lag = spec.context, spec.horizon, spec.max_lag
  series_idx, origins = np.asarray(series_idx), np.asarray(origins)
  hist_pos = origins[:, None] + np.arange(-lag - c, 0)[None]
  fut_pos = origins[:, None] + np.arange(h)[None]
  win_pos = origins[:, None] + np.arange(-c, h)[None]
  if hist_pos.min() < 0 or fut_pos.max() >= s.length:
    raise ValueError('a window reaches outside the series.')
  rows = series_idx[:, None]
  history = s.target[rows, hist_pos]
  hist_obs = s.observed[rows, hist_pos]
  ctx, ctx_obs = history[:, -c:], hist_obs[:, -c:]
  weight = ctx_obs.astype(np.float64)
  count = np.maximum(weight.sum(1), 1.0)
  if spec.scaling == 'standard':
    loc = (ctx * weight).sum(1) / count
    var = (((ctx - loc[:, None]) ** 2) * weight).sum(1) / count
    scale = np.sqrt(var)
  elif spec.scaling == 'mean':
    loc = np.zeros(len(origins))
    scale = (np.abs(ctx) * weight).sum(1) / count
  else:
    raise fdata.UserError('model.scaling', f"must be 'standard' or 'mean', got "
                          f'{spec.scaling!r}.')
  scale = np.maximum(scale, _EPS * (1.0 + np.abs(loc)))  # A flat context stays finite.

  cov = prepared.covariates[rows, win_pos]  # [B, c + h, C]
  is_future = (np.arange(-c, h) >= 0)[None, :, None] & np.ones((len(origins), 1, 1), bool)
  # Past-only covariates are unknown from the origin on: zeroed, flagged by is_future.
  cov[:, :, prepared.num_known:] *= ~is_future
  one_hot = np.eye(s.num_series, dtype=np.float32)[series_idx]
  time = np.concatenate([cov, is_future.astype(np.float32),
                         np.broadcast_to(one_hot[:, None], (len(origins), c + h,
                                                             s.num_series))], -1)
  return {
      'history': history.astype(np.float32),
      'history_observed': hist_obs.astype(np.float32),
      'future': s.target[rows, fut_pos].astype(np.float32),
      'future_observed': s.observed[rows, fut_pos].astype(np.float32),
      'time': time.astype(np.float32),
      'loc': loc.astype(np.float32),
      'scale': scale.astype(np.float32),
  }


def train_origin_range(prepared: Prepared) -> tuple[int, int]:
  """[low, high]: the origins whose windows lie inside [0, train_end)."""
  spec = prepared.spec
  low = spec.max_lag + spec.context
  high = prepared.train_end - spec.horizon
  if high < low:
    raise fdata.UserError('data', 'no training windows fit before the evaluation period.')
  return low, high


def train_batch(prepared: Prepared, seed: int, step: int, batch_size: int) -> Batch:
  """Training batch `step`: uniform (series, origin) pairs, a pure function of (seed, step).

  A restarted run resumes at any step with the same batches (no iterator state).
  """
  rng = np.random.default_rng([seed, step])
  low, high = train_origin_range(prepared)
  series_idx = rng.integers(0, prepared.series.num_series, batch_size)
  origins = rng.integers(low, high + 1, batch_size)
  return make_windows(prepared, series_idx, origins)


def eval_pairs(num_series: int, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """All (series, origin) pairs, origin-major: ([S * N], [S * N])."""
  series_idx = np.tile(np.arange(num_series), len(origins))
  return series_idx, np.repeat(origins, num_series)
