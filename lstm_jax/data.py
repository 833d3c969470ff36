"""Small NumPy helpers for feeding variable-length sequences to the models."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pad_sequences(seqs: Sequence[np.ndarray], max_length: int,
                  dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """Cuts and zero-pads sequences to one length, for `LSTM(...)(x, seq_lengths=lengths)`.

  Args:
    seqs: n arrays `[time_i, features]` (all with the same features).
    max_length: the padded length; longer sequences are cut to it.

  Returns:
    (x <dtype>[n, max_length, features] zero past each length, lengths <int32>[n]).
    For example, seqs of lengths [3, 5] and max_length 4 give lengths [3, 4].
  """
  width = seqs[0].shape[1] if len(seqs) else 0
  x = np.zeros((len(seqs), max_length, width), dtype)
  lengths = np.zeros(len(seqs), np.int32)
  for i, s in enumerate(seqs):
    n = min(len(s), max_length)
    x[i, :n] = s[:n]
    lengths[i] = n
  return x, lengths
