"""Unrolling a step function over time with `jax.lax.scan`, with masking by length.

Sequences here are time-major, `[time, batch, ...]`: the layout `lax.scan` walks.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def valid_mask(seq_lengths: Optional[Array], time: int) -> Optional[Array]:
  """<bool>[time, batch]: True where t < seq_lengths[b]; None when seq_lengths is None."""
  if seq_lengths is None:
    return None
  return jnp.arange(time)[:, None] < jnp.asarray(seq_lengths)[None, :]


def reverse_valid(xs: Array, seq_lengths: Optional[Array]) -> Array:
  """Reverses each sequence's valid prefix along time (axis 0), leaving the padding put.

  It is its own inverse. For lengths [3, 1] and time 4:

      xs[:, 0] = [a, b, c, _]  ->  [c, b, a, _]
      xs[:, 1] = [d, _, _, _]  ->  [d, _, _, _]

  Args:
    xs: [time, batch, ...].
    seq_lengths: <int>[batch] or None (then the whole time axis is reversed).
  """
  if seq_lengths is None:
    return jnp.flip(xs, axis=0)
  time = xs.shape[0]
  t = jnp.arange(time)[:, None]
  lengths = jnp.asarray(seq_lengths)[None, :]
  index = jnp.where(t < lengths, lengths - 1 - t, t)  # [time, batch]
  index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
  return jnp.take_along_axis(xs, jnp.broadcast_to(index, xs.shape), axis=0)


GPU_UNROLL = 8


def default_unroll() -> int:
  """`lax.scan`'s unroll where a layer leaves it None: 8 on GPU, 1 elsewhere.

  On a GPU every loop iteration costs a few microseconds of launches and control flow
  whatever the step's size, so unrolling 8 steps per iteration made lstm_jax 1.1-1.8x
  faster on an H100 (benchmarks/results_gpu.md). On CPU it did not help and compiles
  longer. It changes no number (tested).
  """
  return GPU_UNROLL if jax.default_backend() == 'gpu' else 1


def scan_steps(step: Callable[..., tuple[Any, Array]], params: Any, state: Any, xs: Array,
               valid: Optional[Array] = None, per_step: Any = None, *,
               unroll: Optional[int] = None, remat: bool = False) -> tuple[Any, Array]:
  """Runs `state, y = step(params, state, x_t, per_step_t)` over t with masking.

  Where `valid[t, b]` is False the state of sequence b is carried unchanged and its
  output is zero, so the final state is the state at the last valid step.

  Args:
    step: the pure step function.
    params: its parameters (closed over, not scanned).
    state: initial state pytree, leaves [batch, ...].
    xs: [time, batch, features].
    valid: <bool>[time, batch] or None.
    per_step: a pytree of [time, ...] arrays scanned with xs (e.g. zoneout masks), or None.
    unroll: `lax.scan`'s unroll; None: `default_unroll()`.
    remat: wrap the step in `jax.checkpoint`, trading compute for memory.

  Returns:
    (final_state, ys) with ys [time, batch, out].
  """

  def body(state, inputs):
    x, ok, extra = inputs
    new_state, y = step(params, state, x, extra)
    if ok is not None:
      keep = ok[:, None]
      new_state = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_state, state)
      y = jnp.where(keep, y, jnp.zeros_like(y))
    return new_state, y

  if remat:
    body = jax.checkpoint(body)
  return jax.lax.scan(body, state, (xs, valid, per_step),
                      unroll=default_unroll() if unroll is None else unroll)
