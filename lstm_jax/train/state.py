"""The training state: all a checkpoint needs to resume exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Parameters, optimizer state and the number of finished steps.

  There is no RNG in the state: step s draws fold_in(PRNGKey(seed), s), so resuming at
  step s reproduces the randomness of an uninterrupted run with nothing stored.
  """
  step: jax.Array  # <int32>[]
  params: Any
  opt_state: optax.OptState

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> 'TrainState':
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)
