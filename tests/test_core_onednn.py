"""The oneDNN backend of the plain LSTM (lstm_jax/onednn.py): when it runs, threads, errors.

Its numbers are checked against the float64 NumPy reference with the other backends in
test_core_forward.py and test_core_grads.py (`test_unmasked_*`). Backends against each
other: the same float32 math in another order, outputs within 1e-6, gradients 1e-5.
"""

from __future__ import annotations

import functools
import re
import threading
from time import sleep

import numpy as np
import pytest

import test_core_common as common
from test_core_common import jax, jnp
from lstm_jax import LSTM, fused, onednn, valid_mask

needs_onednn = pytest.mark.skipif(not onednn.available(), reason='oneDNN is not installed')


def _inputs(seed=0, time=6, batch=3, features=5, hidden=4):
  """`fused.lstm`'s positional arguments before `valid`, then h0, c0."""
  a = common.plain_lstm_inputs(seed, batch, time, features, hidden)
  return tuple(a[k] for k in ('ik', 'rk', 'b', 'xs', 'h0', 'c0'))


def _targets(fn, *args) -> set[str]:
  """The custom-call targets in fn's jaxpr (including inside custom_vjp)."""
  return set(t for t in ('lstm_jax_onednn_infer', 'lstm_jax_onednn_train')
             if t in str(jax.make_jaxpr(fn)(*args)))


def _run(backend, valid=None, remat=False, seq_lengths=None):
  return lambda ik, rk, b, xs, h0, c0: fused.lstm(ik, rk, b, xs, valid, h0, c0,
                                                  remat=remat, backend=backend,
                                                  seq_lengths=seq_lengths)


def _assert_trees_close(got, want, tol=1e-5):
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


@pytest.fixture
def any_step_size(monkeypatch):
  """'auto' takes oneDNN for these tiny test shapes too."""
  monkeypatch.setattr(fused, 'AUTO_MIN_STEP_FLOP', 0)


@needs_onednn
def test_auto_leaves_small_steps_to_the_scan():
  a = _inputs()  # 2 * B * 4H * (I + H) = 864 FLOP per step.
  assert not _targets(_run('auto'), *a)
  assert _targets(_run('onednn'), *a) == {'lstm_jax_onednn_infer'}
  # 0.91 MFLOP per step; above cpu_kernel's batch sizes.
  wide = _inputs(time=2, batch=fused.CPU_KERNEL_MAX_BATCH + 1, hidden=fused.AUTO_MIN_HIDDEN)
  assert _targets(_run('auto'), *wide) == {'lstm_jax_onednn_infer'}


@needs_onednn
def test_auto_picks_onednn_only_where_it_applies(any_step_size):
  a = _inputs()
  assert _targets(_run('auto'), *a) == {'lstm_jax_onednn_infer'}
  loss = lambda *a: jnp.sum(_run('auto')(*a)[1])  # noqa: E731
  assert _targets(jax.grad(loss, argnums=(0, 3)), *a) == {'lstm_jax_onednn_train'}
  assert not _targets(_run('xla'), *a)
  lengths = jnp.array([6, 0, 3])
  valid = valid_mask(lengths, 6)
  assert not _targets(_run('auto', valid=valid), *a)  # A mask not known to be a prefix.
  assert _targets(_run('auto', valid=valid, seq_lengths=lengths), *a) == {
      'lstm_jax_onednn_infer'}
  assert not _targets(_run('auto', remat=True), *a)
  bf16 = tuple(v.astype(jnp.bfloat16) for v in a)
  assert not _targets(_run('auto'), *bf16)
  # float32 compute with bfloat16 parameters (dtype promotion) does use it.
  assert _targets(_run('auto'), *(bf16[:3] + a[3:]))


@needs_onednn
@pytest.mark.parametrize('backend', ['onednn', 'auto'])
@pytest.mark.parametrize('time, batch', [(1, 1), (9, 1), (6, 3), (40, 2)])
def test_onednn_equals_xla_scan(time, batch, backend, any_step_size):
  a = _inputs(seed=time, time=time, batch=batch)
  got = jax.jit(_run(backend))(*a)
  want = _run('xla')(*a)
  _assert_trees_close(got, want, 1e-6)
  w = np.random.default_rng(1).standard_normal(want[1].shape)

  def loss(run):
    return lambda *a: (jnp.sum(run(*a)[1] * w) + jnp.sum(run(*a)[0][0] ** 2)
                       + jnp.sum(jnp.sin(run(*a)[0][1])))
  g_dnn = jax.jit(jax.grad(loss(_run(backend)), argnums=range(6)))(*a)
  g_xla = jax.grad(loss(_run('xla')), argnums=range(6))(*a)
  for name, g, h in zip(['input_kernel', 'recurrent_kernel', 'bias', 'xs', 'h0', 'c0'],
                        g_dnn, g_xla):
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5, err_msg=name)


@needs_onednn
@pytest.mark.parametrize('lengths', [[6, 0, 3], [1, 6, 6], [0, 0, 0]])
def test_onednn_masked_by_lengths_equals_xla_scan(lengths, any_step_size):
  """Outputs, final state and every gradient, with the state carried over the padding."""
  a = _inputs(seed=sum(lengths))
  lengths = jnp.array(lengths)
  valid = valid_mask(lengths, a[3].shape[0])
  xs = jnp.where(valid[..., None], a[3], jnp.nan)  # NaN padding must not matter.
  a = a[:3] + (xs,) + a[4:]
  run = {k: _run(k, valid=valid, seq_lengths=lengths) for k in ('onednn', 'xla')}
  got = jax.jit(run['onednn'])(*a)
  want = run['xla'](*a[:3], jnp.where(valid[..., None], xs, 0.0), *a[4:])
  _assert_trees_close(got, want, tol=1e-6)
  np.testing.assert_array_equal(got[0][1][lengths == 0], a[5][lengths == 0])

  def loss(backend, *args):
    (h, c), ys = run[backend](*args)
    return jnp.sum(ys * jnp.arange(ys.shape[-1])) + jnp.sum(h ** 2) + jnp.sum(jnp.sin(c))

  argnums = (0, 1, 2, 4, 5)  # xs: the scan's gradient at NaN padding is not defined.
  g_dnn = jax.jit(jax.grad(functools.partial(loss, 'onednn'), argnums))(*a)
  g_xla = jax.grad(functools.partial(loss, 'xla'), argnums)(
      *a[:3], jnp.where(valid[..., None], xs, 0.0), *a[4:])
  _assert_trees_close(g_dnn, g_xla)
  dx = jax.grad(functools.partial(loss, 'onednn'), 3)(*a)
  np.testing.assert_array_equal(np.asarray(dx)[~np.asarray(valid)], 0.0)


@needs_onednn
def test_masking_holds_c_even_with_huge_pre_activations():
  """Weights of 3e4 give gate pre-activations near 1e5; c must still be carried."""
  ik, rk, b, xs, h0, c0 = _inputs(seed=1)
  ik, rk, b = (3e4 * w for w in (ik, rk, b))
  lengths = jnp.array([6, 2, 0])
  valid = valid_mask(lengths, 6)
  (h, c), ys = _run('onednn', valid=valid, seq_lengths=lengths)(ik, rk, b, xs, h0, c0)
  (h_xla, c_xla), ys_xla = _run('xla', valid=valid)(ik, rk, b, xs, h0, c0)
  np.testing.assert_array_equal(c[2], c0[2])
  _assert_trees_close((h, c, ys), (h_xla, c_xla, ys_xla), tol=1e-5)


@needs_onednn
def test_the_lstm_cell_takes_valid_or_seq_lengths_not_both():
  model, variables, x = common.setup(dict(hidden_size=4, backend='onednn'), 2, 3, 5)
  cell = model._cell(parent=None)
  params = {'params': variables['params']['layer_0']}
  xs, lengths = jnp.swapaxes(x, 0, 1), jnp.array([3, 1])
  state = cell.initialize_state(2)
  with pytest.raises(ValueError, match='valid or seq_lengths, not both'):
    cell.apply(params, state, xs, valid_mask(lengths, 3), seq_lengths=lengths)
  by_mask = LSTM(hidden_size=4, backend='xla')._cell(parent=None).apply(
      params, state, xs, valid_mask(lengths, 3))
  _assert_trees_close(cell.apply(params, state, xs, seq_lengths=lengths), by_mask, 1e-6)


@needs_onednn
def test_vmap_and_module_backends_agree():
  a = _inputs()
  xs2 = jnp.stack([a[3], 2 * a[3]])
  got = jax.vmap(lambda x: _run('onednn')(*a[:3], x, *a[4:])[1])(xs2)
  want = jnp.stack([_run('xla')(*a[:3], x, *a[4:])[1] for x in xs2])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  model, variables, x = common.setup(dict(hidden_size=4, num_layers=2, bidirectional=True,
                                          backend='onednn'), 3, 7, 2)
  out, final = model.apply(variables, x)
  out_xla, final_xla = model.clone(backend='xla').apply(variables, x)
  np.testing.assert_allclose(out, out_xla, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(final.c, final_xla.c, rtol=1e-6, atol=1e-6)


@needs_onednn
@pytest.mark.parametrize('layers', [1, 2])
def test_batch_major_model_needs_no_transposing_copies(layers):
  """The custom calls read and write batch-major sequences where the model has them."""
  model, variables, x = common.setup(dict(hidden_size=4, num_layers=layers,
                                          backend='onednn'), 3, 6, 5)
  loss = lambda v, x: jnp.sum(model.apply(v, x)[0] ** 2)  # noqa: E731
  for fn in (model.apply, jax.grad(loss, argnums=(0, 1))):
    hlo = jax.jit(fn).lower(variables, x).compile().as_text()
    assert 'lstm_jax_onednn' in hlo
    copies = [line for line in hlo.splitlines() if re.search(r' (transpose|copy)\(%', line)]
    assert not copies, copies


@needs_onednn
def test_explicit_onednn_refuses_what_it_cannot_run():
  a = _inputs()
  valid = jnp.ones(a[3].shape[:2], bool)
  with pytest.raises(ValueError, match='seq_lengths'):
    _run('onednn', valid=valid)(*a)
  with pytest.raises(ValueError, match='remat'):
    _run('onednn', remat=True)(*a)
  with pytest.raises(ValueError, match="backend must be one of"):
    _run('cudnn')(*a)
  x = jnp.ones((2, 3, 5))
  with pytest.raises(ValueError, match='plain float32 LSTM'):
    LSTM(hidden_size=4, peepholes=True, backend='onednn').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='backend must be one of'):
    LSTM(hidden_size=4, backend='fast').init(jax.random.key(0), x)


@needs_onednn
def test_errors_inside_the_custom_call_reach_the_caller(monkeypatch):
  """An exception in the handler becomes the jitted call's error, not garbage output."""
  def broken(*shape):
    raise RuntimeError('no primitive for you')
  monkeypatch.setattr(onednn, '_primitives', broken)
  a = _inputs(time=3, batch=2)
  with pytest.raises(Exception, match='no primitive for you'):
    jax.block_until_ready(jax.jit(_run('onednn'))(*a))


def _training_step():
  return jax.jit(jax.grad(lambda *a: jnp.sum(_run('onednn')(*a)[1] ** 2), argnums=range(6)))


@needs_onednn
@pytest.mark.parametrize('failing', ['forward', 'backward'])
def test_errors_in_a_training_step_reach_the_caller_and_the_next_step_runs(monkeypatch,
                                                                          failing):
  """The forward call fails on the worker behind XLA's future, the backward call on the
  worker thread itself (where XLA went on); either way the step raises, and the worker
  is free for the next one."""
  a = _inputs(time=3, batch=2, features=3)
  primitives, seen = onednn._primitives, []

  def failing_primitives(*key):  # Called once by each pass.
    seen.append(key)
    if len(seen) == (1 if failing == 'forward' else 2):
      raise RuntimeError(f'no primitive for the {failing} pass')
    return primitives(*key)
  monkeypatch.setattr(onednn, '_primitives', failing_primitives)
  with pytest.raises(Exception, match=f'no primitive for the {failing} pass'):
    jax.block_until_ready(_training_step()(*a))
  assert len(seen) == (1 if failing == 'forward' else 2)
  monkeypatch.undo()
  _assert_trees_close(_training_step()(*a),
                      jax.grad(lambda *a: jnp.sum(_run('xla')(*a)[1] ** 2),
                               argnums=range(6))(*a))


@needs_onednn
def test_a_training_step_hands_only_its_first_call_to_the_worker(monkeypatch):
  """XLA goes on with the program on the worker thread after the forward call's future:
  the backward call (after the loss) runs there at once. The hand-offs between threads
  were the largest fixed cost of a small step."""
  a = _inputs(time=4, batch=2)
  step = _training_step()
  jax.block_until_ready(step(*a))  # Compiles, creates the primitives.
  # A call this small could finish before XLA waits on its future; XLA would then go on
  # on its own thread. Slowed down, it cannot.
  primitives = onednn._primitives
  monkeypatch.setattr(onednn, '_primitives', lambda *key: sleep(0.05) or primitives(*key))
  handed = []
  submit = onednn._worker.submit
  monkeypatch.setattr(onednn._worker, 'submit',
                      lambda fn, *args: handed.append(fn) or submit(fn, *args))
  jax.block_until_ready(step(*a))
  assert len(handed) == 1


@needs_onednn
def test_steps_from_several_python_threads_at_once_all_finish_exactly():
  """XLA programs go on on the one worker thread while other calls queue behind them:
  four threads training a bidirectional, masked two-layer model concurrently neither
  deadlock nor mix up their numbers."""
  model = LSTM(hidden_size=8, num_layers=2, bidirectional=True, backend='onednn')
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 6, 4)), jnp.float32)
  lengths = jnp.asarray([6, 2, 0])
  params = model.init(jax.random.key(1), x)
  grad = jax.jit(jax.grad(
      lambda p, x: jnp.sum(model.apply(p, x, seq_lengths=lengths)[0] ** 2)))
  want = [grad(params, k * x) for k in range(4)]
  got = {}

  def train(k):
    for _ in range(10):
      g = grad(params, k * x)
    got[k] = jax.block_until_ready(g)
  threads = [threading.Thread(target=train, args=(k,), daemon=True) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  assert not any(t.is_alive() for t in threads), 'a thread never finished'
  for k in range(4):
    jax.tree.map(np.testing.assert_array_equal, got[k], want[k])


@pytest.fixture
def fresh_workspaces(monkeypatch):
  cache = onednn._Workspaces()
  monkeypatch.setattr(onednn, '_workspaces', cache)
  return cache


@needs_onednn
def test_training_steps_reuse_one_workspace(fresh_workspaces):
  """The buffer of step n's workspace holds step n+1's: no fresh memory after step 1."""
  a = _inputs(time=20, batch=4)
  step = _training_step()
  for _ in range(3):
    jax.block_until_ready(step(*a))
  assert not fresh_workspaces.live and len(fresh_workspaces.spare) == 1
  assert fresh_workspaces.last_id == 3


@needs_onednn
@pytest.mark.parametrize('batch', [3, 1])  # Batch 1 trains on XLA's buffers, no copies.
def test_backward_recomputes_a_workspace_that_is_gone(fresh_workspaces, batch):
  """Gradients never depend on the cache: emptied between the passes, one forward's
  residuals taken back twice (jacrev), or a limit that holds nothing."""
  a = _inputs(time=7, batch=batch)
  ys = lambda run: lambda *a: run(*a)[1]  # noqa: E731
  cotangent = jnp.asarray(np.random.default_rng(2).standard_normal((7, batch, 4)),
                          jnp.float32)
  want = jax.vjp(ys(_run('xla')), *a)[1](cotangent)
  _, vjp = jax.vjp(ys(_run('onednn')), *a)
  fresh_workspaces.live.clear()
  _assert_trees_close(vjp(cotangent), want)
  _assert_trees_close(vjp(cotangent), want)  # The first backward pass released it.
  final_h = lambda run: lambda xs: run(*a[:3], xs, *a[4:])[0][0]  # noqa: E731
  _assert_trees_close(jax.jacrev(final_h(_run('onednn')))(a[3]),
                      jax.jacrev(final_h(_run('xla')))(a[3]))


@needs_onednn
def test_a_cache_limit_of_zero_still_gives_exact_gradients(fresh_workspaces, monkeypatch):
  """Two stacked layers under a zero limit: the second forward evicts the first's
  workspace, whose backward pass then recomputes it."""
  monkeypatch.setenv(onednn.WORKSPACE_CACHE_ENV, '0')
  a = _inputs(time=5, batch=2, features=4)

  def loss(run):
    def f(*a):
      ys = run(*a)[1]
      return jnp.sum(run(*a[:3], jnp.tanh(ys), *a[4:])[1] ** 2)
    return f
  got = jax.jit(jax.grad(loss(_run('onednn')), argnums=range(6)))(*a)
  _assert_trees_close(got, jax.grad(loss(_run('xla')), argnums=range(6))(*a))
  assert fresh_workspaces.last_id == 3  # Two forward calls and one recomputation.
  assert len(fresh_workspaces.live) + len(fresh_workspaces.spare) == 1


@pytest.mark.parametrize('missing', ['wheel', 'library file'])
def test_without_onednn_auto_runs_the_scan_and_onednn_says_why(missing, monkeypatch,
                                                               tmp_path):
  """Where oneDNN does not load: 'auto' falls back, 'onednn' names the cause and the fix."""
  monkeypatch.setattr(onednn, '_loaded', [])  # Load again, under this test's settings.
  if missing == 'wheel':
    monkeypatch.delenv(onednn.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(onednn, 'PACKAGE', 'no-such-onednn-wheel')
    why = r'oneDNN not found: `pip install no-such-onednn-wheel`'
  else:
    monkeypatch.setenv(onednn.LIBRARY_ENV, str(tmp_path / 'libdnnl.so.3'))
    why = r'from \$LSTM_JAX_ONEDNN_LIB; unset it .*libdnnl.so.3: cannot open'
  monkeypatch.setattr(fused, 'AUTO_MIN_STEP_FLOP', 0)
  a = _inputs()
  got = _run('auto')(*a)
  want = _run('xla')(*a)
  jax.tree.map(lambda g, w: np.testing.assert_array_equal(g, w), got, want)
  with pytest.raises(ValueError, match=why):
    _run('onednn')(*a)


@needs_onednn
@pytest.mark.parametrize('value', ['2G', '-1', ''])
def test_a_malformed_cache_limit_fails_when_tracing_and_names_the_variable(value,
                                                                          monkeypatch):
  monkeypatch.setenv(onednn.WORKSPACE_CACHE_ENV, value)
  a = _inputs()
  loss = lambda *a: jnp.sum(_run('onednn')(*a)[1])  # noqa: E731
  with pytest.raises(ValueError, match=r'\$LSTM_JAX_ONEDNN_WORKSPACE_CACHE_MIB=.*whole '
                                       'number of MiB'):
    jax.jit(jax.grad(loss)).lower(*a)
