"""The plain LSTM on CPU through oneDNN's LSTM primitive, as an XLA custom call.

On CPU, PyTorch's `nn.LSTM` runs oneDNN's LSTM primitive, which spreads every time step
over all cores with a barrier per step. XLA runs the steps of a `lax.scan` on one core
(benchmarks/README.md, "Why lstm_jax is slower than torch here"), so `fused.lstm` calls
the same primitive where it can (`fused.lstm(..., backend=...)`): forward inference,
forward training (which fills oneDNN's workspace) and backward.

No compiler is needed: oneDNN comes from the `onednn-cpu-gomp` wheel and its C API is
called through ctypes; the three XLA FFI handlers are ctypes callbacks, which read
XLA's buffers in place. Each call runs on one dedicated thread: libgomp gives every
thread that starts a parallel region its own team, and with more team threads than cores
it stops spinning between parallel regions, which made each step wait for a sleeping
thread (2-3x slower when the primitive ran on XLA's own threads). A handler called on one
of XLA's threads therefore gives XLA an FFI future and returns at once; the worker runs the
call and completes the future, and XLA goes on with the program on the worker thread. So
the next custom call, e.g. a training step's backward pass after the loss, runs there
without another hand-off between threads.

oneDNN's training forward leaves a workspace for its backward pass; it stays in a cache of
this module's between the two calls (`_Workspaces`; XLA carries only its id), so a
training loop reuses one buffer instead of fresh memory every step.

Gates are in PyTorch's (i, f, g, o) order, which is oneDNN's `ldigo` weight layout, so
`input_kernel` <[I, 4H]> and `recurrent_kernel` <[H, 4H]> are used as they are.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import importlib.metadata
import os
import re
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import unroll

Array = jax.Array

LIBRARY_ENV = 'LSTM_JAX_ONEDNN_LIB'
PACKAGE = 'onednn-cpu-gomp'

# oneDNN 3.x C API constants (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h).
_F32 = 3
_ANY, _TNC, _NTC, _LDNC, _LDIGO, _LDGO = 1, 4, 16, 5, 6, 5
_FORWARD_INFERENCE, _FORWARD_TRAINING, _BACKWARD = 96, 64, 128
_LEFT_TO_RIGHT = 1
_CPU_ENGINE = 1
_SCRATCHPAD_USER = 1
_DIFF_WEIGHTS_OVERWRITE = 1
_QUERY_WEIGHTS_MD, _QUERY_DIFF_WEIGHTS_MD = 131, 132
_QUERY_WORKSPACE_MD, _QUERY_SCRATCHPAD_MD = 135, 136
_ARG = dict(src_layer=1, src_iter=2, src_iter_c=3, dst_layer=17, dst_iter=18,
            dst_iter_c=19, weights_layer=33, weights_iter=34, bias=41, workspace=64,
            scratchpad=80)
_ARG_FROM, _ARG_TO, _ARG_DIFF = 1, 17, 128

_vp = ctypes.c_void_p

# oneDNN's kernels may read its workspace and scratchpad with aligned vector loads.
_ALIGN = 64


def _aligned_in(buf: np.ndarray) -> int:
  return buf.ctypes.data + (-buf.ctypes.data) % _ALIGN


class _Version(ctypes.Structure):
  _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int), ('patch', ctypes.c_int)]


class _ExecArg(ctypes.Structure):
  _fields_ = [('arg', ctypes.c_int), ('memory', _vp)]


def _find_library() -> str:
  if os.environ.get(LIBRARY_ENV):
    return os.environ[LIBRARY_ENV]
  try:
    files = importlib.metadata.distribution(PACKAGE).files or []
  except importlib.metadata.PackageNotFoundError:
    raise OSError(f'oneDNN not found: `pip install {PACKAGE}` (requirements.txt) or set '
                  f'{LIBRARY_ENV} to a libdnnl.so.3') from None
  for f in files:
    if f.name == 'libdnnl.so.3':
      return str(f.locate())
  raise OSError(f'{PACKAGE} is installed but has no libdnnl.so.3')


class _Library:
  """libdnnl with one CPU engine and stream; calls that never block keep the GIL."""

  def __init__(self, path: str):
    # CDLL releases the GIL during a call (execute: milliseconds); PyDLL keeps it (the
    # microsecond calls), so a busy Python thread cannot stall a step between them.
    self.slow = ctypes.CDLL(path)
    self.fast = ctypes.PyDLL(path)
    self.fast.dnnl_version.restype = ctypes.POINTER(_Version)
    v = self.fast.dnnl_version().contents
    self.version = f'{v.major}.{v.minor}.{v.patch}'
    if v.major != 3:
      raise OSError(f'{path} is oneDNN {self.version}; lstm_jax needs oneDNN 3.x')
    self.fast.dnnl_primitive_desc_query_md.restype = _vp
    self.fast.dnnl_primitive_desc_query_md.argtypes = [_vp, ctypes.c_int, ctypes.c_int]
    self.fast.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
    self.fast.dnnl_memory_desc_get_size.argtypes = [_vp]
    self.fast.dnnl_memory_desc_equal.argtypes = [_vp, _vp]
    self.fast.dnnl_memory_set_data_handle.argtypes = [_vp, _vp]
    self.engine = self.new('dnnl_engine_create', _CPU_ENGINE, 0)
    self.stream = self.new('dnnl_stream_create', self.engine, 1)
    # Scratchpads are passed in (`_reused_buffer`), so that their memory outlives each call.
    self.attr = self.new('dnnl_primitive_attr_create')
    self.check(self.fast.dnnl_primitive_attr_set_scratchpad_mode(self.attr, _SCRATCHPAD_USER),
               'dnnl_primitive_attr_set_scratchpad_mode')

  @staticmethod
  def check(status: int, what: str):
    if status != 0:
      raise RuntimeError(f'oneDNN {what} failed with status {status}')

  def new(self, fn: str, *args) -> _vp:
    handle = _vp()
    self.check(getattr(self.fast, fn)(ctypes.byref(handle), *args), fn)
    return handle

  def desc(self, dims, tag) -> _vp:
    return self.new('dnnl_memory_desc_create_with_tag', len(dims),
                    (ctypes.c_int64 * 12)(*dims), _F32, tag)

  def query(self, pd, what: int, index: int = 0) -> _vp:
    return _vp(self.fast.dnnl_primitive_desc_query_md(pd, what, index))

  def size(self, md) -> int:
    return self.fast.dnnl_memory_desc_get_size(md)

  def memory(self, md) -> _vp:
    return self.new('dnnl_memory_create', md, self.engine, _vp(0))

  def primitive(self, pd) -> _vp:
    return self.new('dnnl_primitive_create', pd)


# Every oneDNN call, primitive creation included, runs on this one thread: a second
# thread starting parallel regions gets a second libgomp team (see the module docstring);
# creating the primitives on the tracing thread made the backward pass 28% slower.
_WORKER_NAME = 'lstm_jax_onednn'
_worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=_WORKER_NAME)


def _is_worker() -> bool:
  return threading.current_thread().name.startswith(_WORKER_NAME)


def _on_worker(fn, *args):
  """fn(*args) on the worker thread, waiting for it."""
  return fn(*args) if _is_worker() else _worker.submit(fn, *args).result()


_loaded: list = []  # [library] or [error], after the first attempt.


def _library() -> _Library:
  """The loaded library; raises OSError (always the same one) where it does not load."""
  if not _loaded:
    try:
      _loaded.append(_on_worker(lambda: _Library(_find_library())))
    except (OSError, RuntimeError) as e:  # RuntimeError: engine or stream creation.
      source = (f' (from ${LIBRARY_ENV}; unset it to use the {PACKAGE} wheel)'
                if os.environ.get(LIBRARY_ENV) else '')
      _loaded.append(OSError(f'oneDNN unavailable{source}: {e}'))
  if isinstance(_loaded[0], Exception):
    raise _loaded[0]
  return _loaded[0]


def unavailable_reason() -> Optional[str]:
  """None where oneDNN loads (its wheel and the system's libgomp are installed), else why not."""
  try:
    _library()
    return None
  except OSError as e:
    return str(e)


def available() -> bool:
  return unavailable_reason() is None


_reused: dict[str, tuple[np.ndarray, int]] = {}  # use -> (buffer, aligned pointer)


def _reused_buffer(use: str, size: int) -> int:
  """A 64-byte aligned pointer to `size` bytes, the same memory for every call of one use.

  Calls run one at a time on the worker thread and none keeps these past its end. Fresh
  per call, glibc would map and page-fault them every time: scratchpads are large (107 MiB
  for B64 T200 H256 inference, 255 MiB for its training passes), weights in a primitive's
  layout up to 6 MiB (H512), time-major gradient copies as large as the sequences.
  """
  held = _reused.get(use)
  if held is None or held[0].size < size + _ALIGN:
    buffer = np.empty(size + _ALIGN, np.uint8)
    held = _reused[use] = (buffer, _aligned_in(buffer))
  return held[1]


# Workspaces live here, not in XLA buffers. XLA gives each execution its temporaries as
# one block; above glibc's mmap ceiling (32 MiB) that block is mapped, page-faulted and
# zeroed afresh every step: B32 T100 H128 training took 15.5 ms with its 30 MiB workspace
# in XLA's block, 8.9 ms with glibc told to keep freed memory (benchmarks/README.md).
WORKSPACE_CACHE_ENV = 'LSTM_JAX_ONEDNN_WORKSPACE_CACHE_MIB'
WORKSPACE_CACHE_MIB = 2048


class _Workspaces:
  """oneDNN training workspaces by id, from a forward call until its backward pass.

  The forward pass returns only an id to XLA. A backward pass that finds no workspace
  under its id (evicted once the cache holds more than its limit, or consumed by an
  earlier backward pass over the same residuals, as `jax.jacrev` makes) recomputes it by
  running the training forward again, so results never depend on what the cache holds.
  Buffers whose backward pass ran are reused by later forward calls: a training loop
  touches fresh memory only in its first step. Used on the worker thread only.
  """

  def __init__(self):
    self.live: dict[int, tuple[tuple, np.ndarray]] = {}  # id -> (shape, buffer), by age.
    self.spare: list[np.ndarray] = []
    self.last_id = 0

  @staticmethod
  def limit() -> int:
    """Bytes the cache may hold: `$LSTM_JAX_ONEDNN_WORKSPACE_CACHE_MIB` or the default."""
    value = os.environ.get(WORKSPACE_CACHE_ENV, str(WORKSPACE_CACHE_MIB))
    if not value.strip().isdigit():
      raise ValueError(f'${WORKSPACE_CACHE_ENV}={value!r}: expected a whole number of MiB '
                       f'(default {WORKSPACE_CACHE_MIB}, 0 keeps none); unset it or set '
                       f'e.g. {WORKSPACE_CACHE_ENV}=512')
    return int(value) << 20

  def held(self) -> int:
    return sum(b.size for _, b in self.live.values()) + sum(b.size for b in self.spare)

  def new(self, key: tuple, size: int) -> tuple[int, int]:
    """(id, 64-byte aligned pointer to `size` bytes) for a new workspace."""
    need = size + _ALIGN
    while True:
      fits = [b for b in self.spare if b.size >= need]
      if fits:
        buf = min(fits, key=lambda b: b.size)
        self.spare = [b for b in self.spare if b is not buf]
        break
      if self.held() + need <= self.limit() or not (self.spare or self.live):
        buf = np.empty(need, np.uint8)
        break
      if self.spare:  # Too small for this one: give them back first.
        self.spare.pop(0)
      else:  # Over the limit: the oldest workspace goes (its backward pass recomputes it).
        self.spare.append(self.live.pop(next(iter(self.live)))[1])
    self.last_id += 1
    self.live[self.last_id] = (key, buf)
    return self.last_id, _aligned_in(buf)

  def get(self, workspace_id: int, key: tuple) -> Optional[int]:
    """The pointer `new` gave for this id, or None where the workspace is gone."""
    entry = self.live.get(workspace_id)
    return _aligned_in(entry[1]) if entry and entry[0] == key else None

  def release(self, workspace_id: int):
    entry = self.live.pop(workspace_id, None)
    if entry:
      self.spare.append(entry[1])


_workspaces = _Workspaces()


def workspace_cache_bytes() -> int:
  """Bytes of training workspaces held between calls (JAX's memory statistics omit them)."""
  return _on_worker(_workspaces.held)


class _Step:
  """One oneDNN primitive with cached memory objects; `run` binds pointers and executes."""

  def __init__(self, lib: _Library, pd: _vp, descs: dict[int, _vp]):
    self.lib, self.prim = lib, lib.primitive(pd)
    scratch = lib.query(pd, _QUERY_SCRATCHPAD_MD)
    self.scratch_size = lib.size(scratch)
    if self.scratch_size:
      descs = {**descs, _ARG['scratchpad']: scratch}
    self.memories = {arg: lib.memory(md) for arg, md in descs.items()}
    self.args = (_ExecArg * len(descs))(*[_ExecArg(a, m) for a, m in self.memories.items()])

  def run(self, pointers: dict[int, int]):
    lib = self.lib
    if self.scratch_size:
      scratchpad = _reused_buffer('scratchpad', self.scratch_size)
      pointers = {**pointers, _ARG['scratchpad']: scratchpad}
    for arg, memory in self.memories.items():
      lib.fast.dnnl_memory_set_data_handle(memory, _vp(pointers[arg]))
    lib.check(lib.slow.dnnl_primitive_execute(self.prim, lib.stream, len(self.args),
                                              self.args), 'dnnl_primitive_execute')
    lib.check(lib.slow.dnnl_stream_wait(lib.stream), 'dnnl_stream_wait')


def _reorder(lib: _Library, src: _vp, dst: _vp) -> _Step:
  """A oneDNN reorder: copies memory described by `src` into the layout of `dst`."""
  pd = lib.new('dnnl_reorder_primitive_desc_create', src, lib.engine, dst, lib.engine, lib.attr)
  return _Step(lib, pd, {_ARG_FROM: src, _ARG_TO: dst})


class _Reorder:
  """Copies weights between the user's ldigo layout and a primitive's chosen (packed) one.

  The packed copy lives in `_reused_buffer(use)`: `use` names the argument, so that the
  copies one call needs at once never share memory.
  """

  def __init__(self, lib: _Library, src: _vp, dst: _vp, packed: _vp, use: str):
    self.step, self.use, self.size = None, use, lib.size(packed)
    if not lib.fast.dnnl_memory_desc_equal(src, dst):
      self.step = _reorder(lib, src, dst)

  def packed_for(self, user: int) -> int:
    """Where the primitive finds (or writes) the weights whose user copy is at `user`."""
    return user if self.step is None else _reused_buffer(self.use, self.size)

  def to_packed(self, user: int) -> int:
    packed = self.packed_for(user)
    if self.step is not None:
      self.step.run({_ARG_FROM: user, _ARG_TO: packed})
    return packed

  def from_packed(self, user: int):
    if self.step is not None:
      self.step.run({_ARG_FROM: self.packed_for(user), _ARG_TO: user})


class _Primitives:
  """Inference, training and backward primitives for one (T, B, I, H).

  Inference reads and writes batch-major sequences, training and backward time-major ones
  (see `_lstm`).
  """

  def __init__(self, time: int, batch: int, features: int, hidden: int):
    lib = self.lib = _library()
    d = lib.desc

    def user(sequences: int) -> dict[str, _vp]:
      return dict(
          src_layer=d([time, batch, features], sequences),
          src_iter=d([1, 1, batch, hidden], _LDNC), src_iter_c=d([1, 1, batch, hidden], _LDNC),
          weights_layer=d([1, 1, features, 4, hidden], _LDIGO),
          weights_iter=d([1, 1, hidden, 4, hidden], _LDIGO),
          bias=d([1, 1, 4, hidden], _LDGO),
          dst_layer=d([time, batch, hidden], sequences),
          dst_iter=d([1, 1, batch, hidden], _LDNC), dst_iter_c=d([1, 1, batch, hidden], _LDNC))

    any_w = (d([1, 1, features, 4, hidden], _ANY), d([1, 1, hidden, 4, hidden], _ANY))

    def states(u):
      return ([u[k] for k in ('src_layer', 'src_iter', 'src_iter_c')], any_w, u['bias'],
              [u[k] for k in ('dst_layer', 'dst_iter', 'dst_iter_c')])

    def forward(prop, u):
      src, weights, bias, dst = states(u)
      return lib.new('dnnl_lstm_forward_primitive_desc_create', lib.engine, prop,
                     _LEFT_TO_RIGHT, *src, *weights, _vp(0), _vp(0), bias, *dst, 0, lib.attr)

    # At batch 1 batch-major bytes are also `tnc`, which oneDNN runs faster than `ntc`
    # (B1 T500 H256 inference: 2.8 against 3.0 ms).
    infer = user(_TNC if batch == 1 else _NTC)
    self.infer = self._with_weights(forward(_FORWARD_INFERENCE, infer), infer,
                                    _QUERY_WEIGHTS_MD)
    train = user(_TNC)
    train_pd = forward(_FORWARD_TRAINING, train)
    self.workspace = lib.query(train_pd, _QUERY_WORKSPACE_MD)
    self.workspace_size = lib.size(self.workspace)
    self.train = self._with_weights(train_pd, train, _QUERY_WEIGHTS_MD,
                                    {_ARG['workspace']: self.workspace})
    src, weights, bias, dst = states(train)
    bwd_pd = lib.new('dnnl_lstm_backward_primitive_desc_create', lib.engine, _BACKWARD,
                     _LEFT_TO_RIGHT, *src, *weights, _vp(0), _vp(0), bias, *dst,
                     *src, *weights, _vp(0), _vp(0), bias, *dst,
                     _DIFF_WEIGHTS_OVERWRITE, train_pd, lib.attr)
    diff = {_ARG_DIFF + _ARG[k]: train[k] for k in
            ('src_layer', 'src_iter', 'src_iter_c', 'bias', 'dst_layer', 'dst_iter',
             'dst_iter_c')}
    diff_w = [lib.query(bwd_pd, _QUERY_DIFF_WEIGHTS_MD, i) for i in (0, 1)]
    diff[_ARG_DIFF + _ARG['weights_layer']] = diff_w[0]
    diff[_ARG_DIFF + _ARG['weights_iter']] = diff_w[1]
    diff[_ARG['workspace']] = self.workspace
    self.backward = self._with_weights(bwd_pd, train, _QUERY_WEIGHTS_MD, diff)
    self.diff_reorders = [_Reorder(lib, w, train[k], packed=w, use=f'diff_{k}')
                          for w, k in zip(diff_w, ('weights_layer', 'weights_iter'))]
    # Training's cached buffer: the workspace, then time-major copies of x and ys, which
    # the forward pass makes from XLA's batch-major arrays and the backward pass reads.
    # At batch 1 XLA's arrays are time-major already (the same bytes), so no copies.
    self.copies = batch > 1
    round_up = lambda size: -(-size // _ALIGN) * _ALIGN  # noqa: E731
    self._x_offset = round_up(self.workspace_size)
    self._ys_offset = self._x_offset + round_up(4 * time * batch * features)
    self.training_size = (self._ys_offset + 4 * time * batch * hidden if self.copies
                          else self.workspace_size)

  def training_pointers(self, base: int) -> tuple[int, int, int]:
    """(workspace, time-major x, time-major ys) in a training buffer at `base`."""
    return base, base + self._x_offset, base + self._ys_offset

  def _with_weights(self, pd, user, query, extra=None):
    """(step, weight reorders): the primitive reads weights in the layout it chose."""
    lib = self.lib
    chosen = [lib.query(pd, query, i) for i in (0, 1)]
    descs = {_ARG[k]: user[k] for k in ('src_layer', 'src_iter', 'src_iter_c', 'bias',
                                        'dst_layer', 'dst_iter', 'dst_iter_c')}
    descs[_ARG['weights_layer']], descs[_ARG['weights_iter']] = chosen
    descs.update(extra or {})
    reorders = [_Reorder(lib, user[k], w, packed=w, use=k)
                for w, k in zip(chosen, ('weights_layer', 'weights_iter'))]
    return _Step(lib, pd, descs), reorders


@functools.lru_cache(maxsize=64)
def _primitives(time: int, batch: int, features: int, hidden: int) -> _Primitives:
  return _on_worker(_Primitives, time, batch, features, hidden)


def _run_forward(step_and_reorders, inputs, outputs, workspace: Optional[int] = None):
  """Runs a forward primitive; `inputs` (wx, wh, b, x, h0, c0), `outputs` (ys, h, c)."""
  step, reorders = step_and_reorders
  wx, wh, b, x, h0, c0 = inputs
  w_layer, w_iter = [r.to_packed(w) for r, w in zip(reorders, (wx, wh))]
  a = _ARG
  pointers = {a['src_layer']: x, a['src_iter']: h0, a['src_iter_c']: c0, a['bias']: b,
              a['weights_layer']: w_layer, a['weights_iter']: w_iter,
              a['dst_layer']: outputs[0], a['dst_iter']: outputs[1],
              a['dst_iter_c']: outputs[2]}
  if workspace is not None:
    pointers[a['workspace']] = workspace
  step.run(pointers)


def _shape_key(ins) -> tuple[int, int, int, int]:
  """(time, batch, features, hidden) from the buffers (wx, wh, b, x, h0, ...), x batch-major."""
  batch, time, features = ins[3][1]
  return time, batch, features, ins[4][1][1]


@functools.lru_cache(maxsize=256)
def _transposer(time: int, batch: int, channels: int, to_time_major: bool) -> _Step:
  """A oneDNN reorder between batch-major and time-major <float32>[., ., channels]."""
  lib = _library()
  ntc, tnc = (lib.desc([time, batch, channels], tag) for tag in (_NTC, _TNC))
  return _reorder(lib, ntc, tnc) if to_time_major else _reorder(lib, tnc, ntc)


def _transpose(src: int, dst: int, time: int, batch: int, channels: int,
               to_time_major: bool):
  _transposer(time, batch, channels, to_time_major).run({_ARG_FROM: src, _ARG_TO: dst})


def _train_forward(p: _Primitives, key, inputs, outputs) -> tuple[int, int, int, int]:
  """Training forward from batch-major x; (id, workspace, xs, ys), xs and ys time-major:
  copies in the cached buffer, or at batch 1 XLA's x and `outputs[0]` themselves (a
  scratch buffer if that is None)."""
  time, batch, features, hidden = key
  workspace_id, base = _workspaces.new(key, p.training_size)
  wx, wh, b, x, h0, c0 = inputs
  if p.copies:
    workspace, xs, ys = p.training_pointers(base)
    _transpose(x, xs, time, batch, features, to_time_major=True)
  else:
    workspace, xs = base, x
    ys = outputs[0] or _reused_buffer('recomputed_dst_layer', 4 * time * hidden)
  _run_forward(p.train, (wx, wh, b, xs, h0, c0), (ys, *outputs[1:]), workspace)
  return workspace_id, workspace, xs, ys


def _forward(training: bool, ins, outs):
  key = _shape_key(ins)
  time, batch, _, hidden = key
  p = _primitives(*key)
  inputs, outputs = [i[0] for i in ins], [o[0] for o in outs[:3]]
  if not training:
    _run_forward(p.infer, inputs, outputs)
    return
  workspace_id, _, _, ys = _train_forward(p, key, inputs, outputs)
  if p.copies:
    _transpose(ys, outputs[0], time, batch, hidden, to_time_major=False)
  ctypes.c_uint64.from_address(outs[3][0]).value = workspace_id


def _backward(ins, outs):
  (wx, wh, b, x, h0, c0, ys_given, h, c, id_buffer, dys, dh, dc) = [i[0] for i in ins]
  key = _shape_key(ins)
  time, batch, features, hidden = key
  p = _primitives(*key)
  workspace_id = ctypes.c_uint64.from_address(id_buffer).value
  base = _workspaces.get(workspace_id, key)
  if base is None:  # Gone: recompute it (and h, c, into buffers of our own).
    state = [np.empty((batch, hidden), np.float32) for _ in range(2)]
    workspace_id, workspace, xs, ys = _train_forward(
        p, key, (wx, wh, b, x, h0, c0), (None, *[a.ctypes.data for a in state]))
  elif p.copies:
    workspace, xs, ys = p.training_pointers(base)
  else:
    workspace, xs, ys = base, x, ys_given
  dwx, dwh, db, dx, dh0, dc0 = [o[0] for o in outs]
  if p.copies:
    dys_t = _reused_buffer('diff_dst_layer', 4 * time * batch * hidden)
    _transpose(dys, dys_t, time, batch, hidden, to_time_major=True)
    dxs = _reused_buffer('diff_src_layer', 4 * time * batch * features)
  else:
    dys_t, dxs = dys, dx
  step, reorders = p.backward
  w_layer, w_iter = [r.to_packed(w) for r, w in zip(reorders, (wx, wh))]
  diff_w = [r.packed_for(out) for r, out in zip(p.diff_reorders, (dwx, dwh))]
  a, d = _ARG, _ARG_DIFF
  step.run({a['src_layer']: xs, a['src_iter']: h0, a['src_iter_c']: c0, a['bias']: b,
            a['weights_layer']: w_layer, a['weights_iter']: w_iter, a['dst_layer']: ys,
            a['dst_iter']: h, a['dst_iter_c']: c, a['workspace']: workspace,
            d + a['dst_layer']: dys_t, d + a['dst_iter']: dh, d + a['dst_iter_c']: dc,
            d + a['src_layer']: dxs, d + a['src_iter']: dh0, d + a['src_iter_c']: dc0,
            d + a['bias']: db, d + a['weights_layer']: diff_w[0],
            d + a['weights_iter']: diff_w[1]})
  _workspaces.release(workspace_id)
  if p.copies:
    _transpose(dxs, dx, time, batch, features, to_time_major=False)
  for reorder, out in zip(p.diff_reorders, (dwx, dwh)):
    reorder.from_packed(out)


# ------------------------------------------------------------------ XLA FFI handlers
# Layouts from xla/ffi/api/c_api.h (jax.ffi.include_dir()).


class _ExtensionBase(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('type', ctypes.c_int), ('next', _vp)]


class _ApiVersion(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp),
              ('major', ctypes.c_int), ('minor', ctypes.c_int)]


class _Metadata(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('api_version', _ApiVersion),
              ('traits', ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
  _fields_ = [('extension_base', _ExtensionBase), ('metadata', ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp),
              ('dtype', ctypes.c_int), ('data', _vp), ('rank', ctypes.c_int64),
              ('dims', ctypes.POINTER(ctypes.c_int64))]


class _Values(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp),
              ('size', ctypes.c_int64), ('types', _vp), ('values', ctypes.POINTER(_vp))]


class _Attrs(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp),
              ('size', ctypes.c_int64), ('types', _vp), ('names', _vp), ('attrs', _vp)]


class _CallFrame(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t),
              ('extension_start', ctypes.POINTER(_ExtensionBase)), ('api', _vp),
              ('ctx', _vp), ('stage', ctypes.c_int), ('args', _Values), ('rets', _Values),
              ('attrs', _Attrs), ('future', _vp)]


class _ErrorCreateArgs(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp),
              ('message', ctypes.c_char_p), ('errc', ctypes.c_int)]


_ENTRY = ctypes.CFUNCTYPE(_vp, _vp)  # XLA_FFI_Error* XLA_FFI_Name(XLA_FFI_Name_Args*)


class _Api(ctypes.Structure):
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp),
              ('api_version', _ApiVersion), ('internal_api', _vp),
              ('error_create', ctypes.CFUNCTYPE(_vp, ctypes.POINTER(_ErrorCreateArgs)))]
  _fields_ += [(name, _ENTRY) for name in (
      'error_get_message', 'error_destroy', 'handler_register', 'stream_get', 'type_register',
      'execution_context_get', 'state_set', 'state_get', 'device_memory_allocate',
      'device_memory_free', 'thread_pool_schedule', 'thread_pool_num_threads',
      'future_create', 'future_set_available', 'future_set_error')]


class _FutureArgs(ctypes.Structure):
  """XLA_FFI_Future_{Create,SetAvailable,SetError}_Args; only SetError's has `error`."""
  _fields_ = [('struct_size', ctypes.c_size_t), ('extension_start', _vp), ('future', _vp),
              ('error', _vp)]


def _error(api: _Api, e: Exception) -> int:
  """An XLA_FFI_Error* for `e`: XLA raises it as the error of the jitted call."""
  message = f'lstm_jax.onednn: {type(e).__name__}: {e}'.encode()
  args = _ErrorCreateArgs(ctypes.sizeof(_ErrorCreateArgs), None, message, _INTERNAL_ERROR)
  return api.error_create(ctypes.byref(args))


def _future(api: _Api, entry: str, future: Optional[int] = None,
            error: Optional[int] = None) -> int:
  """Calls `api.<entry>` (future_create, _set_available or _set_error); the future."""
  size = _FutureArgs.error.offset + (ctypes.sizeof(_vp) if error else 0)
  args = _FutureArgs(size, None, future, error)
  if getattr(api, entry)(ctypes.addressof(args)):
    raise RuntimeError(f'XLA FFI {entry} failed')
  return args.future


def _finish(api: _Api, future: int, run, args, rets):
  """`run` on the worker, then completes XLA's future, which goes on on this thread."""
  try:
    run(args, rets)
  except Exception as e:
    _future(api, 'future_set_error', future, _error(api, e))
  else:
    _future(api, 'future_set_available', future)


_HANDLER = ctypes.CFUNCTYPE(_vp, ctypes.POINTER(_CallFrame))
_METADATA_EXTENSION, _EXECUTE_STAGE, _INTERNAL_ERROR = 1, 3, 13


def _ffi_version() -> tuple[int, int]:
  header = open(os.path.join(jax.ffi.include_dir(), 'xla', 'ffi', 'api', 'c_api.h')).read()
  return tuple(int(re.search(rf'#define XLA_FFI_API_{part} (\d+)', header).group(1))
               for part in ('MAJOR', 'MINOR'))


def _buffers(values: _Values) -> list[tuple[int, tuple[int, ...]]]:
  """(data pointer, dims) of each buffer in an XLA_FFI_Args or XLA_FFI_Rets."""
  out = []
  for k in range(values.size):
    b = _Buffer.from_address(values.values[k])
    out.append((b.data, tuple(b.dims[:b.rank])))
  return out


def _handler(run, version):
  def handle(frame_pointer):
    frame = frame_pointer.contents
    if frame.extension_start and frame.extension_start.contents.type == _METADATA_EXTENSION:
      ext = ctypes.cast(frame.extension_start, ctypes.POINTER(_MetadataExtension)).contents
      ext.metadata.contents.api_version.major, ext.metadata.contents.api_version.minor = version
      ext.metadata.contents.traits = 0
      return None
    if frame.stage != _EXECUTE_STAGE:
      return None
    api = ctypes.cast(frame.api, ctypes.POINTER(_Api)).contents
    try:
      args, rets = _buffers(frame.args), _buffers(frame.rets)
      if _is_worker():
        run(args, rets)
        return None
      frame.future = _future(api, 'future_create')
    except Exception as e:  # Reported by XLA as the error of the jitted call.
      return _error(api, e)
    _worker.submit(_finish, api, frame.future, run, args, rets)
    return None
  return _HANDLER(handle)


_TARGETS = {'infer': functools.partial(_forward, False),
            'train': functools.partial(_forward, True), 'backward': _backward}
_registered: dict[str, object] = {}
_register_lock = threading.Lock()


def _target(name: str) -> str:
  with _register_lock:
    if not _registered:
      _library()  # Fail here, at trace time, where oneDNN is missing.
      version = _ffi_version()
      for key, run in _TARGETS.items():
        _registered[key] = handler = _handler(run, version)  # Kept alive: XLA calls it.
        jax.ffi.register_ffi_target(f'lstm_jax_onednn_{key}',
                                    jax.ffi.pycapsule(ctypes.cast(handler, _vp).value),
                                    platform='cpu')
  return f'lstm_jax_onednn_{name}'


def _outputs(x: Array, h0: Array):
  """(ys, h, c): ys batch-major like x, with H features."""
  hidden = h0.shape[-1]
  return (jax.ShapeDtypeStruct(x.shape[:2] + (hidden,), jnp.float32),
          jax.ShapeDtypeStruct(h0.shape, jnp.float32),
          jax.ShapeDtypeStruct(h0.shape, jnp.float32))


def _call(name: str, outputs, *args):
  return jax.ffi.ffi_call(_target(name), outputs, vmap_method='sequential')(*args)


# `_lstm` takes and gives batch-major sequences, so XLA cancels `lstm`'s axis swaps against
# a batch-major caller's (layers.LSTM) and copies nothing around the calls. Inference runs
# on them as they are (oneDNN's `ntc`). Training runs time-major (`tnc`) on copies that its
# handlers make with oneDNN reorders (`_train_forward`; at batch 1 both layouts are the same
# bytes, so XLA's arrays are used as they are): oneDNN's backward pass on `ntc` was
# slower (B32 T100 H128: 3.92 against 3.67 ms; 6.0 against 4.6 ms in this machine's slow
# phases), and XLA's own transposes cost more where it fuses them (B128 T50 H512: a loss
# over the transposed outputs took 8.9 ms, 0.15 ms without the transpose).
@jax.custom_vjp
def _lstm(wx, wh, b, x, h0, c0):
  ys, h, c = _call('infer', _outputs(x, h0), wx, wh, b, x, h0, c0)
  return (h, c), ys


def _lstm_fwd(wx, wh, b, x, h0, c0):
  _Workspaces.limit()  # A malformed limit fails here, at trace time, not inside XLA.
  workspace_id = jax.ShapeDtypeStruct((2,), jnp.uint32)  # A uint64 in _Workspaces.
  ys, h, c, ws = _call('train', _outputs(x, h0) + (workspace_id,), wx, wh, b, x, h0, c0)
  return ((h, c), ys), (wx, wh, b, x, h0, c0, ys, h, c, ws)


def _lstm_bwd(residuals, cotangents):
  (dh, dc), dys = cotangents
  grads = tuple(jax.ShapeDtypeStruct(r.shape, r.dtype) for r in residuals[:6])
  return _call('backward', grads, *residuals, dys, dh, dc)


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


# A padding step must leave c as it is; oneDNN has no per-sequence lengths. So a masked
# call gets one more input feature, 1 on padding steps and 0 elsewhere, whose weights add
# -_HOLD to the input gate's pre-activation and +_HOLD to the forget gate's: there i = 0
# and f = 1 in float32, so c_t = c_{t-1}, and both gates' derivatives vanish, so nothing
# flows back through those steps but dc. h is not held (o tanh(c) still changes), which
# only the outputs and the final h see: outputs there are zeroed and the final h is the
# last valid output. A valid step after a padding step would read that h, so this works
# for prefix masks, given by their lengths, only. Gates saturate while the model's own
# pre-activations stay well below _HOLD (tested up to about 1e5).
_HOLD = 1e6


def lstm(input_kernel: Array, recurrent_kernel: Array, bias: Array, xs: Array, h0: Array,
         c0: Array, seq_lengths: Optional[Array] = None) -> tuple[tuple[Array, Array], Array]:
  """`fused.lstm` computed by oneDNN (CPU, float32), masked by lengths if given.

  Args:
    input_kernel: <float32>[features, 4H], gates (i, f, g, o).
    recurrent_kernel: <float32>[H, 4H].
    bias: <float32>[4H].
    xs: <float32>[time, batch, features], time >= 1 and batch >= 1.
    h0, c0: <float32>[batch, H].
    seq_lengths: <int>[batch] or None: steps t >= seq_lengths[b] are padding (`fused.lstm`
      with `valid = unroll.valid_mask(seq_lengths, time)`): their outputs are 0, the state
      is carried over them, and whatever stands in them changes nothing.

  Returns:
    ((h_final, c_final), ys) with ys <float32>[time, batch, H].

  Training keeps oneDNN's workspace for the backward pass, with time-major copies of xs and
  ys where the batch is above 1: about 20x the size of ys (30 MiB at T=100, B=32, H=128),
  more than `fused.lstm`'s residuals. It is held in this module's cache, not in XLA's buffers
  (`workspace_cache_bytes`; at most `WORKSPACE_CACHE_MIB`, or
  `$LSTM_JAX_ONEDNN_WORKSPACE_CACHE_MIB`, beyond which a backward pass recomputes its
  forward's workspace).
  """
  args = (input_kernel, recurrent_kernel, bias, xs, h0, c0)
  if any(jnp.result_type(a) != jnp.float32 for a in args):
    raise TypeError('onednn.lstm takes float32 arrays only; got '
                    + ', '.join(str(jnp.result_type(a)) for a in args))
  if seq_lengths is not None:
    return _masked(*args, seq_lengths)
  state, ys = _lstm(input_kernel, recurrent_kernel, bias, jnp.swapaxes(xs, 0, 1), h0, c0)
  return state, jnp.swapaxes(ys, 0, 1)


def _masked(input_kernel, recurrent_kernel, bias, xs, h0, c0, seq_lengths):
  """`lstm` with lengths, through the extra input feature described at `_HOLD`."""
  # Batch-major throughout, like the custom calls, so that XLA cancels the axis swaps here
  # against a batch-major caller's and copies nothing but the new input.
  time, hidden = xs.shape[0], h0.shape[-1]
  lengths = jnp.clip(seq_lengths, 0, time)
  valid = unroll.valid_mask(lengths, time).T[..., None]  # [batch, time, 1]
  x = jnp.swapaxes(xs, 0, 1)
  # Zeroed, not only ignored: 0 * NaN in the matmul would still be NaN.
  x = jnp.concatenate([jnp.where(valid, x, 0.0), (~valid).astype(x.dtype)], axis=-1)
  hold = jnp.zeros((4, hidden), x.dtype).at[0].set(-_HOLD).at[1].set(_HOLD)
  input_kernel = jnp.concatenate([input_kernel, hold.reshape(1, 4 * hidden)], axis=0)
  (_, c), ys = _lstm(input_kernel, recurrent_kernel, bias, x, h0, c0)
  ys = jnp.where(valid, ys, 0.0)
  last = jnp.take_along_axis(ys, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
  return (jnp.where(lengths[:, None] > 0, last, h0), c), jnp.swapaxes(ys, 0, 1)
