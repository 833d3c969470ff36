"""The generic training loop: knows devices, checkpoints and logs, nothing of any task.

    run(config, workdir, build_task)

1. validates the config, starts jax.distributed if asked, checks the batch against the
   devices and the workdir, all before compiling anything;
2. builds the Task, initializes or restores the TrainState;
3. trains: one jit-compiled, state-donating step per batch, with train metrics every
   `log_every` steps, eval + checkpoint every `eval_every`, checkpoints every
   `checkpoint_every`, a NaN/Inf guard, and SIGTERM/preemption handling;
4. final eval, `task.report`, report.json and learning-curve plots.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lstm_jax import parallel
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import config as config_lib
from lstm_jax.train import writers
from lstm_jax.train.errors import ConfigError, NonFiniteLossError, UserError
from lstm_jax.train.optim import make_optimizer
from lstm_jax.train.state import TrainState
from lstm_jax.train.task import Task

BuildTask = Callable[[ml_collections.ConfigDict], Task]


# ------------------------------------------------------------------------ set-up checks


def setup_distributed(config: ml_collections.ConfigDict) -> bool:
  par = config.parallelism
  try:
    parallel.set_cpu_devices(par.cpu_devices)
  except RuntimeError as e:
    raise UserError(f'parallelism.cpu_devices={par.cpu_devices}: {e}') from None
  try:
    return parallel.initialize_distributed(
        par.distributed, coordinator_address=par.coordinator_address,
        num_processes=par.num_processes, process_id=par.process_id,
        coordinator_bind_address=par.coordinator_bind_address,
        heartbeat_timeout_seconds=par.heartbeat_timeout_seconds,
        initialization_timeout=par.initialization_timeout)
  except (RuntimeError, ValueError) as e:
    raise UserError(f'jax.distributed.initialize failed with parallelism.distributed='
                    f'{par.distributed!r}: {str(e).splitlines()[0]}') from None


def check_devices(config: ml_collections.ConfigDict) -> None:
  """The global batch must split evenly over processes and then devices."""
  processes, devices = jax.process_count(), jax.device_count()
  if config.batch_size % devices:
    raise ConfigError(
        f'batch_size ({config.batch_size}) must be divisible by the number of devices '
        f'({devices} = {processes} process(es) x {jax.local_device_count()} local); '
        f'e.g. --config.batch_size={max(1, config.batch_size // devices) * devices}.')


def check_eval_batch_size(field: str, size: int) -> None:
  """An experiment's global eval batch size must be positive and split over the devices."""
  devices = jax.device_count()
  if size < 1 or size % devices:
    raise ConfigError(f'{field} ({size}) must be a positive multiple of the number of '
                      f'devices ({devices}).')


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir (process 0) and checks that it is writable."""
  if not workdir:
    raise UserError('--workdir is required: the directory for checkpoints, logs and reports.')
  workdir = os.path.abspath(workdir)
  if jax.process_index() == 0:
    try:
      os.makedirs(workdir, exist_ok=True)
      probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
      with open(probe, 'w') as f:
        f.write('ok')
      os.remove(probe)
    except OSError as e:
      raise UserError(f'cannot write to workdir {workdir!r}: {e.strerror or e}.') from None
  return workdir


# ------------------------------------------------------------------------- the steps


def _loss_and_grads(task: Task, params, batch, rng):
  (loss, metrics), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
      params, batch, rng, True)
  return loss, dict(metrics), grads


def make_steps(task: Task, tx, schedule, seed: int, mode: str, mesh):
  """(train_step, eval_step) for `parallelism.mode`.

  train_step(state, batch) -> (state, metrics); eval_step(params, batch) -> {name: (sum,
  count)} totals over the global batch. Both take batches from `to_device`.
  """
  root = jax.random.PRNGKey(seed)
  rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)

  def finish(state, loss, metrics, grads):
    metrics = {**metrics, 'loss': loss, 'grad_norm': optax.global_norm(grads),
               'learning_rate': jnp.asarray(schedule(state.step), jnp.float32)}
    return state.apply_gradients(grads, tx), metrics

  if mode == 'mesh':
    def train_step(state, batch):
      loss, metrics, grads = _loss_and_grads(task, state.params, batch,
                                             jax.random.fold_in(root, state.step))
      return finish(state, loss, metrics, grads)

    train = jax.jit(train_step, in_shardings=(rep, data), out_shardings=(rep, rep),
                    donate_argnums=0)
    evaluate = jax.jit(task.eval_fn, in_shardings=(rep, data), out_shardings=rep)
    return train, evaluate

  # pmap: the same math, per device, with explicit means. The loss is a mean over
  # examples and every device holds as many, so the mean of means is the global mean.
  # Each device folds its index into the step's key: its examples get their own dropout
  # masks, not a copy of device 0's.
  axis = parallel.DATA_AXIS

  def ptrain_step(state, batch):
    rng = jax.random.fold_in(jax.random.fold_in(root, state.step), jax.lax.axis_index(axis))
    loss, metrics, grads = _loss_and_grads(task, state.params, batch, rng)
    loss, metrics, grads = jax.lax.pmean((loss, metrics, grads), axis)
    return finish(state, loss, metrics, grads)

  def peval_step(params, batch):
    return jax.lax.psum(task.eval_fn(params, batch), axis)

  train = jax.pmap(ptrain_step, axis_name=axis, in_axes=(None, 0), out_axes=(None, None),
                   donate_argnums=0)
  evaluate = jax.pmap(peval_step, axis_name=axis, in_axes=(None, 0), out_axes=None)
  return train, evaluate


# --------------------------------------------------------------------------- helpers


class _StopFlag:
  """Set by SIGTERM. With jax.distributed, JAX's preemption notifier may see the signal
  instead, so `should_stop` also asks `reached_preemption_sync_point`, and processes agree
  on the flag before acting on it."""

  def __init__(self, distributed: bool):
    self.flag = False
    self.distributed = distributed
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. embedded); rely on JAX's notifier.
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.flag = True

  def should_stop(self, step: int, agree: bool) -> bool:
    if not self.distributed:
      return self.flag
    from jax.experimental import multihost_utils
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        return True
    except Exception:  # No preemption service: only our flag counts.
      pass
    if agree:  # A collective: only at steps every process checks.
      return bool(np.any(multihost_utils.process_allgather(np.int32(self.flag))))
    return False

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _abstract_batch(local: dict, processes: int) -> dict:
  return {k: jax.ShapeDtypeStruct((v.shape[0] * processes,) + v.shape[1:], v.dtype)
          for k, v in local.items()}


def _format_metrics(metrics: dict) -> str:
  return ' '.join(f'{k}={v:.4g}' for k, v in sorted(metrics.items()))


# ------------------------------------------------------------------------------ run


def run(config: ml_collections.ConfigDict, workdir: str, build_task: BuildTask) -> dict:
  """Trains and evaluates `build_task(config)` in `workdir`; see the module docstring.

  Returns the final eval metrics (with 'step'), or {'preempted': True, 'step': s} when a
  SIGTERM/preemption stopped the run after saving. Raises UserError for what the user can
  fix (bad config, unwritable workdir, missing data, non-finite loss).
  """
  config_lib.validate(config)
  distributed = setup_distributed(config)
  check_devices(config)
  workdir = prepare_workdir(workdir)

  task = build_task(config)
  mesh = parallel.make_mesh()
  processes = jax.process_count()
  local_batch = config.batch_size // processes
  mode = config.parallelism.mode
  to_device = parallel.global_batch if mode == 'mesh' else parallel.pmap_batch

  # Check what the task yields against the config before compiling anything.
  first_eval = next(iter(task.eval_batches()), None)
  if first_eval is None:
    raise UserError(f'experiment {config.experiment!r} yielded no eval batches.')
  rows = {k: np.shape(v)[0] for k, v in first_eval.items()}
  if any(r % jax.local_device_count() for r in rows.values()):
    raise ConfigError(f'eval batches have {rows} rows per process, not divisible by the '
                      f'{jax.local_device_count()} local devices; change the eval batch size.')

  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  rep = parallel.replicated(mesh)
  init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2**31 - 1)

  def init(key):
    variables = task.model.init({'params': key, 'dropout': key}, **task.init_batch)
    return TrainState.create(variables['params'], tx)

  try:
    abstract_state = jax.eval_shape(init, init_key)
  except ValueError as e:  # The library's modules validate their options this way.
    raise ConfigError(f'the model rejected the config (check model.*): '
                      f'{str(e).splitlines()[0]}') from None
  eval_shapes = jax.eval_shape(task.eval_fn, abstract_state.params,
                               _abstract_batch(first_eval, processes))
  metric = config.best_metric.removeprefix('eval/')
  if metric not in eval_shapes:
    raise ConfigError(f'best_metric {config.best_metric!r} is not an eval metric of '
                      f'experiment {config.experiment!r}; choose one of '
                      f'{", ".join(repr("eval/" + k) for k in sorted(eval_shapes))}.')

  state = jax.jit(init, out_shardings=rep)(init_key)
  ckpt = checkpoint_lib.Checkpointer(workdir, config.keep_checkpoints, config.best_metric,
                                     config.best_mode)
  state, restored = ckpt.restore_latest(state)
  start = int(parallel.host_copy(state.step)) if restored is not None else 0
  if restored is not None and start != restored:
    raise UserError(f'checkpoint {restored} holds step {start}; the checkpoint directory '
                    'looks tampered with.')
  if start > config.total_steps:
    raise UserError(f'the workdir holds a checkpoint at step {start}, beyond total_steps='
                    f'{config.total_steps}; raise --config.total_steps to continue, or use '
                    'a new --workdir.')

  writer = writers.MetricWriter(workdir, start)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  progress = writers.Progress(config.total_steps, start)
  progress.message(
      f'{config.experiment}: {"resuming from step " + str(start) if start else "starting"}'
      f' on {jax.device_count()} device(s), {processes} process(es), mode={mode}; '
      f'params={sum(x.size for x in jax.tree.leaves(abstract_state.params)):,}; '
      f'workdir={workdir}')

  train_step, eval_step = make_steps(task, tx, schedule, config.seed, mode, mesh)
  stop = _StopFlag(distributed)

  def evaluate(params) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    batches = task.eval_batches()
    for local in batches:
      out = parallel.host_copy(eval_step(params, to_device(local, mesh)))
      for k, (s, c) in out.items():
        acc = totals.setdefault(k, [0.0, 0.0])
        acc[0] += float(s)
        acc[1] += float(c)
    return {k: (s / c if c else float('nan')) for k, (s, c) in totals.items()}

  pending: list[tuple[int, dict]] = []  # Device metrics not yet looked at.
  interval: list[dict[str, float]] = []  # Host metrics since the last train line.
  last_log = (start, time.time())
  last_saved = restored

  def drain() -> None:
    """Fetches pending metrics; stops on the first non-finite one."""
    if not pending:
      return
    fetched = parallel.host_copy([m for _, m in pending])
    for (step, _), m in zip(pending, fetched):
      m = {k: float(v) for k, v in m.items()}
      for name in ['loss'] + sorted(k for k in m if k != 'loss'):
        if name != 'learning_rate' and not math.isfinite(m[name]):
          ckpt.wait()
          good = ckpt.latest_step()
          raise NonFiniteLossError(
              f'non-finite train/{name} ({m[name]}) at step {step}. Last good checkpoint: '
              + (f'step {good} in {ckpt.directory}' if good is not None else 'none')
              + '. Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or check '
              'the data; rerunning resumes from that checkpoint.')
      interval.append(m)
    pending.clear()

  def log_train(step: int) -> None:
    nonlocal last_log
    drain()
    if not interval:
      return
    mean = {k: float(np.mean([m[k] for m in interval])) for k in interval[0]}
    interval.clear()
    now = time.time()
    rate = (step - last_log[0]) / max(now - last_log[1], 1e-9)
    last_log = (step, now)
    writer.write(step, 'train', mean, steps_per_sec=rate)
    progress.update(step, mean['loss'], rate)

  def save(step: int, metrics: Optional[dict] = None) -> None:
    nonlocal last_saved
    drain()  # Never checkpoint parameters that produced a NaN.
    ckpt.save(step, parallel.globalize_replicated(state, mesh), metrics=metrics)
    last_saved = step

  final_eval: Optional[dict] = None
  step = start
  train_iter = task.train_batches(start)
  try:
    while step < config.total_steps:
      if stop.should_stop(step, agree=step % config.log_every == 0):
        log_train(step)
        if last_saved != step:
          save(step)
        ckpt.wait()
        progress.message(f'stopped by SIGTERM/preemption at step {step}; checkpoint saved '
                         f'in {ckpt.directory}. Run the same command to resume.')
        return {'preempted': True, 'step': step}
      local = next(train_iter)
      if step == start:
        rows = {k: np.shape(v)[0] for k, v in local.items()}
        if any(r != local_batch for r in rows.values()):
          raise UserError(f'experiment {config.experiment!r} yielded train batches with '
                          f'{rows} rows; expected batch_size / processes = {local_batch}.')
      state, metrics = train_step(state, to_device(local, mesh))
      step += 1
      if step == start + 1:
        # The first call has returned, so the step is compiled: the ETA, and the first
        # train line's steps/s unless this very step is logged, count from here.
        progress.start_clock(step)
        if step % config.log_every and step != config.total_steps:
          last_log = (step, time.time())
      pending.append((step, metrics))
      if step % config.log_every == 0 or step == config.total_steps:
        log_train(step)
      eval_now = step % config.eval_every == 0 or step == config.total_steps
      if eval_now:
        drain()
        final_eval = evaluate(state.params)
        writer.write(step, 'eval', final_eval)
        progress.message(f'eval at step {step}: {_format_metrics(final_eval)}')
      if eval_now or step % config.checkpoint_every == 0:
        save(step, {f'eval/{k}': v for k, v in final_eval.items()} if eval_now else None)
      writer.flush()

    drain()
    ckpt.wait()
    if stop.flag:  # SIGTERM during the last step: it is saved; the report can wait.
      progress.message(f'stopped by SIGTERM at the final step {step}; checkpoint saved in '
                       f'{ckpt.directory}. Run the same command to write the report.')
      return {'preempted': True, 'step': step}
    # Training is over and saved: from here on SIGTERM ends the process at once instead of
    # waiting for the final evaluation and report (which can take minutes).
    stop.restore()
    if final_eval is None:  # Resumed a finished run: evaluate its final state again.
      final_eval = evaluate(state.params)
    ckpt.wait()
    report = task.report(parallel.host_copy(state.params), workdir) if task.report else {}
    best = ckpt.best_step()
    result = {'step': step, 'eval': final_eval, 'report': report,
              'best_checkpoint': {'step': best, 'metric': config.best_metric,
                                  'value': (ckpt.manager.metrics(best) or {}).get(
                                      config.best_metric) if best is not None else None},
              'latest_checkpoint': ckpt.latest_step()}
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'report.json'), 'w') as f:
        json.dump(result, f, indent=2, default=float)
        f.write('\n')
      writer.flush()
      writers.plot_curves(workdir)
    progress.close()
    progress.message(f'done: step {step}, eval {_format_metrics(final_eval)}; '
                     f'report in {os.path.join(workdir, "report.json")}')
    return {'step': step, **final_eval}
  finally:
    stop.restore()
    writer.close()
    ckpt.close()
