"""lstm_jax.interop: PyTorch weights in and out.

(a) the committed fixture (a real torch run, tests/fixtures/torch_lstm.npz, made by
    scripts/make_torch_fixture.py) is reproduced without torch installed;
(b) round trips through to_torch / from_torch;
(c) live comparisons against torch (skipped without it): outputs, final states and
    gradients w.r.t. inputs and weights;
(d) bad inputs give ValueErrors that name the problem.
"""

from __future__ import annotations

import json
import pathlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax
from lstm_jax import interop

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'torch_lstm.npz'


def _model(cell: str, hidden: int, num_layers: int, bidirectional: bool,
           proj: int = 0) -> lstm_jax.RNN:
  return lstm_jax.RNN(hidden_size=hidden, num_layers=num_layers, bidirectional=bidirectional,
                      cell_type=cell, proj_size=proj or None)


def _final_h_c(cell: str, final_state):
  return final_state.h, (final_state.c if cell == 'lstm' else None)


# ----------------------------------------------------------------------------- (a) fixture


def _load_fixture() -> tuple[dict, dict]:
  data = np.load(FIXTURE, allow_pickle=False)
  metadata = json.loads(str(data['metadata']))
  return {k: data[k] for k in data.files}, metadata


_FIXTURE_CONFIGS = sorted(_load_fixture()[1]['configs'])


def test_fixture_metadata_and_size():
  data, metadata = _load_fixture()
  assert FIXTURE.stat().st_size < 200_000
  assert metadata['torch_version'].startswith('2.')
  assert {'lstm_1layer', 'lstm_2layer_bidirectional', 'lstm_proj', 'gru_bidirectional',
          'rnn_tanh'} <= set(metadata['configs'])
  for name in metadata['configs']:  # Mixed lengths, the longest not first.
    lengths = data[f'{name}/lengths']
    assert len(set(lengths.tolist())) > 1 and lengths[0] < lengths.max()


@pytest.mark.parametrize('name', _FIXTURE_CONFIGS)
def test_fixture_matches_recorded_torch_run(name):
  data, metadata = _load_fixture()
  config = metadata['configs'][name]
  prefix = f'{name}/state_dict/'
  state_dict = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
  variables = interop.from_torch(state_dict, cell_type=config['cell'])
  model = _model(config['cell'], config['hidden_size'], config['num_layers'],
                 config['bidirectional'], config['proj_size'])
  x, lengths = data[f'{name}/x'], data[f'{name}/lengths']
  outputs, final_state = model.apply(variables, jnp.asarray(x), seq_lengths=lengths)
  h_n, c_n = _final_h_c(config['cell'], final_state)

  expected = data[f'{name}/output']
  assert outputs.shape == expected.shape
  np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)
  padding = np.arange(x.shape[1])[None, :] >= lengths[:, None]
  assert np.all(np.asarray(outputs)[padding] == 0.0)  # Exactly zero past each length.
  np.testing.assert_allclose(h_n, data[f'{name}/h_n'], atol=1e-5, rtol=0)
  if config['cell'] == 'lstm':
    np.testing.assert_allclose(c_n, data[f'{name}/c_n'], atol=1e-5, rtol=0)
  if config['bidirectional']:  # The reverse direction's h_n is its output at t = 0.
    out = config['proj_size'] or config['hidden_size']
    np.testing.assert_allclose(h_n[-1], np.asarray(outputs)[:, 0, out:], atol=1e-6)
  # The forward direction's h_n is its output at the last valid step.
  last = np.asarray(outputs)[np.arange(len(lengths)), lengths - 1]
  out = config['proj_size'] or config['hidden_size']
  forward_top = h_n[-2] if config['bidirectional'] else h_n[-1]
  np.testing.assert_allclose(forward_top, last[:, :out], atol=1e-6)


def test_fixture_to_torch_restores_state_dict_up_to_bias_split():
  data, metadata = _load_fixture()
  for name, config in metadata['configs'].items():
    prefix = f'{name}/state_dict/'
    state_dict = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    back = interop.to_torch(interop.from_torch(state_dict, cell_type=config['cell']),
                            cell_type=config['cell'])
    assert list(back) == list(state_dict), name  # torch's key order too.
    for key, value in state_dict.items():
      assert back[key].dtype == np.float32 and back[key].shape == value.shape, key
      if key.startswith('bias') and config['cell'] != 'gru':
        continue
      np.testing.assert_array_equal(back[key], value, err_msg=key)
    if config['cell'] != 'gru':  # One bias: the sum is kept, bias_hh is zero.
      for key in state_dict:
        if key.startswith('bias_ih'):
          hh = key.replace('bias_ih', 'bias_hh')
          np.testing.assert_allclose(back[key], state_dict[key] + state_dict[hh], atol=1e-7)
          assert np.all(back[hh] == 0.0)


# --------------------------------------------------------------------------- (b) round trip


@pytest.mark.parametrize('cell,num_layers,bidirectional,proj', [
    ('lstm', 2, True, 0), ('lstm', 2, False, 2), ('gru', 1, True, 0), ('rnn', 2, False, 0)])
def test_round_trip_from_lstm_jax(cell, num_layers, bidirectional, proj):
  model = _model(cell, 5, num_layers, bidirectional, proj)
  x = jax.random.normal(jax.random.key(1), (3, 6, 4))
  lengths = jnp.array([6, 2, 4])
  variables = model.init(jax.random.key(0), x, seq_lengths=lengths)
  # Make the bias non-trivial so that moving it around would show.
  variables = jax.tree.map(lambda a: a + 0.1 * jnp.sin(jnp.arange(a.size).reshape(a.shape)),
                           variables)
  state_dict = interop.to_torch(variables, cell_type=cell)
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state_dict.values())
  back = interop.from_torch(state_dict, cell_type=cell)
  # Same tree, same values (the single bias goes to bias_ih and comes back exactly).
  assert jax.tree.structure(back) == jax.tree.structure(jax.tree.map(np.asarray, variables))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), back, variables)
  out_a, state_a = model.apply(variables, x, seq_lengths=lengths)
  out_b, state_b = model.apply(back, x, seq_lengths=lengths)
  np.testing.assert_array_equal(out_a, out_b)
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


def test_from_torch_bias_split_is_functionally_irrelevant_and_bias_false():
  data, _ = _load_fixture()
  prefix = 'lstm_1layer/state_dict/'
  state_dict = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
  moved = dict(state_dict, bias_ih_l0=state_dict['bias_ih_l0'] + 0.5,
               bias_hh_l0=state_dict['bias_hh_l0'] - 0.5)
  a = interop.from_torch(state_dict)['params']['layer_0']['bias']
  b = interop.from_torch(moved)['params']['layer_0']['bias']
  np.testing.assert_allclose(a, b, atol=1e-6)
  # bias=False in torch: no bias keys, zeros in lstm_jax.
  no_bias = {k: v for k, v in state_dict.items() if not k.startswith('bias')}
  params = interop.from_torch(no_bias)['params']['layer_0']
  assert params['bias'].shape == (16,) and not np.any(params['bias'])


def test_from_torch_accepts_bfloat16_tensors():
  torch = pytest.importorskip('torch')
  lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
  state_dict = lstm.state_dict()
  got = interop.from_torch({k: v.bfloat16() for k, v in state_dict.items()}, num_layers=2,
                           bidirectional=True)
  want = interop.from_torch({k: v.bfloat16().float().numpy() for k, v in state_dict.items()},
                            num_layers=2, bidirectional=True)
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_from_torch_accepts_prefixed_keys_and_array_likes():
  data, _ = _load_fixture()
  prefix = 'lstm_1layer/state_dict/'
  state_dict = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}

  class Tensorish:  # Has detach().cpu() like a torch tensor, and __array__.
    def __init__(self, a):
      self.a = a

    def detach(self):
      return self

    def cpu(self):
      return self

    def __array__(self, dtype=None, copy=None):
      return self.a.astype(np.float64)

  wrapped = {f'encoder.lstm.{k}': Tensorish(v) for k, v in state_dict.items()}
  got = interop.from_torch(wrapped, num_layers=1, bidirectional=False)
  want = interop.from_torch(state_dict)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), got, want)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(got))


# ------------------------------------------------------------------------------ (c) live

LIVE_CONFIGS = [
    # cell, features, hidden, layers, bidirectional, proj, batch_first
    ('lstm', 3, 4, 1, False, 0, True),
    ('lstm', 3, 5, 2, True, 0, False),
    ('lstm', 4, 5, 2, True, 3, True),
    ('gru', 3, 4, 2, True, 0, False),
    ('rnn', 3, 4, 2, False, 0, True),
    ('rnn', 2, 3, 1, True, 0, False),
]


@pytest.mark.parametrize('config', LIVE_CONFIGS, ids=lambda c: '-'.join(map(str, c)))
def test_live_against_torch(config):
  torch = pytest.importorskip('torch')
  cell, features, hidden, num_layers, bidirectional, proj, batch_first = config
  seed = zlib.crc32(repr(config).encode())
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  common = dict(input_size=features, hidden_size=hidden, num_layers=num_layers,
                bidirectional=bidirectional, batch_first=batch_first)
  if cell == 'lstm':
    module = torch.nn.LSTM(**common, proj_size=proj)
  elif cell == 'gru':
    module = torch.nn.GRU(**common)
  else:
    module = torch.nn.RNN(**common, nonlinearity='tanh')
  batch, time = 4, 6
  lengths = np.array([3, time, 1, 5])
  x = rng.standard_normal((batch, time, features)).astype(np.float32)
  directions = 2 if bidirectional else 1
  out_size = (proj or hidden) * directions
  w_out = rng.standard_normal((batch, time, out_size)).astype(np.float32)
  w_h = rng.standard_normal((num_layers * directions, batch, proj or hidden)).astype(np.float32)
  w_c = rng.standard_normal((num_layers * directions, batch, hidden)).astype(np.float32)
  # A non-zero initial state, whose gradient is compared too.
  h0 = 0.5 * rng.standard_normal(w_h.shape).astype(np.float32)
  c0 = 0.5 * rng.standard_normal(w_c.shape).astype(np.float32)

  # torch: packed run, loss on padded outputs and final states, backward.
  xt = torch.tensor(x, requires_grad=True)
  x_in = xt if batch_first else xt.transpose(0, 1)
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      x_in, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
  h0t = torch.tensor(h0, requires_grad=True)
  c0t = torch.tensor(c0, requires_grad=True)
  out_p, state = module(packed, (h0t, c0t) if cell == 'lstm' else h0t)
  out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=batch_first,
                                                    total_length=time)
  if not batch_first:
    out_t = out_t.transpose(0, 1)
  h_t, c_t = state if cell == 'lstm' else (state, None)
  loss_t = (out_t * torch.tensor(w_out)).sum() + (h_t * torch.tensor(w_h)).sum()
  if c_t is not None:
    loss_t = loss_t + (c_t * torch.tensor(w_c)).sum()
  loss_t.backward()
  torch_grads = {k: p.grad.numpy() for k, p in module.named_parameters()}

  # lstm_jax with the converted weights.
  variables = interop.from_torch(module.state_dict(), cell_type=cell)
  model = _model(cell, hidden, num_layers, bidirectional, proj)

  def loss(variables, x, init):
    out, final = model.apply(variables, x, seq_lengths=jnp.asarray(lengths),
                             initial_state=init)
    h, c = _final_h_c(cell, final)
    total = jnp.sum(out * w_out) + jnp.sum(h * w_h)
    if c is not None:
      total = total + jnp.sum(c * w_c)
    return total, (out, h, c)

  init = (lstm_jax.LSTMState(h=jnp.asarray(h0), c=jnp.asarray(c0)) if cell == 'lstm'
          else lstm_jax.RNNState(h=jnp.asarray(h0)))
  (loss_j, (out_j, h_j, c_j)), (g_vars, g_x, g_init) = jax.value_and_grad(
      loss, argnums=(0, 1, 2), has_aux=True)(variables, jnp.asarray(x), init)

  np.testing.assert_allclose(out_j, out_t.detach().numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(h_j, h_t.detach().numpy(), atol=1e-5, rtol=0)
  if cell == 'lstm':
    np.testing.assert_allclose(c_j, c_t.detach().numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(loss_j, loss_t.item(), atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(g_x, xt.grad.numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(g_init.h, h0t.grad.numpy(), atol=1e-4, rtol=1e-4)
  if cell == 'lstm':
    np.testing.assert_allclose(g_init.c, c0t.grad.numpy(), atol=1e-4, rtol=1e-4)
  # Weight gradients, mapped to torch's layout. A single bias b = b_ih + b_hh gets the
  # gradient that torch gives each of b_ih and b_hh.
  jax_grads = interop.to_torch(g_vars, cell_type=cell)
  assert set(jax_grads) == set(torch_grads)
  for key, grad in torch_grads.items():
    if key.startswith('bias_hh') and cell != 'gru':
      mapped = jax_grads[key.replace('bias_hh', 'bias_ih')]
    else:
      mapped = jax_grads[key]
    np.testing.assert_allclose(mapped, grad, atol=1e-4, rtol=1e-4, err_msg=key)

  # And back: to_torch weights loaded into torch give the same outputs.
  fresh = type(module)(**common, **({'proj_size': proj} if cell == 'lstm' else {}))
  if cell == 'rnn':
    assert fresh.nonlinearity == 'tanh'
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in
                         interop.to_torch(variables, cell_type=cell).items()})
  with torch.no_grad():
    out_f, _ = torch.nn.utils.rnn.pad_packed_sequence(
        fresh(torch.nn.utils.rnn.pack_padded_sequence(
            x_in.detach(), torch.tensor(lengths), batch_first=batch_first,
            enforce_sorted=False), (h0t, c0t) if cell == 'lstm' else h0t)[0],
        batch_first=batch_first, total_length=time)
  if not batch_first:
    out_f = out_f.transpose(0, 1)
  np.testing.assert_allclose(out_f.numpy(), out_t.detach().numpy(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- (d) errors


def _fixture_state_dict(name: str) -> dict[str, np.ndarray]:
  data, _ = _load_fixture()
  prefix = f'{name}/state_dict/'
  return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def test_from_torch_missing_key():
  state_dict = _fixture_state_dict('lstm_2layer_bidirectional')
  del state_dict['weight_hh_l1_reverse']
  with pytest.raises(ValueError, match=r"Missing key 'weight_hh_l1_reverse'.*complete"):
    interop.from_torch(state_dict)
  state_dict = _fixture_state_dict('lstm_1layer')
  del state_dict['bias_hh_l0']
  with pytest.raises(ValueError, match="Missing key 'bias_hh_l0'"):
    interop.from_torch(state_dict)


def test_from_torch_extra_key():
  state_dict = dict(_fixture_state_dict('lstm_1layer'), running_mean=np.zeros(3))
  with pytest.raises(ValueError, match=r"Unexpected key 'running_mean'.*own state_dict"):
    interop.from_torch(state_dict)


def test_from_torch_wrong_shape():
  state_dict = _fixture_state_dict('lstm_2layer_bidirectional')
  state_dict['weight_ih_l1'] = state_dict['weight_ih_l1'][:, :4]
  with pytest.raises(ValueError, match=r'weight_ih_l1 has shape \(16, 4\), expected \(16, 8\)'):
    interop.from_torch(state_dict)
  state_dict = _fixture_state_dict('lstm_1layer')
  state_dict['bias_ih_l0'] = state_dict['bias_ih_l0'][:15]
  with pytest.raises(ValueError, match=r'bias_ih_l0 has shape \(15,\), expected \(16,\)'):
    interop.from_torch(state_dict)


def test_from_torch_wrong_settings():
  state_dict = _fixture_state_dict('lstm_2layer_bidirectional')
  with pytest.raises(ValueError, match='num_layers=3.*pass num_layers=2'):
    interop.from_torch(state_dict, num_layers=3)
  with pytest.raises(ValueError, match='bidirectional=False.*pass bidirectional=True'):
    interop.from_torch(state_dict, bidirectional=False)
  with pytest.raises(ValueError, match="cell_type must be one of"):
    interop.from_torch(state_dict, cell_type='lstmp')
  # A GRU state_dict read as an LSTM (and vice versa) says which cell_type it looks like.
  with pytest.raises(ValueError, match="pass cell_type='gru'"):
    interop.from_torch(_fixture_state_dict('gru_bidirectional'), cell_type='lstm')
  with pytest.raises(ValueError, match="pass cell_type='lstm'"):
    interop.from_torch(_fixture_state_dict('lstm_1layer'), cell_type='rnn')
  with pytest.raises(ValueError, match='weight_hr.*only for nn.LSTM'):
    interop.from_torch(_fixture_state_dict('lstm_proj'), cell_type='gru')


def _init(**kwargs):
  model = lstm_jax.LSTM(hidden_size=4, **kwargs)
  return model.init(jax.random.key(0), jnp.zeros((2, 3, 3)))


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(peepholes=True), r'params/layer_0/peephole_i .*peephole connections'),
    (lstm_jax.greff_variant('CIFG'), r'peephole'),
    (dict(layer_norm=True), r'params/layer_0/ln_.*layer normalisation'),
    (dict(coupled=True), r'3 gate blocks.*CIFG'),
    (dict(output_gate=False), r'3 gate blocks.*exactly 4'),
])
def test_to_torch_rejects_variants(kwargs, pattern):
  variables = _init(**kwargs)
  with pytest.raises(ValueError, match=pattern) as info:
    interop.to_torch(variables)
  assert 'cannot' in str(info.value)


def test_to_torch_rejects_full_gate_recurrence():
  variables = _init(full_gate_recurrence=True)
  with pytest.raises(ValueError, match='gate_recurrent_kernel.*full gate recurrence'):
    interop.to_torch(variables)


def test_to_torch_bad_trees():
  variables = _init(num_layers=2, bidirectional=True)
  params = dict(variables['params'])
  del params['layer_1_reverse']
  with pytest.raises(ValueError, match=r'Missing params/layer_1_reverse'):
    interop.to_torch({'params': params})
  with pytest.raises(ValueError, match=r'Unexpected entry params/encoder'):
    interop.to_torch({'params': {'encoder': variables['params']}})
  with pytest.raises(ValueError, match=r"looks like cell_type='gru'"):
    interop.to_torch(lstm_jax.GRU(hidden_size=4).init(jax.random.key(0),
                                                       jnp.zeros((2, 3, 3))))
  with pytest.raises(ValueError, match=r"is cell_type='rnn' right"):
    interop.to_torch(variables, cell_type='rnn')
  # merge='sum' feeds layer 1 with H, not 2H, inputs: torch cannot express it.
  summed = lstm_jax.LSTM(hidden_size=4, num_layers=2, bidirectional=True, merge='sum').init(
      jax.random.key(0), jnp.zeros((2, 3, 3)))
  with pytest.raises(ValueError, match=r"layer_1/input_kernel.*merge='concat'"):
    interop.to_torch(summed)
  bad = jax.tree.map(np.asarray, variables)
  bad['params']['layer_0']['bias'] = bad['params']['layer_0']['bias'][:-1]
  with pytest.raises(ValueError, match=r'params/layer_0/bias has shape \(15,\), expected \(16,\)'):
    interop.to_torch(bad)
