"""The final evaluation: the LSTM and the baselines on the same windows, one table.

Every method gives quantiles <float>[W, H, Q] at `LEVELS` for the W evaluation windows
(the LSTM's DeepAR head through empirical quantiles of its sample paths); every metric of
`lstm_jax.metrics.forecast_metrics` is computed from them, pooled over windows whose
horizon is fully observed. MASE uses one scale per series: the mean absolute daily-seasonal
difference over the training span (before the first evaluation origin).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import forecasting as fc
from experiments.forecasting import baselines, windows
from experiments.forecasting import model as fmodel
from lstm_jax import metrics

COLUMNS = ('MASE', 'sMAPE', 'MAE', 'RMSE', 'ND', 'NRMSE', 'CRPS', 'wQL', 'cov80', 'cov95')


def lstm_quantiles(config, prepared: windows.Prepared, evals: dict, model, params,
                   ) -> tuple[np.ndarray, np.ndarray | None]:
  """(quantiles <float>[W, H, Q], sample paths <float>[N, W, H] or None)."""
  spec = prepared.spec
  keys = ('history', 'history_observed', 'future', 'future_observed', 'time', 'loc', 'scale')
  variables = {'params': params}
  size = int(config.eval.batch_size)
  n = len(evals['origin'])
  quantiles, paths = [], []
  if config.model.head == 'quantile':
    fn = jax.jit(lambda v, b: fmodel.predict_quantiles(model, v, b, spec.lags, spec.context,
                                                       spec.horizon))
  else:
    fn = jax.jit(lambda v, b, k: fmodel.sample_paths(
        model, v, b, spec.lags, spec.context, spec.horizon, int(config.eval.num_samples), k))
  for start in range(0, n, size):
    take = np.minimum(np.arange(start, start + size), n - 1)  # One shape: one compile.
    batch = {k: jnp.asarray(evals[k][take]) for k in keys}
    keep = slice(0, min(size, n - start))
    if config.model.head == 'quantile':
      quantiles.append(np.asarray(fn(variables, batch))[keep])
    else:
      key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), start)
      draws = np.asarray(fn(variables, batch, key))[:, keep]
      paths.append(draws)
      quantiles.append(metrics.sample_quantiles(draws, fc.LEVELS))
  return np.concatenate(quantiles), (np.concatenate(paths, 1) if paths else None)


def baseline_quantiles(config, prepared: windows.Prepared, evals: dict
                       ) -> dict[str, np.ndarray]:
  """Naive, seasonal naive (daily, weekly) and MSTL + ARX quantiles on the windows."""
  s, spec = prepared.series, prepared.spec
  day = s.steps_per_day
  resid = int(config.eval.statsmodels_window)
  si, o = evals['series_idx'], evals['origin']
  out = {'naive': baselines.seasonal_naive(s, si, o, spec.horizon, 1, fc.LEVELS, resid)}
  if day > 1:
    out['snaive_day'] = baselines.seasonal_naive(s, si, o, spec.horizon, day, fc.LEVELS,
                                                 resid)
  out['snaive_week'] = baselines.seasonal_naive(s, si, o, spec.horizon, 7 * day, fc.LEVELS,
                                                resid)
  if config.eval.statsmodels:
    periods = tuple(p for p in (day, 7 * day) if p > 1)
    window = min(resid, int(o.min()))
    known = prepared.covariates[..., 6:prepared.num_known]  # Normalised; not the calendar.
    out['mstl_arx'] = baselines.mstl_ar(s, known, si, o, spec.horizon, periods, fc.LEVELS,
                                        window)
  return out


def table_markdown(rows: dict[str, dict[str, float]]) -> str:
  head = '| method | ' + ' | '.join(COLUMNS) + ' |'
  lines = [head, '|' + ' --- |' * (len(COLUMNS) + 1)]
  for name, row in rows.items():
    cells = [f'{row[c]:.3f}' if abs(row[c]) < 100 else f'{row[c]:.1f}' for c in COLUMNS]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_fans(path: str, prepared: windows.Prepared, evals: dict, quantiles: np.ndarray,
              snaive: np.ndarray, picks: np.ndarray, title: str) -> None:
  """Fan charts (50/80/95% bands, median) for a few windows, with the weekly naive."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  spec, s = prepared.spec, prepared.series
  lv = list(np.round(fc.LEVELS, 4))
  q = lambda a, level: a[..., lv.index(level)]
  fig, axes = plt.subplots(len(picks), 1, figsize=(10, 2.6 * len(picks)), squeeze=False)
  for ax, w in zip(axes[:, 0], picks):
    series, origin = int(evals['series_idx'][w]), int(evals['origin'][w])
    past = np.arange(-spec.context, 0)
    fut = np.arange(spec.horizon)
    ax.plot(past, s.target[series, origin + past], color='k', lw=1)
    ax.plot(fut, s.target[series, origin + fut], color='k', lw=1, label='actual')
    for lo, hi, alpha in ((0.025, 0.975, 0.2), (0.1, 0.9, 0.3), (0.25, 0.75, 0.45)):
      ax.fill_between(fut, q(quantiles[w], lo), q(quantiles[w], hi), color='C0',
                      alpha=alpha, lw=0)
    ax.plot(fut, q(quantiles[w], 0.5), color='C0', label='LSTM median, 50/80/95%')
    ax.plot(fut, q(snaive[w], 0.5), color='C3', ls='--', lw=1, label='seasonal naive (week)')
    stamp = np.datetime64(int(s.timestamps[origin]), 's')
    ax.set_title(f'{s.series_names[series]}, origin {stamp}', fontsize=9)
    ax.axvline(0, color='grey', lw=0.5)
  axes[0, 0].legend(fontsize=8, loc='upper left')
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def report(config, prepared: windows.Prepared, origins: np.ndarray, evals: dict, model,
           params, workdir: str) -> dict[str, Any]:
  """Forecasts, baselines, metrics table, fan-chart PNG; prints the table."""
  s, spec = prepared.series, prepared.spec
  t0 = time.time()
  methods: dict[str, np.ndarray] = {}
  methods['lstm'], _ = lstm_quantiles(config, prepared, evals, model, params)
  t_lstm = time.time() - t0
  methods.update(baseline_quantiles(config, prepared, evals))
  t_base = time.time() - t0 - t_lstm

  y = evals['future'].astype(np.float64)
  full = evals['future_observed'].min(1) > 0  # Windows whose horizon was observed.
  history_end = int(origins[0])
  scales = np.array([metrics.seasonal_scale(
      np.where(s.observed[i, :history_end], s.target[i, :history_end], np.nan),
      s.steps_per_day if s.steps_per_day > 1 else 7) for i in range(s.num_series)])
  w_scales = scales[evals['series_idx']]
  rows = {name: metrics.forecast_metrics(y[full], q[full], fc.LEVELS, w_scales[full],
                                         crps_levels=fc.CRPS_LEVELS)
          for name, q in methods.items()}
  per_series = {}
  if s.num_series > 1:
    for i, name in enumerate(s.series_names):
      sel = full & (evals['series_idx'] == i)
      per_series[name] = {m: metrics.forecast_metrics(y[sel], q[sel], fc.LEVELS,
                                                      w_scales[sel], crps_levels=fc.CRPS_LEVELS)
                          for m, q in methods.items()}
  table = table_markdown(rows)
  stamp = lambda i: str(np.datetime64(int(s.timestamps[i]), 's'))
  title = (f'{s.name} ({config.eval.split}): {len(origins)} origins x {s.num_series} '
           f'series, horizon {spec.horizon}, context {spec.context}, head '
           f'{config.model.head}' + (f'/{config.model.likelihood}'
                                     if config.model.head == 'deepar' else ''))
  if jax.process_index() == 0:
    picks = np.linspace(0, len(evals['origin']) - 1, min(int(config.eval.plot_windows),
                                                          len(evals['origin']))).astype(int)
    plot_fans(os.path.join(workdir, 'forecasts.png'), prepared, evals, methods['lstm'],
              methods['snaive_week'], picks, title)
    print(f'\n{title}\nfirst origin {stamp(int(origins[0]))}, last forecast ends '
          f'{stamp(int(origins[-1]) + spec.horizon - 1)}; {int(full.sum())} windows\n'
          f'{table}\n', flush=True)
  return {
      'title': title, 'split': config.eval.split, 'dataset': s.name,
      'num_windows': int(full.sum()), 'num_origins': int(len(origins)),
      'origins': [stamp(int(o)) for o in origins],
      'train_end': stamp(prepared.train_end),
      'mase_season': int(s.steps_per_day if s.steps_per_day > 1 else 7),
      'table': rows, 'table_markdown': table, 'per_series': per_series,
      'seconds': {'lstm_forecast': round(t_lstm, 2), 'baselines': round(t_base, 2)},
      'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params))),
  }
