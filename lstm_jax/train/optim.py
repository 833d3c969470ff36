"""optax optimizers and learning-rate schedules from `config.optimizer`."""

from __future__ import annotations

import ml_collections
import optax


def make_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The learning rate as a function of the step (0-based count of finished updates)."""
  peak, warmup = opt.learning_rate, opt.warmup_steps
  if opt.schedule == 'constant':
    if not warmup:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  if opt.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total_steps, end_value=0.0)
  if opt.schedule == 'linear':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup),
         optax.linear_schedule(peak, 0.0, total_steps - warmup)], [warmup])
  raise ValueError(f'unknown schedule {opt.schedule!r}')  # validate() rules this out.


def make_optimizer(opt: ml_collections.ConfigDict,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer (clipping first, so it sees raw gradients) and its schedule."""
  schedule = make_schedule(opt, total_steps)
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=opt.weight_decay))
  else:
    # Coupled (L2) weight decay for the others: what torch's weight_decay does.
    if opt.weight_decay:
      parts.append(optax.add_decayed_weights(opt.weight_decay))
    if opt.name == 'adam':
      parts.append(optax.adam(schedule))
    elif opt.name == 'sgd':
      parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
    elif opt.name == 'rmsprop':
      parts.append(optax.rmsprop(schedule, momentum=opt.momentum or None))
    else:
      raise ValueError(f'unknown optimizer {opt.name!r}')  # validate() rules this out.
  return optax.chain(*parts), schedule
