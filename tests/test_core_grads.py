"""Gradients: JAX autodiff (and fused.py's hand-written VJP) against finite differences.

Tolerances:
* JAX float32 gradients vs central differences of the float64 NumPy reference
  (step 1e-6, truncation error ~1e-12, round-off ~1e-10): the error is float32 rounding
  accumulated through the backward pass, ~1e-6 of the gradient's scale, so we check
  |jax - fd| <= 1e-3 * |fd| + 2e-5 elementwise.
* Fused vs generic path, and remat / unroll on vs off: the same float32 math in another
  order: outputs within 1e-6, gradients within 1e-5 (rtol and atol).
"""

from __future__ import annotations

import numpy as np
import pytest

import test_core_common as common
from test_core_common import LSTM_CASES, jax, jnp
import reference
from lstm_jax import (LSTMState, LSTMStructure, fused, lstm_step, scan_steps,
                      valid_mask)

B, T, F, H = 3, 3, 2, 2
LENGTHS = np.array([3, 0, 2])
FD_STEP = 1e-6


def _flatten(tree):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return leaves, treedef


def _check_against_fd(options, lengths=LENGTHS, features=F, seed=0):
  """lengths=None: no `seq_lengths` (every sequence has all T steps)."""
  model_lengths = None if lengths is None else jnp.asarray(lengths)
  lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
  model, variables, x = common.setup(options, len(lengths), T, features, seed)
  state0 = common.random_state(model, len(lengths), seed + 1)
  rng = np.random.default_rng(seed + 2)
  out_shape = jax.eval_shape(lambda: model.apply(variables, x, seq_lengths=model_lengths)
                             )[0].shape
  w_out = rng.standard_normal(out_shape)
  w_state = {k: rng.standard_normal(v.shape) for k, v in common.state_dict(state0).items()}
  opts = common.split_options(options)

  def jax_loss(params, x, state):
    out, final = model.apply({'params': params}, x, seq_lengths=model_lengths,
                             initial_state=state)
    loss = jnp.sum(out * w_out)
    for k, v in final._asdict().items():
      if v is not None:
        loss = loss + jnp.sum(v * w_state[k])
    return loss

  grads = jax.jit(jax.grad(jax_loss, argnums=(0, 1, 2)))(variables['params'], x, state0)
  grads = (grads[0], grads[1], {k: v for k, v in grads[2]._asdict().items() if v is not None})

  # Everything the loss depends on, as float64 NumPy, flattened into one vector.
  primal = (reference.to_f64(variables['params']), np.asarray(x, np.float64),
            common.state_dict(state0))
  leaves, treedef = _flatten(primal)
  sizes = [leaf.size for leaf in leaves]
  flat = np.concatenate([np.ravel(leaf) for leaf in leaves]).astype(np.float64)

  def ref_loss(vec):
    parts, start = [], 0
    for leaf, n in zip(leaves, sizes):
      parts.append(vec[start:start + n].reshape(leaf.shape))
      start += n
    params, xx, state = jax.tree_util.tree_unflatten(treedef, parts)
    out, final = reference.rnn_reference(params, xx, lengths, initial_state=state, **opts)
    return np.sum(out * w_out) + sum(np.sum(final[k] * w_state[k]) for k in w_state)

  fd = np.empty_like(flat)
  for j in range(flat.size):
    e = np.zeros_like(flat)
    e[j] = FD_STEP
    fd[j] = (ref_loss(flat + e) - ref_loss(flat - e)) / (2 * FD_STEP)

  g_leaves, g_treedef = _flatten(grads)
  assert g_treedef == treedef, (g_treedef, treedef)
  got = np.concatenate([np.ravel(np.asarray(g, np.float64)) for g in g_leaves])
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
  where = np.repeat(names, sizes)
  bad = np.abs(got - fd) > 1e-3 * np.abs(fd) + 2e-5
  assert not bad.any(), (
      f'{bad.sum()} of {bad.size} gradient entries differ; first at '
      f'{list(where[bad][:5])}: jax {got[bad][:5]} vs fd {fd[bad][:5]}')
  assert np.abs(fd).max() > 1e-2  # The loss does depend on the inputs.


@pytest.mark.parametrize('name', sorted(LSTM_CASES))
def test_lstm_grads_match_finite_differences(name):
  _check_against_fd(dict(hidden_size=H, **LSTM_CASES[name]))


@pytest.mark.parametrize('options', [
    dict(hidden_size=H, cell_type='gru'),
    dict(hidden_size=H, cell_type='rnn'),
    dict(hidden_size=H, cell_type='gru', zoneout_hidden=0.3),
    dict(hidden_size=H, num_layers=2, bidirectional=True),  # fused, both directions
    dict(hidden_size=H, num_layers=2, bidirectional=True, merge='sum', peepholes=True),
    dict(hidden_size=H, num_layers=2, residual=True, cell_type='rnn', bidirectional=True,
         merge='sum'),
], ids=['gru', 'rnn', 'gru_zoneout', 'lstm_bidir_2layer', 'peephole_bidir_sum',
        'rnn_residual_bidir'])
def test_other_cells_and_stacks_grads_match_finite_differences(options):
  _check_against_fd(options, seed=4, **({'features': H} if options.get('residual') else {}))


@pytest.mark.parametrize('backend', ['xla', 'onednn', 'cpu_kernel'])
@pytest.mark.parametrize('options', [dict(hidden_size=H),
                                     dict(hidden_size=H, num_layers=2, bidirectional=True)],
                         ids=['plain', 'bidir_2layer'])
def test_unmasked_plain_lstm_grads_match_finite_differences(options, backend):
  """No seq_lengths; every backend against the reference."""
  common.skip_unless_available(backend)
  _check_against_fd(dict(options, backend=backend), lengths=None)


@pytest.mark.parametrize('backend', ['onednn', 'cpu_kernel'])
@pytest.mark.parametrize('options', [dict(hidden_size=H),
                                     dict(hidden_size=H, num_layers=2, bidirectional=True)],
                         ids=['plain', 'bidir_2layer'])
def test_masked_plain_lstm_grads_through_custom_calls_match_finite_differences(options,
                                                                              backend):
  """seq_lengths [3, 0, 2] through the custom calls: nothing may flow back through the
  padding."""
  common.skip_unless_available(backend)
  _check_against_fd(dict(options, backend=backend), seed=6)


# ----------------------------------------------------------- fused vs generic path

def _run_fused(a, valid, unroll, remat):
  # The XLA scan; tests/test_core_onednn.py and test_core_cpu_kernel.py check the others.
  (h, c), ys = fused.lstm(a['ik'], a['rk'], a['b'], a['xs'], valid, a['h0'], a['c0'],
                          unroll=unroll, remat=remat, backend='xla')
  return h, c, ys


def _run_generic(a, valid, unroll, remat):
  structure = LSTMStructure(hidden_size=a['h0'].shape[-1])
  params = {'input_kernel': a['ik'], 'recurrent_kernel': a['rk'], 'bias': a['b']}
  step = lambda p, s, x, _: lstm_step(p, s, x, structure)  # noqa: E731

  final, ys = scan_steps(step, params, LSTMState(a['h0'], a['c0']), a['xs'], valid,
                         unroll=unroll, remat=remat)
  return final.h, final.c, ys


def _loss(run, valid, unroll, remat, w):
  def loss(a):
    h, c, ys = run(a, valid, unroll, remat)
    return jnp.sum(ys * w[0]) + jnp.sum(h * w[1]) + jnp.sum(c * w[2])
  return loss


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('remat', [False, True])
@pytest.mark.parametrize('unroll', [1, 3])
@pytest.mark.parametrize('chunk, hoist', [(None, False), (2, False), (None, True)],
                         ids=['whole', 'chunked', 'hoisted'])
def test_fused_matches_generic(masked, remat, unroll, chunk, hoist, monkeypatch):
  # The paths the fused op takes for long sequences and for tiny batches, forced here:
  # chunk=2 over 5 steps is one head step, then two chunks of two; hoisting projects the
  # inputs before the loop.
  monkeypatch.setattr(fused, '_backward_chunk', lambda time, batch: chunk)
  monkeypatch.setattr(fused, 'HOIST_MAX_BATCH', 3 if hoist else 0)
  a = common.plain_lstm_inputs()
  valid = valid_mask(jnp.asarray([5, 0, 2]), 5) if masked else None
  fused_out = _run_fused(a, valid, unroll, remat)
  generic_out = _run_generic(a, valid, 1, False)
  for got, want in zip(fused_out, generic_out):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  rng = np.random.default_rng(9)
  w = [rng.standard_normal(generic_out[2].shape), rng.standard_normal(generic_out[0].shape),
       rng.standard_normal(generic_out[1].shape)]
  g_fused = jax.grad(_loss(_run_fused, valid, unroll, remat, w))(a)
  g_generic = jax.grad(_loss(_run_generic, valid, 1, False, w))(a)
  for k in a:
    np.testing.assert_allclose(g_fused[k], g_generic[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert np.all(np.isfinite(g_fused[k]))


def test_fused_grads_ignore_padding_values():
  """Gradients w.r.t. valid inputs and params do not depend on what is in the padding,
  and the gradient w.r.t. a padded input is exactly 0."""
  a = common.plain_lstm_inputs(seed=1)
  lengths = jnp.asarray([5, 0, 2])
  valid = valid_mask(lengths, 5)
  w = [np.ones((5, 3, 4)), np.ones((3, 4)), np.ones((3, 4))]
  g1 = jax.grad(_loss(_run_fused, valid, 1, False, w))(a)
  b = dict(a, xs=jnp.where(valid[..., None], a['xs'], 1e3))
  g2 = jax.grad(_loss(_run_fused, valid, 1, False, w))(b)
  for k in a:
    np.testing.assert_allclose(g1[k], g2[k], rtol=1e-6, atol=1e-6, err_msg=k)
  assert np.all(np.asarray(g1['xs'])[~np.asarray(valid)] == 0.0)


# ------------------------------------------------------------ remat and unroll

@pytest.mark.parametrize('options', [
    dict(hidden_size=4),  # fused
    dict(hidden_size=4, peepholes=True, proj_size=3, full_gate_recurrence=True),
    dict(hidden_size=4, cell_type='gru', bidirectional=True),
], ids=['fused', 'generic_lstm', 'gru_bidir'])
def test_remat_and_unroll_leave_numbers_unchanged(options):
  lengths = jnp.asarray([5, 2, 0])
  base, variables, x = common.setup(options, 3, 5, 3, 0)

  def run(model):
    @jax.jit
    def loss(params, x):
      out, final = model.apply({'params': params}, x, seq_lengths=lengths)
      return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size) + \
          jnp.sum(final.h ** 2)
    out, _ = jax.jit(model.apply)(variables, x, seq_lengths=lengths)
    return out, jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], x)

  out0, g0 = run(base)
  for kw in (dict(remat=True, unroll=3),):  # both on: either changing numbers fails
    out, g = run(common.RNN(**options, **kw))
    np.testing.assert_allclose(out, out0, rtol=1e-6, atol=1e-6, err_msg=str(kw))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                                         err_msg=str(kw)), g, g0)


def test_fused_grad_on_empty_time_axis():
  """Regression: with time = 0 the fused backward pass used to fail on mismatched scan
  lengths. Expected, as on the generic path: dh0 = dh_final, dc0 = dc_final, zeros
  elsewhere."""
  a = common.plain_lstm_inputs(time=0)
  w = [np.zeros((0, 3, 4)), np.ones((3, 4)), 2 * np.ones((3, 4))]
  g_generic = jax.grad(_loss(_run_generic, None, 1, False, w))(a)
  g_fused = jax.grad(_loss(_run_fused, None, 1, False, w))(a)
  for k in a:
    np.testing.assert_allclose(g_fused[k], g_generic[k], err_msg=k)
