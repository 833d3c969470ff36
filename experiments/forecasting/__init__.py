"""Probabilistic forecasting with an LSTM (DeepAR-style or direct quantiles) vs baselines.

    python -m experiments.main --config=configs/forecasting.py:vic_elec --workdir=DIR

`build_task(config)` gives the harness (`lstm_jax.train`) the model, the training windows
(batch s a pure function of (seed, s)), a loss, an eval loss on the evaluation windows and
a `report` that forecasts every evaluation window, runs the baselines on the same windows,
and writes report.json (the metrics table), forecasts.png (fan charts) and prints the table.

Modules: `data` (corpora, CSV), `tfds_builders`, `windows` (splits, features, batches),
`model`, `baselines`, `evaluate` (the report).

Config fields read here (see configs/forecasting.py):
  data.name ('vic_elec' | 'epf_fr_be' | 'pedestrian' | 'csv'), data.data_dir (TFDS dir; ''
    = WORKDIR-independent cache ~/.cache/lstm_jax/tfds), data.context, data.horizon,
    data.lags; for 'csv': data.path, data.time_column, data.target_columns,
    data.known_columns, data.past_columns, data.freq, data.impute, data.timezone.
  model.head ('deepar' | 'quantile'), model.likelihood ('gaussian' | 'student_t'),
    model.scaling ('standard' | 'mean'), model.lstm (lstm_jax.LSTM keyword arguments).
  eval.split ('test' | 'val'), eval.num_origins, eval.stride (0 = one day),
    eval.num_samples, eval.batch_size, eval.statsmodels, eval.statsmodels_window (steps),
    eval.plot_windows.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.forecasting import data as fdata
from experiments.forecasting import model as fmodel
from experiments.forecasting import windows
from lstm_jax import parallel
from lstm_jax.train import ConfigError, Task, check_eval_batch_size

# The quantile grid every method is scored on: 1%..99% (CRPS averages these) plus the
# 2.5% / 97.5% ends of the 95% interval.
CRPS_LEVELS = np.round(np.arange(1, 100) / 100.0, 4)
LEVELS = np.unique(np.concatenate([CRPS_LEVELS, [0.025, 0.975]]))


def load_series(config: ml_collections.ConfigDict) -> fdata.SeriesSet:
  """The `SeriesSet` named by config.data (a TFDS corpus or the user's CSV)."""
  d = config.data
  if d.name == 'csv':
    return fdata.load_csv(d.path, d.time_column, d.target_columns, d.freq,
                          d.known_columns, d.past_columns, d.impute, d.timezone or None)
  from experiments.forecasting import tfds_builders  # TFDS import only when needed.
  data_dir = d.data_dir or os.path.join(os.path.expanduser('~'), '.cache', 'lstm_jax',
                                        'tfds')
  return tfds_builders.load_corpus(d.name, data_dir)


def setup(config: ml_collections.ConfigDict) -> tuple[windows.Prepared, np.ndarray]:
  """(prepared series, evaluation origins) for the config; raises UserError on bad input."""
  series = load_series(config)
  spec = windows.WindowSpec(int(config.data.context), int(config.data.horizon),
                            tuple(int(v) for v in config.data.lags), config.model.scaling)
  if spec.context < 1 or spec.horizon < 1 or min(spec.lags) < 1:
    raise ConfigError('data.context, data.horizon and every data.lags entry must be >= 1.')
  stride = int(config.eval.stride) or series.steps_per_day
  origins = windows.eval_origins(series.length, spec.horizon, int(config.eval.num_origins),
                                 stride, config.eval.split)
  windows.check_history(series.length, spec, origins, min_train=spec.horizon,
                        name=series.name)
  return windows.prepare(series, spec, int(origins[0])), origins


def make_model(config: ml_collections.ConfigDict) -> fmodel.ForecastNet:
  m = config.model
  if m.head not in ('deepar', 'quantile'):
    raise ConfigError(f"model.head must be 'deepar' or 'quantile', got {m.head!r}.")
  if m.likelihood not in ('gaussian', 'student_t'):
    raise ConfigError(f"model.likelihood must be 'gaussian' or 'student_t', got "
                      f'{m.likelihood!r}.')
  return fmodel.ForecastNet(lstm=dict(m.lstm), head=m.head, likelihood=m.likelihood,
                            num_quantiles=len(LEVELS))


def eval_windows(prepared: windows.Prepared, origins: np.ndarray) -> dict[str, np.ndarray]:
  """All evaluation windows, origin-major, with 'series_idx' and 'origin' added."""
  series_idx, flat_origins = windows.eval_pairs(prepared.series.num_series, origins)
  batch = windows.make_windows(prepared, series_idx, flat_origins)
  batch['series_idx'], batch['origin'] = series_idx, flat_origins
  return batch


def build_task(config: ml_collections.ConfigDict) -> Task:
  prepared, origins = setup(config)
  spec = prepared.spec
  model = make_model(config)
  lags, c, h = spec.lags, spec.context, spec.horizon
  levels = jnp.asarray(LEVELS, jnp.float32)
  model_keys = ('history', 'history_observed', 'future', 'future_observed', 'time', 'loc',
                'scale')

  def train_batches(start_step: int) -> Iterator[dict[str, np.ndarray]]:
    rows = parallel.process_slice(config.batch_size)
    step = start_step
    while True:
      batch = windows.train_batch(prepared, config.seed, step, config.batch_size)
      yield {k: v[rows] for k, v in batch.items()}
      step += 1

  evals = eval_windows(prepared, origins)
  size = int(config.eval.batch_size)
  check_eval_batch_size('eval.batch_size', size)

  def eval_batches() -> Iterator[dict[str, np.ndarray]]:
    n = len(evals['origin'])
    padded = -(-n // size) * size
    take = np.minimum(np.arange(padded), n - 1)  # Padding repeats the last window ...
    full = {k: evals[k][take] for k in model_keys}
    full['weight'] = (np.arange(padded) < n).astype(np.float32)  # ... with weight 0.
    rows = parallel.process_slice(size)
    for start in range(0, padded, size):
      yield {k: v[start:start + size][rows] for k, v in full.items()}

  def loss_fn(params, batch, rng, train: bool):
    per_window = fmodel.window_losses(model, {'params': params}, batch, lags, c, h, levels,
                                      rng if train else None)
    return jnp.mean(per_window), {}

  def eval_fn(params, batch):
    per_window = fmodel.window_losses(model, {'params': params}, batch, lags, c, h, levels)
    w = batch['weight']
    return {'loss': (jnp.sum(per_window * w), jnp.sum(w))}

  def report(params, workdir: str) -> dict[str, Any]:
    from experiments.forecasting import evaluate  # matplotlib/statsmodels only here.
    return evaluate.report(config, prepared, origins, evals, model, params, workdir)

  init = windows.make_windows(prepared, np.zeros(2, int), origins[:1].repeat(2))
  x, _, _ = fmodel.build_inputs(init, lags, c, h, config.model.head == 'quantile')
  return Task(model=model, init_batch={'x': np.asarray(x)}, train_batches=train_batches,
              eval_batches=eval_batches, loss_fn=loss_fn, eval_fn=eval_fn, report=report)
