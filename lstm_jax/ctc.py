"""Connectionist temporal classification (Graves et al. 2006) on padded batches.

    from lstm_jax import ctc
    loss = ctc.ctc_loss(logits, lengths, labels, label_lengths)       # <float32>[batch]
    tokens, n = ctc.greedy_decode(logits, lengths)                    # best-path decoding
    edits = ctc.edit_distance(labels, label_lengths, tokens, n)       # <int32>[batch]
    ler = ctc.error_rate(edits, label_lengths)                        # sum(edits) / sum(len)

Conventions: `logits` are <float>[batch, time, classes] per-frame scores (unnormalized;
log-softmax is applied inside) whose class `blank_id` is the CTC blank; frames
t >= lengths[b] are padding. Label sequences are right-padded <int>[batch, max_labels]
with their lengths beside them; they never contain the blank. Everything is jittable and
reads only the valid prefixes: whatever sits in the padding (NaN included) changes
nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def padding_mask(lengths: Array, time: int) -> Array:
  """<float32>[batch, time]: 1.0 at padded steps t >= lengths[b], else 0.0 (optax's
  `logit_paddings` / `label_paddings` convention)."""
  return (jnp.arange(time)[None, :] >= jnp.asarray(lengths)[:, None]).astype(jnp.float32)


def ctc_loss(logits: Array, lengths: Array, labels: Array, label_lengths: Array,
             blank_id: int = 0) -> Array:
  """-log p(labels | logits) summed over all CTC alignments, per sequence.

  A thin wrapper over `optax.ctc_loss` that builds its padding masks from lengths and
  zeroes the padded frames first, so that non-finite values there cannot leak into the
  loss or its gradient.

  Args:
    logits: <float32>[batch, time, classes] per-frame scores.
    lengths: <int>[batch] valid frames, in [0, time].
    labels: <int>[batch, max_labels] right-padded targets in [0, classes), never blank_id.
    label_lengths: <int>[batch] valid labels, in [0, max_labels].
    blank_id: the blank class.

  Returns:
    <float32>[batch] negative log-likelihoods (nats). An impossible target (more
    frames needed than available) gives a very large value (optax's log_epsilon), not inf.
  """
  time = logits.shape[1]
  valid = padding_mask(lengths, time) == 0.0
  logits = jnp.where(valid[..., None], logits, 0.0)
  return optax.ctc_loss(logits, padding_mask(lengths, time), labels,
                        padding_mask(label_lengths, labels.shape[1]), blank_id=blank_id)


def collapse(frame_labels: Array, lengths: Array, blank_id: int = 0, pad_id: int = -1
             ) -> tuple[Array, Array]:
  """The CTC collapse B(.): merge repeated labels, then drop blanks, per row.

  Args:
    frame_labels: <int>[batch, time] one label per frame.
    lengths: <int>[batch] valid frames.
    blank_id: the blank class.
    pad_id: written past each output's length.

  Returns:
    (tokens <int32>[batch, time] left-aligned, `pad_id` past each length;
     token_lengths <int32>[batch]). E.g. frames [1, 1, 0, 1, 2, 2] -> [1, 1, 2].
  """
  frame_labels = jnp.asarray(frame_labels, jnp.int32)
  batch, time = frame_labels.shape
  valid = padding_mask(lengths, time) == 0.0
  # A frame starts a new token where it differs from the previous frame (a blank in
  # between therefore separates two equal labels) and is not blank.
  prev = jnp.pad(frame_labels, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
  keep = valid & (frame_labels != blank_id) & (frame_labels != prev)
  position = jnp.cumsum(keep, axis=1) - 1
  # Dropped frames scatter to column `time`, out of bounds, which mode='drop' ignores.
  column = jnp.where(keep, position, time)
  rows = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, time))
  tokens = jnp.full((batch, time), pad_id, jnp.int32).at[rows, column].set(
      frame_labels, mode='drop')
  return tokens, jnp.sum(keep, axis=1).astype(jnp.int32)


def greedy_decode(logits: Array, lengths: Array, blank_id: int = 0, pad_id: int = -1
                  ) -> tuple[Array, Array]:
  """Best-path decoding: the most likely class per frame, collapsed (`collapse`).

  Args:
    logits: <float>[batch, time, classes] (or log-probabilities: argmax is the same).
    lengths: <int>[batch] valid frames.
    blank_id, pad_id: as in `collapse`.

  Returns:
    (tokens <int32>[batch, time], token_lengths <int32>[batch]).
  """
  return collapse(jnp.argmax(logits, axis=-1), lengths, blank_id, pad_id)


def edit_distance(ref: Array, ref_lengths: Array, hyp: Array, hyp_lengths: Array
                  ) -> Array:
  """Levenshtein distance (unit-cost substitutions, insertions, deletions) per row.

  Dynamic programming over the padded arrays: D[i, j] depends only on ref[:i] and
  hyp[:j], so D[ref_length, hyp_length] is exact whatever the padding holds.

  Args:
    ref: <int>[batch, R] right-padded reference sequences.
    ref_lengths: <int>[batch] in [0, R].
    hyp: <int>[batch, H] right-padded hypotheses.
    hyp_lengths: <int>[batch] in [0, H].

  Returns:
    <int32>[batch] edits turning ref[b, :ref_lengths[b]] into hyp[b, :hyp_lengths[b]].
  """
  ref = jnp.asarray(ref, jnp.int32)
  hyp = jnp.asarray(hyp, jnp.int32)
  batch, width = hyp.shape
  first_row = jnp.broadcast_to(jnp.arange(width + 1, dtype=jnp.int32), (batch, width + 1))

  def next_row(row: Array, inputs: tuple[Array, Array]) -> tuple[Array, Array]:
    # row = D[i - 1, :]; returns D[i, :] for the reference symbol r = ref[:, i - 1].
    r, i = inputs
    substitute = row[:, :-1] + (hyp != r[:, None]).astype(jnp.int32)
    delete = row[:, 1:] + 1
    diagonal_or_up = jnp.minimum(substitute, delete)  # [batch, width]
    # Insertions chain along the row: D[i, j] = min_k (base[k] + j - k), a running min.
    base = jnp.concatenate([jnp.full((batch, 1), i, jnp.int32), diagonal_or_up], axis=1)
    offset = jnp.arange(width + 1, dtype=jnp.int32)
    new = jax.lax.cummin(base - offset, axis=1) + offset
    return new, new

  _, rows = jax.lax.scan(next_row, first_row,
                         (ref.T, jnp.arange(1, ref.shape[1] + 1, dtype=jnp.int32)))
  table = jnp.concatenate([first_row[None], rows], axis=0)  # [R + 1, batch, H + 1]
  return table[jnp.asarray(ref_lengths), jnp.arange(batch), jnp.asarray(hyp_lengths)]


def error_rate(edits, ref_lengths) -> float:
  """Corpus-level label error rate: total edits / total reference labels (can exceed 1).

  Args:
    edits: <int>[n] per-sequence edit distances (`edit_distance`).
    ref_lengths: <int>[n] reference lengths.
  """
  total = int(np.sum(ref_lengths))
  return float(np.sum(edits)) / max(total, 1)
