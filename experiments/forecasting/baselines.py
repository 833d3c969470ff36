"""Baselines on the same windows: naive, seasonal naive, and MSTL + ARIMA (statsmodels).

Each returns quantiles <float64>[W, H, Q] at `levels` for W (series, origin) pairs, using
only values before each origin. Intervals are Gaussian, as in Hyndman & Athanasopoulos,
FPP3 section 5.5: the residual standard deviation is taken over a trailing window before
the origin, and grows with sqrt(h) for the naive method and sqrt(ceil(h / m)) for the
seasonal naive method with period m.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from experiments.forecasting import data as fdata


def _gaussian_quantiles(point: np.ndarray, sigma: np.ndarray, levels: np.ndarray) -> np.ndarray:
  """point, sigma <float>[W, H] -> <float>[W, H, Q]."""
  return point[..., None] + sigma[..., None] * stats.norm.ppf(levels)


def seasonal_naive(series: fdata.SeriesSet, series_idx: np.ndarray, origins: np.ndarray,
                   horizon: int, period: int, levels: np.ndarray,
                   residual_window: int) -> np.ndarray:
  """y_hat(o + h) = y(o + h - m * ceil((h + 1) / m)); period 1 is the naive method."""
  h = np.arange(horizon)
  cycles = h // period + 1
  out = []
  for s, o in zip(series_idx, origins):
    y = series.target[s].astype(np.float64)
    point = y[o + h - period * cycles]
    start = max(period, o - residual_window)
    resid = y[start:o] - y[start - period:o - period]
    ok = series.observed[s, start:o] & series.observed[s, start - period:o - period]
    sigma = np.std(resid[ok]) if ok.any() else np.std(resid)
    out.append(_gaussian_quantiles(point[None], (sigma * np.sqrt(cycles))[None], levels)[0])
  return np.stack(out)


def mstl_ar(series: fdata.SeriesSet, covariates: np.ndarray, series_idx: np.ndarray,
            origins: np.ndarray, horizon: int, periods: tuple[int, ...],
            levels: np.ndarray, window: int, ar_order: int = 4) -> np.ndarray:
  """MSTL decomposition + ARX with known covariates, refit per origin on a trailing window.

  The series' last `window` values before the origin are decomposed by MSTL into trend,
  one seasonal component per period (e.g. daily and weekly) and remainder. The seasonally
  adjusted series (trend + remainder) is forecast by an AR(ar_order) model with constant
  and the known-future covariates (temperature, load forecasts, ...) as regressors, fit
  by OLS (`statsmodels.tsa.ar_model.AutoReg`); each seasonal component is forecast by
  repeating its last cycle (FPP3's decomposition_model). Intervals come from the AR
  forecast variance (seasonal components treated as known, as in FPP3). AutoReg rather
  than ARIMA because an ARIMA MLE fit took 3-6 s per origin here against ~0.05 s.

  Args:
    covariates: <float32>[S, T, K] known-future regressors (K may be 0), normalised.
  """
  from statsmodels.tsa.ar_model import AutoReg
  from statsmodels.tsa.seasonal import MSTL
  out = []
  h = np.arange(horizon)
  for s, o in zip(series_idx, origins):
    y = series.target[s, o - window:o].astype(np.float64)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # Convergence chatter from the many small fits.
      parts = MSTL(y, periods=list(periods), stl_kwargs={'robust': False}).fit()
      seasonal = np.asarray(parts.seasonal).reshape(window, -1)
      adjusted = y - seasonal.sum(1)
      cov = covariates[s, o - window:o + horizon].astype(np.float64)
      cov = cov[:, cov[:window].std(0) > 1e-8]  # A constant column (no holiday) is collinear.
      exog, exog_f = (cov[:window], cov[window:]) if cov.shape[1] else (None, None)
      fit = AutoReg(adjusted, lags=ar_order, trend='c', exog=exog).fit()
      fc = fit.get_prediction(start=window, end=window + horizon - 1, exog_oos=exog_f)
    season_fc = np.zeros(horizon)
    for j, m in enumerate(periods):
      season_fc += seasonal[window - m + (h % m), j]
    point = np.asarray(fc.predicted_mean) + season_fc
    sigma = np.sqrt(np.asarray(fc.var_pred_mean))
    out.append(_gaussian_quantiles(point[None], sigma[None], levels)[0])
  return np.stack(out)
