"""The plain LSTM at batch 1-2 on x86-64 CPUs: a hand-written recurrence (cpu_kernel.c).

At batch 1 a step is a matrix-vector product that reads the whole recurrent matrix (1 MiB
at H=256) for little arithmetic, and oneDNN's LSTM primitive (torch's CPU path, and
`onednn.py`'s) is slow at it: on 2 AMD EPYC cores it ran the forward pass of B=1 T=500
H=256 in 13 ms, where this kernel takes 6 (benchmarks/README.md, "cpu_kernel"). The kernel
splits the hidden units over the cores; each core reads only the rows of the matrix that
feed its units and keeps its units' cell state, and the cores meet once a step at a spin
barrier. The sequences of a batch run one after another, so the time grows with the batch,
and each call starts a thread (about 0.1 ms), so `fused.lstm`'s 'auto' uses it for small
batches of long enough sequences only (`fused.CPU_KERNEL_*`).

XLA does the rest: the input projection x W_x + b before the loop and, after the backward
pass has produced the gate pre-activations' gradients dz, the matmuls for dW, db and dx, as
`fused.py`'s backward does.

cpu_kernel.c is compiled at first use with the system's C compiler ($CC, else `cc`)
against jaxlib's XLA FFI header, into `cache_dir()` ($LSTM_JAX_KERNEL_DIR, else
~/.cache/lstm_jax/kernels), once per source, header and compiler (about 2 s with gcc 12).
Where there is no compiler, the CPU lacks AVX2 or FMA, or the system is not x86-64 Linux,
`available()` is False and `fused.lstm` runs another backend.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import platform
import subprocess
import tempfile
import threading
from typing import Optional

import jax
import jax.numpy as jnp

from lstm_jax import unroll

Array = jax.Array

SOURCE = pathlib.Path(__file__).with_name('cpu_kernel.c')
CACHE_ENV = 'LSTM_JAX_KERNEL_DIR'
FLAGS = ('-O3', '-mavx2', '-mfma', '-std=gnu11', '-fPIC', '-shared', '-pthread')
_TARGETS = {'forward': 'lstm_jax_cpu_forward', 'backward': 'lstm_jax_cpu_backward'}


def cache_dir() -> pathlib.Path:
  """Where built libraries are kept: $LSTM_JAX_KERNEL_DIR, else ~/.cache/lstm_jax/kernels."""
  return pathlib.Path(os.environ.get(CACHE_ENV)
                      or os.path.join(os.path.expanduser('~'), '.cache', 'lstm_jax', 'kernels'))


def _cpu_obstacle() -> Optional[str]:
  if platform.system() != 'Linux' or platform.machine() not in ('x86_64', 'AMD64'):
    return f'it runs on x86-64 Linux only, not {platform.system()} {platform.machine()}'
  try:
    with open('/proc/cpuinfo') as f:
      flags = next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])
  except OSError as e:
    return f'cannot read /proc/cpuinfo ({e})'
  missing = [flag for flag in ('avx2', 'fma') if flag not in flags]
  return f'the CPU lacks {" and ".join(missing)}' if missing else None


def _build() -> pathlib.Path:
  """The compiled library, compiling it into the cache where it is not there yet."""
  compiler = os.environ.get('CC') or 'cc'
  include = jax.ffi.include_dir()
  header = pathlib.Path(include, 'xla', 'ffi', 'api', 'c_api.h')
  try:
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             check=True).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    raise OSError(f'no C compiler ({compiler!r}: {e}); install gcc or set $CC') from None
  key = hashlib.sha256(b'\0'.join([SOURCE.read_bytes(), header.read_bytes(),
                                   version.encode(), ' '.join(FLAGS).encode()])).hexdigest()
  target = cache_dir() / f'cpu_kernel-{key[:16]}.so'
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  # Compiled beside the target and renamed into place: a concurrent process or a killed
  # build never leaves a partial library under the target's name.
  fd, partial = tempfile.mkstemp(suffix='.so', dir=target.parent)
  os.close(fd)
  try:
    result = subprocess.run([compiler, *FLAGS, '-I', include, '-o', partial, str(SOURCE)],
                            capture_output=True, text=True)
    if result.returncode:
      raise OSError(f'compiling {SOURCE.name} with {compiler} failed:\n{result.stderr[-2000:]}')
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return target


_loaded: list = []  # [library] or [OSError], after the first attempt.
_load_lock = threading.Lock()


def _library() -> ctypes.CDLL:
  """The loaded kernel, its FFI targets registered; raises OSError where it cannot load."""
  with _load_lock:
    if not _loaded:
      try:
        reason = _cpu_obstacle()
        if reason:
          raise OSError(reason)
        lib = ctypes.CDLL(str(_build()))
        for name in _TARGETS.values():
          jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                      platform='cpu')
        _loaded.append(lib)
      except OSError as e:
        _loaded.append(OSError(f'lstm_jax cpu_kernel unavailable: {e}'))
  if isinstance(_loaded[0], Exception):
    raise _loaded[0]
  return _loaded[0]


def unavailable_reason() -> Optional[str]:
  """None where the kernel builds and loads here, else why not."""
  try:
    _library()
    return None
  except OSError as e:
    return str(e)


def available() -> bool:
  return unavailable_reason() is None


def _call(name: str, outputs, *args):
  _library()
  return jax.ffi.ffi_call(_TARGETS[name], outputs, vmap_method='sequential')(*args)


def _shapes(*shapes):
  return tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)


@jax.custom_vjp
def _lstm(wx, wh, b, xs, h0, c0, lengths):
  time, batch, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
  xproj = jnp.einsum('tbi,ig->tbg', xs, wx) + b
  ys, h, c = _call('forward', _shapes((time, batch, hidden), h0.shape, h0.shape),
                   xproj, wh, h0, c0, lengths)
  return (h, c), ys


def _lstm_fwd(wx, wh, b, xs, h0, c0, lengths):
  time, batch, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
  xproj = jnp.einsum('tbi,ig->tbg', xs, wx) + b
  ys, h, c, acts, cs = _call(
      'forward', _shapes((time, batch, hidden), h0.shape, h0.shape,
                         (time, batch, 4 * hidden), (time, batch, hidden)),
      xproj, wh, h0, c0, lengths)
  return ((h, c), ys), (wx, wh, xs, h0, c0, lengths, ys, acts, cs)


def _lstm_bwd(residuals, cotangents):
  wx, wh, xs, h0, c0, lengths, ys, acts, cs = residuals
  (dh, dc), dys = cotangents
  dz, dh0, dc0 = _call('backward', _shapes(acts.shape, h0.shape, h0.shape),
                       wh, acts, cs, c0, lengths, dys, dh, dc)
  # dz is 0 on padding steps, where ys is 0 and xs was zeroed (`lstm`).
  hs_prev = jnp.concatenate([h0[None], ys[:-1]], axis=0)
  dwx = jnp.einsum('tbi,tbg->ig', xs, dz)
  dwh = jnp.einsum('tbh,tbg->hg', hs_prev, dz)
  dxs = jnp.einsum('tbg,ig->tbi', dz, wx)
  return dwx, dwh, dz.sum(axis=(0, 1)), dxs, dh0, dc0, None


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def lstm(input_kernel: Array, recurrent_kernel: Array, bias: Array, xs: Array, h0: Array,
         c0: Array, seq_lengths: Optional[Array] = None) -> tuple[tuple[Array, Array], Array]:
  """`fused.lstm` computed by cpu_kernel.c (CPU, float32), masked by lengths if given.

  Args:
    input_kernel: <float32>[features, 4H], gates (i, f, g, o).
    recurrent_kernel: <float32>[H, 4H].
    bias: <float32>[4H].
    xs: <float32>[time, batch, features], time >= 1 and batch >= 1.
    h0, c0: <float32>[batch, H].
    seq_lengths: <int>[batch] or None: steps t >= seq_lengths[b] are padding: their
      outputs are 0, the state is carried over them, and what stands in them changes
      nothing. E.g. lengths [2] over time 4: ys[2:] = 0, (h, c) is the state after step 1.

  Returns:
    ((h_final, c_final), ys) with ys <float32>[time, batch, H].

  Training keeps the gates' activations and c, 5H floats per step and sequence, for the
  backward pass.
  """
  args = (input_kernel, recurrent_kernel, bias, xs, h0, c0)
  if any(jnp.result_type(a) != jnp.float32 for a in args):
    raise TypeError('cpu_kernel.lstm takes float32 arrays only; got '
                    + ', '.join(str(jnp.result_type(a)) for a in args))
  time, batch = xs.shape[:2]
  if seq_lengths is None:
    lengths = jnp.full((batch,), time, jnp.int32)
  else:
    lengths = jnp.clip(seq_lengths, 0, time).astype(jnp.int32)
    # Zeroed, not only skipped: dW sums x_t dz_t over all steps, and 0 * NaN is NaN.
    xs = jnp.where(unroll.valid_mask(lengths, time)[..., None], xs, 0.0)
  return _lstm(input_kernel, recurrent_kernel, bias, xs, h0, c0, lengths)
