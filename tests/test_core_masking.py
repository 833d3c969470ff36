"""Masking invariants, property-based (hypothesis draws lengths and padding values).

Tolerances: invariance to the padding, zero outputs past a length and the initial state
at length 0 are checked exactly (the masked scan must select, not blend). The final state
against a run on the truncated sequence is the same float32 math on another shape, so
we allow 1e-6; against the float64 reference, 1e-5 (see test_core_forward.py).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_core_common as common
from test_core_common import jax, jnp
import reference

B, T, F, H = 3, 5, 2, 3
SETTINGS = settings(max_examples=5, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

MODELS = {
    'lstm_fused': dict(hidden_size=H),
    'lstm_peep_proj_fgr': dict(hidden_size=H, peepholes=True, proj_size=2,
                               full_gate_recurrence=True),
    'lstm_zoneout_ln': dict(hidden_size=H, zoneout_cell=0.3, zoneout_hidden=0.2,
                            layer_norm=True),
    'gru': dict(hidden_size=H, cell_type='gru'),
    'lstm_bidir_2layer': dict(hidden_size=H, num_layers=2, bidirectional=True),
    'gru_bidir_sum': dict(hidden_size=H, cell_type='gru', bidirectional=True, merge='sum'),
    # oneDNN masks by lengths with an input feature that holds c (onednn._HOLD).
    'lstm_onednn': dict(hidden_size=H, backend='onednn'),
    'lstm_onednn_bidir_2layer': dict(hidden_size=H, num_layers=2, bidirectional=True,
                                     backend='onednn'),
    # cpu_kernel runs each sequence for its own length only.
    'lstm_cpu_kernel_bidir': dict(hidden_size=H, bidirectional=True, backend='cpu_kernel'),
}


@functools.lru_cache(maxsize=None)
def _model(name):
  options = MODELS[name]
  common.skip_unless_available(options.get('backend', 'auto'))
  model, variables, x = common.setup(options, B, T, F, seed=len(name))
  state0 = common.random_state(model, B, 3)
  apply = jax.jit(lambda x, lengths, s: model.apply(variables, x, seq_lengths=lengths,
                                                    initial_state=s))
  return model, variables, x, state0, apply


@functools.lru_cache(maxsize=None)
def _row_apply(name):
  """Jitted apply without seq_lengths (compiled once per truncated length)."""
  model, variables = _model(name)[:2]
  return jax.jit(lambda x, s: model.apply(variables, x, initial_state=s))


lengths_st = st.lists(st.integers(0, T), min_size=B, max_size=B).map(np.array)
padding_st = st.sampled_from([0.0, 1.0, -7.5, 1e4, np.nan])


@pytest.mark.parametrize('name', sorted(MODELS))
@SETTINGS
@given(lengths=lengths_st, pad=padding_st, seed=st.integers(0, 2**16))
def test_padding_never_changes_results(name, lengths, pad, seed):
  """Whatever stands in the padding (even NaN), the outputs are identical, exactly 0 past
  each length, and the final state is identical."""
  model, variables, x, state0, apply = _model(name)
  valid = (np.arange(T)[None, :] < lengths[:, None])[..., None]
  rng = np.random.default_rng(seed)
  junk = np.where(rng.random(x.shape) < 0.5, pad, 100 * rng.standard_normal(x.shape))
  x2 = jnp.asarray(np.where(valid, x, junk), jnp.float32)
  out1, fin1 = apply(x, lengths, state0)
  out2, fin2 = apply(x2, lengths, state0)
  np.testing.assert_array_equal(out1, out2)
  jax.tree.map(np.testing.assert_array_equal, fin1, fin2)
  np.testing.assert_array_equal(np.asarray(out1)[~valid[..., 0]], 0.0)


@pytest.mark.parametrize('name', sorted(MODELS))
@SETTINGS
@given(lengths=lengths_st)
def test_final_state_is_state_at_last_valid_step(name, lengths):
  """Each row's final state equals running that row alone on its truncated sequence (and
  the float64 reference); a length-0 row keeps its initial state exactly."""
  model, variables, x, state0, apply = _model(name)
  out, final = apply(x, lengths, state0)
  ref_out, ref_final = reference.rnn_reference(
      variables['params'], np.asarray(x), lengths, initial_state=common.state_dict(state0),
      **common.split_options(MODELS[name]))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  common.assert_state_close(final, ref_final, rtol=1e-5, atol=1e-5)
  got = common.state_dict(final)
  init = common.state_dict(state0)
  for b, n in enumerate(lengths):
    row_state = jax.tree.map(lambda a: a[:, b:b + 1], state0)
    if n == 0:
      for k in got:
        np.testing.assert_array_equal(got[k][:, b], init[k][:, b])
      continue
    out_b, fin_b = _row_apply(name)(x[b:b + 1, :n], row_state)
    np.testing.assert_allclose(np.asarray(out)[b, :n], out_b[0], rtol=1e-6, atol=1e-6)
    for k, v in common.state_dict(fin_b).items():
      np.testing.assert_allclose(got[k][:, b], v[:, 0], rtol=1e-6, atol=1e-6, err_msg=k)


@functools.lru_cache(maxsize=None)
def _bidir_parts():
  """Layer 0 of the bidirectional stack as a one-layer model, and a forward layer."""
  _, variables, x, _, _ = _model('lstm_bidir_2layer')
  params = {k: variables['params'][k] for k in ('layer_0', 'layer_0_reverse')}
  bi1 = common.RNN(hidden_size=H, bidirectional=True)
  one = common.RNN(hidden_size=H)
  return (params, x,
          jax.jit(lambda p, x, n: bi1.apply({'params': p}, x, seq_lengths=n)),
          jax.jit(lambda p, x: one.apply({'params': p}, x)))


@SETTINGS
@given(lengths=lengths_st)
def test_bidirectional_reverse_direction_reads_valid_prefix(lengths):
  """The reverse half of a bidirectional layer equals a forward layer (with the reverse
  direction's params) run on each valid prefix reversed, written back in place."""
  params, x, bi1, one = _bidir_parts()
  out1, fin1 = bi1(params, x, lengths)
  for b, n in enumerate(lengths):
    if n == 0:
      continue
    rev_x = x[b:b + 1, :n][:, ::-1]
    y_rev, s_rev = one({'layer_0': params['layer_0_reverse']}, rev_x)
    np.testing.assert_allclose(np.asarray(out1)[b, :n, H:], np.asarray(y_rev)[0, ::-1],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fin1.h)[1, b], s_rev.h[0, 0], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize('name', ['lstm_fused', 'lstm_zoneout_ln', 'gru', 'lstm_bidir_2layer',
                                  'lstm_onednn', 'lstm_onednn_bidir_2layer',
                                  'lstm_cpu_kernel_bidir'])
def test_nan_padding_does_not_reach_gradients(name):
  """Gradients with NaN in the padding equal those with zero padding (and are finite)."""
  model, variables, x, state0, _ = _model(name)
  lengths = jnp.array([T, 2, 0])
  pad = (np.arange(T)[None, :] >= np.asarray(lengths)[:, None])[..., None]

  def loss(params, x):
    out, final = model.apply({'params': params}, x, seq_lengths=lengths, initial_state=state0)
    return jnp.sum(out ** 2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  g_zero = grad(variables['params'], jnp.where(pad, 0.0, x))
  g_nan = grad(variables['params'], jnp.where(pad, np.nan, x))
  for a, b in zip(jax.tree.leaves(g_zero), jax.tree.leaves(g_nan)):
    assert np.all(np.isfinite(b))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name', ['lstm_fused', 'lstm_bidir_2layer', 'gru',
                                  'lstm_onednn_bidir_2layer', 'lstm_cpu_kernel_bidir'])
def test_lengths_outside_0_time_are_clipped(name):
  # Beyond `time` means the whole sequence and below 0 means empty, in both directions
  # (the reverse direction used to read past the end).
  model, variables, x, _, _ = _model(name)
  time = x.shape[1]
  over = np.array([time + 3, time, -2] + [1] * (x.shape[0] - 3))
  clipped = np.clip(over, 0, time)
  got = model.apply(variables, x, seq_lengths=over)
  want = model.apply(variables, x, seq_lengths=clipped)
  jax.tree.map(np.testing.assert_array_equal, got, want)
