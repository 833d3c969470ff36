"""lstm_jax's own CPU recurrence (lstm_jax/cpu_kernel.{py,c}): build, choice, numbers, errors.

Its numbers are also checked against the float64 NumPy reference with the other backends
in test_core_forward.py, test_core_grads.py and test_core_masking.py. Here against the XLA
scan: the same float32 math in another order, outputs within 1e-6, gradients 1e-5.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import test_core_common as common
from test_core_common import jax, jnp
from lstm_jax import LSTM, cpu_kernel, fused, valid_mask

needs_kernel = pytest.mark.skipif(not cpu_kernel.available(),
                                  reason=f'{cpu_kernel.unavailable_reason()}')
TARGETS = tuple(cpu_kernel._TARGETS.values())


def _inputs(seed=0, time=6, batch=1, features=5, hidden=4):
  """`fused.lstm`'s positional arguments before `valid`, then h0, c0.

  The recurrent kernel at a usual initial scale: with entries of std 0.6 at H=130 rounding
  differences grow to 6e-6 in 7 steps.
  """
  a = common.plain_lstm_inputs(seed, batch, time, features, hidden)
  a['rk'] = a['rk'] * min(1.0, 2.0 / hidden ** 0.5)
  return tuple(a[k] for k in ('ik', 'rk', 'b', 'xs', 'h0', 'c0'))


def _run(backend, valid=None, remat=False, seq_lengths=None):
  return lambda ik, rk, b, xs, h0, c0: fused.lstm(ik, rk, b, xs, valid, h0, c0,
                                                  remat=remat, backend=backend,
                                                  seq_lengths=seq_lengths)


def _uses_kernel(fn, *args) -> bool:
  return any(t in str(jax.make_jaxpr(fn)(*args)) for t in TARGETS)


def _assert_trees_close(got, want, tol):
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


def _loss(run, weights):
  def loss(*a):
    (h, c), ys = run(*a)
    return jnp.sum(ys * weights) + jnp.sum(h ** 2) + jnp.sum(jnp.sin(c))
  return loss


def test_builds_wherever_a_compiler_and_avx2_are():
  """Not a silent skip: where it can build (as on CI), it must."""
  if cpu_kernel._cpu_obstacle() or not shutil.which(os.environ.get('CC') or 'cc'):
    pytest.skip('no C compiler or no AVX2/FMA x86-64 Linux CPU here')
  assert cpu_kernel.available(), cpu_kernel.unavailable_reason()


@needs_kernel
# H: one thread with padded lanes (5), threads with uneven shares (37, 130), a share of
# several 64-unit tiles (130); batch > 1 runs the sequences one after another.
@pytest.mark.parametrize('time, batch, hidden', [(1, 1, 5), (6, 3, 37), (9, 1, 130)])
def test_equals_xla_scan(time, batch, hidden):
  a = _inputs(seed=time, time=time, batch=batch, hidden=hidden)
  got = jax.jit(_run('cpu_kernel'))(*a)
  want = _run('xla')(*a)
  _assert_trees_close(got, want, 1e-6)
  w = np.random.default_rng(1).standard_normal(want[1].shape)
  g_kernel = jax.jit(jax.grad(_loss(_run('cpu_kernel'), w), argnums=range(6)))(*a)
  g_xla = jax.grad(_loss(_run('xla'), w), argnums=range(6))(*a)
  for name, g, h in zip(['input_kernel', 'recurrent_kernel', 'bias', 'xs', 'h0', 'c0'],
                        g_kernel, g_xla):
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5, err_msg=name)


@needs_kernel
@pytest.mark.parametrize('lengths', [[6, 0, 3], [0, 0, 0]])
def test_masked_by_lengths_equals_xla_scan(lengths):
  """Outputs, final state and every gradient, with NaN in the padding."""
  a = _inputs(seed=sum(lengths), batch=3, hidden=12)
  lengths = jnp.array(lengths)
  valid = valid_mask(lengths, a[3].shape[0])
  xs = jnp.where(valid[..., None], a[3], jnp.nan)
  zeroed = jnp.where(valid[..., None], xs, 0.0)
  run = {k: _run(k, valid=valid, seq_lengths=lengths) for k in ('cpu_kernel', 'xla')}
  got = jax.jit(run['cpu_kernel'])(*a[:3], xs, *a[4:])
  want = run['xla'](*a[:3], zeroed, *a[4:])
  _assert_trees_close(got, want, 1e-6)
  np.testing.assert_array_equal(got[0][1][lengths == 0], a[5][lengths == 0])
  np.testing.assert_array_equal(np.asarray(got[1])[~np.asarray(valid)], 0.0)
  w = np.random.default_rng(2).standard_normal(want[1].shape)
  g_kernel = jax.jit(jax.grad(_loss(run['cpu_kernel'], w), argnums=range(6)))(
      *a[:3], xs, *a[4:])
  g_xla = jax.grad(_loss(run['xla'], w), argnums=(0, 1, 2, 4, 5))(*a[:3], zeroed, *a[4:])
  _assert_trees_close(g_kernel[:3] + g_kernel[4:], g_xla, 1e-5)
  dx = np.asarray(g_kernel[3])
  np.testing.assert_array_equal(dx[~np.asarray(valid)], 0.0)
  assert np.all(np.isfinite(dx))


@needs_kernel
def test_results_do_not_depend_on_timing():
  """Partial sums meet in a fixed order: repeated runs agree bit for bit."""
  a = _inputs(time=30, hidden=130)
  w = np.random.default_rng(3).standard_normal((30, 1, 130))
  grad = jax.jit(jax.grad(_loss(_run('cpu_kernel'), w), argnums=range(6)))
  first = grad(*a)
  for _ in range(5):
    jax.tree.map(np.testing.assert_array_equal, grad(*a), first)


@needs_kernel
def test_auto_picks_the_kernel_at_small_batch_hidden_size_and_length():
  hidden = fused.CPU_KERNEL_MIN_HIDDEN
  time = -(-fused.CPU_KERNEL_MIN_WORK // hidden ** 2)
  wide = _inputs(time=time, hidden=hidden)
  assert _uses_kernel(_run('auto'), *wide)
  assert _uses_kernel(jax.grad(lambda *a: jnp.sum(_run('auto')(*a)[1])), *wide)
  assert not _uses_kernel(_run('auto'), *_inputs(time=time - 1, hidden=hidden))  # Short.
  assert not _uses_kernel(_run('auto'), *_inputs(time=4 * time, hidden=hidden - 8))
  two = _inputs(time=time, batch=fused.CPU_KERNEL_MAX_BATCH, hidden=hidden)
  assert _uses_kernel(_run('auto'), *two)
  three = _inputs(time=time, batch=fused.CPU_KERNEL_MAX_BATCH + 1, hidden=hidden)
  assert not _uses_kernel(_run('auto'), *three)
  assert _uses_kernel(_run('cpu_kernel'), *three)
  valid = jnp.ones(wide[3].shape[:2], bool)
  assert not _uses_kernel(_run('auto', valid=valid), *wide)  # Not known to be a prefix.
  assert _uses_kernel(_run('auto', valid=valid, seq_lengths=jnp.array([time])), *wide)
  assert not _uses_kernel(_run('auto', remat=True), *wide)
  assert not _uses_kernel(_run('auto'), *(v.astype(jnp.bfloat16) for v in wide))


@needs_kernel
def test_explicit_kernel_refuses_what_it_cannot_run():
  a = _inputs()
  with pytest.raises(ValueError, match="backend='cpu_kernel' cannot run this call: .*remat"):
    _run('cpu_kernel', remat=True)(*a)
  with pytest.raises(ValueError, match='plain float32 LSTM'):
    LSTM(hidden_size=4, layer_norm=True, backend='cpu_kernel').init(
        jax.random.key(0), jnp.ones((1, 3, 5)))


@needs_kernel
def test_a_malformed_call_is_an_error_naming_the_argument():
  """The handlers check what XLA hands them, rather than read past a buffer."""
  wrong = cpu_kernel._shapes((4, 1, 8), (1, 8), (1, 8))
  with pytest.raises(Exception, match='cpu_kernel: recurrent_kernel has an unexpected'):
    jax.jit(lambda: cpu_kernel._call(
        'forward', wrong, jnp.zeros((4, 1, 32)), jnp.zeros((8, 28)), jnp.zeros((1, 8)),
        jnp.zeros((1, 8)), jnp.full((1,), 4, jnp.int32)))().block_until_ready()


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
  if cpu_kernel._cpu_obstacle() or not shutil.which(os.environ.get('CC') or 'cc'):
    pytest.skip('no C compiler or no AVX2/FMA x86-64 Linux CPU here')
  monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))
  built = cpu_kernel._build()
  assert built.parent == tmp_path and built.suffix == '.so'
  mtime = built.stat().st_mtime_ns
  assert cpu_kernel._build() == built and built.stat().st_mtime_ns == mtime
  assert sorted(p.name for p in tmp_path.iterdir()) == [built.name]  # No partial files.


def test_without_a_compiler_auto_falls_back_and_the_kernel_says_why(monkeypatch, tmp_path):
  monkeypatch.setattr(cpu_kernel, '_loaded', [])  # Load again, under this test's settings.
  monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))
  monkeypatch.setenv('CC', str(tmp_path / 'no-such-cc'))
  a = _inputs(time=64, hidden=fused.CPU_KERNEL_MIN_HIDDEN)
  assert not _uses_kernel(_run('auto'), *a)
  with pytest.raises(ValueError, match="backend='cpu_kernel' cannot run this call: .*"
                                       r'(no C compiler .*no-such-cc.*install gcc or set \$CC'
                                       '|x86-64 Linux only|the CPU lacks)'):
    _run('cpu_kernel')(*a)
  monkeypatch.setattr(cpu_kernel, '_loaded', [])
  monkeypatch.setenv('CC', str(tmp_path / 'broken-cc'))
  (tmp_path / 'broken-cc').write_text('#!/bin/sh\n[ "$1" = --version ] && echo broken-cc 1.0 '
                                      '&& exit 0\necho broken >&2\nexit 1\n')
  (tmp_path / 'broken-cc').chmod(0o755)
  if cpu_kernel._cpu_obstacle() is None:
    assert 'compiling cpu_kernel.c with' in cpu_kernel.unavailable_reason()
    assert [p.name for p in tmp_path.iterdir()] == ['broken-cc']  # Nothing half-built.
