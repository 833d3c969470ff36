"""The contract between the generic training loop and an experiment."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np

Batch = Mapping[str, np.ndarray]
Params = Any
Metrics = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """What an experiment gives the trainer: a model, data, a loss and metrics.

  An experiment module exposes `build_task(config) -> Task`; the trainer
  (`lstm_jax.train.run`) owns everything else: devices, optimizer, jit,
  checkpoints, logging. Batches are dicts of NumPy arrays whose leading axis is the batch.

  Attributes:
    model: the flax Module, kept for introspection; `loss_fn`/`eval_fn` call its `apply`.
    init_batch: keyword arguments of `model.__call__` used to create the parameters,
      `model.init(rngs, **init_batch)` with rngs {'params', 'dropout'}; any batch size,
      e.g. {'x': <float32>[2, time, features], 'seq_lengths': <int32>[2]}.
    train_batches: `start_step -> iterator` of this process's training batches for steps
      start_step, start_step + 1, ...: rows [p * B / P, (p + 1) * B / P) of the global batch
      of size B = config.batch_size for process p of P (`lstm_jax.parallel.process_slice`).
      Batch `s` must be a pure function of (config.seed, s) so that a resumed run sees
      exactly the data of an uninterrupted one. Shapes may vary only within a small fixed
      set (e.g. length buckets; jit compiles once per shape) and step s has the same shapes
      on every process.
    eval_batches: `() -> iterable` of this process's slices of a finite evaluation set.
      Every process yields the same number of batches, with the same shapes batch for
      batch (a few distinct shapes at most, e.g. length buckets); padding rows carry
      zero weight in whatever `eval_fn` uses as weights (e.g. a 'weight' or 'mask' entry).
    loss_fn: `(params, batch, rng, train) -> (loss, metrics)`, pure and jittable. `batch`
      holds global arrays (sharded over devices; in `parallelism.mode='pmap'` it is one
      device's shard). `rng` is the step's key, fold_in(PRNGKey(seed), step), for dropout
      when train is True. `loss` is a float32 scalar that must be a mean over examples
      (so that averaging per-device losses in pmap mode gives the global loss); metrics
      are float32 scalars logged as train/NAME (means over the logging interval).
    eval_fn: `(params, batch) -> {name: (sum, count)}`, pure and jittable: float32 scalar
      sums over the batch and the weights they are normalized by. The trainer adds them up
      over batches, devices and processes and reports eval/NAME = total sum / total count,
      exact whatever the padding or sharding. Include 'loss' to use eval/loss as
      `config.best_metric`.
    report: optional `(params, workdir) -> dict` run once after training on every
      process, with `params` the final parameters as NumPy arrays; the dict (JSON types)
      goes into WORKDIR/report.json next to the final eval metrics. Only write files from
      process 0 (`jax.process_index() == 0`).
  """
  model: nn.Module
  init_batch: Batch
  train_batches: Callable[[int], Iterator[Batch]]
  eval_batches: Callable[[], Iterable[Batch]]
  loss_fn: Callable[[Params, Batch, jax.Array, bool], tuple[jax.Array, Metrics]]
  eval_fn: Callable[[Params, Batch], Mapping[str, tuple[jax.Array, jax.Array]]]
  report: Optional[Callable[[Params, str], dict]] = None
