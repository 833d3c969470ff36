"""Measuring how gradients flow back through time in any `lstm_jax.RNN`.

The quantity is ||dL/dh_t||, the norm of the gradient of a scalar loss L with respect to
the hidden state h_t, for every step t. It is what vanishes in a tanh RNN and what the
LSTM's constant error carousel keeps alive (Hochreiter 1991; Bengio et al. 1994;
Hochreiter & Schmidhuber 1997).

How it is measured: the model is unrolled with its own step API (`RNN.step`, which the
library guarantees equal to the full unroll) inside `lax.scan`, and a zero perturbation
delta_t, shaped like the state's h, is added to h_t right after step t. delta_t enters
everything downstream of h_t: the next step's recurrence, and the step's output y_t
(the top layer's output is its h_t, plus the input for a residual stack). Hence

    dL/d(delta_t) at delta = 0  ==  dL/dh_t   (the total derivative),

which `jax.grad` gives for all t in one backward pass.

Why the hidden state and not the outputs: a perturbation of the outputs y_t alone is not
fed back into the recurrence, so its gradient only shows the direct path from y_t to the
loss (zero before the last step for a last-step loss), not the path through time.

For stacked models the perturbation of a lower layer's h_t reaches the layers above from
step t + 1 on (it is added to the carried state after the stack has read it at step t);
for the top layer, and for every single-layer model, it is exactly dL/dh_t. The LSTM's
memory cell can be measured the same way with `field='c'`; c_t reaches the loss only
through steps after t (h_t was already read from it), so that is the gradient carried
into the future, zero at the last step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lstm_jax.layers import RNN

Array = jax.Array
LossFn = Callable[[Array, Any], Array]


def _unroll_with_perturbation(model: RNN, variables: Any, x: Array, delta: Array,
                              field: str) -> tuple[Array, Any]:
  """Unrolls `model` step by step, adding delta[t] to the state's `field` after step t.

  Args:
    x: <float32>[batch, time, features].
    delta: <float32>[time, num_layers * directions, batch, size] (zeros in use).

  Returns:
    (outputs <float32>[batch, time, output_size], final_state) as `model.apply` gives.
  """
  state = model.initialize_state(x.shape[0])

  def body(state, inputs):
    x_t, delta_t = inputs
    y_t, state = model.apply(variables, x_t, state, method=RNN.step)
    state = state._replace(**{field: getattr(state, field) + delta_t})
    if field == 'h':  # The emitted output is the top layer's h_t: perturb it too.
      y_t = y_t + delta_t[-1]
    return state, y_t

  final, ys = jax.lax.scan(body, state, (jnp.swapaxes(x, 0, 1), delta))
  return jnp.swapaxes(ys, 0, 1), final


def hidden_state_gradients(model: RNN, variables: Any, x: Array, loss_fn: LossFn,
                           field: str = 'h') -> tuple[Array, Array]:
  """dL/dh_t for every step, by a zero perturbation of the hidden state (module docstring).

  Args:
    model: any forward `lstm_jax.RNN` (LSTM, GRU, SimpleRNN, any variant or stack).
    variables: its variables.
    x: <float32>[batch, time, features].
    loss_fn: `(outputs <float32>[batch, time, output_size], final_state) -> scalar`, the
      task's head and loss with its parameters closed over.
    field: the state field to perturb: 'h' (any cell) or 'c' (LSTM memory cell).

  Returns:
    (loss, grads): the scalar loss and <float32>[time, num_layers * directions, batch,
    size], grads[t] = dL/d(field)_t.
  """
  if model.bidirectional:
    raise ValueError('gradients through time are measured for forward models only.')
  state = model.initialize_state(x.shape[0])
  if not hasattr(state, field) or getattr(state, field) is None:
    raise ValueError(f'the state of cell_type={model.cell_type!r} has no field {field!r}.')
  leaf = getattr(state, field)
  delta = jnp.zeros((x.shape[1],) + leaf.shape, leaf.dtype)

  def loss_of_delta(delta):
    return loss_fn(*_unroll_with_perturbation(model, variables, x, delta, field))

  return jax.value_and_grad(loss_of_delta)(delta)


def gradient_norms(model: RNN, variables: Any, x: Array, loss_fn: LossFn,
                   field: str = 'h', layer: int = -1) -> Array:
  """||dL/dh_t||_2 over t for one layer (default the top): <float32>[time].

  The norm is taken over the batch and units together, i.e. it is the norm of the
  gradient with respect to the whole batch's h_t, for a loss averaged over the batch.
  """
  _, grads = hidden_state_gradients(model, variables, x, loss_fn, field)
  g = grads[:, layer]
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))
