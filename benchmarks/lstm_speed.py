"""Speed and memory of `lstm_jax.LSTM` against `torch.nn.LSTM` and flax's LSTM (CPU or GPU).

    .venv/bin/python -m benchmarks.lstm_speed [--quick] [--workloads B,T,I,H,L ...]
        [--repeats N] [--out results.json] [--md results.md] [--no-memory | --memory-only]
        [--models torch,lstm_jax,flax[,lstm_jax_dp]] [--modes train,infer] [--masked]
        [--quiet-budget SECONDS] [--settle-ms MS]
        [--device cpu|gpu]

What is timed, per workload (batch B, time T, input I, hidden H, layers L), with the
repeats interleaved (each repeat runs every model and mode in a rotated order, a few
iterations each) and the median over repeats reported; the JAX models run in this
process, torch in a child process (`TorchProcess`: two OpenMP runtimes in one process
slow each other down). Each timing starts `--settle-ms` (default 20) after the previous
one ended: OpenMP threads keep spinning for 5-10 ms after their work (libgomp's default),
and without the pause the model timed next shared the cores with them (B1 T500 training,
paired torch/lstm_jax: 0.84-0.91x without, 0.93-0.99x with it; benchmarks/README.md):

* train: forward, loss = mean(outputs ** 2) over all outputs, backward, Adam update.
  JAX: one `jax.jit` step (`jax.value_and_grad` + `optax.adam`, params and optimizer
  state donated). torch: `zero_grad`, forward, `backward`, `torch.optim.Adam(fused=True)`
  (its fastest CPU Adam here).
* infer: forward only. JAX: `jax.jit(model.apply)`. torch: under `torch.inference_mode()`.
* `--masked`: the sequences have lengths uniform in [T/2, T] (`sequence_lengths`), given
  as `seq_lengths` to the JAX models and as a packed sequence to torch
  (`pack_padded_sequence(..., enforce_sorted=False)`, outputs padded back).

Models: `lstm_jax.LSTM(H, num_layers=L)` through its public `model.apply(variables, x)`
with batch-first x [B, T, I]; `torch.nn.LSTM(I, H, L, batch_first=True)` with
`torch.set_num_threads(<cores>)`; flax `nn.RNN(nn.OptimizedLSTMCell(H))` stacked L times;
opt-in `lstm_jax_dp`: lstm_jax with the batch sharded over all local devices (on CPU, one
host device per core), as the harness's data parallelism runs it.
Each JAX call is followed by `jax.block_until_ready`; wall time by `time.perf_counter`.
Compile time = first call minus the steady-state median (tracing + XLA compilation).

Peak memory of a training step (B=16, I=32, H=128, L=1, T in 1000 and 5000), two ways:

* XLA's buffer assignment for the compiled step (`jit(step).lower(...).compile()
  .memory_analysis()`): temp (every intermediate live inside the step: residuals saved for
  the backward pass, scan stacks, gradients, Adam temporaries) + arguments + outputs -
  aliased (donated) bytes. It is static and exact for XLA's own buffers; it excludes the
  Python process, the runtime and allocator slack.
* Measured RSS in a fresh subprocess per case (JAX and torch alike): the rise of the
  resident set over one training step, via Linux's VmHWM reset
  (`echo 5 > /proc/self/clear_refs`). 'first step' is the peak over the first step above
  the RSS after setup (JAX compiled ahead of time); 'steady' the peak of a later step above
  the RSS just before it. With glibc's default malloc, buffers >= the mmap threshold are
  returned to the OS after each step, so 'steady' sees them again; smaller ones may stay
  in the heap and then show in 'first step' only.

Shared machines: every timing records the share of the cores that OTHER processes used
meanwhile (/proc/stat minus this process). torch's OpenMP threads suffer far more than
XLA's from a busy neighbour (10-50x slower steps were seen here), so rounds disturbed
beyond 20% are re-run while `--quiet-budget` seconds last (default 240); all rounds,
kept or not, are in the JSON.

Malloc: the script does not change the allocator; it records whether MALLOC_MMAP_MAX_ /
MALLOC_TRIM_THRESHOLD_ (which speed up torch here, see shared NOTES) were set.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

MALLOC_VARS = ('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_',
               'MALLOC_TOP_PAD_', 'MALLOC_ARENA_MAX', 'LD_PRELOAD')
TUNED_MALLOC = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': '17179869184'}
MODELS = ('torch', 'lstm_jax', 'flax')
# Opt-in: lstm_jax with one backend forced; the default, 'auto', picks the scan, oneDNN's
# LSTM primitive or lstm_jax's cpu_kernel per call (lstm_jax/fused.py).
BACKEND_MODELS = {'lstm_jax_xla': 'xla', 'lstm_jax_onednn': 'onednn',
                  'lstm_jax_cpu_kernel': 'cpu_kernel'}
# Opt-in: lstm_jax with the batch split over all local devices (on CPU, one XLA host device
# per core), the way the training harness runs data parallel. Not in the default run.
DATA_PARALLEL = 'lstm_jax_dp'
MODES = ('train', 'infer')
# Many short rounds rather than a few long ones: this machine's speed changes by up to 1.5x
# for seconds at a time (benchmarks/README.md, "Noise"), and each model's median should
# sample those phases as the others' do.
REPEATS, TARGET_MS, MIN_ITERS = 15, 80, 2


class Workload(NamedTuple):
  batch: int
  time: int
  input: int
  hidden: int
  layers: int
  masked: bool = False  # Sequences of `sequence_lengths(self)`, not all of `time` steps.

  @property
  def name(self) -> str:
    return (f'B{self.batch} T{self.time} I{self.input} H{self.hidden} L{self.layers}'
            + (' masked' if self.masked else ''))

  @property
  def forward_flop(self) -> float:
    """Matmul FLOPs of the forward pass (a training step is about 3x)."""
    total = 0.0
    for layer in range(self.layers):
      features = self.input if layer == 0 else self.hidden
      total += 2.0 * self.batch * self.time * (features + self.hidden) * 4 * self.hidden
    return total

  @classmethod
  def parse(cls, text: str) -> 'Workload':
    parts = [int(p) for p in text.replace('x', ',').split(',') if p]
    if len(parts) != 5:
      raise argparse.ArgumentTypeError(f'a workload is B,T,I,H,L (5 ints), got {text!r}')
    return cls(*parts)


DEFAULT_WORKLOADS = (Workload(32, 100, 64, 128, 1), Workload(64, 200, 128, 256, 2),
                     Workload(16, 1000, 32, 128, 1), Workload(128, 50, 256, 512, 1),
                     Workload(1, 500, 40, 256, 1))
QUICK_WORKLOAD = Workload(4, 12, 8, 16, 1)


def sequence_lengths(w: Workload) -> np.ndarray:
  """<int64>[batch]: a masked workload's lengths, uniform in [time / 2, time], seed 0."""
  return np.random.default_rng(0).integers(w.time // 2, w.time + 1, w.batch)
MEMORY_SHAPE = dict(batch=16, input=32, hidden=128, layers=1)
MEMORY_LENGTHS = (1000, 5000)
QUICK_MEMORY_LENGTHS = (16,)
QUICK_RSS_CASES = {('torch', False)}  # Each RSS case is a subprocess (seconds each).
SETTLE_MS = 20.0


def cores() -> int:
  from lstm_jax import parallel
  return parallel.cpu_cores()


def have_torch() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


# ------------------------------------------------------------------------------ models


class Bench(NamedTuple):
  """One model on one workload: `train()` and `infer()` each run one blocked iteration."""
  train: Callable[[], Any]
  infer: Callable[[], Any]


def _jax_bench(init_params, apply_outputs: Callable, apply_full: Callable, x) -> Bench:
  """A jitted train step (loss over all outputs, Adam) and a jitted forward."""
  import jax
  import jax.numpy as jnp
  import optax

  tx = optax.adam(1e-3)

  def loss_fn(params, x):
    return jnp.mean(jnp.square(apply_outputs(params, x)))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, x):
    loss, grads = jax.value_and_grad(loss_fn)(params, x)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  infer_fn = jax.jit(apply_full)
  infer_params = jax.tree.map(jnp.copy, init_params)  # train_step donates its own copy.
  state = [init_params, jax.jit(tx.init)(init_params)]  # Placed like the parameters.

  def train():
    params, opt_state, loss = train_step(state[0], state[1], x)
    state[:] = [params, opt_state]
    return jax.block_until_ready(loss)

  def infer():
    return jax.block_until_ready(infer_fn(infer_params, x))

  return Bench(train, infer)


def lstm_jax_model(w: Workload, remat: bool = False, unroll: Optional[int] = None,
                   backend: str = 'auto'):
  import lstm_jax
  return lstm_jax.LSTM(hidden_size=w.hidden, num_layers=w.layers, remat=remat,
                       unroll=unroll, backend=backend)


def flax_model(w: Workload, unroll: Optional[int] = None):
  import flax.linen as nn

  class FlaxLSTMStack(nn.Module):
    """flax's own LSTM: nn.RNN(nn.OptimizedLSTMCell(H)) per layer, batch-first."""
    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x, seq_lengths=None):
      for layer in range(self.layers):
        x = nn.RNN(nn.OptimizedLSTMCell(self.hidden), unroll=unroll or 1,
                   name=f'rnn_{layer}')(x, seq_lengths=seq_lengths)
      return x

  return FlaxLSTMStack(w.hidden, w.layers)


def _jax_input(w: Workload):
  import jax
  return jax.random.normal(jax.random.key(1), (w.batch, w.time, w.input))


def build_lstm_jax(w: Workload, remat: bool = False, unroll: Optional[int] = None,
                   data_parallel: bool = False, backend: str = 'auto') -> Optional[Bench]:
  """data_parallel: x's batch sharded over all local devices and the parameters
  replicated (XLA inserts the gradient all-reduce); None when the batch does not split."""
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  model = lstm_jax_model(w, remat, unroll, backend)
  x = _jax_input(w)
  params = model.init(jax.random.key(0), x)['params']
  if data_parallel:
    devices = jax.local_devices()
    if w.batch % len(devices):
      return None
    mesh = Mesh(np.array(devices), ('batch',))
    x = jax.device_put(x, NamedSharding(mesh, PartitionSpec('batch')))
    params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
  lengths = sequence_lengths(w) if w.masked else None
  apply = lambda p, x: model.apply({'params': p}, x, seq_lengths=lengths)  # noqa: E731
  return _jax_bench(params, lambda p, x: apply(p, x)[0], apply, x)


def build_flax(w: Workload, unroll: Optional[int] = None) -> Bench:
  import jax
  model = flax_model(w, unroll)
  x = _jax_input(w)
  params = model.init(jax.random.key(0), x)['params']
  lengths = sequence_lengths(w) if w.masked else None
  apply = lambda p, x: model.apply({'params': p}, x, seq_lengths=lengths)  # noqa: E731
  return _jax_bench(params, apply, apply, x)


def _torch_setup(w: Workload, device: str = 'cpu'):
  import torch
  torch.set_num_threads(cores())
  torch.manual_seed(0)
  target = 'cuda' if device == 'gpu' else 'cpu'
  lstm = torch.nn.LSTM(w.input, w.hidden, w.layers, batch_first=True).to(target)
  try:
    opt = torch.optim.Adam(lstm.parameters(), lr=1e-3, fused=True)
  except (TypeError, RuntimeError):  # Older torch: no fused CPU Adam.
    opt = torch.optim.Adam(lstm.parameters(), lr=1e-3)
  x = torch.randn(w.batch, w.time, w.input, device=target)
  return torch, lstm, opt, x


def build_torch(w: Workload, device: str = 'cpu') -> Bench:
  torch, lstm, opt, x = _torch_setup(w, device)
  # CUDA calls return before the work is done; CPU ones after.
  sync = torch.cuda.synchronize if device == 'gpu' else (lambda: None)
  if w.masked:  # torch's way: a packed sequence in, padded outputs back.
    rnn = torch.nn.utils.rnn
    lengths = torch.as_tensor(sequence_lengths(w))
    unmasked = lstm

    def lstm(x):
      packed, state = unmasked(rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                        enforce_sorted=False))
      return rnn.pad_packed_sequence(packed, batch_first=True, total_length=w.time)[0], state

  def train():
    opt.zero_grad(set_to_none=True)
    out, _ = lstm(x)
    loss = out.pow(2).mean()
    loss.backward()
    opt.step()
    sync()
    return loss

  def infer():
    with torch.inference_mode():
      out = lstm(x)
    sync()
    return out

  return Bench(train, infer)


def torch_cuda_peak(w: Workload) -> dict[str, int]:
  """Peak CUDA memory torch allocates over one training step, above what it held before."""
  torch, lstm, opt, x = _torch_setup(w, 'gpu')
  deltas = []
  for _ in range(3):  # The first step also creates Adam's state.
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    lstm(x)[0].pow(2).mean().backward()
    opt.step()
    torch.cuda.synchronize()
    deltas.append(torch.cuda.max_memory_allocated() - before)
  return dict(first_step_peak_delta_bytes=deltas[0], steady_step_peak_delta_bytes=deltas[-1])


class TorchProcess:
  """torch's model in a child process, timed there, `iters` calls per request.

  In one process torch's OpenMP runtime (the libgomp bundled with torch) and the one
  oneDNN uses under lstm_jax (the system's libgomp) each keep threads spinning after their
  work, and each slows the other: measured B32 T100 training, torch 7.3 -> 24 ms, lstm_jax
  through oneDNN 10.7 -> 25 ms. The rounds still interleave; the parent waits while the child runs.
  """

  def __init__(self, w: Workload, device: str):
    spec = json.dumps(dict(workload=list(w), device=device))
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'benchmarks.lstm_speed', '--_torch-worker', spec],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if self.proc.stdout.readline().strip() != 'ready':
      raise RuntimeError(f'the torch worker did not start (exit code {self.proc.wait()})')

  def measure(self, mode: str, iters: int) -> tuple[float, Optional[float]]:
    self.proc.stdin.write(f'{mode} {iters}\n')
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f'the torch worker died (exit code {self.proc.wait()})')
    seconds, others = json.loads(line)
    return seconds, others

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def torch_worker(spec: str):
  """The child side of `TorchProcess`: reads 'MODE ITERS' lines, answers [seconds, others]."""
  spec = json.loads(spec)
  bench = build_torch(Workload(*spec['workload']), spec['device'])
  print('ready', flush=True)
  for line in sys.stdin:
    mode, iters = line.split()
    print(json.dumps(_timed_with_load(getattr(bench, mode), int(iters))), flush=True)


def build(name: str, w: Workload, device: str, unroll: Optional[int]):
  """A `Bench`, or a `TorchProcess` for torch (which takes the device); the JAX models run
  on JAX's default backend."""
  if name == 'torch':
    return TorchProcess(w, device)
  if name in ('lstm_jax', DATA_PARALLEL, *BACKEND_MODELS):
    return build_lstm_jax(w, unroll=unroll, data_parallel=name == DATA_PARALLEL,
                          backend=BACKEND_MODELS.get(name, 'auto'))
  return build_flax(w, unroll)


def _measure(bench, mode: str, iters: int) -> tuple[float, Optional[float]]:
  """(seconds per iteration, others' CPU share), wherever the model runs."""
  if isinstance(bench, TorchProcess):
    return bench.measure(mode, iters)
  return _timed_with_load(getattr(bench, mode), iters)


# ------------------------------------------------------------------------------ timing


def _timed(fn: Callable[[], Any], iters: int) -> float:
  """Seconds per iteration over `iters` blocked calls."""
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters


def _cpu_ticks() -> Optional[tuple[int, int]]:
  """(busy ticks of the whole machine, ticks of this process), or None off Linux."""
  try:
    with open('/proc/stat') as f:
      fields = [int(v) for v in f.readline().split()[1:]]
    with open('/proc/self/stat') as f:
      own = f.read().rsplit(')', 1)[1].split()
    busy = sum(fields[:8]) - fields[3] - fields[4]  # All but idle and iowait.
    return busy, int(own[11]) + int(own[12])       # utime + stime, all threads.
  except (OSError, ValueError, IndexError):
    return None


def others_cpu_now(window_s: float = 0.5) -> Optional[float]:
  """Share of all cores that other processes used over the next `window_s` seconds."""
  return _timed_with_load(lambda: time.sleep(window_s), 1)[1]


class QuietPolicy:
  """For a shared machine: re-runs timed rounds that other processes disturbed.

  A round (every model and mode once) is 'contended' when, during any of its timings,
  other processes used more than `threshold` of all cores. While the budget lasts, a
  contended round is discarded (kept in the JSON, flagged) and run again after waiting for
  a quiet moment; once the budget is spent, rounds are kept as they come. Time spent
  waiting and in discarded rounds counts against the budget.
  """

  def __init__(self, budget_s: float, threshold: float = 0.2, max_wait_s: float = 20.0):
    self.budget_s, self.threshold, self.max_wait_s = budget_s, threshold, max_wait_s
    self.spent_s, self.discarded = 0.0, 0

  @property
  def active(self) -> bool:
    return self.spent_s < self.budget_s

  def wait(self) -> None:
    """Waits for a quiet moment, at most `max_wait_s` per call (a share of the budget)."""
    waited = 0.0
    while self.active and waited < self.max_wait_s:
      start = time.perf_counter()
      load = others_cpu_now()
      waited += time.perf_counter() - start
      self.spent_s += time.perf_counter() - start
      if load is None or load < self.threshold:
        return

  def contended(self, loads: list[Optional[float]]) -> bool:
    return any(v is not None and v > self.threshold for v in loads)


def _timed_with_load(fn: Callable[[], Any], iters: int) -> tuple[float, Optional[float]]:
  """(seconds per iteration, share of all cores that OTHER processes used meanwhile).

  The machine may be shared: a busy neighbour slows torch's OpenMP threads far more than
  XLA's, so every timing carries this contention figure (0 = quiet, 1 = all cores busy).
  """
  before, start = _cpu_ticks(), time.perf_counter()
  seconds = _timed(fn, iters)
  after, wall = _cpu_ticks(), time.perf_counter() - start
  if before is None or after is None or wall < 0.05:  # Ticks are 10 ms: too coarse below.
    return seconds, None
  others = (after[0] - before[0]) - (after[1] - before[1])
  return seconds, max(0.0, others / (wall * os.sysconf('SC_CLK_TCK') * (os.cpu_count() or 1)))


def time_workload(w: Workload, models: tuple[str, ...], modes: tuple[str, ...],
                  repeats: int, target_s: float, min_iters: int, max_iters: int,
                  log: Callable[[str], None],
                  policy: Optional[QuietPolicy] = None, device: str = 'cpu',
                  unroll: Optional[int] = None, settle_s: float = SETTLE_MS / 1e3
                  ) -> dict[str, Any]:
  """Warm-up (first call = compile for JAX), then `repeats` kept interleaved timed rounds.

  Every timed measurement starts `settle_s` after the previous one (of any model) ended,
  so that no model is timed while the previous one's OpenMP threads still spin.
  """
  benches = {name: build(name, w, device, unroll) for name in models}
  benches = {name: bench for name, bench in benches.items() if bench is not None}
  models = tuple(benches)
  entries = [(name, mode) for name in models for mode in modes]
  out: dict[str, Any] = {name: {} for name in models}
  for name, mode in entries:
    first = _measure(benches[name], mode, 1)[0]
    _measure(benches[name], mode, 1)  # A second warm-up call (allocator, caches).
    estimate = _measure(benches[name], mode, 1)[0]
    iters = int(min(max_iters, max(min_iters, math.ceil(target_s / max(estimate, 1e-6)))))
    out[name][mode] = dict(first_call_s=first, iters=iters, raw_ms=[], others_cpu=[],
                           kept=[])
    log(f'  warm-up {name:8s} {mode:5s}: first call {first:7.3f} s, '
        f'~{estimate * 1e3:8.2f} ms, {iters} iters/repeat')
  kept, r = 0, 0
  while kept < repeats:
    k = r % len(entries)
    order = entries[k:] + entries[:k]  # Rotate so no model always runs first or last.
    if r % 2:
      order = order[::-1]
    r += 1
    if policy is not None:
      policy.wait()
    start, loads = time.perf_counter(), []
    for name, mode in order:
      entry = out[name][mode]
      time.sleep(settle_s)
      seconds, others = _measure(benches[name], mode, entry['iters'])
      entry['raw_ms'].append(1e3 * seconds)
      entry['others_cpu'].append(others)
      loads.append(others)
    keep = not (policy is not None and policy.active and policy.contended(loads))
    for name, mode in entries:
      out[name][mode]['kept'].append(keep)
    if keep:
      kept += 1
    else:
      policy.spent_s += time.perf_counter() - start
      policy.discarded += 1
      log(f'  round {r} discarded: other processes used up to '
          f'{100 * max(v for v in loads if v is not None):.0f}% of the cores')
  for name, mode in entries:
    entry = out[name][mode]
    raw = _kept_ms(entry)
    entry['median_ms'] = statistics.median(raw)
    entry['min_ms'], entry['max_ms'] = min(raw), max(raw)
    entry['compile_s'] = (entry['first_call_s'] - entry['median_ms'] / 1e3
                          if name != 'torch' else None)
    loads = [v for v, keep in zip(entry['others_cpu'], entry['kept'])
             if keep and v is not None]
    entry['others_cpu_mean'] = statistics.mean(loads) if loads else None
  for bench in benches.values():
    if isinstance(bench, TorchProcess):
      bench.close()
  del benches
  gc.collect()
  return out


def _kept_ms(entry: dict[str, Any]) -> list[float]:
  """The entry's times from the kept rounds, in round order."""
  return [v for v, keep in zip(entry['raw_ms'], entry['kept']) if keep]


def speedups(timings: dict[str, Any]) -> dict[str, Any]:
  """torch median / model median (> 1: the JAX model is faster), per mode.

  Also 'paired torch/lstm_jax': the median over rounds of torch's time / lstm_jax's time
  in the same round. Both ran within a second of each other, so a change in the machine's
  speed that lasts longer than that (benchmarks/README.md, "Noise") cancels out of each
  ratio; the ratio of medians does not cancel it when the two medians fall in different
  phases.
  """
  result = {}
  for mode in MODES:
    row = {}
    for name in ('lstm_jax', 'flax', *BACKEND_MODELS, DATA_PARALLEL):
      if mode in timings.get('torch', {}) and mode in timings.get(name, {}):
        row[f'torch/{name}'] = (timings['torch'][mode]['median_ms']
                                / timings[name][mode]['median_ms'])
    if mode in timings.get('torch', {}) and mode in timings.get('lstm_jax', {}):
      pairs = zip(_kept_ms(timings['torch'][mode]), _kept_ms(timings['lstm_jax'][mode]))
      row['paired torch/lstm_jax'] = statistics.median(t / j for t, j in pairs)
    if mode in timings.get('flax', {}) and mode in timings.get('lstm_jax', {}):
      row['flax/lstm_jax'] = (timings['flax'][mode]['median_ms']
                              / timings['lstm_jax'][mode]['median_ms'])
    if row:
      result[mode] = row
  return result


# ------------------------------------------------------------------------------ memory


def _jax_train_step_abstract(model, w: Workload):
  """(jitted train step, abstract args) without running anything."""
  import jax
  import jax.numpy as jnp
  import optax

  x = jax.ShapeDtypeStruct((w.batch, w.time, w.input), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  tx = optax.adam(1e-3)
  opt_state = jax.eval_shape(tx.init, params)

  def outputs(p, x):
    ys = model.apply({'params': p}, x)
    return ys[0] if isinstance(ys, tuple) else ys

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(p, s, x):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.square(outputs(p, x))))(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  return train_step, (params, opt_state, x)


def _model_for(framework: str, w: Workload, remat: bool):
  return flax_model(w) if framework == 'flax' else lstm_jax_model(w, remat)


def xla_memory(framework: str, w: Workload, remat: bool) -> dict[str, int]:
  """XLA's buffer assignment for the compiled training step."""
  step, args = _jax_train_step_abstract(_model_for(framework, w, remat), w)
  stats = step.lower(*args).compile().memory_analysis()
  fields = ('temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
            'alias_size_in_bytes', 'generated_code_size_in_bytes')
  result = {f: int(getattr(stats, f)) for f in fields}
  result['peak_memory_in_bytes'] = int(getattr(stats, 'peak_memory_in_bytes', -1))
  result['total_bytes'] = (result['temp_size_in_bytes'] + result['argument_size_in_bytes']
                           + result['output_size_in_bytes'] - result['alias_size_in_bytes'])
  return result


def _proc_status() -> dict[str, int]:
  values = {}
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(('VmRSS:', 'VmHWM:')):
        key, value = line.split(':')
        values[key] = int(value.split()[0]) * 1024
  return values


def _reset_peak() -> None:
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')


def rss_worker(spec: dict[str, Any]) -> dict[str, Any]:
  """Runs in a fresh subprocess: peak RSS rise over training steps (see module doc)."""
  w = Workload(*spec['workload'])
  framework = spec['framework']
  if framework == 'torch':
    torch, lstm, opt, x = _torch_setup(w)

    def step():
      opt.zero_grad(set_to_none=True)
      out, _ = lstm(x)
      out.pow(2).mean().backward()
      opt.step()
  else:
    import jax
    import optax
    model = _model_for(framework, w, spec['remat'])
    train_step, _ = _jax_train_step_abstract(model, w)
    x = _jax_input(w)
    params = model.init(jax.random.key(0), x)['params']
    opt_state = optax.adam(1e-3).init(params)
    compiled = train_step.lower(params, opt_state, x).compile()
    state = [params, opt_state]

    def step():
      p, s, loss = compiled(state[0], state[1], x)
      state[:] = [p, s]
      jax.block_until_ready(loss)
  gc.collect()
  base = _proc_status()['VmRSS']
  _reset_peak()
  step()
  first_peak = _proc_status()['VmHWM']
  steady = []
  for _ in range(2):
    gc.collect()
    before = _proc_status()['VmRSS']
    _reset_peak()
    step()
    steady.append(_proc_status()['VmHWM'] - before)
  after = _proc_status()['VmRSS']
  result = dict(rss_setup_bytes=base, first_step_peak_delta_bytes=first_peak - base,
                steady_step_peak_delta_bytes=max(steady), rss_retained_bytes=after - base)
  if framework == 'lstm_jax':
    from lstm_jax import onednn
    result['onednn_workspace_bytes'] = onednn.workspace_cache_bytes()
  return result


def measured_rss(framework: str, w: Workload, remat: bool, timeout: float = 300) -> dict:
  if not os.path.exists('/proc/self/clear_refs'):
    return dict(error='needs Linux /proc/self/clear_refs')
  spec = json.dumps(dict(framework=framework, workload=list(w), remat=remat))
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.lstm_speed', '--_rss-worker', spec],
                        capture_output=True, text=True, timeout=timeout,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if proc.returncode != 0:
    return dict(error=proc.stderr.strip()[-500:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_section(lengths: tuple[int, ...], frameworks: tuple[str, ...], measure_rss: bool,
                   log: Callable[[str], None], shape: Optional[dict[str, int]] = None,
                   rss_cases: Optional[set] = None, device: str = 'cpu') -> list:
  """XLA analysis for every JAX case; measured RSS for those in `rss_cases` (None: all);
  on GPU torch's CUDA allocator peak instead of RSS."""
  shape = shape or MEMORY_SHAPE
  rows = []
  for time_steps in lengths:
    w = Workload(shape['batch'], time_steps, shape['input'], shape['hidden'],
                 shape['layers'])
    cases = [('lstm_jax', False), ('lstm_jax', True)] if 'lstm_jax' in frameworks else []
    cases += [('flax', False)] if 'flax' in frameworks else []
    cases += [('torch', False)] if 'torch' in frameworks else []
    for framework, remat in cases:
      row: dict[str, Any] = dict(framework=framework, remat=remat, workload=w._asdict())
      if framework != 'torch':
        row['xla'] = xla_memory(framework, w, remat)
      if device == 'gpu':
        if framework == 'torch':
          row['rss'] = torch_cuda_peak(w)
      elif measure_rss and (rss_cases is None or (framework, remat) in rss_cases):
        row['rss'] = measured_rss(framework, w, remat)
      rows.append(row)
      xla = row.get('xla', {})
      rss = row.get('rss', {})
      log(f'  memory T={time_steps:5d} {framework:8s} remat={remat!s:5s}: '
          f'XLA temp {xla.get("temp_size_in_bytes", 0) / 2**20:8.1f} MiB, '
          f'RSS step peak {rss.get("steady_step_peak_delta_bytes", 0) / 2**20:8.1f} MiB '
          f'{rss.get("error", "")}')
  return rows


# ------------------------------------------------------------------------------ report


def environment() -> dict[str, Any]:
  import flax
  import jax
  import jaxlib
  import optax
  env: dict[str, Any] = dict(
      python=platform.python_version(), platform=platform.platform(),
      jax=jax.__version__, jaxlib=jaxlib.__version__, flax=flax.__version__,
      optax=optax.__version__, numpy=np.__version__, cores=cores(),
      cpu_count=os.cpu_count(), jax_devices=[str(d) for d in jax.devices()],
      malloc_env={k: os.environ[k] for k in MALLOC_VARS if k in os.environ},
      xla_flags=os.environ.get('XLA_FLAGS'),
      jax_num_cpu_devices=jax.config.jax_num_cpu_devices,
      omp_num_threads=os.environ.get('OMP_NUM_THREADS'))
  env['malloc_tuned'] = all(os.environ.get(k) == v for k, v in TUNED_MALLOC.items())
  try:
    with open('/proc/cpuinfo') as f:
      env['cpu_model'] = next((line.split(':', 1)[1].strip() for line in f
                               if line.startswith('model name')), None)
  except OSError:
    env['cpu_model'] = None
  env['jax_default_matmul_precision'] = str(jax.config.jax_default_matmul_precision)
  if have_torch():
    import torch
    env['torch'] = torch.__version__
    env['torch_threads'] = cores()
    env['torch_mkldnn'] = bool(torch.backends.mkldnn.is_available())
    if torch.cuda.is_available():
      env['torch_cuda_device'] = torch.cuda.get_device_name()
      env['torch_cudnn'] = torch.backends.cudnn.version()
      env['torch_cudnn_allow_tf32'] = torch.backends.cudnn.allow_tf32
      env['torch_matmul_allow_tf32'] = torch.backends.cuda.matmul.allow_tf32
  return env


def _ms(entry: Optional[dict]) -> str:
  if not entry:
    return 'n/a'
  return f'{entry["median_ms"]:.2f} ({entry["min_ms"]:.2f}-{entry["max_ms"]:.2f})'


def _ratio(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'{value:.2f}x'


def _others(timings: dict[str, Any], mode: str) -> str:
  loads = [v for entries in timings.values() for v in entries.get(mode, {}).get('others_cpu', [])
           if v is not None]
  return f'{100 * statistics.mean(loads):.0f}%' if loads else 'n/a'


def markdown(results: dict[str, Any]) -> str:
  env = results['environment']
  gpu = results['args'].get('device') == 'gpu'
  hardware = (f'{env.get("torch_cuda_device") or env["jax_devices"][0]} (torch: cuDNN '
              f'{env.get("torch_cudnn")}, TF32 allowed in cuDNN: '
              f'{env.get("torch_cudnn_allow_tf32")}, in matmuls: '
              f'{env.get("torch_matmul_allow_tf32")}; jax default matmul precision: '
              f'{env.get("jax_default_matmul_precision")})' if gpu else
              f'{env.get("cpu_model")}, {env["cores"]} cores')
  lines = [f'# lstm-jax vs torch.nn.LSTM vs flax OptimizedLSTMCell ({"GPU" if gpu else "CPU"})',
           '',
           f'{hardware}; jax {env["jax"]}, '
           f'flax {env["flax"]}, optax {env["optax"]}, torch {env.get("torch", "absent")} '
           f'({env.get("torch_threads", "-")} threads, fused Adam); Python {env["python"]}.',
           f'Malloc: {"tuned (" + ", ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items()) + ")" if env["malloc_tuned"] else "glibc defaults"}'
           f' (malloc env vars set: {env["malloc_env"] or "none"}). XLA_FLAGS: '
           f'{env["xla_flags"] or "none"}. JAX models\' `lax.scan` unroll: '
           + (f'{results["args"]["unroll"]}.' if results['args'].get('unroll') else
              'their defaults (lstm_jax: 8 on GPU, 1 elsewhere; flax: 1).'),
           f'{results["args"]["repeats"]} interleaved repeats, each timing '
           f'{results["args"].get("settle_ms", 0):g} ms after the previous one; ms per step, '
           'median (min-max over repeats). Speed-up = torch median / model median '
           '(> 1: faster than torch); "paired" = median over rounds of torch ms / lstm_jax '
           'ms within the round, which cancels slow changes in the machine\'s speed '
           '(benchmarks/README.md, "Noise"). Load average before/after: '
           f'{results["loadavg_before"]} / {results["loadavg_after"]} (shared machine, '
           'timings are noisy). "others\' CPU" = mean share of all cores used by OTHER '
           'processes while this row was timed (from /proc/stat; 0% = quiet machine): '
           'torch\'s OpenMP threads slow down far more than XLA\'s when it is high.'
           + (' Rounds disturbed by other processes (> {:.0f}% of the cores) were re-run '
              'while a {:.0f} s budget lasted: {} discarded, {:.0f} s spent.'.format(
                  100 * results['quiet_policy']['threshold'],
                  results['quiet_policy']['budget_s'],
                  results['quiet_policy']['discarded_rounds'],
                  results['quiet_policy']['spent_s'])
              if results['quiet_policy']['budget_s'] else ''), '']
  titles = {'train': 'Training step (forward + loss + backward + Adam)',
            'infer': 'Inference (forward only)'}
  data_parallel = DATA_PARALLEL in results['args']['models']
  forced = [name for name in BACKEND_MODELS if name in results['args']['models']]
  dp_name = f'lstm_jax x{len(env["jax_devices"])} devices'
  for mode in results['args']['modes']:
    lines += [f'## {titles[mode]}', '',
              '| workload (B T I H L) | fwd GFLOP | torch ms | lstm_jax ms | flax ms '
              '| torch/lstm_jax | paired | torch/flax | flax/lstm_jax | lstm_jax GFLOP/s '
              + ''.join(f'| backend={BACKEND_MODELS[n]} ms | torch/({BACKEND_MODELS[n]}) '
                        for n in forced)
              + (f'| {dp_name} ms | torch/({dp_name}) ' if data_parallel else '')
              + '| others\' CPU |',
              '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
              + '---:|---:|' * len(forced) + ('---:|---:|' if data_parallel else '')]
    for item in results['workloads']:
      t, s = item['timings'], item['speedup'].get(mode, {})
      w = Workload(**item['workload'])
      flop = w.forward_flop * (3 if mode == 'train' else 1)
      jx = t.get('lstm_jax', {}).get(mode)
      rate = f'{flop / (jx["median_ms"] / 1e3) / 1e9:.0f}' if jx else 'n/a'
      lines.append(f'| {w.name} | {w.forward_flop / 1e9:.2f} | {_ms(t.get("torch", {}).get(mode))} '
                   f'| {_ms(jx)} | {_ms(t.get("flax", {}).get(mode))} '
                   f'| {_ratio(s.get("torch/lstm_jax"))} '
                   f'| {_ratio(s.get("paired torch/lstm_jax"))} | {_ratio(s.get("torch/flax"))} '
                   f'| {_ratio(s.get("flax/lstm_jax"))} | {rate} '
                   + ''.join(f'| {_ms(t.get(n, {}).get(mode))} '
                             f'| {_ratio(s.get(f"torch/{n}"))} ' for n in forced)
                   + (f'| {_ms(t.get(DATA_PARALLEL, {}).get(mode))} '
                      f'| {_ratio(s.get(f"torch/{DATA_PARALLEL}"))} ' if data_parallel else '')
                   + f'| {_others(t, mode)} |')
    lines.append('')
  if data_parallel:
    lines += [f'{dp_name}: the same lstm_jax model with the batch split over '
              f'{len(env["jax_devices"])} XLA devices (on CPU: host devices, one per core, '
              'as `lstm_jax.parallel.set_cpu_devices(0)` makes them), parameters replicated, '
              'gradients all-reduced by XLA; n/a where the batch does not split evenly. '
              'With more than one device lstm_jax\'s backend=\'auto\' runs its XLA scan '
              '(oneDNN needs a single device), in every lstm_jax column of this run.', '']
  lines += ['## JAX compile time (first call minus steady-state median, seconds)', '',
            '| workload | lstm_jax train | lstm_jax infer | flax train | flax infer |',
            '|---|---:|---:|---:|---:|']
  for item in results['workloads']:
    t = item['timings']
    cells = []
    for name in ('lstm_jax', 'flax'):
      for mode in MODES:
        entry = t.get(name, {}).get(mode)
        cells.append(f'{entry["compile_s"]:.2f}' if entry else 'n/a')
    lines.append(f'| {Workload(**item["workload"]).name} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  if results.get('memory'):
    shape = results['memory'][0]['workload']
    lines += [f'## Peak memory of one training step (B={shape["batch"]}, I={shape["input"]}, '
              f'H={shape["hidden"]}, L={shape["layers"]}), MiB', '',
              'XLA = compiled step\'s `memory_analysis()`: temp (all intermediates, incl. '
              'residuals kept for the backward pass) and temp + args + outputs - donated '
              'aliases. ' + ('measured = torch\'s CUDA allocator peak over a step above '
                             'what it held before (first step, third step).' if gpu else
                             'RSS = measured rise of the resident set in a fresh process: '
                             'over the first step (above RSS after setup and AOT compile) '
                             'and over a later (steady) step. oneDNN workspaces = what '
                             'lstm_jax\'s oneDNN backend keeps from step to step outside '
                             'XLA (not in XLA\'s figures; in RSS first step only).'), '',
              f'| T | model | remat | XLA temp | XLA total | {"measured" if gpu else "RSS"} '
              f'first step | {"measured" if gpu else "RSS"} steady step | oneDNN workspaces |',
              '|---:|---|---|---:|---:|---:|---:|---:|']
    mib = lambda v: 'n/a' if v is None else f'{v / 2**20:.1f}'  # noqa: E731
    for row in results['memory']:
      xla, rss = row.get('xla', {}), row.get('rss', {})
      label = 'lstm_jax.LSTM' if row['framework'] == 'lstm_jax' else (
          'flax OptimizedLSTMCell' if row['framework'] == 'flax' else 'torch.nn.LSTM')
      lines.append(f'| {row["workload"]["time"]} | {label} | {"yes" if row["remat"] else "no"} '
                   f'| {mib(xla.get("temp_size_in_bytes"))} | {mib(xla.get("total_bytes"))} '
                   f'| {mib(rss.get("first_step_peak_delta_bytes"))} '
                   f'| {mib(rss.get("steady_step_peak_delta_bytes"))} '
                   f'| {mib(rss.get("onednn_workspace_bytes"))} |')
    lines.append('')
  lines.append(f'Total benchmark wall time: {results["wall_s"]:.0f} s.')
  return '\n'.join(lines) + '\n'


def _loadavg() -> Optional[str]:
  try:
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())
  except OSError:
    return None


# ------------------------------------------------------------------------------ main


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true',
                      help=f'one tiny workload {tuple(QUICK_WORKLOAD)}, 2 repeats, tiny memory check '
                      '(measured RSS for torch only)')
  parser.add_argument('--workloads', nargs='+', type=Workload.parse,
                      help='B,T,I,H,L each (default: the five standard workloads)')
  parser.add_argument('--models', default=','.join(MODELS),
                      help=f'comma-separated subset of {",".join(MODELS)}; add '
                      f'{", ".join(BACKEND_MODELS)} for lstm_jax with that backend forced '
                      f'(default: auto), {DATA_PARALLEL} for lstm_jax with the batch split over '
                      'all local devices (on CPU: one host device per core; lstm_jax then '
                      'runs its XLA scan, oneDNN needs a single device)')
  parser.add_argument('--modes', default=','.join(MODES), help='train,infer or a subset')
  parser.add_argument('--masked', action='store_true',
                      help='variable lengths, uniform in [T/2, T] (seed 0): lstm_jax and flax '
                      'get seq_lengths, torch a packed sequence (pack_padded_sequence); the '
                      'memory section stays unmasked')
  parser.add_argument('--repeats', type=int,
                      help=f'interleaved repeats (default {REPEATS}; quick 2)')
  parser.add_argument('--target-ms', type=float, default=None,
                      help='time per model per repeat used to pick iterations (default '
                           f'{TARGET_MS})')
  parser.add_argument('--min-iters', type=int, default=None,
                      help=f'default {MIN_ITERS} (quick 1)')
  parser.add_argument('--no-memory', action='store_true', help='skip the memory section')
  parser.add_argument('--memory-only', action='store_true', help='skip the timings')
  parser.add_argument('--no-rss', action='store_true',
                      help='memory: only XLA analysis, no measured-RSS subprocesses')
  parser.add_argument('--memory-lengths', type=lambda s: tuple(int(v) for v in s.split(',')),
                      help='comma-separated T for the memory section (default 1000,5000)')
  parser.add_argument('--quiet-budget', type=float, default=None, metavar='SECONDS',
                      help='shared machine: wait for quiet moments and re-run rounds during '
                      'which other processes used > 20%% of the cores, spending at most '
                      'SECONDS on that in the whole run, at most 20 s per wait (default 240; '
                      'quick 0; 0 = off)')
  parser.add_argument('--settle-ms', type=float, default=SETTLE_MS,
                      help='pause before each timing, so that the previous model\'s OpenMP '
                      f'threads have stopped spinning (default {SETTLE_MS:g}; 0 = none)')
  parser.add_argument('--device', choices=('cpu', 'gpu'), default='cpu',
                      help='gpu: JAX on its GPU backend, torch on cuda (cuDNN)')
  parser.add_argument('--unroll', type=int, default=None,
                      help="lax.scan's unroll for both JAX models (default: each library's "
                      'own: lstm_jax 8 on GPU and 1 on CPU, flax 1)')
  parser.add_argument('--out', help='write the JSON results here')
  parser.add_argument('--md', help='write the markdown tables here too')
  parser.add_argument('--_rss-worker', dest='rss_worker', help=argparse.SUPPRESS)
  parser.add_argument('--_torch-worker', dest='torch_worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.torch_worker:
    return torch_worker(args.torch_worker)
  models = tuple(m for m in args.models.split(',') if m)
  if DATA_PARALLEL in models and args.device == 'cpu':
    from lstm_jax import parallel
    try:
      parallel.set_cpu_devices(0)  # One per core; before JAX's first computation.
    except RuntimeError as e:
      parser.error(f'{DATA_PARALLEL}: {e}')
  if args.device == 'cpu' or args.rss_worker:
    import jax
    jax.config.update('jax_platforms', 'cpu')  # Also on a machine that has a GPU.

  if args.rss_worker:
    print(json.dumps(rss_worker(json.loads(args.rss_worker))))
    return {}

  start = time.perf_counter()
  if 'torch' in models and not have_torch():
    print('torch is not installed: skipping the torch columns.', file=sys.stderr)
    models = tuple(m for m in models if m != 'torch')
  unknown = set(models) - set(MODELS) - {DATA_PARALLEL, *BACKEND_MODELS}
  if unknown:
    parser.error(f'unknown models {sorted(unknown)}')
  if DATA_PARALLEL in models:
    import jax
    if jax.local_device_count() < 2:
      parser.error(f'{DATA_PARALLEL} needs >= 2 local devices; JAX has '
                   f'{jax.local_device_count()} (a 1-core CPU, or 1 GPU)')
  modes = tuple(m for m in args.modes.split(',') if m)
  if args.settle_ms < 0:
    parser.error(f'--settle-ms {args.settle_ms:g}: a pause cannot be negative (0 = none)')
  if set(modes) - set(MODES):
    parser.error(f'modes must be among {MODES}')
  workloads = args.workloads or ((QUICK_WORKLOAD,) if args.quick else DEFAULT_WORKLOADS)
  workloads = [w._replace(masked=args.masked) for w in workloads]
  repeats = args.repeats or (2 if args.quick else REPEATS)
  target_s = (args.target_ms or (20 if args.quick else TARGET_MS)) / 1e3
  min_iters = args.min_iters or (1 if args.quick else MIN_ITERS)
  max_iters = 3 if args.quick else 200
  lengths = args.memory_lengths or (QUICK_MEMORY_LENGTHS if args.quick else MEMORY_LENGTHS)
  memory_shape = dict(batch=4, input=8, hidden=16, layers=1) if args.quick else MEMORY_SHAPE

  if args.device == 'gpu':
    import jax
    if jax.default_backend() != 'gpu':
      parser.error(f'--device gpu: JAX runs on {jax.default_backend()!r}; install jax[cuda12] '
                   'or jax[cuda13] (README) and check jax.devices()')
    if 'torch' in models:
      import torch
      if not torch.cuda.is_available():
        parser.error('--device gpu: torch sees no CUDA device; install a CUDA build of torch '
                     'or pass --models lstm_jax,flax')
  log = functools.partial(print, file=sys.stderr, flush=True)
  results: dict[str, Any] = dict(
      environment=environment(), loadavg_before=_loadavg(),
      args=dict(quick=args.quick, device=args.device, unroll=args.unroll, models=list(models),
                modes=list(modes), masked=args.masked, repeats=repeats,
                settle_ms=args.settle_ms,
                target_ms=target_s * 1e3, min_iters=min_iters, max_iters=max_iters,
                loss='mean(outputs ** 2)', optimizer='Adam lr=1e-3 (optax.adam; torch fused)',
                torch_adam_fused=True),
      workloads=[], memory=[])
  log(f'environment: {json.dumps(results["environment"])}')
  policy = QuietPolicy(args.quiet_budget if args.quiet_budget is not None
                       else (0.0 if args.quick or args.device == 'gpu' else 240.0))
  for w in () if args.memory_only else workloads:
    log(f'workload {w.name} ({w.forward_flop / 1e9:.2f} GFLOP forward)')
    timings = time_workload(w, models, modes, repeats, target_s, min_iters, max_iters, log,
                            policy if policy.budget_s > 0 else None, args.device, args.unroll,
                            args.settle_ms / 1e3)
    item = dict(workload=w._asdict(), forward_gflop=w.forward_flop / 1e9, timings=timings,
                speedup=speedups(timings))
    results['workloads'].append(item)
    for mode in modes:
      log(f'  {mode}: ' + ', '.join(f'{n} {timings[n][mode]["median_ms"]:.2f} ms'
                                    for n in models if n in timings)
          + ''.join(f', {k} {v:.2f}x' for k, v in item['speedup'].get(mode, {}).items()))
  if not args.no_memory:
    log('memory')
    results['memory'] = memory_section(lengths, models, not args.no_rss, log, memory_shape,
                                       QUICK_RSS_CASES if args.quick else None, args.device)
  results['loadavg_after'] = _loadavg()
  results['quiet_policy'] = dict(budget_s=policy.budget_s, threshold=policy.threshold,
                                 spent_s=policy.spent_s, discarded_rounds=policy.discarded)
  results['wall_s'] = time.perf_counter() - start
  text = markdown(results)
  print(text, end="")
  if args.md:
    with open(args.md, 'w') as f:
      f.write(text)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == '__main__':
  main()
