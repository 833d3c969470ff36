"""lstm_jax.data.pad_sequences: cut, zero-pad, lengths."""

import numpy as np

from lstm_jax.data import pad_sequences


def test_pad_sequences_cuts_and_pads():
  seqs = [np.full((3, 2), 1.0), np.arange(10.0).reshape(5, 2), np.zeros((0, 2))]
  x, lengths = pad_sequences(seqs, 4)
  assert x.shape == (3, 4, 2) and x.dtype == np.float32
  np.testing.assert_array_equal(lengths, [3, 4, 0])
  np.testing.assert_array_equal(x[0, :3], 1.0)
  np.testing.assert_array_equal(x[0, 3:], 0.0)
  np.testing.assert_array_equal(x[1], np.arange(8.0).reshape(4, 2))  # cut to 4 steps
  np.testing.assert_array_equal(x[2], 0.0)


def test_pad_sequences_keeps_integer_inputs_as_requested_dtype():
  x, lengths = pad_sequences([np.ones((2, 3), np.uint8)], 3, dtype=np.int32)
  assert x.dtype == np.int32
  np.testing.assert_array_equal(x[0], [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
  np.testing.assert_array_equal(lengths, [2])
