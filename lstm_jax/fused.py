"""The fast path of the plain LSTM: a fused scan with a hand-written backward pass.

Measured on CPU (see ../shared notes and benchmarks/), three choices make it fast:

* one `[x_t, h_{t-1}] @ W` matmul per step, W = [[W_x], [W_h]] of shape [I + H, 4H];
* the backward scan carries only (dh, dc) and emits dz_t, the gradient of the gate
  pre-activations; dW, db and dx are then one large matmul each after the loop, instead
  of the rank-`batch` weight update per step that autodiff through `lax.scan` does;
* tanh(z) = 2 sigmoid(2z) - 1 lets a single sigmoid produce all four activations, while
  the backward pass reads them as four separate [time, batch, H] arrays: slicing gates
  out of one scanned [batch, 4H] array cost several times more per step on CPU.

The numbers are those of `cells.lstm_step` for the plain structure (tested to 1e-6).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def _gate_constants(hidden: int) -> tuple[Array, Array]:
  """(scale, is_cell_block), each [4H]: the g block is 2 * sigmoid(2z) - 1 = tanh(z)."""
  is_g = jnp.zeros((4 * hidden,), bool).at[2 * hidden:3 * hidden].set(True)
  return jnp.where(is_g, 2.0, 1.0), is_g


def _activations(w: Array, b: Array, x: Array, h: Array, scale: Array, is_g: Array) -> Array:
  """<float32>[batch, 4H]: (i, f, g, o) after their nonlinearities."""
  z = jnp.dot(jnp.concatenate([x, h], axis=-1), w) + b
  a = jax.nn.sigmoid(z * scale)
  return jnp.where(is_g, 2.0 * a - 1.0, a)


def _scan_forward(w, b, xs, valid, h0, c0, unroll, save_activations):
  hidden = h0.shape[-1]
  scale, is_g = _gate_constants(hidden)

  def body(carry, inputs):
    h, c = carry
    x, ok = inputs
    acts = _activations(w, b, x, h, scale, is_g)
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    y = h_new
    if ok is not None:
      keep = ok[:, None]
      c_new = jnp.where(keep, c_new, c)
      y = jnp.where(keep, h_new, 0.0)
      h_new = jnp.where(keep, h_new, h)
    saved = ((i, f, g, o) if save_activations else None, c_new,
             h_new if ok is not None else None)
    return (h_new, c_new), (y, saved)

  return jax.lax.scan(body, (h0, c0), (xs, valid), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _lstm(w: Array, b: Array, xs: Array, valid: Optional[Array], h0: Array, c0: Array,
          unroll: int, remat: bool):
  (h, c), (ys, _) = _scan_forward(w, b, xs, valid, h0, c0, unroll, False)
  return (h, c), ys


def _lstm_fwd(w, b, xs, valid, h0, c0, unroll, remat):
  (h, c), (ys, (acts, cs, hs)) = _scan_forward(w, b, xs, valid, h0, c0, unroll, not remat)
  if hs is None:  # Without masking the carried h is the output.
    hs = ys
  return ((h, c), ys), (w, b, xs, valid, h0, c0, acts, cs, hs)


def _lstm_bwd(unroll, remat, residuals, cotangents):
  w, b, xs, valid, h0, c0, acts, cs, hs = residuals
  (dh_final, dc_final), dys = cotangents
  features, hidden = xs.shape[-1], h0.shape[-1]
  scale, is_g = _gate_constants(hidden)
  w_x, w_h = w[:features], w[features:]
  w_h_t = w_h.T
  hs_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
  cs_prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)

  def body(carry, inputs):
    dh_next, dc_next = carry
    dy, ok, acts, c, c_prev, x, h_prev = inputs
    if acts is None:  # remat: recompute this step's activations.
      acts = jnp.split(_activations(w, b, x, h_prev, scale, is_g), 4, axis=-1)
    i, f, g, o = acts
    dh = dy + dh_next
    dc_carried = dc_next
    if ok is not None:
      keep = ok[:, None]
      dh = jnp.where(keep, dh, 0.0)
      dc_carried = jnp.where(keep, dc_carried, 0.0)
    tanh_c = jnp.tanh(c)
    dc = dc_carried + dh * o * (1.0 - tanh_c * tanh_c)
    dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                          dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)], axis=-1)
    dh_prev = jnp.dot(dz, w_h_t)
    dc_prev = dc * f
    if ok is not None:
      dh_prev = dh_prev + jnp.where(keep, 0.0, dh_next)
      dc_prev = dc_prev + jnp.where(keep, 0.0, dc_next)
    return (dh_prev, dc_prev), dz

  scanned = (dys, valid, acts, cs, cs_prev, xs if remat else None,
             hs_prev if remat else None)
  (dh0, dc0), dzs = jax.lax.scan(body, (dh_final, dc_final), scanned, reverse=True,
                                 unroll=unroll)
  # These contract the batch axis; under an Explicit-sharding mesh a batch-sharded
  # contraction must be told its output sharding: that of the weights.
  like_w = jax.typeof(w).sharding
  dw = jnp.concatenate([jnp.einsum('tbi,tbg->ig', xs, dzs, out_sharding=like_w),
                        jnp.einsum('tbh,tbg->hg', hs_prev, dzs, out_sharding=like_w)], axis=0)
  db = dzs.sum(axis=(0, 1))
  dxs = jnp.einsum('tbg,ig->tbi', dzs, w_x)
  return dw, db, dxs, None, dh0, dc0


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def lstm(input_kernel: Array, recurrent_kernel: Array, bias: Array, xs: Array,
         valid: Optional[Array], h0: Array, c0: Array, *, unroll: int = 1,
         remat: bool = False) -> tuple[tuple[Array, Array], Array]:
  """The plain LSTM over a time-major sequence, gates in PyTorch's (i, f, g, o) order.

  Args:
    input_kernel: <float32>[features, 4H].
    recurrent_kernel: <float32>[H, 4H].
    bias: <float32>[4H].
    xs: <float32>[time, batch, features].
    valid: <bool>[time, batch] or None; where False the state is carried and y is 0.
    h0, c0: <float32>[batch, H], the initial state.
    unroll: `lax.scan`'s unroll, forward and backward.
    remat: store only (h, c) per step and recompute the gates in the backward pass
      (4H fewer floats per step and batch row, one more matmul per step).

  Returns:
    ((h_final, c_final), ys) with ys <float32>[time, batch, H].
  """
  if xs.shape[0] == 0:  # No steps: the backward pass below assumes at least one.
    return (h0, c0), jnp.zeros(xs.shape[:2] + h0.shape[-1:], h0.dtype)
  w = jnp.concatenate([input_kernel, recurrent_kernel], axis=0)
  return _lstm(w, bias, xs, valid, h0, c0, unroll, remat)
