"""Synthetic sanity task: a running count modulo 3 (parity's three-state cousin).

Input x_t in {-1, +1}, target y_t = (number of +1 among x_1..x_t) mod 3, at every step
of sequences with lengths drawn from [min_length, max_length] and zero-padded to
max_length. The model has to keep a 3-state counter in its memory, so the loss starts at
ln 3 ~ 1.10 and falls to ~0 within the default run (~20 s on CPU). It exercises
everything the harness does: variable lengths, masks, padded eval batches, dropout rngs.

Data are pure functions of (seed, step): batch s is drawn from
`np.random.default_rng([seed, s])`, the eval set from a stream training never uses.

Config fields read here (see configs/synthetic.py):
  model.hidden_size, model.num_layers, model.dropout: the `lstm_jax.LSTM`.
  data.min_length, data.max_length, data.num_eval, data.eval_batch_size (global).
  data.inject_nan_step: fault injection for tests (NaN inputs at that step; -1 = off).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lstm_jax import LSTM
from lstm_jax import parallel
from lstm_jax.train import ConfigError, Task, check_eval_batch_size

NUM_CLASSES = 3
_EVAL_STREAM = 1 << 40  # A step index no training run reaches.


class Tagger(nn.Module):
  """`lstm_jax.LSTM` (submodule 'lstm') and a per-step linear head ('head')."""
  hidden_size: int
  num_layers: int = 1
  dropout: float = 0.0
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array, seq_lengths: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    """x: <float32>[batch, time, 1], seq_lengths: <int32>[batch] -> <float32>[batch, time,
    classes] logits."""
    h, _ = LSTM(hidden_size=self.hidden_size, num_layers=self.num_layers,
                dropout=self.dropout, name='lstm')(x, seq_lengths=seq_lengths,
                                                   deterministic=deterministic)
    return nn.Dense(self.num_classes, name='head')(h)


def make_batch(rng: np.random.Generator, size: int, min_length: int,
               max_length: int) -> dict[str, np.ndarray]:
  """{'x': <float32>[size, max_length, 1], 'y': <int32>[size, max_length],
  'lengths': <int32>[size]}; x and y are zero past each length."""
  lengths = rng.integers(min_length, max_length + 1, size=size).astype(np.int32)
  steps = rng.choice(np.array([-1.0, 1.0], np.float32), size=(size, max_length))
  valid = np.arange(max_length)[None, :] < lengths[:, None]
  steps = np.where(valid, steps, 0.0).astype(np.float32)
  y = np.mod(np.cumsum(steps > 0, axis=1), NUM_CLASSES).astype(np.int32) * valid
  return {'x': steps[..., None], 'y': y.astype(np.int32), 'lengths': lengths}


def _masked(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-token cross-entropy, correctness and validity mask, each <float32>[batch, time]."""
  mask = (jnp.arange(logits.shape[1])[None, :] < batch['lengths'][:, None]).astype(jnp.float32)
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch['y'])
  correct = (jnp.argmax(logits, -1) == batch['y']).astype(jnp.float32)
  return xent * mask, correct * mask, mask


def build_task(config: ml_collections.ConfigDict) -> Task:
  d, m = config.data, config.model
  if not 1 <= d.min_length <= d.max_length:
    raise ConfigError(f'need 1 <= data.min_length <= data.max_length; got {d.min_length} and '
                      f'{d.max_length}.')
  check_eval_batch_size('data.eval_batch_size', d.eval_batch_size)
  model = Tagger(hidden_size=m.hidden_size, num_layers=m.num_layers, dropout=m.dropout)

  def train_batches(start_step: int) -> Iterator[dict[str, np.ndarray]]:
    rows = parallel.process_slice(config.batch_size)
    step = start_step
    while True:
      # The global batch is generated whole, then sliced: a process's rows do not depend
      # on the process count, so losses agree across topologies.
      batch = make_batch(np.random.default_rng([config.seed, step]), config.batch_size,
                         d.min_length, d.max_length)
      if step == d.inject_nan_step:
        batch['x'] = np.full_like(batch['x'], np.nan)
      yield {k: v[rows] for k, v in batch.items()}
      step += 1

  eval_set = make_batch(np.random.default_rng([config.seed, _EVAL_STREAM]), d.num_eval,
                        d.min_length, d.max_length)

  def eval_batches() -> Iterator[dict[str, np.ndarray]]:
    size = d.eval_batch_size
    padded = -(-d.num_eval // size) * size
    weight = (np.arange(padded) < d.num_eval).astype(np.float32)
    full = {k: np.concatenate([v, np.zeros((padded - len(v),) + v.shape[1:], v.dtype)])
            for k, v in eval_set.items()}
    full['lengths'] = np.maximum(full['lengths'], 1)  # Padding rows: length 1, weight 0.
    full['weight'] = weight
    rows = parallel.process_slice(size)
    for start in range(0, padded, size):
      yield {k: v[start:start + size][rows] for k, v in full.items()}

  def loss_fn(params, batch, rng, train: bool):
    logits = model.apply({'params': params}, batch['x'], seq_lengths=batch['lengths'],
                         deterministic=not train, rngs={'dropout': rng})
    xent, correct, mask = _masked(logits, batch)
    tokens = jnp.sum(mask, axis=1)
    # A mean over sequences of per-sequence means (see Task.loss_fn).
    loss = jnp.mean(jnp.sum(xent, axis=1) / tokens)
    return loss, {'accuracy': jnp.mean(jnp.sum(correct, axis=1) / tokens)}

  def eval_fn(params, batch):
    logits = model.apply({'params': params}, batch['x'], seq_lengths=batch['lengths'])
    xent, correct, mask = _masked(logits, batch)
    w = batch['weight']
    tokens = jnp.sum(mask * w[:, None])
    seq_ok = jnp.all((correct == mask), axis=1).astype(jnp.float32)
    return {'loss': (jnp.sum(xent * w[:, None]), tokens),
            'accuracy': (jnp.sum(correct * w[:, None]), tokens),
            'sequence_accuracy': (jnp.sum(seq_ok * w), jnp.sum(w))}

  def report(params, workdir: str) -> dict[str, Any]:
    del workdir
    logits = jax.jit(lambda p, x, l: model.apply({'params': p}, x, seq_lengths=l))(
        params, eval_set['x'], eval_set['lengths'])
    pred = np.asarray(jnp.argmax(logits, -1))
    valid = np.arange(d.max_length)[None, :] < eval_set['lengths'][:, None]
    correct = (pred == eval_set['y']) & valid
    by_position = correct.sum(0) / np.maximum(valid.sum(0), 1)
    return {'num_eval': int(d.num_eval),
            'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params))),
            'accuracy_by_position': [round(float(a), 4) for a in by_position],
            'example': {'x': eval_set['x'][0, :eval_set['lengths'][0], 0].astype(int).tolist(),
                        'target': eval_set['y'][0, :eval_set['lengths'][0]].tolist(),
                        'predicted': pred[0, :eval_set['lengths'][0]].tolist()}}

  init = make_batch(np.random.default_rng([config.seed, 0]), 2, d.min_length, d.max_length)
  return Task(model=model, init_batch={'x': init['x'], 'seq_lengths': init['lengths']},
              train_batches=train_batches, eval_batches=eval_batches, loss_fn=loss_fn,
              eval_fn=eval_fn, report=report)
