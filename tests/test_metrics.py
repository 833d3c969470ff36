"""Forecast metrics against hand-computed values."""

import numpy as np
import pytest
from scipy import stats

from lstm_jax import metrics as M

Y = np.array([[1.0, 2.0, 4.0]])
F = np.array([[2.0, 2.0, 2.0]])


def test_point_metrics_by_hand():
  assert M.mae(Y, F) == pytest.approx(1.0)             # (1 + 0 + 2) / 3
  assert M.rmse(Y, F) == pytest.approx(np.sqrt(5 / 3))  # (1 + 0 + 4) / 3
  assert M.nd(Y, F) == pytest.approx(3 / 7)
  assert M.nrmse(Y, F) == pytest.approx(np.sqrt(5 / 3) / (7 / 3))
  # 200 * (1/3 + 0 + 2/6) / 3
  assert M.smape(Y, F) == pytest.approx(200 * (1 / 3 + 1 / 3) / 3)
  assert M.smape(np.zeros(2), np.zeros(2)) == 0.0


def test_mase_by_hand():
  history = np.array([1.0, 3.0, 2.0, 5.0])  # season 2: |2-1|, |5-3| -> 1.5
  scale = M.seasonal_scale(history, 2)
  assert scale == pytest.approx(1.5)
  assert M.mase(Y, F, np.array([scale])) == pytest.approx(1.0 / 1.5)
  with pytest.raises(ValueError):
    M.seasonal_scale(history, 4)


def test_crps_samples_matches_bruteforce_and_closed_form():
  rng = np.random.default_rng(0)
  samples = rng.normal(size=(50, 3))
  y = np.array([0.1, -1.0, 2.0])
  brute = np.mean(np.abs(samples - y).mean(0)
                  - 0.5 * np.abs(samples[:, None] - samples[None]).mean((0, 1)))
  assert M.crps_samples(y, samples) == pytest.approx(brute, rel=1e-10)
  # Standard normal at 0: CRPS = 2 phi(0) - 1/sqrt(pi) ~ 0.2337.
  big = rng.normal(size=(40000, 1))
  exact = 2 * stats.norm.pdf(0) - 1 / np.sqrt(np.pi)
  assert M.crps_samples(np.zeros(1), big) == pytest.approx(exact, abs=0.005)


def test_crps_quantiles_and_wql():
  levels = np.arange(1, 100) / 100
  q = stats.norm.ppf(levels)[None, :]
  exact = 2 * stats.norm.pdf(0) - 1 / np.sqrt(np.pi)
  assert M.crps_quantiles(np.zeros(1), q, levels) == pytest.approx(exact, rel=0.03)
  y, qq, lv = np.array([2.0]), np.array([[1.0, 3.0]]), np.array([0.2, 0.8])
  # pinball: 0.2 * 1 = 0.2 and 0.2 * 1 = 0.2 -> 2 * 0.2 / 2 each -> mean 0.2
  assert M.weighted_quantile_loss(y, qq, lv) == pytest.approx(0.2)


def test_coverage_and_table():
  y = np.array([[0.0, 1.0, 2.0, 3.0]])
  assert M.coverage(y, y * 0 + 0.5, y * 0 + 2.5) == 0.5
  levels = np.unique(np.concatenate([np.arange(1, 100) / 100, [0.025, 0.975]]))
  q = np.broadcast_to(y[..., None], y.shape + (len(levels),)) + 0.0
  row = M.forecast_metrics(y + 1, q, levels, np.ones(1))
  assert row['MAE'] == 1.0 and row['cov80'] == 0.0 and row['MASE'] == 1.0
