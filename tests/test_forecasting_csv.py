"""CSV ingestion: a good file loads; every kind of bad input is a UserError naming the field."""

import numpy as np
import pandas as pd
import pytest

from experiments.forecasting import data


def _frame(n=60):
  t = pd.date_range('2024-01-01', periods=n, freq='h')
  return pd.DataFrame({'time': t.astype(str), 'load': np.arange(n, dtype=float),
                       'temp': np.linspace(0, 1, n), 'price': np.ones(n)})


def _load(tmp_path, frame, **kw):
  path = tmp_path / 'x.csv'
  frame.to_csv(path, index=False)
  args = dict(time_column='time', target_columns='load', freq='h', known_columns='temp',
              past_columns='price')
  args.update(kw)
  return data.load_csv(str(path), **args)


def test_good_file(tmp_path):
  s = _load(tmp_path, _frame())
  assert s.target.shape == (1, 60) and s.known.shape == (1, 60, 1) and s.past.shape == (1, 60, 1)
  assert s.steps_per_day == 24 and s.observed.all()
  assert s.timestamps[1] - s.timestamps[0] == 3600


@pytest.mark.parametrize('kw,field', [
    (dict(target_columns='nope'), 'data.target_columns'),
    (dict(known_columns='nope'), 'data.known_columns'),
    (dict(past_columns='nope'), 'data.past_columns'),
    (dict(time_column='nope'), 'data.time_column'),
    (dict(freq='banana'), 'data.freq'),
    (dict(impute='magic'), 'data.impute'),
    (dict(target_columns=''), 'data.target_columns'),
])
def test_bad_fields(tmp_path, kw, field):
  with pytest.raises(data.UserError) as e:
    _load(tmp_path, _frame(), **kw)
  assert e.value.field == field


def test_missing_file():
  with pytest.raises(data.UserError, match='no such file'):
    data.load_csv('/nonexistent.csv', 'time', 'load', 'h')


def test_unparsable_timestamp(tmp_path):
  f = _frame()
  f.loc[5, 'time'] = 'not a time'
  with pytest.raises(data.UserError, match='unparsable timestamp') as e:
    _load(tmp_path, f)
  assert e.value.field == 'time'


def test_duplicate_timestamp(tmp_path):
  f = _frame()
  f.loc[5, 'time'] = f.loc[4, 'time']
  with pytest.raises(data.UserError, match='duplicate timestamp'):
    _load(tmp_path, f)


def test_non_monotonic(tmp_path):
  f = _frame()
  f.loc[[4, 5], 'time'] = f.loc[[5, 4], 'time'].to_numpy()
  with pytest.raises(data.UserError, match='not increasing'):
    _load(tmp_path, f)


def test_off_grid_and_gaps(tmp_path):
  f = _frame()
  f.loc[5, 'time'] = '2024-01-01 05:30:00'
  with pytest.raises(data.UserError, match='not on the'):
    _load(tmp_path, f)
  g = _frame().drop(index=[7, 8])
  with pytest.raises(data.UserError, match='missing from the'):
    _load(tmp_path, g)
  s = _load(tmp_path, g, impute='interpolate')  # Gaps filled and marked unobserved.
  assert s.length == 60 and s.observed.sum() == 58
  np.testing.assert_allclose(s.target[0], np.arange(60))


def test_nans(tmp_path):
  f = _frame()
  f.loc[3, 'load'] = np.nan
  with pytest.raises(data.UserError, match='missing values') as e:
    _load(tmp_path, f)
  assert e.value.field == 'data.target_columns'
  f2 = _frame()
  f2.loc[3, 'temp'] = np.nan
  with pytest.raises(data.UserError) as e:
    _load(tmp_path, f2)
  assert e.value.field == 'data.known_columns'
  s = _load(tmp_path, f, impute='ffill')
  assert s.target[0, 3] == 2.0 and not s.observed[0, 3]


def test_non_numeric(tmp_path):
  f = _frame()
  f['load'] = f['load'].astype(object)
  f.loc[2, 'load'] = 'abc'
  with pytest.raises(data.UserError, match='non-numeric'):
    _load(tmp_path, f)


def test_too_little_history_via_config(tmp_path):
  from configs import forecasting as cfg
  from experiments import forecasting
  path = tmp_path / 'x.csv'
  _frame(100).to_csv(path, index=False)
  c = cfg.get_config('csv')
  c.data.path, c.data.target_columns = str(path), 'load'
  with pytest.raises(data.UserError, match='too few'):
    forecasting.setup(c)
