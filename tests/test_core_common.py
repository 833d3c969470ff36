"""Shared JAX-side helpers of the test_core_* modules (this module holds no tests).

The NumPy reference lives in reference.py and imports nothing from JAX or lstm_jax.
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lstm_jax import RNN, LSTMState, RNNState, GREFF_VARIANTS  # noqa: E402,F401

# Options of `RNN` that are not LSTM structure options, split off before calling reference.
LAYER_KEYS = ('hidden_size', 'cell_type', 'num_layers', 'bidirectional', 'merge',
              'residual', 'zoneout_cell', 'zoneout_hidden')
NOT_STRUCTURE = ('forget_bias', 'forget_bias_init', 'chrono_max_length', 'dropout',
                 'recurrent_dropout', 'unroll', 'remat', 'backend', 'dtype', 'param_dtype')

# Every LSTMCell option alone, each of Greff et al.'s variants, and a few combinations.
LSTM_CASES: dict[str, dict[str, Any]] = {
    'plain': {},
    'proj': dict(proj_size=2),
    'peepholes': dict(peepholes=True),
    'layer_norm': dict(layer_norm=True),
    'coupled': dict(coupled=True),
    'no_input_gate': dict(input_gate=False),
    'no_forget_gate': dict(forget_gate=False),
    'no_output_gate': dict(output_gate=False),
    'no_input_activation': dict(input_activation=False),
    'no_output_activation': dict(output_activation=False),
    'full_gate_recurrence': dict(full_gate_recurrence=True),
    'cell_clip': dict(cell_clip=0.25),
    'zoneout_eval': dict(zoneout_cell=0.3, zoneout_hidden=0.6),
    **{f'greff_{k}': dict(v) for k, v in GREFF_VARIANTS.items()},
    'combo_proj_ln_peep_clip': dict(proj_size=3, layer_norm=True, peepholes=True,
                                    cell_clip=0.4),
    'combo_cifg_fgr_proj': dict(coupled=True, full_gate_recurrence=True, proj_size=2,
                                peepholes=True),
    'combo_nig_nog_fgr': dict(input_gate=False, output_gate=False, full_gate_recurrence=True,
                              peepholes=True, layer_norm=True),
}


def randomize(params: Any, seed: int, scale: float = 0.5) -> Any:
  """Replaces every parameter by a random one (so zero-initialised peepholes, unit LN
  scales etc. are exercised): LN scales 1 + 0.3 N(0, 1), everything else scale N(0, 1)."""
  rng = np.random.default_rng(seed)

  def new(path, leaf):
    name = jax.tree_util.keystr(path)
    noise = rng.standard_normal(leaf.shape)
    value = 1.0 + 0.3 * noise if 'scale' in name else scale * noise
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(new, params)


def split_options(options: dict[str, Any]) -> dict[str, Any]:
  """The keyword arguments of `reference.rnn_reference` for `RNN(**options)`."""
  return {k: v for k, v in options.items() if k not in NOT_STRUCTURE}


def state_dict(state: Any) -> dict[str, np.ndarray]:
  """An LSTMState / RNNState as {'h': ..., 'c': ..., 'gates': ...} NumPy (None dropped)."""
  return {k: np.asarray(v) for k, v in state._asdict().items() if v is not None}


def random_state(model: RNN, batch: int, seed: int) -> Any:
  """A random initial state with the structure of `model.initialize_state(batch)`;
  FGR gate activations are drawn in (0, 1) like sigmoid outputs."""
  zero = model.initialize_state(batch)
  rng = np.random.default_rng(seed)
  fields = {}
  for k, v in zero._asdict().items():
    if v is None:
      fields[k] = None
    elif k == 'gates':
      fields[k] = jnp.asarray(rng.uniform(0.05, 0.95, v.shape), jnp.float32)
    else:
      fields[k] = jnp.asarray(0.8 * rng.standard_normal(v.shape), jnp.float32)
  return type(zero)(**fields)


def setup(options: dict[str, Any], batch: int, time: int, features: int, seed: int = 0):
  """(model, variables with random params, x <float32>[batch, time, features])."""
  model = RNN(**options)
  x = jnp.asarray(np.random.default_rng(seed + 100).standard_normal((batch, time, features)),
                  jnp.float32)
  variables = model.init(jax.random.key(seed), x)
  variables = {'params': randomize(variables['params'], seed + 200)}
  return model, variables, x


def assert_state_close(actual: Any, expected: dict[str, np.ndarray], **tol):
  got = state_dict(actual)
  assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))
  for k in expected:
    np.testing.assert_allclose(got[k], expected[k], err_msg=f'final state {k}', **tol)


def plain_lstm_inputs(seed=0, batch=3, time=5, features=3, hidden=4) -> dict[str, Any]:
  """Random float32 arguments of `fused.lstm`: ik, rk, b, xs (time-major), h0, c0."""
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.asarray(0.6 * rng.standard_normal(s), jnp.float32)  # noqa: E731
  return dict(ik=f32(features, 4 * hidden), rk=f32(hidden, 4 * hidden), b=f32(4 * hidden),
              xs=f32(time, batch, features), h0=f32(batch, hidden), c0=f32(batch, hidden))


def skip_unless_available(backend: str) -> None:
  """Skips the calling test where `backend` is a custom call that does not load here."""
  import pytest
  from lstm_jax import fused
  module = fused._CUSTOM_CALLS.get(backend)
  if module is not None and not module.available():
    pytest.skip(f'{backend}: {module.unavailable_reason()}')
