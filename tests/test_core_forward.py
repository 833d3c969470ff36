"""Forward pass of every cell and variant against the float64 NumPy reference.

Tolerances: JAX runs in float32 and the reference in float64 over a few steps of
O(1) activations, so float32 rounding (~6e-8 relative per op, a few dozen ops per step)
stays below 1e-6; we allow rtol = atol = 1e-5. Layer norm divides by a standard deviation
of O(0.3) and NIAF lets the cell grow, hence the margin. Checks of structure (zero
padding, initial state at length 0) are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import test_core_common as common
from test_core_common import LSTM_CASES, jax, jnp
import reference
from lstm_jax import fused

TOL = dict(rtol=1e-5, atol=1e-5)
B, T, F, H = 4, 5, 3, 4
LENGTHS = np.array([5, 0, 3, 1])  # full length, zero, and two partial ones


def _compare(options, lengths=LENGTHS, features=F, random_init=True, seed=0, time=T):
  model, variables, x = common.setup(options, len(lengths), time, features, seed)
  state0 = common.random_state(model, len(lengths), seed + 1) if random_init else None
  out, final = model.apply(variables, x, seq_lengths=jnp.asarray(lengths),
                           initial_state=state0)
  ref_init = None if state0 is None else common.state_dict(state0)
  ref_out, ref_final = reference.rnn_reference(
      variables['params'], np.asarray(x), lengths, initial_state=ref_init,
      **common.split_options(options))
  assert out.shape == ref_out.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref_out, err_msg='outputs', **TOL)
  common.assert_state_close(final, ref_final, **TOL)
  # Padding is exactly zero and a length-0 sequence keeps its initial state exactly.
  pad = np.arange(time)[None, :] >= lengths[:, None]
  assert np.all(np.asarray(out)[pad] == 0.0)
  if state0 is not None:
    for k, v in common.state_dict(final).items():
      zero_len = lengths == 0
      np.testing.assert_array_equal(v[:, zero_len], common.state_dict(state0)[k][:, zero_len])
  return model, variables, x


@pytest.mark.parametrize('name', sorted(LSTM_CASES))
def test_lstm_variant_matches_reference(name):
  _compare(dict(hidden_size=H, **LSTM_CASES[name]))


@pytest.mark.parametrize('name', ['plain', 'full_gate_recurrence'])
def test_lstm_variant_zero_initial_state(name):
  _compare(dict(hidden_size=H, **LSTM_CASES[name]), random_init=False)


@pytest.mark.parametrize('backend', ['xla', 'onednn', 'cpu_kernel'])
@pytest.mark.parametrize('options', [dict(), dict(num_layers=2, bidirectional=True)],
                         ids=['plain', 'bidir_2layer'])
def test_unmasked_plain_lstm_matches_reference(options, backend):
  """No seq_lengths; every backend, a random state."""
  common.skip_unless_available(backend)
  options = dict(hidden_size=H, backend=backend, **options)
  model, variables, x = common.setup(options, B, T, F, seed=5)
  state0 = common.random_state(model, B, 6)
  out, final = jax.jit(lambda v, x, s: model.apply(v, x, initial_state=s))(variables, x,
                                                                           state0)
  ref_out, ref_final = reference.rnn_reference(
      variables['params'], np.asarray(x), np.full(B, T),
      initial_state=common.state_dict(state0), **common.split_options(options))
  np.testing.assert_allclose(out, ref_out, err_msg='outputs', **TOL)
  common.assert_state_close(final, ref_final, **TOL)


@pytest.mark.parametrize('backend', ['onednn', 'cpu_kernel'])
@pytest.mark.parametrize('options', [dict(), dict(num_layers=2, bidirectional=True)],
                         ids=['plain', 'bidir_2layer'])
def test_masked_plain_lstm_through_custom_calls_matches_reference(options, backend):
  """seq_lengths through oneDNN (an input feature holds c over the padding) and
  cpu_kernel (which stops at each length), with the exact checks of `_compare`: zero
  padding, a length-0 row keeps its state."""
  common.skip_unless_available(backend)
  _compare(dict(hidden_size=H, backend=backend, **options), seed=7)


def test_plain_lstm_goes_through_fused_path(monkeypatch):
  """The plain-LSTM comparisons above do test fused.lstm: it is the path taken."""
  calls = []
  real = fused.lstm

  def spy(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)
  monkeypatch.setattr(fused, 'lstm', spy)
  _compare(dict(hidden_size=H), seed=3)
  assert calls, 'plain LSTM did not use fused.lstm'
  calls.clear()
  _compare(dict(hidden_size=H, peepholes=True), seed=3)
  assert not calls, 'a peephole LSTM must not use the plain fused kernel'


@pytest.mark.parametrize('cell_type', ['gru', 'rnn'])
def test_gru_and_rnn_match_reference(cell_type):
  _compare(dict(hidden_size=H, cell_type=cell_type))
  _compare(dict(hidden_size=H, cell_type=cell_type, zoneout_hidden=0.4), seed=5)


STACKS = {
    'lstm_2layer': dict(hidden_size=H, num_layers=2),
    'lstm_bidir_concat_2layer': dict(hidden_size=H, num_layers=2, bidirectional=True),
    'lstm_bidir_sum': dict(hidden_size=H, num_layers=2, bidirectional=True, merge='sum'),
    'lstm_bidir_peep_proj': dict(hidden_size=H, num_layers=2, bidirectional=True,
                                 peepholes=True, proj_size=2),
    'lstm_bidir_fgr_cifg': dict(hidden_size=H, bidirectional=True, coupled=True,
                                full_gate_recurrence=True),
    'gru_bidir_2layer': dict(hidden_size=H, cell_type='gru', num_layers=2,
                             bidirectional=True),
    'rnn_bidir_sum_2layer': dict(hidden_size=H, cell_type='rnn', num_layers=2,
                                 bidirectional=True, merge='sum'),
}


@pytest.mark.parametrize('name', sorted(STACKS))
def test_stacks_match_reference(name):
  _compare(STACKS[name], seed=7)


RESIDUAL = {
    'lstm_residual_3layer': dict(hidden_size=H, num_layers=3, residual=True),
    'lstm_residual_bidir_sum': dict(hidden_size=H, num_layers=2, residual=True,
                                    bidirectional=True, merge='sum'),
    # concat: layer 0 maps F=4 -> 2H=8 (no residual), layer 1 maps 8 -> 8 (residual).
    'lstm_residual_bidir_concat': dict(hidden_size=H, num_layers=2, residual=True,
                                       bidirectional=True),
    'gru_residual': dict(hidden_size=H, cell_type='gru', num_layers=2, residual=True),
}


@pytest.mark.parametrize('name', sorted(RESIDUAL))
def test_residual_full_length_matches_reference(name):
  _compare(RESIDUAL[name], lengths=np.array([T, T, T]), features=H, seed=11)


@pytest.mark.parametrize('name', sorted(RESIDUAL))
def test_residual_valid_steps_and_final_state_match_reference(name):
  """With padding, the valid outputs and final states of residual stacks are right
  (the padding itself is covered by test_residual_padding_is_zero)."""
  options = RESIDUAL[name]
  model, variables, x = common.setup(options, len(LENGTHS), T, H, 13)
  out, final = model.apply(variables, x, seq_lengths=LENGTHS)
  ref_out, ref_final = reference.rnn_reference(variables['params'], np.asarray(x), LENGTHS,
                                               **common.split_options(options))
  valid = (np.arange(T)[None, :] < LENGTHS[:, None])[..., None]
  np.testing.assert_allclose(np.where(valid, out, 0.0), ref_out, **TOL)
  common.assert_state_close(final, ref_final, **TOL)


def test_residual_padding_is_zero():
  """Regression: the residual used to add the layer input at padded steps, so outputs
  past a length equalled the input padding. The contract is exactly 0 there."""
  options = dict(hidden_size=H, num_layers=2, residual=True)
  model, variables, x = common.setup(options, 2, 4, H, 0)
  lengths = np.array([3, 1])
  out, _ = model.apply(variables, x, seq_lengths=lengths)
  pad = np.arange(4)[None, :] >= lengths[:, None]
  np.testing.assert_array_equal(np.asarray(out)[pad], 0.0)


def test_lstm_cell_module_time_major_matches_reference():
  """LSTMCell used directly (time-major, explicit valid mask) with all options at once."""
  from lstm_jax import LSTMCell, valid_mask
  opts = dict(proj_size=3, peepholes=True, layer_norm=True, full_gate_recurrence=True,
              cell_clip=0.5)
  cell = LSTMCell(hidden_size=H, **opts)
  xs = jnp.asarray(np.random.default_rng(1).standard_normal((T, B, F)), jnp.float32)
  state0 = cell.initialize_state(B)
  params = common.randomize(cell.init(jax.random.key(0), state0, xs)['params'], 2)
  final, ys = cell.apply({'params': params}, state0, xs, valid_mask(LENGTHS, T))
  ref_ys, ref_final = reference.run_layer(
      'lstm', reference.to_f64(params), np.swapaxes(np.asarray(xs), 0, 1), LENGTHS,
      common.state_dict(state0), dict(hidden_size=H, **opts))
  np.testing.assert_allclose(np.swapaxes(np.asarray(ys), 0, 1), ref_ys, **TOL)
  common.assert_state_close(final, ref_final, **TOL)


def test_reference_reverse_reads_valid_prefix_backwards():
  """The reference's reverse direction and lstm_jax.reverse_valid agree with the
  documented example: lengths [3, 1], T=4: [a, b, c, _] -> [c, b, a, _]."""
  from lstm_jax import reverse_valid
  xs = jnp.asarray([[1., 10.], [2., 20.], [3., 30.], [4., 40.]])  # [time, batch]
  got = np.asarray(reverse_valid(xs, jnp.asarray([3, 1])))
  np.testing.assert_array_equal(got, [[3., 10.], [2., 20.], [1., 30.], [4., 40.]])
  np.testing.assert_array_equal(np.asarray(reverse_valid(jnp.asarray(got), [3, 1])), xs)
  # Reference: a tanh RNN with identity weights and a zero state is h_t = tanh(x_t + h);
  # the reverse direction at position 0 of sequence [a, b, c] must have read c, b, a.
  p = {'input_kernel': np.eye(1), 'recurrent_kernel': np.eye(1), 'bias': np.zeros(1)}
  x = np.array([[[0.1], [0.2], [0.3], [9.0]]])
  ys, _ = reference.run_layer('rnn', p, x, np.array([3]), {'h': np.zeros((1, 1))}, {},
                              reverse=True)
  expected0 = np.tanh(0.1 + np.tanh(0.2 + np.tanh(0.3)))
  np.testing.assert_allclose(ys[0, :, 0], [expected0, np.tanh(0.2 + np.tanh(0.3)),
                                           np.tanh(0.3), 0.0])
