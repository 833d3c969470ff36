"""The long-term-dependency generators: targets, baselines, determinism (pure NumPy)."""

import math

import numpy as np
import pytest

from experiments import long_range_data as data


@pytest.mark.parametrize('length', [2, 7, 50, 200])
def test_adding_markers_and_targets(length):
  x, y = data.adding_batch(seed=3, step=5, batch_size=64, length=length)
  assert x.shape == (64, length, 2) and x.dtype == np.float32 and y.shape == (64,)
  values, markers = x[..., 0], x[..., 1]
  assert ((values >= 0) & (values < 1)).all()
  assert (markers.sum(1) == 2).all() and set(np.unique(markers)) <= {0.0, 1.0}
  half = length // 2
  assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
  np.testing.assert_allclose(y, (values * markers).sum(1), rtol=1e-6)


def test_adding_baseline_analytic_and_empirical():
  # Var(U1 + U2) for independent U[0, 1]: 2 * 1/12; E[U1 + U2] = 1, so predicting 1 is
  # the best constant, and its MSE is that variance.
  assert data.ADDING_BASELINE_MSE == pytest.approx(2 / 12)
  assert data.ADDING_BASELINE_MSE == pytest.approx(0.167, abs=5e-4)
  _, y = data.adding_batch(seed=0, step=0, batch_size=200_000, length=4)
  assert np.mean((1.0 - y) ** 2) == pytest.approx(1 / 6, abs=2e-3)
  assert np.mean(y) == pytest.approx(1.0, abs=5e-3)


@pytest.mark.parametrize('fn,args', [
    (data.adding_batch, (16, 30)), (data.copy_batch, (16, 30)),
    (data.temporal_order_batch, (16, 40)), (data.temporal_order_batch, (16, 40, 3))])
def test_determinism_by_seed_and_step(fn, args):
  a = fn(1, 7, *args)
  b = fn(1, 7, *args)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[0], fn(1, 8, *args)[0])  # another step
  assert not np.array_equal(a[0], fn(2, 7, *args)[0])  # another seed


@pytest.mark.parametrize('lag', [1, 5, 100])
def test_copy_layout(lag):
  x, y = data.copy_batch(seed=0, step=2, batch_size=32, lag=lag)
  total = lag + 20
  assert x.shape == y.shape == (32, total)
  symbols = x[:, :10]
  assert ((symbols >= 1) & (symbols <= 8)).all()
  assert (x[:, 10:lag + 9] == 0).all()          # T - 1 blanks
  assert (x[:, lag + 9] == data.COPY_DELIMITER).all()
  assert (x[:, lag + 10:] == 0).all()           # 10 blanks after the delimiter
  assert (y[:, :lag + 10] == 0).all()
  np.testing.assert_array_equal(y[:, -10:], symbols)


@pytest.mark.parametrize('lag', [10, 100, 500])
def test_copy_memoryless_baseline(lag):
  assert data.copy_baseline_xent(lag) == pytest.approx(10 * math.log(8) / (lag + 20))
  # The memoryless strategy's actual cross-entropy on generated targets.
  _, y = data.copy_batch(seed=4, step=0, batch_size=16, lag=lag)
  log_p = data.copy_memoryless_log_probs(lag)                      # [T + 20, vocab]
  xent = -np.take_along_axis(np.broadcast_to(log_p, y.shape + log_p.shape[-1:]),
                             y[..., None], -1)[..., 0]
  assert np.isfinite(xent).all()
  assert xent.mean() == pytest.approx(data.copy_baseline_xent(lag), rel=1e-5)


@pytest.mark.parametrize('num_relevant,classes', [(2, 4), (3, 8)])
def test_temporal_order(num_relevant, classes):
  length = 100
  x, y = data.temporal_order_batch(0, 0, 512, length, num_relevant)
  assert x.shape == (512, length) and y.shape == (512,)
  assert (x[:, 0] == 4).all() and (x[:, -1] == 5).all()          # B ... E
  assert set(np.unique(y)) == set(range(classes))
  for row, label in zip(x, y):
    positions = np.flatnonzero(row >= 6)
    assert len(positions) == num_relevant
    for (lo, hi), p in zip(data.ORDER_WINDOWS[num_relevant], positions):
      assert round(lo * length) <= p <= round(hi * length)      # the paper's windows
    bits = row[positions] - 6                                     # X = 0, Y = 1
    assert int(''.join(map(str, bits)), 2) == label
  # Only distractors elsewhere.
  middle = x[:, 1:-1]
  assert ((middle < 4) | (middle >= 6)).all()


def test_stratified_split():
  labels = np.repeat(np.arange(10), 50)
  train, test = data.stratified_split(labels, 0.2, seed=0)
  assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 500
  np.testing.assert_array_equal(np.bincount(labels[test]), np.full(10, 10))
  again = data.stratified_split(labels, 0.2, seed=0)
  np.testing.assert_array_equal(test, again[1])
  assert not np.array_equal(test, data.stratified_split(labels, 0.2, seed=1)[1])


def test_digits_sequential_and_permuted():
  pytest.importorskip('sklearn')
  plain = data.DigitsData.load(seed=0)
  assert plain.images.shape == (1797, 64) and 0 <= plain.images.min() <= plain.images.max() <= 1
  assert len(plain.train_index) == 1438 and len(plain.test_index) == 359  # per-class rounding
  x, y = plain.train_batch(seed=0, step=3, batch_size=100)
  assert x.shape == (100, 64, 1) and y.shape == (100,)
  np.testing.assert_array_equal(x, plain.train_batch(0, 3, 100)[0])
  # One epoch of batches covers the training split exactly once.
  n = len(plain.train_index)
  assert n % 2 == 0
  seen = np.concatenate([plain.train_batch(0, s, n // 2)[1] for s in range(2)])
  np.testing.assert_array_equal(np.bincount(seen, minlength=10),
                                np.bincount(plain.labels[plain.train_index], minlength=10))
  permuted = data.DigitsData.load(seed=0, permuted=True)
  assert sorted(permuted.permutation) == list(range(64))
  np.testing.assert_array_equal(permuted.images, plain.images[:, permuted.permutation])
  np.testing.assert_array_equal(permuted.test_index, plain.test_index)
