"""The long-term-dependency study: adding, copy, temporal order and sequential digits.

The data come from `experiments.long_range_data` (pure NumPy, a function of seed and
step); this module turns them into model inputs, builds the recurrent model with its head,
and defines the loss, the evaluation metrics and when a task counts as solved.

Config fields read here (see `configs/long_range.py`):
  data.task: 'adding' | 'copy' | 'order' (4 classes) | 'order3' (8 classes) | 'digits' |
    'pdigits' (permuted digits).
  data.lag: T, the length of the dependency (the digits: always 64 steps).
  data.eval_batch_size, data.eval_batches: the fixed evaluation set.
  model: exactly the `lstm_jax.RNN` keyword arguments (cell_type, hidden_size, ...).
  batch_size, seed, optimizer (the harness' fields).

`build_task(config)` gives the training harness its `Task`; the study script
(`scripts/long_range_study.py`) uses the same pieces for its runs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import long_range_data as data
from lstm_jax import RNN, analysis

Array = jax.Array
Batch = dict[str, np.ndarray]

TASKS = ('adding', 'copy', 'order', 'order3', 'digits', 'pdigits')


# --------------------------------------------------------------------------- the data


def _one_hot(ids: np.ndarray, depth: int) -> np.ndarray:
  return np.eye(depth, dtype=np.float32)[ids]


@functools.lru_cache(maxsize=4)
def _digits(seed: int, permuted: bool) -> data.DigitsData:
  return data.DigitsData.load(seed, permuted=permuted)


def task_spec(task: str) -> dict[str, Any]:
  """Static facts of a task: output size, readout, loss kind and the solved criterion."""
  specs = {
      'adding': dict(out=1, readout='last', loss='mse', solved=('mse', '<', 0.01)),
      'copy': dict(out=data.COPY_VOCAB, readout='all', loss='xent',
                   solved=('recall_accuracy', '>=', 0.99)),
      'order': dict(out=4, readout='last', loss='xent', solved=('accuracy', '>=', 0.99)),
      'order3': dict(out=8, readout='last', loss='xent', solved=('accuracy', '>=', 0.99)),
      'digits': dict(out=10, readout='last', loss='xent', solved=('accuracy', '>=', 0.90)),
      'pdigits': dict(out=10, readout='last', loss='xent', solved=('accuracy', '>=', 0.90)),
  }
  if task not in specs:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  return specs[task]


def get_batch(task: str, seed: int, step: int, batch_size: int, lag: int) -> Batch:
  """Batch `step` of the task's stream, as model inputs.

  Returns:
    {'x': <float32>[batch, time, features], 'y': targets}: y is <float32>[batch] for the
    adding problem, <int32>[batch, time] for copy, <int32>[batch] for the classifiers.
  """
  if task == 'adding':
    x, y = data.adding_batch(seed, step, batch_size, lag)
  elif task == 'copy':
    ids, y = data.copy_batch(seed, step, batch_size, lag)
    x = _one_hot(ids, data.COPY_VOCAB)
  elif task in ('order', 'order3'):
    ids, y = data.temporal_order_batch(seed, step, batch_size, lag,
                                       num_relevant=2 if task == 'order' else 3)
    x = _one_hot(ids, data.ORDER_VOCAB)
  elif task in ('digits', 'pdigits'):
    x, y = _digits(seed, task == 'pdigits').train_batch(seed, step, batch_size)
  else:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  return {'x': x, 'y': y}


def eval_batches(task: str, seed: int, batch_size: int, num_batches: int,
                 lag: int) -> list[Batch]:
  """The fixed evaluation set: fresh samples from steps training never reaches.

  For the digits it is the held-out 20% split, whatever the batch arguments.
  """
  if task in ('digits', 'pdigits'):
    x, y = _digits(seed, task == 'pdigits').test_set()
    return [{'x': x, 'y': y}]
  return [get_batch(task, seed, data.EVAL_STEP_OFFSET + i, batch_size, lag)
          for i in range(num_batches)]


def baseline(task: str, lag: int) -> Optional[float]:
  """The loss of the best input-independent predictor, when there is a closed form."""
  if task == 'adding':
    return data.ADDING_BASELINE_MSE
  if task == 'copy':
    return data.copy_baseline_xent(lag)
  if task in ('order', 'order3'):
    return float(np.log(task_spec(task)['out']))  # Uniform over equiprobable classes.
  return None


# -------------------------------------------------------------------------- the model


class SequenceModel(nn.Module):
  """An `lstm_jax.RNN` (submodule 'rnn') and a linear head (submodule 'head').

  Attributes:
    rnn_kwargs: keyword arguments of `lstm_jax.RNN`.
    out_features: the head's output size.
    readout: 'last' reads the output of the last step, 'all' every step.
  """
  rnn_kwargs: dict[str, Any]
  out_features: int
  readout: str = 'last'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: <float32>[batch, time, features] -> <float32>[batch, out] or [batch, time, out]."""
    outputs, _ = RNN(**self.rnn_kwargs, name='rnn')(x)
    return head_apply(nn.Dense(self.out_features, name='head'), outputs, self.readout)


def head_apply(head: Callable[[Array], Array], outputs: Array, readout: str) -> Array:
  """Applies the head to the last step's output or to all of them."""
  return head(outputs[:, -1] if readout == 'last' else outputs)


def make_model(config) -> SequenceModel:
  spec = task_spec(config.data.task)
  return SequenceModel(rnn_kwargs=config.model.to_dict(), out_features=spec['out'],
                       readout=spec['readout'])


def init_params(config, model: SequenceModel, key: Array) -> Any:
  x = get_batch(config.data.task, config.seed, 0, 2, config.data.lag)['x']
  return model.init(key, jnp.asarray(x))['params']


# -------------------------------------------------------------------- loss and metrics


def per_example(task: str, predictions: Array, y: Array) -> dict[str, Array]:
  """The loss and the metrics of each example: {name: <float32>[batch]}.

  Args:
    predictions: the model's output: <float32>[batch, 1] (adding), [batch, time, vocab]
      (copy) or [batch, classes].
    y: the batch's targets (see `get_batch`).
  """
  if task == 'adding':
    se = jnp.square(predictions[:, 0] - y)
    return {'loss': se, 'mse': se}
  xent = optax.softmax_cross_entropy_with_integer_labels(predictions, y)
  correct = (jnp.argmax(predictions, -1) == y).astype(jnp.float32)
  if task == 'copy':
    # Arjovsky et al. report the per-step mean over all T + 20 steps: the baseline's unit.
    xent, recall = xent.mean(-1), correct[:, -data.COPY_LENGTH:].mean(-1)
    return {'loss': xent, 'xent': xent, 'accuracy': correct.mean(-1), 'recall_accuracy': recall}
  return {'loss': xent, 'xent': xent, 'accuracy': correct}


def loss_and_metrics(task: str, predictions: Array, y: Array) -> tuple[Array, dict[str, Array]]:
  """The training loss (a mean over examples) and the batch means of the metrics."""
  metrics = {k: jnp.mean(v) for k, v in per_example(task, predictions, y).items()}
  return metrics['loss'], metrics


def is_solved(task: str, metrics: dict[str, float]) -> bool:
  """Whether evaluation metrics (eval/ prefixes allowed) meet the task's criterion."""
  name, op, threshold = task_spec(task)['solved']
  value = float(metrics[name] if name in metrics else metrics[f'eval/{name}'])
  return value < threshold if op == '<' else value >= threshold


def make_optimizer(config) -> optax.GradientTransformation:
  """The harness's optimizer from `config.optimizer` (Adam + global-norm clipping here)."""
  from lstm_jax.train.optim import make_optimizer as harness_optimizer
  return harness_optimizer(config.optimizer, config.total_steps)[0]


# ------------------------------------------------------------------ gradient analysis


def gradient_loss_fn(config, model: SequenceModel, params: Any, y: Array):
  """`(rnn_outputs, final_state) -> loss` for `lstm_jax.analysis`: head + task loss."""
  head = nn.Dense(model.out_features)

  def loss_fn(outputs, _final_state):
    predictions = head_apply(lambda o: head.apply({'params': params['head']}, o),
                             outputs, model.readout)
    return loss_and_metrics(config.data.task, predictions, y)[0]
  return loss_fn


def gradient_norms(config, model: SequenceModel, params: Any, batch: Batch) -> list[float]:
  """||dL/dh_t|| over t (`lstm_jax.analysis`) of the task loss on one batch."""
  rnn = RNN(**model.rnn_kwargs)
  loss_fn = gradient_loss_fn(config, model, params, jnp.asarray(batch['y']))
  norms = analysis.gradient_norms(rnn, {'params': params['rnn']}, jnp.asarray(batch['x']),
                                  loss_fn)
  return [float(v) for v in norms]


# ------------------------------------------------------------------- the harness' Task

_EVAL_PAD = 8  # Eval batches are padded to a multiple of this and of the device count.


def _pad(batch: Batch, multiple: int) -> Batch:
  """Adds zero rows (weight 0) so the batch size is a multiple of `multiple`."""
  n = len(batch['y'])
  extra = -n % multiple
  out = {k: np.concatenate([v, np.zeros((extra,) + v.shape[1:], v.dtype)])
         for k, v in batch.items()}
  out['weight'] = np.r_[np.ones(n, np.float32), np.zeros(extra, np.float32)]
  return out


def _process_rows(batch: Batch) -> Batch:
  """This process's rows of a global batch (`lstm_jax.parallel.process_slice`)."""
  from lstm_jax.parallel import process_slice
  rows = process_slice(len(batch['y']))
  return {k: v[rows] for k, v in batch.items()}


def build_task(config):
  """The `lstm_jax.train.task.Task` of one long-range config."""
  from lstm_jax.train.task import Task
  d = config.data
  task = d.task
  model = make_model(config)

  def train_batches(start_step: int):
    step = start_step
    while True:  # Batch s is a pure function of (seed, s): exact resumption.
      yield _process_rows(get_batch(task, config.seed, step, config.batch_size, d.lag))
      step += 1

  def eval_iter():
    multiple = int(np.lcm(_EVAL_PAD, jax.device_count()))  # Shards evenly on any mesh.
    return [_process_rows(_pad(b, multiple))
            for b in eval_batches(task, config.seed, d.eval_batch_size, d.eval_batches, d.lag)]

  def loss_fn(params, batch, rng, train):
    del rng, train  # No dropout in this study.
    return loss_and_metrics(task, model.apply({'params': params}, batch['x']), batch['y'])

  def eval_fn(params, batch):
    values = per_example(task, model.apply({'params': params}, batch['x']), batch['y'])
    w = batch['weight']
    return {k: (jnp.sum(v * w), jnp.sum(w)) for k, v in values.items()}

  def report(params, workdir):
    del workdir
    probe = eval_batches(task, config.seed, 32, 1, d.lag)[0]
    probe = {k: v[:32] for k, v in probe.items()}
    return {'task': task, 'lag': d.lag, 'baseline': baseline(task, d.lag),
            'solved_criterion': list(task_spec(task)['solved']),
            'grad_norm_final': gradient_norms(config, model, params, probe)}

  init = get_batch(task, config.seed, 0, 2, d.lag)
  return Task(model=model, init_batch={'x': init['x']}, train_batches=train_batches,
              eval_batches=eval_iter, loss_fn=loss_fn, eval_fn=eval_fn, report=report)
