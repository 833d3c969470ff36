"""Weights to and from PyTorch's `nn.LSTM`, `nn.GRU` and `nn.RNN` (tanh).

    import lstm_jax
    from lstm_jax import interop

    variables = interop.from_torch(torch_lstm.state_dict())          # torch -> lstm_jax
    model = lstm_jax.LSTM(hidden_size=H, num_layers=L, bidirectional=True)
    outputs, final_state = model.apply(variables, x, seq_lengths=lengths)

    state_dict = interop.to_torch(variables)                         # lstm_jax -> torch
    torch_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})

Layouts. torch stores `weight_ih_l{k}` as <[G*H, in]>, `weight_hh_l{k}` as <[G*H, P]>
(P = proj_size or H), `weight_hr_l{k}` as <[P, H]> and two biases <[G*H]>; lstm_jax
stores the transposes, `input_kernel` <[in, G*H]>, `recurrent_kernel` <[P, G*H]>,
`projection_kernel` <[H, P]>, with the gate blocks in the same order (LSTM: i, f, g, o;
GRU: r, z, n), so the mapping is a transpose per matrix. Reverse directions are
`..._reverse` in torch and `layer_{k}_reverse` in lstm_jax.

Biases. The LSTM and the tanh RNN of lstm_jax have one bias, torch has two that are only
ever added (`b_ih + b_hh`). `from_torch` sums them; `to_torch` puts the whole bias into
`bias_ih_l{k}` and zeros into `bias_hh_l{k}`. The function computed is identical, but the
original split is not recoverable: `to_torch(from_torch(sd))` equals `sd` except that
`bias_ih + bias_hh` is preserved rather than each of them. The GRU keeps both biases
(they are not interchangeable there: `b_hn` sits inside `r * (...)`), so it round-trips
exactly.

What the weights do not say. A state_dict does not record `nn.RNN`'s nonlinearity (only
'tanh' is supported: a 'relu' RNN converts silently into a wrong model), nor
`batch_first` or `dropout` (not weights). Likewise lstm_jax's `merge='sum'`, `residual`,
`cell_clip`, `input_activation=False`, `output_activation=False` and zoneout leave no
trace in the parameters; `to_torch` cannot detect them, so export only models built with
those options at their defaults. The variants that do add or remove parameters
(peepholes, layer norm, full gate recurrence, a removed or coupled gate) are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

__all__ = ['from_torch', 'to_torch', 'CELL_TYPES']

#: Number of gate blocks per cell type, in torch's order.
CELL_TYPES: dict[str, int] = {'lstm': 4, 'gru': 3, 'rnn': 1}
_TORCH_NAMES = {'lstm': 'nn.LSTM', 'gru': 'nn.GRU', 'rnn': "nn.RNN(nonlinearity='tanh')"}
_TORCH_KEY = re.compile(r'^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$')
_LAYER_NAME = re.compile(r'^layer_(\d+)(_reverse)?$')
_JAX_PARAMS = {
    'lstm': {'input_kernel', 'recurrent_kernel', 'bias'},  # + projection_kernel (LSTMP)
    'gru': {'input_kernel', 'recurrent_kernel', 'input_bias', 'recurrent_bias'},
    'rnn': {'input_kernel', 'recurrent_kernel', 'bias'},
}
_VARIANT_PARAMS = {
    'peephole_': 'peephole connections (peepholes=True, e.g. Greff et al. variants)',
    'ln_': 'layer normalisation (layer_norm=True)',
    'gate_recurrent_kernel': 'full gate recurrence (full_gate_recurrence=True)',
}


def _check_cell_type(cell_type: str) -> int:
  if cell_type not in CELL_TYPES:
    raise ValueError(f"cell_type must be one of {sorted(CELL_TYPES)} (torch's nn.LSTM, "
                     f"nn.GRU, nn.RNN with nonlinearity='tanh'), got {cell_type!r}.")
  return CELL_TYPES[cell_type]


def _to_numpy(name: str, value: Any) -> np.ndarray:
  """A float32 NumPy copy of an array-like (torch tensors without importing torch)."""
  if hasattr(value, 'detach') and hasattr(value, 'cpu'):
    value = value.detach().cpu()
    if getattr(value, 'is_floating_point', lambda: False)():
      value = value.float()  # NumPy has no bfloat16: widen torch's float types first.
  try:
    array = np.asarray(value)
  except Exception as e:  # e.g. a tensor that needs grad, or a non-array object.
    raise ValueError(f'{name}: cannot convert a {type(value).__name__} to a NumPy array '
                     f'({e}); pass NumPy arrays or torch tensors.') from None
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise ValueError(f'{name} has dtype {array.dtype}; expected a floating-point array.')
  return np.array(array, dtype=np.float32)


def _strip_prefix(keys: list[str]) -> dict[str, str]:
  """Maps each key to its bare torch name, removing a common module prefix ('lstm.')."""
  if keys and all('.' in k for k in keys):
    prefixes = {k.rsplit('.', 1)[0] for k in keys}
    if len(prefixes) == 1:
      return {k: k.rsplit('.', 1)[1] for k in keys}
  return {k: k for k in keys}


def _shape_error(key: str, shape: tuple[int, ...], expected: tuple[int, ...],
                 what: str) -> ValueError:
  return ValueError(f'{key} has shape {shape}, expected {expected} ({what}). Check that the '
                    'state_dict comes from one recurrent module and that cell_type, '
                    'num_layers and bidirectional match it.')


def from_torch(state_dict: Mapping[str, Any], *, num_layers: Optional[int] = None,
               bidirectional: Optional[bool] = None,
               cell_type: str = 'lstm') -> dict[str, Any]:
  """Converts a torch `nn.LSTM` / `nn.GRU` / `nn.RNN` state_dict to lstm_jax variables.

  Args:
    state_dict: torch's parameter names to arrays (NumPy arrays, torch tensors or anything
      `np.asarray` takes), e.g. `torch_module.state_dict()`. For layer k and direction
      suffix s ('' or '_reverse'), with G gate blocks (LSTM 4, GRU 3, RNN 1), hidden size
      H, P = proj_size or H, and in_k the layer's input size (the feature size for k = 0,
      else directions * P):
        `weight_ih_l{k}{s}` <[G*H, in_k]>, `weight_hh_l{k}{s}` <[G*H, P]>,
        `bias_ih_l{k}{s}`, `bias_hh_l{k}{s}` <[G*H]> (absent all together for bias=False:
        zeros are used), `weight_hr_l{k}{s}` <[P, H]> (LSTM with proj_size only).
      A common prefix such as 'lstm.' (a submodule's state_dict) is stripped.
    num_layers: the number of layers; inferred from the keys when None, else checked.
    bidirectional: whether there are '_reverse' directions; inferred when None, else
      checked.
    cell_type: 'lstm' (nn.LSTM), 'gru' (nn.GRU) or 'rnn' (nn.RNN with tanh; the
      nonlinearity is not in the state_dict, so a relu RNN cannot be detected).

  Returns:
    `{'params': {'layer_{k}[_reverse]': {...}}}` of jnp float32 arrays, for
    `lstm_jax.RNN(hidden_size=H, num_layers=..., bidirectional=..., cell_type=...,
    proj_size=...)`. Per layer: `input_kernel` <[in_k, G*H]>, `recurrent_kernel`
    <[P, G*H]>; LSTM and RNN `bias` <[G*H]> = bias_ih + bias_hh; GRU `input_bias`,
    `recurrent_bias` <[3H]>; LSTM with proj_size `projection_kernel` <[H, P]>.

  Raises:
    ValueError: on unknown, missing or misshaped keys, or settings that disagree with
      the keys; the message names the key.
  """
  gates = _check_cell_type(cell_type)
  if not isinstance(state_dict, Mapping):
    raise ValueError(f'state_dict must be a mapping of names to arrays, got '
                     f'{type(state_dict).__name__}.')
  if not state_dict:
    raise ValueError('state_dict is empty; expected weight_ih_l0, weight_hh_l0, ...')
  bare = _strip_prefix(list(state_dict))
  entries: dict[tuple[str, int, bool], tuple[str, Any]] = {}
  for key, name in bare.items():
    match = _TORCH_KEY.match(name)
    if match is None:
      raise ValueError(
          f'Unexpected key {key!r}: a torch {_TORCH_NAMES[cell_type]} state_dict has only '
          'weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and weight_hr_l{k} '
          "with proj_size), each optionally with '_reverse'. Pass the recurrent module's "
          "own state_dict (e.g. model.lstm.state_dict()) or remove the extra key.")
    kind, layer, reverse = match.group(1), int(match.group(2)), bool(match.group(3))
    entries[(kind, layer, reverse)] = (key, state_dict[key])

  found_layers = 1 + max(layer for _, layer, _ in entries)
  found_bi = any(reverse for _, _, reverse in entries)
  if num_layers is None:
    num_layers = found_layers
  elif num_layers != found_layers:
    raise ValueError(f'num_layers={num_layers} but the state_dict has layers up to '
                     f'l{found_layers - 1}; pass num_layers={found_layers} or None.')
  if bidirectional is None:
    bidirectional = found_bi
  elif bidirectional != found_bi:
    raise ValueError(f'bidirectional={bidirectional} but the state_dict '
                     f"{'has' if found_bi else 'has no'} '_reverse' keys; pass "
                     f'bidirectional={found_bi} or None.')
  directions = (False, True) if bidirectional else (False,)
  has_bias = any(kind.startswith('bias') for kind, _, _ in entries)
  has_proj = any(kind == 'weight_hr' for kind, _, _ in entries)
  if has_proj and cell_type != 'lstm':
    raise ValueError(f"weight_hr_l* keys (proj_size) exist only for nn.LSTM; got them with "
                     f"cell_type={cell_type!r}. Use cell_type='lstm'.")
  required = ['weight_ih', 'weight_hh'] + (['bias_ih', 'bias_hh'] if has_bias else [])
  required += ['weight_hr'] if has_proj else []
  for layer in range(num_layers):
    for reverse in directions:
      for kind in required:
        if (kind, layer, reverse) not in entries:
          name = f"{kind}_l{layer}{'_reverse' if reverse else ''}"
          raise ValueError(f'Missing key {name!r} for layer {layer}'
                           f"{' (reverse direction)' if reverse else ''}: a "
                           f'{num_layers}-layer {"bidirectional " if bidirectional else ""}'
                           f'{_TORCH_NAMES[cell_type]} state_dict needs '
                           f'{", ".join(k + "_l*" for k in required)} for every layer and '
                           'direction. Pass the complete state_dict.')

  def get(kind: str, layer: int, reverse: bool) -> tuple[str, np.ndarray]:
    key, value = entries[(kind, layer, reverse)]
    array = _to_numpy(key, value)
    return key, array

  # Sizes from layer 0, forward direction.
  key_ih, w_ih0 = get('weight_ih', 0, False)
  key_hh, w_hh0 = get('weight_hh', 0, False)
  for key, array in ((key_ih, w_ih0), (key_hh, w_hh0)):
    if array.ndim != 2:
      raise ValueError(f'{key} has shape {array.shape}; torch weights are 2-D '
                       '[gates * hidden_size, in].')
  if w_ih0.shape[0] % gates:
    raise ValueError(f'{key_ih} has {w_ih0.shape[0]} rows, not a multiple of {gates} (the '
                     f'gate blocks of {_TORCH_NAMES[cell_type]}): is cell_type={cell_type!r} '
                     'right?')
  hidden = w_ih0.shape[0] // gates
  if has_proj:
    key_hr, w_hr0 = get('weight_hr', 0, False)
    if w_hr0.ndim != 2 or w_hr0.shape[1] != hidden:
      raise ValueError(f'{key_hr} has shape {w_hr0.shape}, expected [proj_size, '
                       f'hidden_size={hidden}] (hidden_size inferred from {key_ih} '
                       f'{w_ih0.shape}).')
    out = w_hr0.shape[0]
  else:
    out = hidden
  if w_hh0.shape != (gates * hidden, out):
    guess = ''
    if not has_proj and w_hh0.shape[1] and w_hh0.shape[0] % w_hh0.shape[1] == 0:
      blocks = w_hh0.shape[0] // w_hh0.shape[1]
      other = [c for c, g in CELL_TYPES.items() if g == blocks]
      if other and other[0] != cell_type:
        guess = f" It looks like a state_dict of {_TORCH_NAMES[other[0]]}: pass cell_type={other[0]!r}."
    raise ValueError(f'{key_hh} has shape {w_hh0.shape}, expected {(gates * hidden, out)} for '
                     f'{_TORCH_NAMES[cell_type]} with hidden_size={hidden}'
                     f"{f', proj_size={out}' if has_proj else ''} (inferred from "
                     f'{key_ih} {w_ih0.shape}).{guess}')
  features = w_ih0.shape[1]

  params: dict[str, dict[str, Any]] = {}
  for layer in range(num_layers):
    in_size = features if layer == 0 else len(directions) * out
    for reverse in directions:
      what = (f'{_TORCH_NAMES[cell_type]} layer {layer} with input size {in_size}, '
              f"hidden_size={hidden}{f', proj_size={out}' if has_proj else ''}")
      expected = {'weight_ih': (gates * hidden, in_size), 'weight_hh': (gates * hidden, out),
                  'bias_ih': (gates * hidden,), 'bias_hh': (gates * hidden,),
                  'weight_hr': (out, hidden)}
      arrays = {}
      for kind in required:
        key, array = get(kind, layer, reverse)
        if array.shape != expected[kind]:
          raise _shape_error(key, array.shape, expected[kind], what)
        arrays[kind] = array
      if not has_bias:
        arrays['bias_ih'] = arrays['bias_hh'] = np.zeros((gates * hidden,), np.float32)
      p = {'input_kernel': arrays['weight_ih'].T, 'recurrent_kernel': arrays['weight_hh'].T}
      if cell_type == 'gru':
        p['input_bias'] = arrays['bias_ih']
        p['recurrent_bias'] = arrays['bias_hh']
      else:
        p['bias'] = arrays['bias_ih'] + arrays['bias_hh']
      if has_proj:
        p['projection_kernel'] = arrays['weight_hr'].T
      name = f"layer_{layer}{'_reverse' if reverse else ''}"
      params[name] = {k: jnp.asarray(np.ascontiguousarray(v), jnp.float32)
                      for k, v in p.items()}
  return {'params': params}


def _variant_error(layer: str, name: str) -> Optional[ValueError]:
  for prefix, what in _VARIANT_PARAMS.items():
    if name.startswith(prefix):
      return ValueError(
          f"params/{layer}/{name} belongs to an LSTM with {what}, which torch.nn.LSTM "
          'cannot express. Only the plain LSTM (optionally with proj_size) can be '
          'exported; build the model with that option off.')
  return None


def to_torch(variables: Mapping[str, Any], *, cell_type: str = 'lstm') -> dict[str, np.ndarray]:
  """Converts lstm_jax `RNN`/`LSTM` variables to a torch state_dict of NumPy arrays.

  Args:
    variables: `{'params': {'layer_{k}[_reverse]': {...}}}` as made by
      `lstm_jax.RNN(...).init` or `from_torch` (a bare params dict is accepted too); see
      `from_torch` for the per-layer shapes. Other collections are ignored.
    cell_type: 'lstm', 'gru' or 'rnn', as the model's `cell_type`.

  Returns:
    torch's names to float32 NumPy arrays: `weight_ih_l{k}{s}` <[G*H, in_k]>,
    `weight_hh_l{k}{s}` <[G*H, P]>, `bias_ih_l{k}{s}`, `bias_hh_l{k}{s}` <[G*H]>, and
    `weight_hr_l{k}{s}` <[P, H]> with proj_size; ready for
    `module.load_state_dict({k: torch.from_numpy(v) ...})` of the torch module with the
    same sizes. For the LSTM and the RNN, the single lstm_jax bias goes to `bias_ih_l{k}`
    and `bias_hh_l{k}` is zero (same function; torch's original split is not
    recoverable). The GRU's two biases map one to one.

  Raises:
    ValueError: for a parameter tree that is not an lstm_jax RNN stack of this cell type,
      or an LSTM variant torch cannot express (peepholes, layer norm, full gate
      recurrence, removed or coupled gates), naming the offending parameter.

  Note: options that leave no trace in the parameters (merge='sum', residual, cell_clip,
  input/output_activation=False, zoneout) cannot be detected; do not export such models.
  """
  gates = _check_cell_type(cell_type)
  if not isinstance(variables, Mapping):
    raise ValueError(f'variables must be a mapping, got {type(variables).__name__}.')
  params = variables['params'] if 'params' in variables else variables
  if not isinstance(params, Mapping) or not params:
    raise ValueError("variables['params'] must be a non-empty mapping of "
                     "'layer_{k}[_reverse]' to parameter dicts.")
  layers: dict[tuple[int, bool], Mapping[str, Any]] = {}
  for name, layer_params in params.items():
    match = _LAYER_NAME.match(str(name))
    if match is None or not isinstance(layer_params, Mapping):
      raise ValueError(f"Unexpected entry params/{name}: an lstm_jax RNN stack has only "
                       "'layer_{k}' and 'layer_{k}_reverse'. Pass the variables of "
                       'lstm_jax.RNN/LSTM/GRU/SimpleRNN itself, not of a model containing it '
                       "(e.g. variables['params']['encoder'] -> {'params': ...}).")
    layers[(int(match.group(1)), bool(match.group(2)))] = layer_params
  num_layers = 1 + max(layer for layer, _ in layers)
  bidirectional = any(reverse for _, reverse in layers)
  directions = (False, True) if bidirectional else (False,)
  for layer in range(num_layers):
    for reverse in directions:
      if (layer, reverse) not in layers:
        raise ValueError(f"Missing params/layer_{layer}{'_reverse' if reverse else ''}: "
                         f'the tree has layers up to layer_{num_layers - 1}'
                         f"{' and reverse directions' if bidirectional else ''}, so every "
                         'layer and direction must be present.')

  state_dict: dict[str, np.ndarray] = {}
  sizes: Optional[tuple[int, int, bool]] = None  # (hidden, out, proj): one for all layers.
  features = 0
  for layer in range(num_layers):
    for reverse in directions:
      name = f"layer_{layer}{'_reverse' if reverse else ''}"
      lp = layers[(layer, reverse)]
      for pname in lp:
        error = _variant_error(name, pname) if cell_type == 'lstm' else None
        if error is not None:
          raise error
      allowed = set(_JAX_PARAMS[cell_type]) | ({'projection_kernel'} if cell_type == 'lstm'
                                              else set())
      extra = sorted(set(lp) - allowed)
      missing = sorted(_JAX_PARAMS[cell_type] - set(lp))
      if extra or missing:
        guess = [c for c, names in _JAX_PARAMS.items()
                 if c != cell_type and set(lp) - {'projection_kernel'} == names]
        hint = f" It looks like cell_type={guess[0]!r}." if guess else ''
        raise ValueError(f'params/{name} has unexpected parameters {extra} / lacks {missing} '
                         f'for cell_type={cell_type!r} (expected {sorted(allowed)}).{hint}')
      arrays = {k: _to_numpy(f'params/{name}/{k}', v) for k, v in lp.items()}
      w_in, w_rec = arrays['input_kernel'], arrays['recurrent_kernel']
      for k in ('input_kernel', 'recurrent_kernel'):
        if arrays[k].ndim != 2:
          raise ValueError(f'params/{name}/{k} has shape {arrays[k].shape}; expected 2-D.')
      has_proj = 'projection_kernel' in arrays
      if has_proj:
        if arrays['projection_kernel'].ndim != 2:
          raise ValueError(f"params/{name}/projection_kernel has shape "
                           f"{arrays['projection_kernel'].shape}; expected 2-D [H, P].")
        hidden, out = arrays['projection_kernel'].shape
      else:
        hidden = out = w_rec.shape[0]
      if sizes is None:
        sizes = (hidden, out, has_proj)
      elif sizes != (hidden, out, has_proj):
        raise ValueError(f'params/{name} has hidden_size={hidden}, output size {out}'
                         f"{' with' if has_proj else ' without'} projection, unlike "
                         f'layer_0 ({sizes[0]}, {sizes[1]}): torch needs one size for all '
                         'layers.')
      if hidden == 0 or w_rec.shape[1] % hidden or w_rec.shape[1] // hidden != gates:
        blocks = w_rec.shape[1] / hidden if hidden else float('nan')
        if cell_type == 'lstm':
          raise ValueError(
              f'params/{name}/recurrent_kernel has shape {w_rec.shape}: {blocks:g} gate '
              f'blocks of hidden_size={hidden}, but torch.nn.LSTM has exactly 4 (i, f, g, '
              'o). LSTM variants without an input/forget/output gate or with a coupled '
              'input-forget gate (CIFG) cannot be exported to torch.')
        raise ValueError(f'params/{name}/recurrent_kernel has shape {w_rec.shape}, expected '
                         f'({out}, {gates * hidden}) for {_TORCH_NAMES[cell_type]} (hidden_size='
                         f'{hidden}): is cell_type={cell_type!r} right?')
      in_size = w_in.shape[0]
      if layer == 0 and not reverse:
        features = in_size
      if layer == 0 and in_size != features:
        raise ValueError(f'params/{name}/input_kernel has shape {w_in.shape}, expected '
                         f'({features}, {gates * hidden}) like params/layer_0/input_kernel.')
      if layer > 0 and in_size != len(directions) * out:
        raise ValueError(f'params/{name}/input_kernel has shape {w_in.shape}, but torch feeds '
                         f'layer {layer} the {len(directions) * out} outputs of the layer below '
                         "(merge='concat'); the model cannot be expressed in torch.")
      expected = {'input_kernel': (in_size, gates * hidden),
                  'recurrent_kernel': (out, gates * hidden),
                  'bias': (gates * hidden,), 'input_bias': (gates * hidden,),
                  'recurrent_bias': (gates * hidden,), 'projection_kernel': (hidden, out)}
      for k, array in arrays.items():
        if array.shape != expected[k]:
          raise ValueError(f'params/{name}/{k} has shape {array.shape}, expected '
                           f'{expected[k]} ({_TORCH_NAMES[cell_type]} with hidden_size='
                           f"{hidden}{f', proj_size={out}' if has_proj else ''}).")
      suffix = f"_l{layer}{'_reverse' if reverse else ''}"
      state_dict['weight_ih' + suffix] = np.ascontiguousarray(w_in.T)
      state_dict['weight_hh' + suffix] = np.ascontiguousarray(w_rec.T)
      if cell_type == 'gru':
        state_dict['bias_ih' + suffix] = arrays['input_bias']
        state_dict['bias_hh' + suffix] = arrays['recurrent_bias']
      else:
        state_dict['bias_ih' + suffix] = arrays['bias']
        state_dict['bias_hh' + suffix] = np.zeros_like(arrays['bias'])
      if has_proj:
        state_dict['weight_hr' + suffix] = np.ascontiguousarray(arrays['projection_kernel'].T)
  return state_dict
