"""Windows and splits: no value inside a forecast horizon reaches the model's inputs."""

import numpy as np
import pytest

from experiments.forecasting import data, windows


def _series(length=2000, num_series=2, past=True):
  rng = np.random.default_rng(0)
  t = np.arange(length)
  target = (10 + np.sin(2 * np.pi * t / 24)[None] + rng.normal(size=(num_series, length)))
  return data.SeriesSet(
      'toy', target.astype(np.float32), np.ones(target.shape, bool),
      rng.normal(size=(num_series, length, 1)).astype(np.float32),
      rng.normal(size=(num_series, length, 1)).astype(np.float32) if past else
      np.zeros((num_series, length, 0), np.float32),
      (1_400_000_000 + 3600 * t).astype(np.int64), ('a', 'b')[:num_series], ('k',),
      ('p',) if past else (), 'h', 24)


SPEC = windows.WindowSpec(context=48, horizon=24, lags=(1, 24, 168))


def test_future_never_reaches_inputs():
  s = _series()
  prep = windows.prepare(s, SPEC, train_end=1500)
  idx, origins = np.array([0, 1, 0]), np.array([1500, 1600, 1976])
  base = windows.make_windows(prep, idx, origins)
  # Perturb every target and past-only covariate value at or after each origin.
  for i, o in zip(idx, origins):
    target, past = s.target.copy(), s.past.copy()
    target[i, o:] += 1000.0
    past[i, o:] += 1000.0
    import dataclasses
    s2 = dataclasses.replace(s, target=target, past=past)
    w = windows.make_windows(dataclasses.replace(prep, series=s2, covariates=windows.prepare(
        s2, SPEC, 1500).covariates), idx, origins)
    row = list(origins).index(o)
    for key in ('history', 'history_observed', 'time', 'loc', 'scale'):
      np.testing.assert_array_equal(w[key][row], base[key][row], err_msg=key)
    assert not np.array_equal(w['future'][row], base['future'][row])  # Labels do change.


def test_window_geometry():
  s = _series()
  prep = windows.prepare(s, SPEC, train_end=1500)
  w = windows.make_windows(prep, np.array([1]), np.array([1000]))
  np.testing.assert_array_equal(w['history'][0], s.target[1, 1000 - 168 - 48:1000])
  np.testing.assert_array_equal(w['future'][0], s.target[1, 1000:1024])
  assert w['time'].shape == (1, 72, windows.num_time_features(prep))
  is_future = w['time'][0, :, prep.covariates.shape[-1]]
  np.testing.assert_array_equal(is_future, np.r_[np.zeros(48), np.ones(24)])
  assert np.all(w['time'][0, 48:, prep.num_known:prep.covariates.shape[-1]] == 0)


def test_training_windows_end_before_evaluation_and_are_pure():
  s = _series()
  origins = windows.eval_origins(s.length, 24, 5, 24, 'test')
  np.testing.assert_array_equal(origins, 2000 - 24 - 24 * np.arange(5)[::-1])
  val = windows.eval_origins(s.length, 24, 5, 24, 'val')
  assert val[-1] + 24 <= origins[0]
  prep = windows.prepare(s, SPEC, train_end=int(origins[0]))
  low, high = windows.train_origin_range(prep)
  assert high + SPEC.horizon <= origins[0] and low == 168 + 48
  a = windows.train_batch(prep, 3, 17, 32)
  b = windows.train_batch(prep, 3, 17, 32)
  c = windows.train_batch(prep, 3, 18, 32)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['history'], c['history'])


def test_too_little_history_is_a_user_error():
  s = _series(length=300)
  origins = windows.eval_origins(s.length, 24, 5, 24)
  with pytest.raises(data.UserError, match='too few'):
    windows.check_history(s.length, SPEC, origins, 24, 'toy')


def test_scaling_uses_context_only():
  s = _series(num_series=1, past=False)
  prep = windows.prepare(s, SPEC, 1500)
  w = windows.make_windows(prep, np.array([0]), np.array([1000]))
  ctx = s.target[0, 1000 - 48:1000]
  np.testing.assert_allclose(w['loc'][0], ctx.mean(), rtol=1e-5)
  np.testing.assert_allclose(w['scale'][0], ctx.std(), rtol=1e-4)
