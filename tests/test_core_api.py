"""The public module's API: step streaming, chunking, bf16, dropout/zoneout, input
validation and parameter initialisation.

Tolerances:
* step() looped over time vs the full unroll, and chunked vs whole: the same float32 ops
  on other shapes: 1e-6.
* Training-mode masks recovered against the float64 reference: 1e-5 (as in
  test_core_forward.py).
* bf16 matmuls vs float32: bf16 keeps 8 mantissa bits (relative error 4e-3 per input
  rounding); over 5 steps with O(1) activations outputs stay within atol 2e-2.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import test_core_common as common
from test_core_common import jax, jnp
import reference
from lstm_jax import GRU, LSTM, RNN, SimpleRNN

B, T, F, H = 3, 6, 3, 4


# ----------------------------------------------------------------------- step API

STEP_MODELS = {
    'lstm_plain_2layer': (LSTM, dict(hidden_size=H, num_layers=2)),
    'lstm_fgr_proj_peep': (LSTM, dict(hidden_size=H, full_gate_recurrence=True, proj_size=2,
                                      peepholes=True, zoneout_cell=0.2)),
    'gru_residual': (GRU, dict(hidden_size=F, num_layers=2, residual=True)),
    'rnn': (SimpleRNN, dict(hidden_size=H)),
}


@pytest.mark.parametrize('name', sorted(STEP_MODELS))
def test_step_loop_and_chunks_equal_full_unroll(name):
  cls, options = STEP_MODELS[name]
  model = cls(**options)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((B, T, F)), jnp.float32)
  variables = {'params': common.randomize(model.init(jax.random.key(0), x)['params'], 1)}
  state0 = common.random_state(model, B, 2)
  full = jax.jit(lambda x, s: model.apply(variables, x, initial_state=s))
  out, final = full(x, state0)

  step = jax.jit(lambda x_t, s: model.apply(variables, x_t, s, method=cls.step))
  state, ys = state0, []
  for t in range(T):
    y, state = step(x[:, t], state)
    ys.append(y)
  np.testing.assert_allclose(np.stack(ys, 1), out, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               state, final)

  # Chunks of 2 + 4 steps, the state carried with initial_state.
  out_a, fin_a = full(x[:, :2], state0)
  out_b, fin_b = full(x[:, 2:], fin_a)
  np.testing.assert_allclose(np.concatenate([out_a, out_b], 1), out, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               fin_b, final)
  # And step() from the zero state equals the unroll with initial_state=None.
  y0, _ = step(x[:, 0], model.initialize_state(B))
  np.testing.assert_allclose(y0, model.apply(variables, x[:, :1])[0][:, 0], rtol=1e-6,
                             atol=1e-6)


def test_bidirectional_step_raises():
  model = LSTM(hidden_size=H, bidirectional=True)
  x = jnp.zeros((B, T, F))
  variables = model.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='bidirectional'):
    model.apply(variables, x[:, 0], model.initialize_state(B), method=LSTM.step)


def test_initialize_state_shapes():
  model = LSTM(hidden_size=H, num_layers=2, bidirectional=True, proj_size=2,
               full_gate_recurrence=True)
  s = model.initialize_state(B)
  assert s.h.shape == (4, B, 2) and s.c.shape == (4, B, H) and s.gates.shape == (4, B, 3 * H)
  assert GRU(hidden_size=H, num_layers=3).initialize_state(B).h.shape == (3, B, H)


# ---------------------------------------------------------------------------- bf16

@pytest.mark.parametrize('options', [dict(hidden_size=H), dict(hidden_size=H, peepholes=True,
                                                               proj_size=3),
                                     dict(hidden_size=H, cell_type='gru')],
                         ids=['plain', 'peep_proj', 'gru'])
def test_bf16_close_to_float32(options):
  lengths = jnp.asarray([T, 2, 0])
  model32, variables, x = common.setup(options, B, T, F, 0)
  model16 = RNN(**options, dtype=jnp.bfloat16)
  v16 = model16.init(jax.random.key(0), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v16))
  out32, fin32 = model32.apply(variables, x, seq_lengths=lengths)
  out16, fin16 = model16.apply(variables, x, seq_lengths=lengths)
  assert out16.dtype == jnp.float32 and fin16.h.dtype == jnp.float32
  np.testing.assert_allclose(out16, out32, atol=2e-2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-2), fin16, fin32)
  assert np.abs(np.asarray(out16) - np.asarray(out32)).max() > 0  # bf16 really used
  g = jax.jit(jax.grad(
      lambda p: model16.apply({'params': p}, x, seq_lengths=lengths)[0].sum()))(
          variables['params'])
  assert all(leaf.dtype == jnp.float32 and np.all(np.isfinite(leaf))
             for leaf in jax.tree.leaves(g))


# ------------------------------------------------------------- dropout and zoneout

def test_deterministic_means_no_dropout_and_zoneout_expectation():
  options = dict(hidden_size=H, num_layers=2, dropout=0.5, recurrent_dropout=0.4,
                 zoneout_cell=0.3, zoneout_hidden=0.2, peepholes=True)
  lengths = np.array([T, 3, 0])
  model, variables, x = common.setup(options, B, T, F, 0)
  out, final = model.apply(variables, x, seq_lengths=lengths)  # deterministic by default
  ref_out, ref_final = reference.rnn_reference(variables['params'], np.asarray(x), lengths,
                                               **common.split_options(options))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  common.assert_state_close(final, ref_final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('options', [
    dict(hidden_size=H, num_layers=2, dropout=0.5),
    dict(hidden_size=H, recurrent_dropout=0.5),
    dict(hidden_size=H, zoneout_cell=0.5, zoneout_hidden=0.5),
    dict(hidden_size=H, cell_type='gru', recurrent_dropout=0.5, zoneout_hidden=0.3),
], ids=['layer_dropout', 'recurrent_dropout', 'zoneout', 'gru'])
def test_training_mode_is_reproducible_and_random(options):
  lengths = jnp.asarray([T, 3, 0])
  model, variables, x = common.setup(options, B, T, F, 0)

  def run(key):
    return model.apply(variables, x, seq_lengths=lengths, deterministic=False,
                       rngs={'dropout': jax.random.key(key)})
  out1, fin1 = run(1)
  out1b, fin1b = run(1)
  out2, _ = run(2)
  out_eval, _ = model.apply(variables, x, seq_lengths=lengths)
  np.testing.assert_array_equal(out1, out1b)
  jax.tree.map(np.testing.assert_array_equal, fin1, fin1b)
  assert not np.allclose(out1, out2)
  assert not np.allclose(out1, out_eval)
  pad = np.arange(T)[None, :] >= np.asarray(lengths)[:, None]
  np.testing.assert_array_equal(np.asarray(out1)[pad], 0.0)


@pytest.mark.parametrize('cell_type', ['lstm', 'gru', 'rnn'])
def test_recurrent_dropout_mask_is_one_per_sequence(cell_type):
  """In training, the outputs are exactly those of the reference with one fixed
  inverted-dropout mask m in {0, 1/(1-rate)}^P per sequence, the same at every step:
  we enumerate every candidate mask and require exactly one to match each sequence."""
  rate, batch, hidden = 0.5, 6, 3
  options = dict(hidden_size=hidden, cell_type=cell_type, recurrent_dropout=rate)
  model, variables, x = common.setup(options, batch, T, F, 0)
  lengths = np.array([T, T, 4, T, 2, T])
  state0 = common.random_state(model, batch, 1)
  out, final = model.apply(variables, x, seq_lengths=lengths, initial_state=state0,
                           deterministic=False, rngs={'dropout': jax.random.key(3)})
  matches = [[] for _ in range(batch)]
  for bits in itertools.product([0.0, 1.0 / (1.0 - rate)], repeat=hidden):
    mask = np.tile(np.array(bits), (batch, 1))
    ref_out, ref_final = reference.rnn_reference(
        variables['params'], np.asarray(x), lengths, initial_state=common.state_dict(state0),
        recurrent_masks={'layer_0': mask}, **common.split_options(options))
    for b in range(batch):
      ok = np.allclose(out[b], ref_out[b], rtol=1e-5, atol=1e-5) and all(
          np.allclose(v[:, b], ref_final[k][:, b], rtol=1e-5, atol=1e-5)
          for k, v in common.state_dict(final).items())
      if ok:
        matches[b].append(bits)
  assert all(len(m) == 1 for m in matches), matches
  masks = np.array([m[0] for m in matches])
  assert 0 < np.count_nonzero(masks) < masks.size  # some dropped, some kept


@pytest.mark.parametrize('cell_type', ['lstm', 'gru'])
def test_zoneout_hidden_training_masks(cell_type):
  """With zoneout on h only, every training-mode output unit is either its previous value
  or the reference update (from the same previous state), the kept fraction is near the
  rate, and the reference run with the recovered 0/1 masks reproduces everything."""
  rate, batch, hidden = 0.3, 4, 3
  options = dict(hidden_size=hidden, cell_type=cell_type, zoneout_hidden=rate)
  model, variables, x = common.setup(options, batch, T, F, 0)
  lengths = np.full(batch, T)
  state0 = common.random_state(model, batch, 1)
  out, final = model.apply(variables, x, initial_state=state0, deterministic=False,
                           rngs={'dropout': jax.random.key(5)})
  out = np.asarray(out, np.float64)
  p = reference.to_f64(variables['params'])['layer_0']
  xs = np.asarray(x, np.float64)
  init = common.state_dict(state0)
  masks = np.zeros((batch, T, hidden))
  opts = dict(hidden_size=hidden)
  for b in range(batch):
    h = init['h'][0, b]
    c = init['c'][0, b] if cell_type == 'lstm' else None
    for t in range(T):
      if cell_type == 'lstm':
        _, upd, c, _ = reference.lstm_sequence(p, xs[b, t:t + 1], h, c, None, opts)
      else:
        _, upd = reference.gru_sequence(p, xs[b, t:t + 1], h)
      y = out[b, t]
      kept = np.abs(y - h) < np.abs(y - upd)
      assert np.all(np.minimum(np.abs(y - h), np.abs(y - upd)) < 1e-5), (b, t)
      masks[b, t] = kept
      h = y
  frac = masks.mean()
  assert 0.1 < frac < 0.55, frac
  ref_out, ref_final = reference.rnn_reference(
      variables['params'], xs, lengths, initial_state=init,
      zoneout_masks={'layer_0': (0.0, masks)}, **common.split_options(options))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  common.assert_state_close(final, ref_final, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- bad input

@pytest.mark.parametrize('options, x_shape, lengths, match', [
    (dict(), (B, T), None, 'x must be'),
    (dict(), (B, T, F, 1), None, 'x must be'),
    (dict(), (B, T, F), np.array([1, 2]), 'seq_lengths'),
    (dict(), (B, T, F), np.array([[1, 2, 3]]), 'seq_lengths'),
    (dict(cell_type='gru', peepholes=True), (B, T, F), None, 'peepholes'),
    (dict(cell_type='gru', proj_size=2), (B, T, F), None, 'proj_size'),
    (dict(cell_type='rnn', zoneout_cell=0.1), (B, T, F), None, 'zoneout_cell'),
    (dict(cell_type='gru', coupled=True), (B, T, F), None, 'coupled'),
    (dict(coupled=True, input_gate=False), (B, T, F), None, 'input_gate'),
    (dict(coupled=True, forget_gate=False), (B, T, F), None, 'forget_gate'),
    (dict(cell_type='transformer'), (B, T, F), None, 'cell_type'),
    (dict(merge='mean', bidirectional=True), (B, T, F), None, 'merge'),
    (dict(dropout=1.0), (B, T, F), None, 'dropout'),
    (dict(recurrent_dropout=-0.1), (B, T, F), None, 'recurrent_dropout'),
    (dict(zoneout_hidden=1.0), (B, T, F), None, 'zoneout_hidden'),
    (dict(proj_size=0), (B, T, F), None, 'proj_size'),
    (dict(cell_clip=0.0), (B, T, F), None, 'cell_clip'),
    (dict(forget_bias_init='chrono'), (B, T, F), None, 'chrono_max_length'),
    (dict(forget_bias_init='chrono', chrono_max_length=2), (B, T, F), None, 'max_length'),
    (dict(forget_bias_init='zeros'), (B, T, F), None, 'forget_bias_init'),
    (dict(bidirectional=True), (B, T, F), np.array([3.0, 2.0, 1.0]), 'seq_lengths must be integers'),
], ids=lambda v: None)
def test_bad_input_raises_value_error_naming_the_field(options, x_shape, lengths, match):
  model = RNN(hidden_size=H, **options)
  x = jnp.zeros(x_shape)
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), x, seq_lengths=lengths)


# ------------------------------------------------------------------ initialisation

def test_forget_bias_default_and_custom():
  x = jnp.zeros((B, T, F))
  for forget_bias, expected in ((None, 1.0), (2.5, 2.5)):
    kw = {} if forget_bias is None else dict(forget_bias=forget_bias)
    params = LSTM(hidden_size=H, num_layers=2, bidirectional=True, **kw).init(
        jax.random.key(0), x)['params']
    assert sorted(params) == ['layer_0', 'layer_0_reverse', 'layer_1', 'layer_1_reverse']
    for layer in params.values():
      bias = np.asarray(layer['bias'])
      assert bias.shape == (4 * H,)
      np.testing.assert_array_equal(bias[H:2 * H], expected)  # (i, f, g, o) order
      np.testing.assert_array_equal(np.delete(bias, np.s_[H:2 * H]), 0.0)
  gru = GRU(hidden_size=H).init(jax.random.key(0), x)['params']['layer_0']
  np.testing.assert_array_equal(gru['input_bias'], 0.0)
  np.testing.assert_array_equal(gru['recurrent_bias'], 0.0)


def test_forget_bias_one_makes_forget_gate_sigmoid_one():
  """Behavioural check of the layout: with zero kernels, the first step gives
  c = sigmoid(0) * tanh(0) + sigmoid(1) * c0 = sigmoid(1) * c0 (f block is the 2nd)."""
  model = LSTM(hidden_size=H)
  x = jnp.zeros((B, 1, F))
  params = model.init(jax.random.key(0), x)['params']
  params = jax.tree.map(lambda a: a, params)
  params['layer_0']['input_kernel'] = jnp.zeros_like(params['layer_0']['input_kernel'])
  params['layer_0']['recurrent_kernel'] = jnp.zeros_like(params['layer_0']['recurrent_kernel'])
  c0 = jnp.ones((1, B, H))
  _, final = model.apply({'params': params}, x, initial_state=model.initialize_state(B)
                         ._replace(c=c0))
  np.testing.assert_allclose(final.c, 1.0 / (1.0 + np.exp(-1.0)), rtol=1e-6)


def test_cifg_forget_bias_is_carried_by_the_input_gate():
  """With coupled=True there is no forget block: f = 1 - sigmoid(b_i), so the input bias
  is -forget_bias and the first-step forget gate is sigmoid(forget_bias), as without CIFG."""
  model = LSTM(hidden_size=H, coupled=True, forget_bias=1.5)
  x = jnp.zeros((B, 1, F))
  params = model.init(jax.random.key(0), x)['params']
  bias = np.asarray(params['layer_0']['bias'])
  assert bias.shape == (3 * H,)  # blocks (i, g, o)
  np.testing.assert_array_equal(bias[:H], -1.5)
  np.testing.assert_array_equal(bias[H:], 0.0)
  zeroed = dict(params['layer_0'], input_kernel=jnp.zeros_like(params['layer_0']['input_kernel']),
                recurrent_kernel=jnp.zeros_like(params['layer_0']['recurrent_kernel']))
  c0 = jnp.ones((1, B, H))
  _, final = model.apply({'params': {'layer_0': zeroed}}, x,
                         initial_state=model.initialize_state(B)._replace(c=c0))
  # c = f * c0 + i * tanh(0) = sigmoid(1.5)
  np.testing.assert_allclose(final.c, 1.0 / (1.0 + np.exp(-1.5)), rtol=1e-6)


@pytest.mark.parametrize('options', [dict(), dict(peepholes=True, coupled=True)],
                         ids=['plain', 'cifg'])
def test_chrono_init(options):
  max_length = 20
  model = LSTM(hidden_size=64, forget_bias_init='chrono', chrono_max_length=max_length,
               **options)
  bias = np.asarray(model.init(jax.random.key(0), jnp.zeros((B, T, F)))['params']
                    ['layer_0']['bias'])
  hid = 64
  if options.get('coupled'):  # blocks (i, g, o): f = 1 - i, so b_i = -b_f
    b_i, rest = bias[:hid], bias[hid:]
    b_f = -b_i
  else:
    b_i, b_f, rest = bias[:hid], bias[hid:2 * hid], bias[2 * hid:]
    np.testing.assert_array_equal(b_i, -b_f)
  assert np.all(b_f >= 0.0) and np.all(b_f <= np.log(max_length - 1) + 1e-6)
  assert np.std(b_f) > 0.3  # random, spread over [0, log 19 = 2.94]
  np.testing.assert_array_equal(rest, 0.0)


# ------------------------------------------------------------------ default unroll

def _scan_unrolls(jaxpr) -> list[int]:
  """The `unroll` of every scan in a jaxpr, nested ones (custom VJPs, pjit) included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'scan':
      found.append(eqn.params['unroll'])
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else [param]):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          found += _scan_unrolls(inner)
  return found


@pytest.mark.parametrize('cls, options', [
    (LSTM, dict(hidden_size=H)),  # the fused path
    (LSTM, dict(hidden_size=H, peepholes=True)),  # the generic path
    (GRU, dict(hidden_size=H, bidirectional=True)),
], ids=['fused', 'generic', 'gru_bidir'])
def test_unroll_defaults_to_8_on_gpu_and_1_elsewhere(cls, options, monkeypatch):
  x = jnp.ones((B, T, F))
  model = cls(**options)
  variables = model.init(jax.random.key(0), x)

  def unrolls(**kw):
    def loss(v):
      return jnp.sum(cls(**options, **kw).apply(v, x, seq_lengths=jnp.asarray([6, 2, 0]))[0])
    return set(_scan_unrolls(jax.make_jaxpr(jax.grad(loss))(variables).jaxpr))

  assert unrolls() == {1}
  assert unrolls(unroll=3) == {3}
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')  # Only traced, never run.
  assert unrolls() == {8}
  assert unrolls(unroll=2) == {2}


def test_initial_state_of_the_wrong_shape_is_a_clear_error_and_dtype_is_adopted():
  model = LSTM(hidden_size=H, num_layers=2)
  x = jax.random.normal(jax.random.key(1), (B, T, F))
  variables = model.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r'initial_state must look like initialize_state\(3\)'):
    model.apply(variables, x, initial_state=(jnp.zeros((B, H)), jnp.zeros((B, H))))
  state = jax.tree.map(lambda a: a + 0.5, model.initialize_state(B))
  want = model.apply(variables, x, initial_state=state)[0]
  as_bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state)  # 0.5 is exact in bf16.
  np.testing.assert_array_equal(model.apply(variables, x, initial_state=as_bf16)[0], want)


@pytest.mark.parametrize('cls', [LSTM, GRU, SimpleRNN])
def test_bfloat16_parameters_initialise(cls):
  x = jnp.zeros((B, T, F))
  bf16 = cls(hidden_size=H, param_dtype=jnp.bfloat16).init(jax.random.key(0), x)
  f32 = cls(hidden_size=H).init(jax.random.key(0), x)
  leaves = jax.tree.leaves(bf16)
  assert leaves and all(a.dtype == jnp.bfloat16 for a in leaves)
  recurrent = lambda v: v['params']['layer_0']['recurrent_kernel']  # noqa: E731
  # The same orthogonal draw as in float32, rounded to bf16.
  np.testing.assert_array_equal(recurrent(bf16), recurrent(f32).astype(jnp.bfloat16))


@pytest.mark.parametrize('bidirectional', [False, True])
def test_empty_time_axis(bidirectional):
  model = LSTM(hidden_size=H, bidirectional=bidirectional)
  variables = model.init(jax.random.key(0), jnp.zeros((B, T, F)))
  state = jax.tree.map(lambda a: a + 0.25, model.initialize_state(B))
  for lengths in (None, jnp.zeros(B, jnp.int32)):
    outputs, final = model.apply(variables, jnp.zeros((B, 0, F)), seq_lengths=lengths,
                                 initial_state=state)
    assert outputs.shape == (B, 0, model.output_size)
    jax.tree.map(np.testing.assert_array_equal, final, state)


def test_bfloat16_inputs_get_bfloat16_gradients_on_the_fused_path():
  # bf16 x with float32 weights promotes to float32, which takes the fused path; its
  # hand-written backward must still return x's cotangent as bf16 (the generic path does).
  table = jax.random.normal(jax.random.key(0), (10, F), jnp.bfloat16)
  ids = jnp.array([[1, 2, 3], [4, 5, 6]])
  grads = {}
  for name, options in (('fused', {}), ('generic', dict(cell_clip=1e9))):
    model = LSTM(hidden_size=H, **options)
    variables = model.init(jax.random.key(0), table[ids])
    loss = lambda t, v: model.apply(v, t[ids] * 2)[0].sum()  # noqa: E731
    grads[name] = jax.grad(loss, argnums=(0, 1))(table, variables)
  for name, (g_table, g_vars) in grads.items():
    assert g_table.dtype == jnp.bfloat16, name
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g_vars)), name
  np.testing.assert_allclose(np.asarray(grads['fused'][0], np.float32),
                             np.asarray(grads['generic'][0], np.float32), rtol=2e-2, atol=2e-2)


def test_dtype_given_as_a_string_takes_the_same_path():
  x = jnp.ones((B, T, F))
  jaxprs = []
  for dtype in (jnp.float32, 'float32', np.float32):
    model = LSTM(hidden_size=H, dtype=dtype)
    variables = model.init(jax.random.key(0), x)
    jaxprs.append(str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables)))
  assert 'custom_vjp' in jaxprs[0]  # The fused path.
  assert jaxprs[1] == jaxprs[0] and jaxprs[2] == jaxprs[0]
