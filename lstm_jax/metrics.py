"""Forecast accuracy metrics (NumPy, host side): point, interval and probabilistic.

Conventions: `y` and point forecasts `f` are <float>[windows, horizon] (any leading shape
works, all entries are pooled); samples are <float>[samples, windows, horizon];
quantiles are <float>[windows, horizon, Q] at `levels` <float>[Q].

Definitions (all pooled over every window and horizon step):
  MAE   = mean |y - f|
  RMSE  = sqrt(mean (y - f)^2)
  MASE  = mean_w( mean_h |y - f| / s_w ), s_w the in-sample mean absolute seasonal
          difference of window w's series (`seasonal_scale`), Hyndman & Koehler (2006)
  sMAPE = mean 200 |y - f| / (|y| + |f|)   (in percent; 0/0 counts as 0, as in M4)
  ND    = sum |y - f| / sum |y|            (normalised deviation, as in DeepAR)
  NRMSE = RMSE / mean |y|
  CRPS  = mean CRPS(F, y); `crps_samples` uses the energy form
          E|X - y| - E|X - X'| / 2 (Gneiting & Raftery 2007), `crps_quantiles`
          2 * mean over levels of the pinball loss (exact as the grid densifies)
  wQL   = 2 * sum pinball / sum |y|, averaged over levels (GluonTS's mean_wQuantileLoss)
  coverage(lo, hi) = fraction of y inside [lo, hi]
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def mae(y: np.ndarray, f: np.ndarray) -> float:
  return float(np.mean(np.abs(y - f)))


def rmse(y: np.ndarray, f: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(y - f))))


def smape(y: np.ndarray, f: np.ndarray) -> float:
  denom = np.abs(y) + np.abs(f)
  ratio = np.divide(2.0 * np.abs(y - f), denom, out=np.zeros_like(denom, dtype=float),
                    where=denom > 0)
  return float(100.0 * np.mean(ratio))


def nd(y: np.ndarray, f: np.ndarray) -> float:
  return float(np.sum(np.abs(y - f)) / np.sum(np.abs(y)))


def nrmse(y: np.ndarray, f: np.ndarray) -> float:
  return rmse(y, f) / float(np.mean(np.abs(y)))


def seasonal_scale(history: np.ndarray, season: int) -> float:
  """MASE's denominator: mean |y_t - y_{t-season}| over a series' history <float>[T]."""
  history = np.asarray(history, float)
  if history.shape[0] <= season:
    raise ValueError(f'MASE needs more than season={season} history points, got '
                     f'{history.shape[0]}.')
  diffs = np.abs(history[season:] - history[:-season])
  diffs = diffs[np.isfinite(diffs)]
  return float(np.mean(diffs))


def mase(y: np.ndarray, f: np.ndarray, scales: np.ndarray) -> float:
  """MASE with one scale per window: y, f <float>[windows, horizon], scales [windows]."""
  per_window = np.mean(np.abs(y - f), axis=-1) / np.asarray(scales, float)
  return float(np.mean(per_window))


def crps_samples(y: np.ndarray, samples: np.ndarray) -> float:
  """Mean CRPS of the empirical distribution of `samples` [N, ...] at `y` [...].

  Uses the sorted-sample identity E|X - X'| = 2 / N^2 * sum_i (2i - N - 1) x_(i)
  (with the 1/N^2 estimator), O(N log N) per point instead of O(N^2).
  """
  samples = np.asarray(samples, float)
  n = samples.shape[0]
  term1 = np.mean(np.abs(samples - y[None]), axis=0)
  ordered = np.sort(samples, axis=0)
  weights = (2.0 * np.arange(1, n + 1) - n - 1).reshape((n,) + (1,) * (samples.ndim - 1))
  term2 = np.sum(weights * ordered, axis=0) / (n * n)  # = E|X - X'| / 2
  return float(np.mean(term1 - term2))


def pinball(y: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> np.ndarray:
  """Elementwise pinball loss <float>[..., Q] of quantiles [..., Q] at y [...]."""
  diff = y[..., None] - quantiles
  levels = np.asarray(levels, float)
  return np.maximum(levels * diff, (levels - 1.0) * diff)


def crps_quantiles(y: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> float:
  """CRPS approximated by 2 * mean pinball over an evenly spread grid of levels."""
  return float(2.0 * np.mean(pinball(y, quantiles, levels)))


def weighted_quantile_loss(y: np.ndarray, quantiles: np.ndarray,
                           levels: np.ndarray) -> float:
  """Mean weighted quantile loss: mean over levels of 2 * sum pinball / sum |y|."""
  per_level = 2.0 * np.sum(pinball(y, quantiles, levels).reshape(-1, len(levels)), 0)
  return float(np.mean(per_level / np.sum(np.abs(y))))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
  return float(np.mean((y >= lower) & (y <= upper)))


def sample_quantiles(samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
  """Empirical quantiles of samples [N, ...] -> [..., Q]."""
  return np.moveaxis(np.quantile(samples, levels, axis=0), 0, -1)


def _level_index(levels: np.ndarray, level: float) -> int:
  matches = np.nonzero(np.isclose(levels, level))[0]
  if matches.size == 0:
    raise ValueError(f'level {level} is not in the quantile levels {list(levels)}.')
  return int(matches[0])


def forecast_metrics(y: np.ndarray, quantiles: np.ndarray, levels: np.ndarray,
                     mase_scales: np.ndarray, point: Optional[np.ndarray] = None,
                     crps_levels: Optional[np.ndarray] = None) -> dict[str, float]:
  """The whole table row for one method.

  Args:
    y: <float>[windows, horizon] actuals.
    quantiles: <float>[windows, horizon, Q] at `levels` (must include 0.5, 0.025, 0.975,
      0.1, 0.9).
    levels: <float>[Q].
    mase_scales: <float>[windows].
    point: <float>[windows, horizon] point forecast; default the median.
    crps_levels: the subset of levels CRPS averages over (an even grid); default all.

  Returns:
    {'MASE', 'sMAPE', 'MAE', 'RMSE', 'ND', 'NRMSE', 'CRPS', 'wQL', 'cov80', 'cov95'}.
  """
  levels = np.asarray(levels, float)
  if point is None:
    point = quantiles[..., _level_index(levels, 0.5)]
  grid = levels if crps_levels is None else np.asarray(crps_levels, float)
  grid_q = quantiles[..., [_level_index(levels, lv) for lv in grid]]
  wql_levels = np.round(np.arange(0.1, 0.91, 0.1), 2)
  wql_q = quantiles[..., [_level_index(levels, lv) for lv in wql_levels]]
  q = lambda lv: quantiles[..., _level_index(levels, lv)]
  return {
      'MASE': mase(y, point, mase_scales),
      'sMAPE': smape(y, point),
      'MAE': mae(y, point),
      'RMSE': rmse(y, point),
      'ND': nd(y, point),
      'NRMSE': nrmse(y, point),
      'CRPS': crps_quantiles(y, grid_q, grid),
      'wQL': weighted_quantile_loss(y, wql_q, wql_levels),
      'cov80': coverage(y, q(0.1), q(0.9)),
      'cov95': coverage(y, q(0.025), q(0.975)),
  }


__all__ = ['mae', 'rmse', 'smape', 'nd', 'nrmse', 'seasonal_scale', 'mase', 'crps_samples',
           'pinball', 'crps_quantiles', 'weighted_quantile_loss', 'coverage',
           'sample_quantiles', 'forecast_metrics']
