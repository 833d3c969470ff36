"""Polyphonic music modelling on JSB-style chorales (Greff et al. 2017's third task).

Data: piano rolls <{0,1}>[time, 88] of the Bach chorales music21 ships (see
experiments/chorales_data.py for the roll, the 70/15/15 split by file-name hash and the
cache). The model reads frame t and predicts frame t + 1 with 88 independent sigmoids;
the loss is the Bernoulli negative log-likelihood summed over the 88 keys and averaged over
predicted time steps ("NLL per time step", in nats, as in Greff et al.'s Table/Figure 3).

Training batches: `batch_size` chorales drawn with replacement from the train split, each a
random window of `data.train_length + 1` frames (shorter chorales are padded and masked),
all a pure function of (seed, step). Evaluation: every chorale of `data.eval_split`
('valid' or 'test'), whole up to `data.eval_length` frames, padded to full batches of weight 0.

Config fields read here (configs/chorales.py):
  model.hidden_size, model.num_layers, model.variant (a key of lstm_jax.cells.GREFF_VARIANTS:
  V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR), model.forget_bias.
  data.step (1.0 quarter / 0.5 eighth notes), data.train_length, data.eval_length,
  data.eval_split, data.eval_batch_size, data.cache_dir ('' = default).
"""

from __future__ import annotations

from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import chorales_data
from lstm_jax import LSTM, parallel
from lstm_jax.data import pad_sequences
from lstm_jax.cells import GREFF_VARIANTS, greff_variant
from lstm_jax.train import ConfigError, Task, check_eval_batch_size

NUM_KEYS = chorales_data.NUM_KEYS


class NextFrame(nn.Module):
  """`lstm_jax.LSTM` ('lstm') and a linear head ('head') giving 88 logits per step."""
  hidden_size: int
  num_layers: int = 1
  forget_bias: float = 1.0
  variant: str = 'V'

  @nn.compact
  def __call__(self, x: jax.Array, seq_lengths: jax.Array | None = None) -> jax.Array:
    h, _ = LSTM(hidden_size=self.hidden_size, num_layers=self.num_layers,
                forget_bias=self.forget_bias, name='lstm',
                **greff_variant(self.variant))(x, seq_lengths=seq_lengths)
    return nn.Dense(NUM_KEYS, name='head')(h)


def windows(rolls: list[np.ndarray], rng: np.random.Generator, size: int,
            length: int) -> dict[str, np.ndarray]:
  """`size` random windows of length + 1 frames: inputs frames [0, L), targets [1, L + 1).

  Returns {'x', 'y': <float32>[size, length, 88], 'lengths': <int32>[size]} where lengths
  counts the valid predicted steps (>= 1: chorales have at least two frames)."""
  picks = rng.integers(0, len(rolls), size=size)
  chunks = []
  for i in picks:
    r = rolls[i]
    start = rng.integers(0, max(len(r) - (length + 1), 0) + 1)
    chunks.append(r[start:start + length + 1])
  full, n = pad_sequences(chunks, length + 1)
  return {'x': full[:, :-1], 'y': full[:, 1:], 'lengths': np.maximum(n - 1, 1).astype(np.int32)}


def _nll(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
  """Per-step Bernoulli NLL summed over keys, and the validity mask; <float32>[batch, time]."""
  mask = (jnp.arange(logits.shape[1])[None, :] < batch['lengths'][:, None]).astype(jnp.float32)
  nll = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, batch['y']), axis=-1)
  return nll * mask, mask


def _frame_accuracy(logits: jax.Array, batch: dict, mask: jax.Array) -> jax.Array:
  """Bay et al.'s frame-level accuracy terms TP / (TP + FP + FN) per step, thresholded at
  0.5; <float32>[batch, time], 1 for steps where both prediction and target are silent."""
  pred = (logits > 0).astype(jnp.float32)
  tp = jnp.sum(pred * batch['y'], -1)
  fp = jnp.sum(pred * (1 - batch['y']), -1)
  fn = jnp.sum((1 - pred) * batch['y'], -1)
  denom = tp + fp + fn
  return jnp.where(denom > 0, tp / jnp.maximum(denom, 1.0), 1.0) * mask


def build_task(config: ml_collections.ConfigDict) -> Task:
  d, m = config.data, config.model
  if m.variant not in GREFF_VARIANTS:
    raise ConfigError(f'model.variant must be one of {", ".join(GREFF_VARIANTS)}; '
                      f'got {m.variant!r}.')
  if d.eval_split not in ('valid', 'test'):
    raise ConfigError(f"data.eval_split must be 'valid' or 'test'; got {d.eval_split!r}.")
  check_eval_batch_size('data.eval_batch_size', d.eval_batch_size)
  try:
    data = chorales_data.load_chorales(d.step, d.cache_dir or None)
  except ImportError as e:
    raise ConfigError(f'the chorales need music21 (pip install music21): {e}') from None
  train_rolls = data['train']
  model = NextFrame(hidden_size=m.hidden_size, num_layers=m.num_layers,
                    forget_bias=m.forget_bias, variant=m.variant)

  def train_batches(start_step: int) -> Iterator[dict[str, np.ndarray]]:
    rows = parallel.process_slice(config.batch_size)
    step = start_step
    while True:
      batch = windows(train_rolls, np.random.default_rng([config.seed, step]),
                      config.batch_size, d.train_length)
      yield {k: v[rows] for k, v in batch.items()}
      step += 1

  # Whole chorales (up to eval_length frames), padded to full batches of weight 0.
  eval_rolls = data[d.eval_split]
  size = d.eval_batch_size
  padded = -(-len(eval_rolls) // size) * size
  # Padding rows: one silent frame pair, length 1, weight 0.
  empty = [np.zeros((2, NUM_KEYS), np.uint8)] * (padded - len(eval_rolls))
  full, n = pad_sequences(list(eval_rolls) + empty, d.eval_length + 1)
  eval_set = {'x': full[:, :-1], 'y': full[:, 1:],
              'lengths': np.maximum(n - 1, 1).astype(np.int32),
              'weight': (np.arange(padded) < len(eval_rolls)).astype(np.float32)}

  def eval_batches() -> Iterator[dict[str, np.ndarray]]:
    rows = parallel.process_slice(size)
    for start in range(0, padded, size):
      yield {k: v[start:start + size][rows] for k, v in eval_set.items()}

  def loss_fn(params, batch, rng, train: bool):
    del rng, train  # No dropout in this task.
    logits = model.apply({'params': params}, batch['x'], seq_lengths=batch['lengths'])
    nll, mask = _nll(logits, batch)
    steps = jnp.sum(mask, axis=1)
    loss = jnp.mean(jnp.sum(nll, axis=1) / steps)  # Mean over sequences (Task.loss_fn).
    return loss, {'nll_per_step': jnp.sum(nll) / jnp.sum(mask)}

  def eval_fn(params, batch):
    logits = model.apply({'params': params}, batch['x'], seq_lengths=batch['lengths'])
    nll, mask = _nll(logits, batch)
    w = batch['weight'][:, None]
    steps = jnp.sum(mask * w)
    # 'loss' and 'nll_per_step' agree here: both are NLL per predicted step over all steps.
    return {'loss': (jnp.sum(nll * w), steps),
            'nll_per_step': (jnp.sum(nll * w), steps),
            'frame_accuracy': (jnp.sum(_frame_accuracy(logits, batch, mask) * w), steps)}

  def report(params, workdir: str) -> dict[str, Any]:
    del workdir
    return {'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params))),
            'variant': m.variant, 'variant_options': greff_variant(m.variant),
            'chorales': {k: len(v) for k, v in data.items()},
            'eval_split': d.eval_split,
            'eval_steps': int(np.sum(eval_set['lengths'] * eval_set['weight']))}

  init = windows(train_rolls, np.random.default_rng([config.seed, 0]), 2, d.train_length)
  return Task(model=model, init_batch={'x': init['x'], 'seq_lengths': init['lengths']},
              train_batches=train_batches, eval_batches=eval_batches, loss_fn=loss_fn,
              eval_fn=eval_fn, report=report)
