"""The fast path of the plain LSTM: a fused scan with a hand-written backward pass.

Measured on CPU (see ../shared notes and benchmarks/), three choices make it fast:

* one `[x_t, h_{t-1}] @ W` matmul per step, W = [[W_x], [W_h]] of shape [I + H, 4H];
* the backward scan carries only (dh, dc) and emits dz_t, the gradient of the gate
  pre-activations; dW, db and dx are then one large matmul each after the loop (after
  each chunk of steps on long sequences), instead of the rank-`batch` weight update per
  step that autodiff through `lax.scan` does;
* tanh(z) = 2 sigmoid(2z) - 1 lets a single sigmoid produce all four activations, while
  the backward pass reads them as four separate [time, batch, H] arrays: slicing gates
  out of one scanned [batch, 4H] array cost several times more per step on CPU.

The numbers are those of `cells.lstm_step` for the plain structure (tested to 1e-6).

On a single CPU device `lstm` hands float32 calls, unmasked or masked by lengths, to a
custom call that runs each step on all cores instead (`backend='auto'`): at batch 1-2
lstm_jax's own recurrence (`cpu_kernel.py`), above it oneDNN's LSTM primitive
(`onednn.py`).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from lstm_jax import cpu_kernel
from lstm_jax import onednn
from lstm_jax.unroll import default_unroll

Array = jax.Array


def _gate_constants(hidden: int) -> tuple[Array, Array]:
  """(scale, is_cell_block), each [4H]: the g block is 2 * sigmoid(2z) - 1 = tanh(z)."""
  is_g = jnp.zeros((4 * hidden,), bool).at[2 * hidden:3 * hidden].set(True)
  return jnp.where(is_g, 2.0, 1.0), is_g


def _activations(w: Array, b: Array, x: Array, h: Array, scale: Array, is_g: Array) -> Array:
  """<float32>[batch, 4H]: (i, f, g, o) after their nonlinearities."""
  return _nonlinearities(jnp.dot(jnp.concatenate([x, h], axis=-1), w) + b, scale, is_g)


def _nonlinearities(z: Array, scale: Array, is_g: Array) -> Array:
  a = jax.nn.sigmoid(z * scale)
  return jnp.where(is_g, 2.0 * a - 1.0, a)


# At this batch size or below the forward pass projects all inputs before the loop and
# each step multiplies h alone: measured on 2 CPU cores, B=1 inference 17% faster. With
# more rows per step reading the step's slice of the projection cost more than the
# fused [x, h] matmul saves (B=16: 2x slower), see benchmarks/README.md.
HOIST_MAX_BATCH = 2


def _scan_forward(w, b, xs, valid, h0, c0, unroll, save):
  """save: None (inference: keep nothing per step), 'state' (remat: c and h) or 'all'."""
  hidden = h0.shape[-1]
  scale, is_g = _gate_constants(hidden)
  hoist = xs.shape[1] <= HOIST_MAX_BATCH
  if hoist:
    features = xs.shape[-1]
    w_h = w[features:]
    xs = jnp.einsum('tbi,ig->tbg', xs, w[:features]) + b

  def body(carry, inputs):
    h, c = carry
    x, ok = inputs
    if hoist:  # x is already x @ W_x + b.
      acts = _nonlinearities(x + jnp.dot(h, w_h), scale, is_g)
    else:
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
    saved = None if save is None else ((i, f, g, o) if save == 'all' else None, c_new,
                                       h_new if ok is not None else None)
    return (h_new, c_new), (y, saved)

  return jax.lax.scan(body, (h0, c0), (xs, valid), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _lstm(w: Array, b: Array, xs: Array, valid: Optional[Array], h0: Array, c0: Array,
          unroll: int, remat: bool):
  (h, c), (ys, _) = _scan_forward(w, b, xs, valid, h0, c0, unroll, None)
  return (h, c), ys


def _lstm_fwd(w, b, xs, valid, h0, c0, unroll, remat):
  save = 'state' if remat else 'all'
  (h, c), (ys, (acts, cs, hs)) = _scan_forward(w, b, xs, valid, h0, c0, unroll, save)
  if hs is None:  # Without masking the carried h is the output.
    hs = ys
  return ((h, c), ys), (w, b, xs, valid, h0, c0, acts, cs, hs)


# The backward pass walks the sequence in chunks of this many steps when it is long and
# the chunks hold enough rows (see `_backward_chunk`).
BACKWARD_CHUNK = 50


def _backward_chunk(time: int, batch: int) -> Optional[int]:
  """Steps per chunk of the backward pass, or None for one pass over the whole sequence.

  Chunking accumulates dW chunk by chunk, right after that chunk's dz is computed and
  while it is still in cache, and never builds the whole [time, batch, 4H] dz. Measured
  on 2 CPU cores (benchmarks/README.md): 21% faster at B=16, T >= 1000; no gain or a loss
  when a chunk's matmuls have few rows (B=1) or there are only a few chunks (T <= 100).
  """
  if time >= 10 * BACKWARD_CHUNK and BACKWARD_CHUNK * batch >= 256:
    return BACKWARD_CHUNK
  return None


def _lstm_bwd(unroll, remat, residuals, cotangents):
  w, b, xs, valid, h0, c0, acts, cs, hs = residuals
  (dh_final, dc_final), dys = cotangents
  time, batch, features = xs.shape
  hidden = h0.shape[-1]
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

  # These contract the batch axis; under an Explicit-sharding mesh a batch-sharded
  # contraction must be told its output sharding: that of the weights.
  like_w = jax.typeof(w).sharding

  def steps_backward(carry, span):
    """Backward over a stretch of steps: (carry before it, dW, db, dx of its steps)."""
    scanned, x, h_prev = span
    carry, dz = jax.lax.scan(body, carry, scanned, reverse=True, unroll=unroll)
    dw = jnp.concatenate([jnp.einsum('tbi,tbg->ig', x, dz, out_sharding=like_w),
                          jnp.einsum('tbh,tbg->hg', h_prev, dz, out_sharding=like_w)], axis=0)
    return carry, dw, dz.sum(axis=(0, 1)), jnp.einsum('tbg,ig->tbi', dz, w_x)

  span = ((dys, valid, acts, cs, cs_prev, xs if remat else None, hs_prev if remat else None),
          xs, hs_prev)
  carry = (dh_final, dc_final)
  chunk = _backward_chunk(time, batch)
  if chunk is None:
    carry, dw, db, dxs = steps_backward(carry, span)
  else:
    # The first `head` steps (time % chunk) go last, on their own, after the chunks.
    head = time % chunk
    chunks = jax.tree.map(lambda a: a[head:].reshape((-1, chunk) + a.shape[1:]), span)

    def chunk_body(state, chunk_span):
      carry, dw, db = state
      carry, dw_chunk, db_chunk, dx = steps_backward(carry, chunk_span)
      return (carry, dw + dw_chunk, db + db_chunk), dx

    (carry, dw, db), dxs = jax.lax.scan(chunk_body, (carry, jnp.zeros_like(w), jnp.zeros_like(b)),
                                        chunks, reverse=True)
    dxs = dxs.reshape((-1,) + dxs.shape[2:])
    if head:
      carry, dw_head, db_head, dxs_head = steps_backward(
          carry, jax.tree.map(lambda a: a[:head], span))
      dw, db = dw + dw_head, db + db_head
      dxs = jnp.concatenate([dxs_head, dxs], axis=0)
  dh0, dc0 = carry
  # The math runs in the promoted dtype (e.g. float32 for bfloat16 x with float32
  # weights); each cotangent must come back in its own primal's dtype.
  return (dw.astype(w.dtype), db.astype(b.dtype), dxs.astype(xs.dtype), None,
          dh0.astype(h0.dtype), dc0.astype(c0.dtype))


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


BACKENDS = ('auto', 'xla', 'onednn', 'cpu_kernel')
_CUSTOM_CALLS = {'onednn': onednn, 'cpu_kernel': cpu_kernel}


def check_backend(backend: str) -> None:
  if backend not in BACKENDS:
    raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')


# 'auto' calls oneDNN where a step has at least AUTO_MIN_STEP_FLOP (2 B 4H (I + H)) or
# H >= AUTO_MIN_HIDDEN: below both, its per-step synchronisation of the cores costs more
# than it saves. oneDNN's time over the scan's on 2 cores, T=200, I=32 (train / infer;
# benchmarks/README.md): B4 H96 (0.39 MFLOP) 1.95 / 2.30, B8 H96 (I=64, 0.98 MFLOP)
# 1.49 / 1.61, B16 H64 (0.79 MFLOP) 1.41 / 1.64, B4 H128 (0.66 MFLOP) 1.16 / 0.90;
# B16 H96 (1.57 MFLOP) 0.76 / 0.61, B1 H192 (0.35 MFLOP) 0.90 / 0.76.
AUTO_MIN_STEP_FLOP = 1_200_000
AUTO_MIN_HIDDEN = 192
# Before that, 'auto' calls cpu_kernel.c at batch <= CPU_KERNEL_MAX_BATCH, H >=
# CPU_KERNEL_MIN_HIDDEN and T H^2 >= CPU_KERNEL_MIN_WORK. Its time over the best other
# backend's on 2 cores (train / infer; benchmarks/README.md, "cpu_kernel"): B1 T500 H512
# 0.70 / 0.70, B2 T500 H256 0.82 / 0.85, B1 T200 H128 0.82 / 1.04, B4 T500 H256 1.15 / 1.31
# (its sequences run one after another), B1 T200 H64 0.94 / 1.66 (the scan infers faster
# at small H). Starting its thread costs about 0.1 ms a call, so the scan wins on short
# sequences (inference, over the scan's time): H128 T50 1.24, T100 0.82; H256 T5 1.14,
# T20 0.87; H512 T1 1.24, T5 0.89; training H256 T1 1.78, T20 0.76.
CPU_KERNEL_MAX_BATCH = 2
CPU_KERNEL_MIN_HIDDEN = 128
CPU_KERNEL_MIN_WORK = 1_000_000


def custom_call_obstacle(xs: Array, valid: Optional[Array], remat: bool, dtype,
                         seq_lengths: Optional[Array] = None) -> Optional[str]:
  """None where a CPU custom call (oneDNN, cpu_kernel) can run this call, else why not.

  A `valid` mask needs the `seq_lengths` it was made from (`unroll.valid_mask`): both run
  prefix masks only.
  """
  if jax.default_backend() != 'cpu':
    return f'the default backend is {jax.default_backend()}, not cpu'
  if jax.device_count() != 1:
    return (f'{jax.device_count()} devices: the custom call would not be partitioned '
            'over them')
  if valid is not None and seq_lengths is None:
    return ('a valid mask without its seq_lengths (custom calls run only masks given by '
            'lengths, as layers.LSTM passes them)')
  if remat:
    return 'remat=True (custom calls keep their full workspace)'
  if jnp.dtype(dtype) != jnp.float32:
    return f'dtype {jnp.dtype(dtype)} (only float32)'
  if xs.shape[0] == 0 or xs.shape[1] == 0:
    return 'an empty time or batch axis'
  return None


def lstm(input_kernel: Array, recurrent_kernel: Array, bias: Array, xs: Array,
         valid: Optional[Array], h0: Array, c0: Array, *, unroll: Optional[int] = None,
         remat: bool = False, backend: str = 'auto',
         seq_lengths: Optional[Array] = None) -> tuple[tuple[Array, Array], Array]:
  """The plain LSTM over a time-major sequence, gates in PyTorch's (i, f, g, o) order.

  Args:
    input_kernel: <float32>[features, 4H].
    recurrent_kernel: <float32>[H, 4H].
    bias: <float32>[4H].
    xs: <float32>[time, batch, features].
    valid: <bool>[time, batch] or None; where False the state is carried and y is 0.
    h0, c0: <float32>[batch, H], the initial state.
    unroll: `lax.scan`'s unroll, forward and backward; None: `unroll.default_unroll()`.
    remat: store only (h, c) per step and recompute the gates in the backward pass
      (4H fewer floats per step and batch row, one more matmul per step).
    backend: 'xla' (this module's scan and VJP), 'onednn' (`onednn.lstm`, oneDNN's LSTM
      primitive as torch uses it on CPU, forward and backward), 'cpu_kernel'
      (`cpu_kernel.lstm`, a hand-written recurrence for small batches) or 'auto'
      (default). The custom calls run where `custom_call_obstacle` finds none (CPU, one
      device, float32, no `valid` or one given by `seq_lengths`, no remat) and their
      library loads. 'auto' takes 'cpu_kernel' at batch <= `CPU_KERNEL_MAX_BATCH`,
      H >= `CPU_KERNEL_MIN_HIDDEN` and T H^2 >= `CPU_KERNEL_MIN_WORK`, else 'onednn' where
      each step has at least `AUTO_MIN_STEP_FLOP` or H is at least `AUTO_MIN_HIDDEN`, else
      'xla'.
    seq_lengths: <int>[batch] or None: the lengths `valid` was made from, if it was
      (`valid == unroll.valid_mask(seq_lengths, time)`, which the caller vouches for); then
      the custom calls can run the masked call too.

  Returns:
    ((h_final, c_final), ys) with ys <float32>[time, batch, H].
  """
  check_backend(backend)
  if xs.shape[0] == 0:  # No steps: the backward pass below assumes at least one.
    return (h0, c0), jnp.zeros(xs.shape[:2] + h0.shape[-1:], h0.dtype)
  time, batch, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
  if backend == 'auto':
    step_flop = 2 * batch * 4 * hidden * (xs.shape[-1] + hidden)
    small = (batch <= CPU_KERNEL_MAX_BATCH and hidden >= CPU_KERNEL_MIN_HIDDEN
             and time * hidden ** 2 >= CPU_KERNEL_MIN_WORK)
    candidates = [name for name, wanted in (
        ('cpu_kernel', small),
        ('onednn', step_flop >= AUTO_MIN_STEP_FLOP or hidden >= AUTO_MIN_HIDDEN)) if wanted]
  else:
    candidates = [backend] if backend in _CUSTOM_CALLS else []
  args = (input_kernel, recurrent_kernel, bias, xs, h0, c0)
  for name in candidates:
    module = _CUSTOM_CALLS[name]
    reason = (custom_call_obstacle(xs, valid, remat, jnp.result_type(*args), seq_lengths)
              or module.unavailable_reason())
    if reason is None:  # E.g. bfloat16 parameters: the scan computes in float32 too.
      return module.lstm(*(a.astype(jnp.float32) for a in args),
                         seq_lengths=None if valid is None else seq_lengths)
    if backend == name:
      raise ValueError(f"backend={name!r} cannot run this call: {reason}. Use "
                       "backend='auto' (falls back to 'xla') or 'xla'.")
  w = jnp.concatenate([input_kernel, recurrent_kernel], axis=0)
  if unroll is None:
    unroll = default_unroll()
  return _lstm(w, bias, xs, valid, h0, c0, unroll, remat)
