"""Probabilistic forecasting: `--config=configs/forecasting.py:DATASET[:full][:quantile]`.

DATASET: vic_elec (default) | epf_fr_be | pedestrian | csv. Suffixes: ':full' (a longer
context, a bigger LSTM and more steps), ':quantile' (the direct quantile head instead of
DeepAR sampling), ':tiny' (seconds; for tests).

    python -m experiments.main --config=configs/forecasting.py:vic_elec --workdir=workdirs/fc

CSV example (wide file: one row per step, one column per series):

    --config=configs/forecasting.py:csv --config.data.path=my.csv \\
    --config.data.time_column=time --config.data.target_columns=load \\
    --config.data.known_columns=temp --config.data.freq=h
"""

from __future__ import annotations

import ml_collections

from lstm_jax.train.config import base_config

DATASETS = ('vic_elec', 'epf_fr_be', 'pedestrian', 'csv')

# Per dataset: context, horizon (steps), lags, MSTL/residual window (steps).
_DATA = {
    # Half-hourly: 2 days of context, a day ahead; daily and weekly lags.
    'vic_elec': dict(context=96, horizon=48, lags=(1, 2, 3, 48, 96, 336, 672),
                     statsmodels_window=28 * 48),
    # Hourly: 3 days of context, a day ahead.
    'epf_fr_be': dict(context=72, horizon=24, lags=(1, 2, 3, 24, 48, 168, 336),
                      statsmodels_window=8 * 168),
    'pedestrian': dict(context=72, horizon=24, lags=(1, 2, 24, 48, 168),
                       statsmodels_window=8 * 168),
    'csv': dict(context=48, horizon=24, lags=(1, 2, 24, 168), statsmodels_window=8 * 168),
}


def get_config(arg: str = 'vic_elec') -> ml_collections.ConfigDict:
  parts = (arg or 'vic_elec').split(':')
  name, flags = parts[0], set(parts[1:])
  if name not in DATASETS:
    raise ValueError(f'DATASET must be one of {DATASETS}, got {name!r}.')
  unknown = flags - {'full', 'quantile', 'tiny', 'gaussian'}
  if unknown:
    raise ValueError(f"unknown suffixes {sorted(unknown)}; use 'full', 'quantile', "
                     "'gaussian' or 'tiny'.")
  spec = _DATA[name]
  c = base_config()
  c.experiment = 'forecasting'
  c.seed = 0
  c.total_steps = 1500
  c.batch_size = 64
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 1

  c.data.name = name
  c.data.data_dir = ''  # TFDS data_dir; '' = ~/.cache/lstm_jax/tfds.
  c.data.context = spec['context']
  c.data.horizon = spec['horizon']
  c.data.lags = spec['lags']
  # CSV ingestion (data.name='csv').
  c.data.path = ''
  c.data.time_column = 'time'
  c.data.target_columns = ''  # Comma-separated.
  c.data.known_columns = ''
  c.data.past_columns = ''
  c.data.freq = 'h'
  c.data.impute = 'none'  # none | interpolate | ffill.
  c.data.timezone = ''

  c.model.head = 'quantile' if 'quantile' in flags else 'deepar'
  c.model.likelihood = 'gaussian' if 'gaussian' in flags else 'student_t'
  c.model.scaling = 'standard'  # standard | mean.
  c.model.lstm = ml_collections.ConfigDict(dict(hidden_size=48, num_layers=1, dropout=0.0))

  c.eval = ml_collections.ConfigDict()
  c.eval.split = 'test'  # test | val (the period just before test; for tuning).
  c.eval.num_origins = 28  # Daily origins over the last 4 weeks.
  c.eval.stride = 0  # Steps between origins; 0 = one day.
  c.eval.num_samples = 200
  c.eval.batch_size = 28
  c.eval.statsmodels = True
  c.eval.statsmodels_window = spec['statsmodels_window']
  c.eval.plot_windows = 4

  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-3
  c.optimizer.schedule = 'warmup_cosine'
  c.optimizer.warmup_steps = 100
  c.optimizer.grad_clip_norm = 1.0

  if 'full' in flags:
    c.total_steps = 4000
    c.data.context = 2 * spec['context']
    c.model.lstm = ml_collections.ConfigDict(dict(hidden_size=64, num_layers=2, dropout=0.0))
    c.eval_every = 1000
    c.checkpoint_every = 1000
  if 'tiny' in flags:
    c.total_steps = 3
    c.batch_size = 8
    c.log_every = 1
    c.eval_every = 3
    c.checkpoint_every = 3
    c.model.lstm = ml_collections.ConfigDict(dict(hidden_size=8, num_layers=1, dropout=0.0))
    c.eval.num_origins = 4
    c.eval.batch_size = 4
    c.eval.num_samples = 20
    c.eval.statsmodels = False
    c.eval.plot_windows = 2
    c.optimizer.schedule = 'constant'
    c.optimizer.warmup_steps = 0
  return c
