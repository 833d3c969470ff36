"""Recurrent cells: the gate math as pure functions, parameters owned by Flax modules.

Every cell has the same shape of API:

* a state NamedTuple (`LSTMState` or `RNNState`), each leaf `<float32>[batch, ...]`;
* a pure step function `step(params, state, x, ...) -> (state, y)` holding the equations;
* a Flax module whose `__call__(state, xs, valid=None, deterministic=True)` creates the
  parameters and unrolls the step over a time-major sequence with `unroll.scan_steps`.

Gate blocks of the LSTM are laid out in PyTorch's order (input, forget, cell, output) so
that `lstm_jax.interop` maps `torch.nn.LSTM` weights one to one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import fused, unroll

Array = jax.Array
Initializer = Callable[..., Array]


class LSTMState(NamedTuple):
  """State of an LSTM cell.

  Attributes:
    h: <float32>[batch, proj_size or hidden_size], the output of the last step.
    c: <float32>[batch, hidden_size], the memory cell.
    gates: <float32>[batch, k * hidden_size], the previous activations of the k sigmoid
      gates; only with `full_gate_recurrence` (Greff et al.'s FGR variant), else None.
  """
  h: Array
  c: Array
  gates: Optional[Array] = None


class RNNState(NamedTuple):
  """State of a GRU or a vanilla RNN: h is <float32>[batch, hidden_size]."""
  h: Array


# ----------------------------------------------------------------------------- LSTM


@dataclasses.dataclass(frozen=True)
class LSTMStructure:
  """Static structure of an LSTM cell: which gates, activations and extras it has."""
  hidden_size: int
  proj_size: Optional[int] = None
  input_gate: bool = True
  forget_gate: bool = True
  output_gate: bool = True
  coupled: bool = False
  peepholes: bool = False
  layer_norm: bool = False
  input_activation: bool = True
  output_activation: bool = True
  full_gate_recurrence: bool = False
  cell_clip: Optional[float] = None
  layer_norm_epsilon: float = 1e-5

  def __post_init__(self):
    if self.coupled and not self.input_gate:
      raise ValueError('coupled=True (CIFG) derives the forget gate from the input gate, '
                       'so it needs input_gate=True.')
    if self.coupled and not self.forget_gate:
      raise ValueError('coupled=True (CIFG) replaces the forget gate: leave forget_gate=True.')
    if self.proj_size is not None and not 0 < self.proj_size:
      raise ValueError(f'proj_size must be a positive int or None, got {self.proj_size}.')
    if self.cell_clip is not None and not self.cell_clip > 0:
      raise ValueError(f'cell_clip must be > 0 or None, got {self.cell_clip}.')

  @property
  def blocks(self) -> tuple[str, ...]:
    """The pre-activation blocks computed by the kernels, in PyTorch order."""
    present = {'i': self.input_gate, 'f': self.forget_gate and not self.coupled,
               'g': True, 'o': self.output_gate}
    return tuple(name for name in 'ifgo' if present[name])

  @property
  def sigmoid_blocks(self) -> tuple[str, ...]:
    return tuple(name for name in self.blocks if name != 'g')

  @property
  def output_size(self) -> int:
    return self.proj_size or self.hidden_size

  @property
  def is_plain(self) -> bool:
    """True for the LSTM of torch.nn.LSTM (no proj): the case with the fused fast path."""
    return self == LSTMStructure(self.hidden_size, layer_norm_epsilon=self.layer_norm_epsilon)


def _dot(a: Array, w: Array, dtype: Any) -> Array:
  """Matmul in the compute dtype, accumulated in (at least) float32."""
  acc = jnp.promote_types(dtype, jnp.float32)
  return jnp.dot(a.astype(dtype), w.astype(dtype), preferred_element_type=acc)


def _layer_norm(x: Array, scale: Array, bias: Optional[Array], eps: float) -> Array:
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  y = (x - mean) * jax.lax.rsqrt(var + eps) * scale
  return y if bias is None else y + bias


def lstm_step(params: dict[str, Array], state: LSTMState, x: Array,
              structure: LSTMStructure, *, recurrent_mask: Optional[Array] = None,
              zoneout: Optional[tuple[Any, Any]] = None,
              dtype: Any = jnp.float32) -> tuple[LSTMState, Array]:
  """One LSTM step, as in Hochreiter & Schmidhuber (1997) with a forget gate.

      i = sigmoid(W_i x + R_i h' + p_i * c_prev + b_i)
      f = sigmoid(W_f x + R_f h' + p_f * c_prev + b_f)
      g = tanh(W_g x + R_g h' + b_g)
      c = f * c_prev + i * g
      o = sigmoid(W_o x + R_o h' + p_o * c + b_o)
      h = o * tanh(c)               (then h = h @ P with a projection)

  where h' = h_prev * recurrent_mask. `structure` switches the variants on and off.

  Args:
    params: `input_kernel` <[features, k*H]>, `recurrent_kernel` <[P, k*H]>, `bias`
      <[k*H]> for the k blocks of `structure.blocks`; plus `peephole_{i,f,o}` <[H]>,
      `projection_kernel` <[H, P]>, `gate_recurrent_kernel` <[s*H, s*H]> (FGR, s sigmoid
      gates), `ln_{input,recurrent,cell}_scale` and `ln_cell_bias` <[k*H] or [H]> when
      those options are on.
    state: the previous `LSTMState`.
    x: <float32>[batch, features], this step's input.
    structure: the static cell structure.
    recurrent_mask: <float32>[batch, P] variational dropout mask on h_prev, or None.
    zoneout: (zc, zh), each a scalar or [batch, H]/[batch, P] array: the new c and h are
      `z * previous + (1 - z) * update` (Krueger et al. 2016), or None.
    dtype: the dtype of the matmuls; gate arithmetic and the state stay in float32.

  Returns:
    (new_state, h): h is <float32>[batch, P].
  """
  s = structure
  hidden = s.hidden_size
  h_in = state.h if recurrent_mask is None else state.h * recurrent_mask
  zx = _dot(x, params['input_kernel'], dtype)
  zh = _dot(h_in, params['recurrent_kernel'], dtype)
  if s.layer_norm:  # Ba et al. 2016, eq. 20: each projection normalised over all gates.
    zx = _layer_norm(zx, params['ln_input_scale'], None, s.layer_norm_epsilon)
    zh = _layer_norm(zh, params['ln_recurrent_scale'], None, s.layer_norm_epsilon)
  z = zx + zh + params['bias']
  pre = {name: z[:, k * hidden:(k + 1) * hidden] for k, name in enumerate(s.blocks)}
  if s.full_gate_recurrence:
    extra = _dot(state.gates, params['gate_recurrent_kernel'], dtype)
    for k, name in enumerate(s.sigmoid_blocks):
      pre[name] = pre[name] + extra[:, k * hidden:(k + 1) * hidden]
  if s.peepholes:
    for name in ('i', 'f'):
      if name in pre:
        pre[name] = pre[name] + params[f'peephole_{name}'] * state.c

  i = jax.nn.sigmoid(pre['i']) if 'i' in pre else 1.0
  if 'f' in pre:
    f = jax.nn.sigmoid(pre['f'])
  else:
    f = 1.0 - i if s.coupled else 1.0
  g = jnp.tanh(pre['g']) if s.input_activation else pre['g']
  c = f * state.c + i * g
  if s.cell_clip is not None:
    c = jnp.clip(c, -s.cell_clip, s.cell_clip)
  if 'o' in pre:
    zo = pre['o'] + params['peephole_o'] * c if s.peepholes else pre['o']
    o = jax.nn.sigmoid(zo)
  else:
    o = 1.0
  c_read = _layer_norm(c, params['ln_cell_scale'], params['ln_cell_bias'],
                       s.layer_norm_epsilon) if s.layer_norm else c
  h = o * (jnp.tanh(c_read) if s.output_activation else c_read)
  if s.proj_size is not None:
    h = _dot(h, params['projection_kernel'], dtype)

  if zoneout is not None:
    zc, zh_ = zoneout
    c = zc * state.c + (1.0 - zc) * c
    h = zh_ * state.h + (1.0 - zh_) * h
  gates = None
  if s.full_gate_recurrence:
    acts = {'i': i, 'f': f, 'o': o}
    gates = jnp.concatenate(
        [jnp.broadcast_to(acts[name], c.shape) for name in s.sigmoid_blocks], -1)
  return LSTMState(h=h, c=c, gates=gates), h


def orthogonal_init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
  """`nn.initializers.orthogonal()` computed in float32 and cast to `dtype`: the QR it uses
  has no bfloat16 kernel on CPU, so `param_dtype=jnp.bfloat16` needs the cast."""
  return nn.initializers.orthogonal()(key, shape, jnp.float32).astype(dtype)


def chrono_bias_init(max_length: int) -> Initializer:
  """Forget-gate bias log(U[1, max_length - 1]) (Tallec & Ollivier 2018, 'chrono init')."""
  if max_length < 3:
    raise ValueError(f'chrono initialisation needs max_length >= 3, got {max_length}.')

  def init(key, shape, dtype=jnp.float32):
    return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, max_length - 1.0))
  return init


def _bernoulli_mask(rng: Array, rate: float, shape: tuple[int, ...]) -> Array:
  """Inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
  return keep.astype(jnp.float32) / (1.0 - rate)


def _check_rate(name: str, rate: float):
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'{name} must be in [0, 1), got {rate}.')


class LSTMCell(nn.Module):
  """An LSTM cell with the variants researchers ablate, unrolled over a sequence.

  Defaults give the LSTM of `torch.nn.LSTM` (forget gate, no peepholes) with the forget
  bias initialised to 1.0 (Gers et al. 2000; Jozefowicz et al. 2015).

  Attributes:
    hidden_size: H, the number of memory cells.
    proj_size: P, LSTMP's recurrent projection of the output (Sak et al. 2014), or None.
    forget_bias: initial value of the forget-gate bias (with `coupled`, the input-gate
      bias is set to -forget_bias, which gives the forget gate that initial bias).
    forget_bias_init: 'constant' (use forget_bias) or 'chrono' (Tallec & Ollivier 2018:
      b_f ~ log U[1, chrono_max_length - 1], b_i = -b_f).
    chrono_max_length: the longest dependency expected, for 'chrono'.
    peepholes: peephole connections from the cell to the gates (Gers & Schmidhuber 2000).
    layer_norm: layer normalisation of the gate pre-activations and the cell (Ba et al.
      2016).
    coupled: CIFG, the coupled input-forget gate f = 1 - i (Greff et al. 2017).
    input_gate, forget_gate, output_gate: False removes that gate (NIG, NFG, NOG of
      Greff et al. 2017); the gate is then the constant 1.
    input_activation, output_activation: False removes the tanh on the cell input or
      output (NIAF, NOAF of Greff et al. 2017).
    full_gate_recurrence: FGR of Greff et al. 2017, recurrent connections from the
      previous activations of all sigmoid gates to each sigmoid gate.
    cell_clip: clip the cell to [-cell_clip, cell_clip] after each update (as in TF's and
      Sak et al.'s LSTMP), or None.
    zoneout_cell, zoneout_hidden: zoneout rates for c and h (Krueger et al. 2016); at
      evaluation the expectation is used.
    recurrent_dropout: variational dropout rate on the recurrent input h_prev, one mask per
      sequence (Gal & Ghahramani 2016).
    unroll: the `unroll` of `lax.scan`; None: `unroll.default_unroll()` (8 on GPU, else 1).
    remat: recompute the step's activations in the backward pass instead of storing them.
    backend: how the plain float32 LSTM runs: 'xla' (the fused scan), 'onednn' (oneDNN's
      LSTM primitive on CPU), 'cpu_kernel' (lstm_jax's own CPU recurrence for batch 1-2),
      each an error where it cannot run, or 'auto', which picks per call (`fused.lstm`).
      Other structures always run the generic scan.
    dtype: matmul dtype (e.g. jnp.bfloat16); gate arithmetic and the state stay float32.
    param_dtype: parameter dtype.
  """
  hidden_size: int
  proj_size: Optional[int] = None
  forget_bias: float = 1.0
  forget_bias_init: str = 'constant'
  chrono_max_length: Optional[int] = None
  peepholes: bool = False
  layer_norm: bool = False
  coupled: bool = False
  input_gate: bool = True
  forget_gate: bool = True
  output_gate: bool = True
  input_activation: bool = True
  output_activation: bool = True
  full_gate_recurrence: bool = False
  cell_clip: Optional[float] = None
  zoneout_cell: float = 0.0
  zoneout_hidden: float = 0.0
  recurrent_dropout: float = 0.0
  unroll: Optional[int] = None
  remat: bool = False
  backend: str = 'auto'
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: Initializer = orthogonal_init

  @property
  def structure(self) -> LSTMStructure:
    return LSTMStructure(
        hidden_size=self.hidden_size, proj_size=self.proj_size,
        input_gate=self.input_gate, forget_gate=self.forget_gate,
        output_gate=self.output_gate, coupled=self.coupled, peepholes=self.peepholes,
        layer_norm=self.layer_norm, input_activation=self.input_activation,
        output_activation=self.output_activation,
        full_gate_recurrence=self.full_gate_recurrence, cell_clip=self.cell_clip)

  def initialize_state(self, batch_size: int) -> LSTMState:
    s = self.structure
    gates = (jnp.zeros((batch_size, len(s.sigmoid_blocks) * s.hidden_size))
             if s.full_gate_recurrence else None)
    return LSTMState(h=jnp.zeros((batch_size, s.output_size)),
                     c=jnp.zeros((batch_size, s.hidden_size)), gates=gates)

  def _bias_init(self, key, shape, dtype):
    s, hidden = self.structure, self.hidden_size
    bias = jnp.zeros(shape, dtype)
    block = {name: slice(k * hidden, (k + 1) * hidden) for k, name in enumerate(s.blocks)}
    if self.forget_bias_init == 'chrono':
      if self.chrono_max_length is None:
        raise ValueError("forget_bias_init='chrono' needs chrono_max_length.")
      b_f = chrono_bias_init(self.chrono_max_length)(key, (hidden,), dtype)
      if 'f' in block:
        bias = bias.at[block['f']].set(b_f)
      if 'i' in block:
        bias = bias.at[block['i']].set(-b_f)
    elif self.forget_bias_init == 'constant':
      if 'f' in block:
        bias = bias.at[block['f']].set(self.forget_bias)
      elif self.coupled:  # CIFG: f = 1 - sigmoid(b_i) = sigmoid(-b_i).
        bias = bias.at[block['i']].set(-self.forget_bias)
    else:
      raise ValueError(f"forget_bias_init must be 'constant' or 'chrono', got "
                       f'{self.forget_bias_init!r}.')
    return bias

  def _params(self, features: int) -> dict[str, Array]:
    s = self.structure
    k, hidden, out = len(s.blocks), self.hidden_size, s.output_size
    pd = self.param_dtype
    p = {
        'input_kernel': self.param('input_kernel', self.kernel_init, (features, k * hidden), pd),
        'recurrent_kernel': self.param('recurrent_kernel', self.recurrent_kernel_init,
                                       (out, k * hidden), pd),
        'bias': self.param('bias', self._bias_init, (k * hidden,), pd),
    }
    if s.peepholes:
      for name in ('i', 'f', 'o'):
        if name in s.blocks:
          p[f'peephole_{name}'] = self.param(f'peephole_{name}', nn.initializers.zeros,
                                             (hidden,), pd)
    if s.layer_norm:
      ones = nn.initializers.ones
      p['ln_input_scale'] = self.param('ln_input_scale', ones, (k * hidden,), pd)
      p['ln_recurrent_scale'] = self.param('ln_recurrent_scale', ones, (k * hidden,), pd)
      p['ln_cell_scale'] = self.param('ln_cell_scale', ones, (hidden,), pd)
      p['ln_cell_bias'] = self.param('ln_cell_bias', nn.initializers.zeros, (hidden,), pd)
    if s.proj_size is not None:
      p['projection_kernel'] = self.param('projection_kernel', self.kernel_init,
                                          (hidden, s.proj_size), pd)
    if s.full_gate_recurrence:
      n = len(s.sigmoid_blocks) * hidden
      p['gate_recurrent_kernel'] = self.param('gate_recurrent_kernel',
                                              self.recurrent_kernel_init, (n, n), pd)
    return p

  @nn.compact
  def __call__(self, state: LSTMState, xs: Array, valid: Optional[Array] = None,
               deterministic: bool = True, *,
               seq_lengths: Optional[Array] = None) -> tuple[LSTMState, Array]:
    """Unrolls the cell over a time-major sequence.

    Args:
      state: the initial `LSTMState` (leaves [batch, ...]).
      xs: <float32>[time, batch, features].
      valid: <bool>[time, batch]: where False the state is carried unchanged and the
        output is 0. None means all steps are valid.
      deterministic: False turns on zoneout and recurrent dropout (needs a 'dropout' rng).
      seq_lengths: <int>[batch], instead of `valid`: steps t >= seq_lengths[b] are
        padding (`valid = unroll.valid_mask(seq_lengths, time)`). Only masks given this
        way can run through oneDNN (`fused.lstm`).

    Returns:
      (final_state, ys) with ys <float32>[time, batch, proj_size or hidden_size].
    """
    for name in ('zoneout_cell', 'zoneout_hidden', 'recurrent_dropout'):
      _check_rate(name, getattr(self, name))
    if seq_lengths is not None:
      if valid is not None:
        raise ValueError('give the LSTM cell valid or seq_lengths, not both')
      valid = unroll.valid_mask(seq_lengths, xs.shape[0])
    s = self.structure
    params = self._params(xs.shape[-1])
    dtype = jnp.dtype(self.dtype or jnp.promote_types(xs.dtype, self.param_dtype))
    time, batch = xs.shape[:2]
    train = not deterministic

    zoneout = self.zoneout_cell or self.zoneout_hidden
    fused.check_backend(self.backend)  # Here too: variants never reach fused.lstm.
    plain = (s.is_plain and dtype == jnp.float32 and not zoneout
             and not (train and self.recurrent_dropout))
    if self.backend in ('onednn', 'cpu_kernel') and not plain:
      raise ValueError(f'backend={self.backend!r} runs only the plain float32 LSTM (no '
                       'peepholes, layer norm, projection, gate variants, cell clip, zoneout '
                       "or recurrent dropout); use backend='auto' or 'xla' for this cell.")
    if plain:
      (h, c), ys = fused.lstm(params['input_kernel'], params['recurrent_kernel'],
                              params['bias'], xs, valid, state.h, state.c,
                              unroll=self.unroll, remat=self.remat, backend=self.backend,
                              seq_lengths=seq_lengths)
      return LSTMState(h=h, c=c, gates=state.gates), ys

    recurrent_mask = None
    if train and self.recurrent_dropout:
      recurrent_mask = _bernoulli_mask(self.make_rng('dropout'), self.recurrent_dropout,
                                       (batch, s.output_size))
    per_step = None
    zoneout_const = None
    if zoneout:
      if train:
        kc, kh = jax.random.split(self.make_rng('dropout'))
        per_step = (
            jax.random.bernoulli(kc, self.zoneout_cell, (time, batch, s.hidden_size)),
            jax.random.bernoulli(kh, self.zoneout_hidden, (time, batch, s.output_size)))
      else:
        zoneout_const = (self.zoneout_cell, self.zoneout_hidden)

    def step(params, state, x, masks):
      rates = zoneout_const if masks is None else tuple(m.astype(jnp.float32) for m in masks)
      return lstm_step(params, state, x, s, recurrent_mask=recurrent_mask,
                       zoneout=rates, dtype=dtype)

    return unroll.scan_steps(step, params, state, xs, valid, per_step,
                             unroll=self.unroll, remat=self.remat)


# ------------------------------------------------------------------------ GRU and RNN


def gru_step(params: dict[str, Array], state: RNNState, x: Array, *,
             recurrent_mask: Optional[Array] = None,
             dtype: Any = jnp.float32) -> tuple[RNNState, Array]:
  """One GRU step in PyTorch's form (Cho et al. 2014), blocks ordered (r, z, n).

      r = sigmoid(W_r x + b_ir + R_r h' + b_hr)
      z = sigmoid(W_z x + b_iz + R_z h' + b_hz)
      n = tanh(W_n x + b_in + r * (R_n h' + b_hn))
      h = (1 - z) * n + z * h_prev

  Params: `input_kernel` <[features, 3H]>, `recurrent_kernel` <[H, 3H]>, `input_bias`
  and `recurrent_bias` <[3H]>. x: <float32>[batch, features]; returns (state, h [batch, H]).
  """
  hidden = state.h.shape[-1]
  h_in = state.h if recurrent_mask is None else state.h * recurrent_mask
  zx = _dot(x, params['input_kernel'], dtype) + params['input_bias']
  zh = _dot(h_in, params['recurrent_kernel'], dtype) + params['recurrent_bias']
  r = jax.nn.sigmoid(zx[:, :hidden] + zh[:, :hidden])
  z = jax.nn.sigmoid(zx[:, hidden:2 * hidden] + zh[:, hidden:2 * hidden])
  n = jnp.tanh(zx[:, 2 * hidden:] + r * zh[:, 2 * hidden:])
  h = (1.0 - z) * n + z * state.h
  return RNNState(h=h), h


def rnn_step(params: dict[str, Array], state: RNNState, x: Array, *,
             recurrent_mask: Optional[Array] = None,
             dtype: Any = jnp.float32) -> tuple[RNNState, Array]:
  """One step of the vanilla (Elman) tanh RNN: h = tanh(W x + R h' + b).

  Params: `input_kernel` <[features, H]>, `recurrent_kernel` <[H, H]>, `bias` <[H]>.
  """
  h_in = state.h if recurrent_mask is None else state.h * recurrent_mask
  h = jnp.tanh(_dot(x, params['input_kernel'], dtype)
               + _dot(h_in, params['recurrent_kernel'], dtype) + params['bias'])
  return RNNState(h=h), h


class _SimpleStateCell(nn.Module):
  """Shared unroll for the cells whose state is h alone (GRU, vanilla RNN)."""
  hidden_size: int
  zoneout_hidden: float = 0.0
  recurrent_dropout: float = 0.0
  unroll: Optional[int] = None
  remat: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: Initializer = orthogonal_init

  blocks = 1
  step_fn = None

  def initialize_state(self, batch_size: int) -> RNNState:
    return RNNState(h=jnp.zeros((batch_size, self.hidden_size)))

  def _params(self, features: int) -> dict[str, Array]:
    raise NotImplementedError

  @nn.compact
  def __call__(self, state: RNNState, xs: Array, valid: Optional[Array] = None,
               deterministic: bool = True) -> tuple[RNNState, Array]:
    """Unrolls over <float32>[time, batch, features]; see `LSTMCell.__call__`."""
    for name in ('zoneout_hidden', 'recurrent_dropout'):
      _check_rate(name, getattr(self, name))
    params = self._params(xs.shape[-1])
    dtype = jnp.dtype(self.dtype or jnp.promote_types(xs.dtype, self.param_dtype))
    time, batch = xs.shape[:2]
    train = not deterministic
    recurrent_mask = None
    if train and self.recurrent_dropout:
      recurrent_mask = _bernoulli_mask(self.make_rng('dropout'), self.recurrent_dropout,
                                       (batch, self.hidden_size))
    per_step = None
    if train and self.zoneout_hidden:
      per_step = jax.random.bernoulli(self.make_rng('dropout'), self.zoneout_hidden,
                                      (time, batch, self.hidden_size))
    step_fn = type(self).step_fn

    def step(params, state, x, zone):
      new, _ = step_fn(params, state, x, recurrent_mask=recurrent_mask, dtype=dtype)
      z = self.zoneout_hidden if zone is None else zone.astype(jnp.float32)
      h = z * state.h + (1.0 - z) * new.h if self.zoneout_hidden else new.h
      return RNNState(h=h), h

    return unroll.scan_steps(step, params, state, xs, valid, per_step,
                             unroll=self.unroll, remat=self.remat)


class GRUCell(_SimpleStateCell):
  """GRU (Cho et al. 2014) in PyTorch's form, a baseline for the LSTM; see `gru_step`."""
  step_fn = staticmethod(gru_step)

  def _params(self, features: int) -> dict[str, Array]:
    hidden, pd = self.hidden_size, self.param_dtype
    return {
        'input_kernel': self.param('input_kernel', self.kernel_init, (features, 3 * hidden), pd),
        'recurrent_kernel': self.param('recurrent_kernel', self.recurrent_kernel_init,
                                       (hidden, 3 * hidden), pd),
        'input_bias': self.param('input_bias', nn.initializers.zeros, (3 * hidden,), pd),
        'recurrent_bias': self.param('recurrent_bias', nn.initializers.zeros, (3 * hidden,), pd),
    }


class SimpleRNNCell(_SimpleStateCell):
  """The vanilla tanh RNN (Elman 1990), the baseline the LSTM was made to beat."""
  step_fn = staticmethod(rnn_step)

  def _params(self, features: int) -> dict[str, Array]:
    hidden, pd = self.hidden_size, self.param_dtype
    return {
        'input_kernel': self.param('input_kernel', self.kernel_init, (features, hidden), pd),
        'recurrent_kernel': self.param('recurrent_kernel', self.recurrent_kernel_init,
                                       (hidden, hidden), pd),
        'bias': self.param('bias', nn.initializers.zeros, (hidden,), pd),
    }


# The cell variants of Greff et al. 2017, "LSTM: A Search Space Odyssey". Their vanilla
# LSTM ('V') has peepholes; every variant changes one thing of it.
GREFF_VARIANTS: dict[str, dict[str, Any]] = {
    'V': dict(peepholes=True),
    'NIG': dict(peepholes=True, input_gate=False),
    'NFG': dict(peepholes=True, forget_gate=False),
    'NOG': dict(peepholes=True, output_gate=False),
    'NIAF': dict(peepholes=True, input_activation=False),
    'NOAF': dict(peepholes=True, output_activation=False),
    'NP': dict(peepholes=False),
    'CIFG': dict(peepholes=True, coupled=True),
    'FGR': dict(peepholes=True, full_gate_recurrence=True),
}


def greff_variant(name: str) -> dict[str, Any]:
  """The `LSTM` keyword arguments of one of Greff et al.'s variants, e.g. 'NFG'."""
  try:
    return dict(GREFF_VARIANTS[name])
  except KeyError:
    raise ValueError(f'Unknown Greff et al. variant {name!r}; choose one of '
                     f'{sorted(GREFF_VARIANTS)}.') from None
