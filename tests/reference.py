"""An independent float64 NumPy reference of the recurrent layers of lstm_jax.

Written from the equations (Hochreiter & Schmidhuber 1997 with a forget gate; peepholes
of Gers & Schmidhuber 2000; layer norm of Ba et al. 2016; LSTMP of Sak et al. 2014; the
variants of Greff et al. 2017; zoneout of Krueger et al. 2016; the GRU in PyTorch's form;
the Elman tanh RNN), not from the JAX code: every sequence is run on its own, over its
valid prefix only, with plain Python loops; masking, reversal and padding are done by
slicing instead of `where`. Only the parameter *layout* (names and shapes, gate blocks in
PyTorch's (i, f, g, o) / (r, z, n) order, as documented in lstm_jax/cells.py) is shared.

Conventions: B = batch, T = time, F = features, H = hidden_size, P = proj_size or H,
L = num_layers, D = directions (1 or 2).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np

Params = Mapping[str, Any]
Rate = Union[float, np.ndarray]

LSTM_DEFAULTS: dict[str, Any] = dict(
    proj_size=None, peepholes=False, layer_norm=False, coupled=False, input_gate=True,
    forget_gate=True, output_gate=True, input_activation=True, output_activation=True,
    full_gate_recurrence=False, cell_clip=None, layer_norm_epsilon=1e-5)


def to_f64(tree: Any) -> Any:
  """A nested dict (e.g. Flax params) with every leaf as a float64 NumPy array."""
  if isinstance(tree, Mapping):
    return {k: to_f64(v) for k, v in tree.items()}
  return np.asarray(tree, dtype=np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * z))  # Overflow-free logistic function.


def layer_norm(v: np.ndarray, scale: np.ndarray, bias: Optional[np.ndarray],
               eps: float) -> np.ndarray:
  """LN over the last axis: (v - mean) / sqrt(var + eps) * scale (+ bias)."""
  mu = v.mean(-1, keepdims=True)
  var = ((v - mu) ** 2).mean(-1, keepdims=True)
  out = (v - mu) / np.sqrt(var + eps) * scale
  return out if bias is None else out + bias


def lstm_blocks(opts: Mapping[str, Any]) -> list[str]:
  """Names of the gate blocks present in the kernels, in PyTorch's order i, f, g, o."""
  o = {**LSTM_DEFAULTS, **opts}
  names = []
  if o['input_gate']:
    names.append('i')
  if o['forget_gate'] and not o['coupled']:
    names.append('f')
  names.append('g')
  if o['output_gate']:
    names.append('o')
  return names


def _rate_at(z: Rate, t: int) -> Union[float, np.ndarray]:
  """A zoneout rate: a scalar (expectation) or the t-th row of a <[T, n]> 0/1 mask."""
  return z if np.ndim(z) == 0 else np.asarray(z, np.float64)[t]


def lstm_sequence(p: Params, x: np.ndarray, h0: np.ndarray, c0: np.ndarray,
                  gates0: Optional[np.ndarray], opts: Mapping[str, Any], *,
                  recurrent_mask: Optional[np.ndarray] = None, zoneout_cell: Rate = 0.0,
                  zoneout_hidden: Rate = 0.0):
  """Runs one LSTM over one sequence, step by step.

  Args:
    p: cell params (float64): `input_kernel` <[F, kH]>, `recurrent_kernel` <[P, kH]>,
      `bias` <[kH]>, and the optional ones documented in `lstm_jax.cells.lstm_step`.
    x: <float64>[T, F], the valid steps only.
    h0: <float64>[P]; c0: <float64>[H]; gates0: <float64>[sH] (FGR only) or None.
    opts: the LSTMCell structure options (see LSTM_DEFAULTS) plus `hidden_size`.
    recurrent_mask: <float64>[P] multiplied into h_prev before the recurrent matmul.
    zoneout_cell, zoneout_hidden: scalar rates (evaluation) or 0/1 masks <[T, H]>, <[T, P]>:
      new = z * previous + (1 - z) * update.

  Returns:
    (ys <float64>[T, P], h <[P]>, c <[H]>, gates <[sH]> or None).
  """
  o = {**LSTM_DEFAULTS, **opts}
  H = o['hidden_size']
  eps = o['layer_norm_epsilon']
  blocks = lstm_blocks(o)
  sig = [b for b in blocks if b != 'g']
  h, c, gates = h0, c0, gates0
  ys = []
  for t in range(x.shape[0]):
    h_rec = h if recurrent_mask is None else h * recurrent_mask
    a_x = x[t] @ p['input_kernel']
    a_h = h_rec @ p['recurrent_kernel']
    if o['layer_norm']:
      a_x = layer_norm(a_x, p['ln_input_scale'], None, eps)
      a_h = layer_norm(a_h, p['ln_recurrent_scale'], None, eps)
    a = a_x + a_h + p['bias']
    pre = {name: a[k * H:(k + 1) * H] for k, name in enumerate(blocks)}
    if o['full_gate_recurrence']:
      r = gates @ p['gate_recurrent_kernel']
      for k, name in enumerate(sig):
        pre[name] = pre[name] + r[k * H:(k + 1) * H]
    # Input and forget gates peep at the old cell (Gers & Schmidhuber 2000).
    if o['peepholes'] and 'i' in pre:
      pre['i'] = pre['i'] + p['peephole_i'] * c
    if o['peepholes'] and 'f' in pre:
      pre['f'] = pre['f'] + p['peephole_f'] * c
    i = sigmoid(pre['i']) if 'i' in pre else np.ones(H)
    if 'f' in pre:
      f = sigmoid(pre['f'])
    elif o['coupled']:
      f = 1.0 - i
    else:
      f = np.ones(H)
    g = np.tanh(pre['g']) if o['input_activation'] else pre['g']
    c_new = f * c + i * g
    if o['cell_clip'] is not None:
      c_new = np.minimum(np.maximum(c_new, -o['cell_clip']), o['cell_clip'])
    if 'o' in pre:
      # The output gate peeps at the new cell.
      og = sigmoid(pre['o'] + (p['peephole_o'] * c_new if o['peepholes'] else 0.0))
    else:
      og = np.ones(H)
    c_out = layer_norm(c_new, p['ln_cell_scale'], p['ln_cell_bias'], eps) \
        if o['layer_norm'] else c_new
    h_new = og * (np.tanh(c_out) if o['output_activation'] else c_out)
    if o['proj_size'] is not None:
      h_new = h_new @ p['projection_kernel']
    zc, zh = _rate_at(zoneout_cell, t), _rate_at(zoneout_hidden, t)
    c_new = zc * c + (1.0 - zc) * c_new
    h_new = zh * h + (1.0 - zh) * h_new
    if o['full_gate_recurrence']:
      acts = {'i': i, 'f': f, 'o': og}
      gates = np.concatenate([acts[name] for name in sig])
    h, c = h_new, c_new
    ys.append(h)
  P = h0.shape[-1]
  return (np.stack(ys) if ys else np.zeros((0, P))), h, c, gates


def gru_sequence(p: Params, x: np.ndarray, h0: np.ndarray, *,
                 recurrent_mask: Optional[np.ndarray] = None, zoneout_hidden: Rate = 0.0):
  """PyTorch's GRU over one sequence. x <float64>[T, F], h0 <[H]> -> (ys <[T, H]>, h).

      r = s(W_r x + b_ir + R_r h' + b_hr), u = s(W_z x + b_iz + R_z h' + b_hz)
      n = tanh(W_n x + b_in + r * (R_n h' + b_hn)), h = (1 - u) * n + u * h_prev
  """
  H = h0.shape[-1]
  Wr, Wz, Wn = (p['input_kernel'][:, k * H:(k + 1) * H] for k in range(3))
  Rr, Rz, Rn = (p['recurrent_kernel'][:, k * H:(k + 1) * H] for k in range(3))
  bir, biz, bin_ = (p['input_bias'][k * H:(k + 1) * H] for k in range(3))
  bhr, bhz, bhn = (p['recurrent_bias'][k * H:(k + 1) * H] for k in range(3))
  h, ys = h0, []
  for t in range(x.shape[0]):
    hr = h if recurrent_mask is None else h * recurrent_mask
    r = sigmoid(x[t] @ Wr + bir + hr @ Rr + bhr)
    u = sigmoid(x[t] @ Wz + biz + hr @ Rz + bhz)
    n = np.tanh(x[t] @ Wn + bin_ + r * (hr @ Rn + bhn))
    new = (1.0 - u) * n + u * h
    zh = _rate_at(zoneout_hidden, t)
    h = zh * h + (1.0 - zh) * new
    ys.append(h)
  return (np.stack(ys) if ys else np.zeros((0, H))), h


def rnn_sequence(p: Params, x: np.ndarray, h0: np.ndarray, *,
                 recurrent_mask: Optional[np.ndarray] = None, zoneout_hidden: Rate = 0.0):
  """Elman tanh RNN over one sequence: h = tanh(x W + h' R + b). Shapes as `gru_sequence`."""
  H = h0.shape[-1]
  h, ys = h0, []
  for t in range(x.shape[0]):
    hr = h if recurrent_mask is None else h * recurrent_mask
    new = np.tanh(x[t] @ p['input_kernel'] + hr @ p['recurrent_kernel'] + p['bias'])
    zh = _rate_at(zoneout_hidden, t)
    h = zh * h + (1.0 - zh) * new
    ys.append(h)
  return (np.stack(ys) if ys else np.zeros((0, H))), h


def run_layer(cell_type: str, p: Params, x: np.ndarray, lengths: np.ndarray,
              state0: Mapping[str, np.ndarray], opts: Mapping[str, Any], *,
              reverse: bool = False, recurrent_mask: Optional[np.ndarray] = None,
              zoneout_cell: Rate = 0.0, zoneout_hidden: Rate = 0.0):
  """One layer and direction over a padded batch.

  Args:
    x: <float64>[B, T, F]. lengths: <int>[B]. state0: {'h': [B, P], 'c': [B, H],
      'gates': [B, sH]} (only 'h' for gru/rnn).
    reverse: read each valid prefix backwards (and write the outputs back in place).
    recurrent_mask: <[B, P]> or None. zoneout_*: scalars or 0/1 masks <[B, T, n]> indexed
      by step of the scan (for `reverse`, step t reads x[length - 1 - t]).

  Returns:
    (ys <float64>[B, T, P] zero past each length, final state dict of [B, ...]).
  """
  B, T = x.shape[:2]
  out_size = state0['h'].shape[-1]
  ys = np.zeros((B, T, out_size))
  final = {k: np.array(v, np.float64, copy=True) for k, v in state0.items()}
  for b in range(B):
    n = int(lengths[b])
    xb = x[b, :n][::-1] if reverse else x[b, :n]
    rm = None if recurrent_mask is None else recurrent_mask[b]
    zc = zoneout_cell if np.ndim(zoneout_cell) == 0 else zoneout_cell[b]
    zh = zoneout_hidden if np.ndim(zoneout_hidden) == 0 else zoneout_hidden[b]
    if cell_type == 'lstm':
      g0 = state0['gates'][b] if state0.get('gates') is not None else None
      yb, h, c, g = lstm_sequence(p, xb, state0['h'][b], state0['c'][b], g0, opts,
                                  recurrent_mask=rm, zoneout_cell=zc, zoneout_hidden=zh)
      final['c'][b] = c
      if g is not None:
        final['gates'][b] = g
    else:
      fn = gru_sequence if cell_type == 'gru' else rnn_sequence
      yb, h = fn(p, xb, state0['h'][b], recurrent_mask=rm, zoneout_hidden=zh)
    final['h'][b] = h
    ys[b, :n] = yb[::-1] if reverse else yb
  return ys, final


def zero_state(cell_type: str, batch: int, opts: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The zero state of one layer and direction: {'h': [B, P], 'c': [B, H], 'gates': ...}."""
  o = {**LSTM_DEFAULTS, **opts}
  H = o['hidden_size']
  if cell_type != 'lstm':
    return {'h': np.zeros((batch, H))}
  state = {'h': np.zeros((batch, o['proj_size'] or H)), 'c': np.zeros((batch, H))}
  if o['full_gate_recurrence']:
    state['gates'] = np.zeros((batch, H * (len(lstm_blocks(o)) - 1)))
  return state


def rnn_reference(params: Params, x: np.ndarray, seq_lengths: Optional[np.ndarray] = None,
                  *, hidden_size: int, cell_type: str = 'lstm', num_layers: int = 1,
                  bidirectional: bool = False, merge: str = 'concat', residual: bool = False,
                  initial_state: Optional[Mapping[str, np.ndarray]] = None,
                  zoneout_cell: float = 0.0, zoneout_hidden: float = 0.0,
                  recurrent_masks: Optional[Mapping[str, np.ndarray]] = None,
                  zoneout_masks: Optional[Mapping[str, tuple]] = None,
                  **lstm_opts) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The stacked (bidirectional, residual) recurrent network of `lstm_jax.RNN`.

  Args:
    params: the Flax 'params' collection, {'layer_0': {...}, 'layer_0_reverse': ...}.
    x: <float64>[B, T, F]. seq_lengths: <int>[B] in [0, T], or None (all T).
    initial_state: {'h': [L*D, B, P], 'c': [L*D, B, H], 'gates': [L*D, B, sH]} or None.
    zoneout_cell, zoneout_hidden: rates, applied as their expectation.
    recurrent_masks: {layer name: <[B, P]>} variational masks on h_prev (training mode).
    zoneout_masks: {layer name: (<[B, T, H]> or rate, <[B, T, P]> or rate)} 0/1 masks.
    lstm_opts: the LSTM structure options of LSTM_DEFAULTS.

  Returns:
    (outputs <float64>[B, T, D*P] ([B, T, P] with merge='sum'), zero past each length;
     final state {'h': [L*D, B, P], ...} after each sequence's last valid step,
     in PyTorch's order layer 0 fwd, layer 0 rev, layer 1 fwd, ...).
  """
  p64 = to_f64(params)
  x = np.asarray(x, np.float64)
  B, T = x.shape[:2]
  lengths = np.full((B,), T) if seq_lengths is None else np.asarray(seq_lengths)
  opts = {'hidden_size': hidden_size, **lstm_opts}
  D = 2 if bidirectional else 1
  valid = np.arange(T)[None, :] < lengths[:, None]  # [B, T]
  finals: list[dict[str, np.ndarray]] = []
  inp = x
  for layer in range(num_layers):
    outs = []
    for d in range(D):
      name = f'layer_{layer}' + ('_reverse' if d else '')
      if initial_state is None:
        s0 = zero_state(cell_type, B, opts)
      else:
        s0 = {k: np.asarray(v, np.float64)[layer * D + d] for k, v in initial_state.items()
              if v is not None}
      zc, zh = zoneout_cell, zoneout_hidden
      if zoneout_masks is not None and name in zoneout_masks:
        zc, zh = zoneout_masks[name]
      rm = None if recurrent_masks is None else recurrent_masks.get(name)
      ys, fin = run_layer(cell_type, p64[name], inp, lengths, s0, opts, reverse=bool(d),
                          recurrent_mask=rm, zoneout_cell=zc, zoneout_hidden=zh)
      outs.append(ys)
      finals.append(fin)
    out = outs[0] if D == 1 else (np.concatenate(outs, -1) if merge == 'concat'
                                  else outs[0] + outs[1])
    if residual and out.shape[-1] == inp.shape[-1]:
      out = out + np.where(valid[..., None], inp, 0.0)  # Padding stays zero.
    inp = out
  final = {k: np.stack([f[k] for f in finals]) for k in finals[0]}
  return inp, final
