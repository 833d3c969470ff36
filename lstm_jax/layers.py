"""Stacked, residual and bidirectional recurrent layers: the public `LSTM` module.

    from lstm_jax import LSTM
    model = LSTM(hidden_size=128, num_layers=2, bidirectional=True)
    variables = model.init(jax.random.key(0), x, seq_lengths=lengths)
    outputs, final_state = model.apply(variables, x, seq_lengths=lengths)

`x` is <float32>[batch, time, features], `outputs` <float32>[batch, time, directions * H]
(zero past each sequence's length), and `final_state` the cell state with every leaf
stacked on a leading [num_layers * directions] axis in PyTorch's order (layer 0 forward,
layer 0 reverse, layer 1 forward, ...); for the LSTM, `final_state.h` and `final_state.c`
are torch's `h_n` and `c_n`.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import unroll
from lstm_jax.cells import GRUCell, LSTMCell, LSTMState, RNNState, SimpleRNNCell

Array = jax.Array

_LSTM_ONLY = dict(proj_size=None, forget_bias=1.0, forget_bias_init='constant',
                  chrono_max_length=None, peepholes=False, layer_norm=False, coupled=False,
                  input_gate=True, forget_gate=True, output_gate=True,
                  input_activation=True, output_activation=True,
                  full_gate_recurrence=False, cell_clip=None, zoneout_cell=0.0,
                  backend='auto')
_CELLS = {'lstm': LSTMCell, 'gru': GRUCell, 'rnn': SimpleRNNCell}


class RNN(nn.Module):
  """A stack of recurrent layers unrolled with `lax.scan`; see the module docstring.

  Attributes:
    hidden_size: H, units per layer and direction.
    num_layers: the number of stacked layers.
    bidirectional: add a reverse direction to each layer. The reverse direction reads
      each sequence's valid prefix backwards (`unroll.reverse_valid`).
    merge: how the two directions are combined: 'concat' ([..., 2 * H]) or 'sum'.
    residual: add each layer's input to its output (layers whose sizes match).
    dropout: dropout rate on the outputs of every layer but the last, as in torch.
    cell_type: 'lstm', 'gru' or 'rnn' (vanilla tanh RNN).
    The remaining attributes are those of `cells.LSTMCell` (LSTM-only ones raise an
    error with another cell type), passed to every layer.
  """
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  merge: str = 'concat'
  residual: bool = False
  dropout: float = 0.0
  cell_type: str = 'lstm'
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

  def _check(self):
    if self.cell_type not in _CELLS:
      raise ValueError(f'cell_type must be one of {sorted(_CELLS)}, got {self.cell_type!r}.')
    if self.merge not in ('concat', 'sum'):
      raise ValueError(f"merge must be 'concat' or 'sum', got {self.merge!r}.")
    if self.num_layers < 1 or self.hidden_size < 1:
      raise ValueError('num_layers and hidden_size must be >= 1, got '
                       f'{self.num_layers} and {self.hidden_size}.')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'dropout must be in [0, 1), got {self.dropout}.')
    if self.cell_type != 'lstm':
      for name, default in _LSTM_ONLY.items():
        if getattr(self, name) != default:
          raise ValueError(f'{name} is an LSTM option; cell_type={self.cell_type!r} '
                           'does not take it.')

  def _cell(self, **module_kwargs) -> nn.Module:
    options = dict(hidden_size=self.hidden_size, zoneout_hidden=self.zoneout_hidden,
                   recurrent_dropout=self.recurrent_dropout, unroll=self.unroll,
                   remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.cell_type == 'lstm':
      options.update({key: getattr(self, key) for key in _LSTM_ONLY})
    return _CELLS[self.cell_type](**options, **module_kwargs)

  @property
  def directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def output_size(self) -> int:
    size = self.proj_size if self.cell_type == 'lstm' and self.proj_size else self.hidden_size
    return size * (2 if self.bidirectional and self.merge == 'concat' else 1)

  def initialize_state(self, batch_size: int) -> Any:
    """The zero state, leaves stacked on a leading [num_layers * directions] axis."""
    self._check()
    one = self._cell(parent=None).initialize_state(batch_size)
    return jax.tree.map(lambda a: jnp.stack([a] * self.num_layers * self.directions), one)

  @nn.compact
  def __call__(self, x: Array, seq_lengths: Optional[Array] = None,
               initial_state: Any = None, deterministic: bool = True) -> tuple[Array, Any]:
    """Runs the stack over a batch of sequences.

    Args:
      x: <float32>[batch, time, features].
      seq_lengths: <int>[batch] or None (all have length `time`); values are clipped to
        [0, time], so a length beyond `time` means the whole sequence.
      initial_state: like the returned final state, or None for zeros.
      deterministic: False turns on dropout, zoneout and recurrent dropout; then
        `apply` needs rngs={'dropout': key}.

    Returns:
      (outputs, final_state): outputs <float32>[batch, time, output_size], zero past
      each length; final_state the state after each sequence's last valid step.
    """
    self._check()
    if x.ndim != 3:
      raise ValueError(f'x must be [batch, time, features], got shape {x.shape}.')
    batch, time = x.shape[:2]
    if seq_lengths is not None:
      seq_lengths = jnp.asarray(seq_lengths)
      if seq_lengths.shape != (batch,):
        raise ValueError(f'seq_lengths must have shape [batch] = ({batch},), got '
                         f'{seq_lengths.shape}.')
      if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise ValueError(f'seq_lengths must be integers, got dtype {seq_lengths.dtype}.')
      # Both directions must agree on out-of-range lengths (reversal would read past the end).
      seq_lengths = jnp.clip(seq_lengths, 0, time)
    zeros = self.initialize_state(batch)
    if initial_state is None:
      initial_state = zeros
    else:
      want = [a.shape for a in jax.tree.leaves(zeros)]
      got = [jnp.shape(a) for a in jax.tree.leaves(initial_state)]
      if got != want:
        raise ValueError(f'initial_state must look like initialize_state({batch}) (a state '
                         f'whose leaves are [num_layers * directions, batch, size]): leaf '
                         f'shapes {want}, got {got}.')
      # The scan carry keeps the state's dtype; take the one the layer computes in.
      initial_state = jax.tree.map(lambda a, z: jnp.asarray(a, z.dtype), initial_state, zeros)
    valid = unroll.valid_mask(seq_lengths, time)
    xs = jnp.swapaxes(x, 0, 1)  # Time-major for the scans, once for the whole stack.
    if valid is not None:
      # Masking selects with `where`, whose gradient still multiplies the padding: zero it
      # so that NaN or inf there cannot reach the gradients.
      xs = jnp.where(valid[..., None], xs, 0.0)
    # Zeros that carry x's batch sharding: adding them gives the states the same sharding
    # under an Explicit-sharding mesh (jax.make_mesh's default), where mixing a replicated
    # state with a batch-sharded input in one op is an error. Elsewhere XLA drops the add.
    if time:  # An empty time axis has no x to take the sharding from.
      batch_zeros = jnp.zeros_like(xs[0, :, :1])
      initial_state = jax.tree.map(lambda a: a + batch_zeros.astype(a.dtype), initial_state)
    finals = []
    for layer in range(self.num_layers):
      outs = []
      for direction in range(self.directions):
        index = layer * self.directions + direction
        state = jax.tree.map(lambda a: a[index], initial_state)
        reverse = direction == 1
        name = f'layer_{layer}' + ('_reverse' if reverse else '')
        inputs = unroll.reverse_valid(xs, seq_lengths) if reverse else xs
        # The LSTM cell takes the lengths themselves: oneDNN runs masks given by lengths.
        mask = (dict(seq_lengths=seq_lengths) if self.cell_type == 'lstm' and valid is not None
                else dict(valid=valid))
        final, ys = self._cell(name=name)(state, inputs, deterministic=deterministic, **mask)
        outs.append(unroll.reverse_valid(ys, seq_lengths) if reverse else ys)
        finals.append(final)
      ys = outs[0] if len(outs) == 1 else (
          jnp.concatenate(outs, -1) if self.merge == 'concat' else outs[0] + outs[1])
      if self.residual and ys.shape[-1] == xs.shape[-1]:
        ys = ys + xs  # Padding of xs is zero (above), so the padding stays zero.
      if self.dropout and layer < self.num_layers - 1:
        ys = nn.Dropout(self.dropout, deterministic=deterministic)(ys)
      xs = ys
    final_state = jax.tree.map(lambda *a: jnp.stack(a), *finals)
    return jnp.swapaxes(xs, 0, 1), final_state

  def step(self, x_t: Array, state: Any) -> tuple[Array, Any]:
    """One step of streaming inference, equal to the full unroll step by step.

        state = model.initialize_state(batch)      # or the final_state of a chunk
        for t in range(time):
          y_t, state = model.apply(variables, x[:, t], state, method=LSTM.step)

    Args:
      x_t: <float32>[batch, features].
      state: the state so far, as returned by `__call__` or `initialize_state`.

    Returns:
      (y_t <float32>[batch, output_size], new_state).
    """
    if self.bidirectional:
      raise ValueError('step() streams forward in time; a bidirectional model needs the '
                       'whole sequence.')
    ys, state = self(x_t[:, None], initial_state=state)
    return ys[:, 0], state


class LSTM(RNN):
  """The LSTM stack (see `RNN`): `LSTM(hidden_size=H, num_layers=L, bidirectional=...)`."""
  cell_type: str = 'lstm'


class GRU(RNN):
  """A GRU stack with the `LSTM` interface, for comparisons."""
  cell_type: str = 'gru'


class SimpleRNN(RNN):
  """A vanilla tanh RNN stack with the `LSTM` interface, for comparisons."""
  cell_type: str = 'rnn'


__all__ = ['RNN', 'LSTM', 'GRU', 'SimpleRNN', 'LSTMState', 'RNNState']
