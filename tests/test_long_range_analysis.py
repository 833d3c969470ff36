"""lstm_jax.analysis: dL/dh_t by a zero perturbation of the hidden state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import GRU, LSTM, SimpleRNN, analysis
from lstm_jax.cells import LSTMState, LSTMStructure, lstm_step


def test_hand_computable_linear_regime():
  # A tanh RNN with zero input weights and bias stays at h = 0, where tanh' = 1; with
  # R = a I the loss sum(h_T) back-propagates as dL/dh_t = a^(T-1-t) * ones.
  a, batch, hidden, time = 0.7, 2, 3, 6
  model = SimpleRNN(hidden_size=hidden)
  x = jnp.ones((batch, time, 1))
  params = {'input_kernel': jnp.zeros((1, hidden)), 'recurrent_kernel': a * jnp.eye(hidden),
            'bias': jnp.zeros(hidden)}
  norms = analysis.gradient_norms(model, {'params': {'layer_0': params}}, x,
                                  lambda ys, _: ys[:, -1].sum())
  expected = np.sqrt(batch * hidden) * a ** np.arange(time - 1, -1, -1)
  np.testing.assert_allclose(norms, expected, rtol=1e-5)


def test_unperturbed_loss_matches_full_unroll():
  model = GRU(hidden_size=5, num_layers=2)
  x = jax.random.normal(jax.random.key(0), (3, 4, 2))
  variables = model.init(jax.random.key(1), x)
  loss_fn = lambda ys, st: jnp.mean(ys ** 2) + jnp.sum(st.h ** 2)
  loss, grads = analysis.hidden_state_gradients(model, variables, x, loss_fn)
  assert grads.shape == (4, 2, 3, 5)
  np.testing.assert_allclose(loss, loss_fn(*model.apply(variables, x)), rtol=1e-6)


def _reference_loss(params, x, delta, target):
  """An independent unroll of the pure `lstm_step`, adding delta[t] to h_t."""
  structure = LSTMStructure(hidden_size=delta.shape[-1])
  state = LSTMState(h=jnp.zeros(delta.shape[1:]), c=jnp.zeros(delta.shape[1:]))
  for t in range(x.shape[1]):
    state, h = lstm_step(params, state, x[:, t], structure, dtype=jnp.float64)
    state = state._replace(h=h + delta[t])
  return jnp.mean((state.h @ jnp.ones((delta.shape[-1],)) - target) ** 2)


def test_lstm_matches_finite_differences():
  previous = jax.config.jax_enable_x64  # float64 so that finite differences are exact.
  jax.config.update('jax_enable_x64', True)
  try:
    batch, time, hidden = 2, 5, 3
    model = LSTM(hidden_size=hidden, param_dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(0), (batch, time, 2), jnp.float64)
    target = jnp.array([0.3, -0.2], jnp.float64)
    variables = model.init(jax.random.key(1), x)
    params = variables['params']['layer_0']

    def loss_fn(ys, _):  # The top (only) layer's last output: the loss sees h_T.
      return jnp.mean((ys[:, -1] @ jnp.ones((hidden,)) - target) ** 2)

    _, grads = analysis.hidden_state_gradients(model, variables, x, loss_fn)
    eps = 1e-6
    zero = jnp.zeros((time, batch, hidden), jnp.float64)
    for t, b, k in [(0, 0, 0), (2, 1, 2), (4, 0, 1), (1, 1, 1)]:
      bump = zero.at[t, b, k].set(eps)
      fd = (_reference_loss(params, x, bump, target)
            - _reference_loss(params, x, -bump, target)) / (2 * eps)
      np.testing.assert_allclose(grads[t, 0, b, k], fd, rtol=1e-5, atol=1e-10)
  finally:
    jax.config.update('jax_enable_x64', previous)


def test_rnn_gradient_vanishes_lstm_does_not():
  # The study's claim at small scale: with a last-step loss over 100 steps the tanh RNN's
  # gradient at t = 0 is orders of magnitude below its last-step value; the LSTM's with
  # forget bias 1 much less so.
  time = 100
  x = jax.random.uniform(jax.random.key(0), (4, time, 2))
  ratios = {}
  for model in (SimpleRNN(hidden_size=8), LSTM(hidden_size=8, forget_bias=3.0)):
    variables = model.init(jax.random.key(1), x)
    norms = analysis.gradient_norms(model, variables, x, lambda ys, _: jnp.mean(ys[:, -1]))
    ratios[model.cell_type] = float(norms[0] / norms[-1])
  assert ratios['rnn'] < 1e-6
  assert ratios['lstm'] > 1e3 * ratios['rnn']


def test_cell_field_and_errors():
  model = LSTM(hidden_size=4)
  x = jnp.ones((1, 3, 2))
  variables = model.init(jax.random.key(0), x)
  norms = analysis.gradient_norms(model, variables, x, lambda ys, _: ys[:, -1].sum(), field='c')
  assert norms.shape == (3,) and norms[-1] == 0  # c_T is read only by later steps.
  with pytest.raises(ValueError, match='no field'):
    analysis.gradient_norms(SimpleRNN(hidden_size=4),
                            SimpleRNN(hidden_size=4).init(jax.random.key(0), x), x,
                            lambda ys, _: ys.sum(), field='c')
  with pytest.raises(ValueError, match='forward'):
    bi = LSTM(hidden_size=4, bidirectional=True)
    analysis.gradient_norms(bi, bi.init(jax.random.key(0), x), x, lambda ys, _: ys.sum())
