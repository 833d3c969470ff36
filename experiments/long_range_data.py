"""Long-term-dependency tasks as pure NumPy generators (no JAX, no global state).

Every batch is a pure function of `(seed, step)`: the generator is
`np.random.default_rng([seed, step])`, so a run resumed at step s sees exactly the batches
it would have seen without the interruption, and evaluation batches use a step index that
training never reaches (`EVAL_STEP_OFFSET`).

Tasks (T is the lag):

* `adding_batch`: the adding problem in the form of Arjovsky et al. 2016 (two channels:
  U[0, 1] values and a marker channel with one 1 in each half; target the sum of the two
  marked values). Always predicting 1 gives MSE 1/6 ~ 0.167 (`ADDING_BASELINE_MSE`).
* `copy_batch`: the copying-memory task of Arjovsky et al. 2016 (10 symbols from 8
  categories, T - 1 blanks, a delimiter, 10 blanks; reproduce the symbols at the end). The
  memoryless baseline cross-entropy is 10 ln 8 / (T + 20) (`copy_baseline_xent`).
* `temporal_order_batch`: Hochreiter & Schmidhuber's (1997) temporal order problem, 4
  classes (two of X/Y) or 8 classes (three of X/Y), with the relevant positions scaled to
  the sequence length T.
* `DigitsData`: sequential (optionally permuted) 8x8 digits of scikit-learn, 64 steps of
  one pixel, a stratified 80/20 split drawn from the seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Evaluation batches are drawn from steps >= this, which no training run reaches, so the
# test set never overlaps the training stream (both are infinite streams of fresh samples).
EVAL_STEP_OFFSET = 1 << 40

ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(U1 + U2) = 2 / 12: the error of always predicting 1.


def batch_rng(seed: int, step: int) -> np.random.Generator:
  """The generator of batch `step` of the stream `seed`: independent of any other batch."""
  if seed < 0 or step < 0:
    raise ValueError(f'seed and step must be >= 0, got {seed} and {step}.')
  return np.random.default_rng([seed, step])


# ------------------------------------------------------------------------------ adding


def adding_batch(seed: int, step: int, batch_size: int,
                 length: int) -> tuple[np.ndarray, np.ndarray]:
  """The adding problem (Arjovsky, Shah & Bengio 2016, sec. 4.2).

  Channel 0 holds U[0, 1] values; channel 1 is 0 except for exactly two 1s, one at a
  uniform position of the first half [0, T/2) and one in the second half [T/2, T).

  Returns:
    (x <float32>[batch, T, 2], y <float32>[batch]) with y the sum of the marked values.
  """
  if length < 2:
    raise ValueError(f'the adding problem needs length >= 2, got {length}.')
  rng = batch_rng(seed, step)
  values = rng.uniform(0.0, 1.0, (batch_size, length)).astype(np.float32)
  half = length // 2
  first = rng.integers(0, half, batch_size)
  second = rng.integers(half, length, batch_size)
  markers = np.zeros((batch_size, length), np.float32)
  rows = np.arange(batch_size)
  markers[rows, first] = 1.0
  markers[rows, second] = 1.0
  y = values[rows, first] + values[rows, second]
  return np.stack([values, markers], -1), y.astype(np.float32)


# -------------------------------------------------------------------------------- copy

COPY_SYMBOLS = 8     # data symbols are 1..8
COPY_BLANK = 0
COPY_DELIMITER = 9
COPY_VOCAB = 10      # one-hot input size and number of output classes
COPY_LENGTH = 10     # symbols to remember


def copy_batch(seed: int, step: int, batch_size: int,
               lag: int) -> tuple[np.ndarray, np.ndarray]:
  """The copying-memory task (Arjovsky et al. 2016, sec. 4.1), sequences of T + 20 steps.

  Input: 10 symbols from {1..8}, T - 1 blanks (0), the delimiter (9), 10 blanks.
  Target: T + 10 blanks, then the 10 symbols. The delimiter comes at step T + 9, so the
  first symbol must be held for T + 10 steps.

  Returns:
    (x <int32>[batch, T + 20] symbol ids (one-hot them with `COPY_VOCAB`),
     y <int32>[batch, T + 20] target ids).
  """
  if lag < 1:
    raise ValueError(f'the copy task needs lag T >= 1, got {lag}.')
  rng = batch_rng(seed, step)
  total = lag + 2 * COPY_LENGTH
  symbols = rng.integers(1, COPY_SYMBOLS + 1, (batch_size, COPY_LENGTH))
  x = np.full((batch_size, total), COPY_BLANK, np.int32)
  x[:, :COPY_LENGTH] = symbols
  x[:, lag + COPY_LENGTH - 1] = COPY_DELIMITER
  y = np.full((batch_size, total), COPY_BLANK, np.int32)
  y[:, -COPY_LENGTH:] = symbols
  return x, y


def copy_baseline_xent(lag: int) -> float:
  """Mean per-step cross-entropy (nats) of the best memoryless strategy: 10 ln 8 / (T + 20).

  It predicts the blank with certainty for the first T + 10 steps (cost 0) and the uniform
  distribution over the 8 symbols for the last 10 (cost ln 8 each).
  """
  return COPY_LENGTH * math.log(COPY_SYMBOLS) / (lag + 2 * COPY_LENGTH)


def copy_memoryless_log_probs(lag: int) -> np.ndarray:
  """<float32>[T + 20, COPY_VOCAB] log-probabilities of the memoryless strategy above."""
  total = lag + 2 * COPY_LENGTH
  with np.errstate(divide='ignore'):
    blank = np.log(np.eye(COPY_VOCAB)[COPY_BLANK])
    uniform = np.log(np.r_[0.0, np.full(COPY_SYMBOLS, 1.0 / COPY_SYMBOLS), 0.0])
  out = np.tile(blank, (total, 1))
  out[-COPY_LENGTH:] = uniform
  return out.astype(np.float32)


# ----------------------------------------------------------------------- temporal order

# Symbols of Hochreiter & Schmidhuber (1997), Task 6: distractors a-d, start B, end E,
# relevant X and Y.
ORDER_SYMBOLS = ('a', 'b', 'c', 'd', 'B', 'E', 'X', 'Y')
ORDER_VOCAB = len(ORDER_SYMBOLS)
_B, _E, _X = 4, 5, 6
# The windows of the relevant symbols as fractions of the length. For T = 100 these are
# the paper's [10, 20] and [50, 60] (6a) and [10, 20], [33, 43], [66, 76] (6b).
ORDER_WINDOWS = {2: ((0.10, 0.20), (0.50, 0.60)),
                 3: ((0.10, 0.20), (0.33, 0.43), (0.66, 0.76))}


def temporal_order_batch(seed: int, step: int, batch_size: int, length: int,
                         num_relevant: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """The temporal order problem (Hochreiter & Schmidhuber 1997, Tasks 6a and 6b).

  The sequence starts with B and ends with E; the rest are distractors from {a, b, c, d},
  except `num_relevant` (2 or 3) positions, each drawn uniformly from its window of
  `ORDER_WINDOWS` (scaled to `length`), that hold X or Y. The class is the X/Y pattern read
  as binary (X = 0, Y = 1, first symbol most significant): 4 classes for 2, 8 for 3.

  The paper draws the length uniformly from [100, 110]; here every sequence has length
  `length` so that the lag is one number, and the windows scale with it.

  Returns:
    (x <int32>[batch, length] symbol ids (one-hot with `ORDER_VOCAB`), y <int32>[batch]).
  """
  if num_relevant not in ORDER_WINDOWS:
    raise ValueError(f'num_relevant must be 2 or 3, got {num_relevant}.')
  if length < 20:
    raise ValueError(f'the temporal order problem needs length >= 20, got {length}.')
  rng = batch_rng(seed, step)
  x = rng.integers(0, 4, (batch_size, length)).astype(np.int32)
  x[:, 0], x[:, -1] = _B, _E
  bits = rng.integers(0, 2, (batch_size, num_relevant))
  rows = np.arange(batch_size)
  for k, (lo, hi) in enumerate(ORDER_WINDOWS[num_relevant]):
    # Inclusive windows [round(lo T), round(hi T)], as in the paper's [10, 20].
    position = rng.integers(round(lo * length), round(hi * length) + 1, batch_size)
    x[rows, position] = _X + bits[:, k]
  y = (bits * (1 << np.arange(num_relevant - 1, -1, -1))).sum(-1)
  return x, y.astype(np.int32)


# ------------------------------------------------------------------------------ digits


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices (train, test): in each class, round(test_fraction * n_class) go to test.

  Deterministic in `seed`; both index arrays are sorted.
  """
  rng = np.random.default_rng([seed, 0xD161])
  train, test = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    n_test = int(round(test_fraction * len(members)))
    test.append(members[:n_test])
    train.append(members[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclasses.dataclass(frozen=True)
class DigitsData:
  """Sequential 8x8 digits (scikit-learn's `load_digits`): 64 steps of one pixel each.

  Pixels are read row by row (then permuted by a fixed permutation drawn from the seed
  when `permuted`) and scaled from [0, 16] to [0, 1]. The split is stratified, 80/20
  (1438 / 359 images: 20% of each class, rounded) for seed-determined membership.

  Attributes:
    images: <float32>[n, 64] all images in reading order (after any permutation).
    labels: <int32>[n].
    train_index, test_index: disjoint index arrays into images.
    permutation: <int>[64] the pixel order used (the identity when not permuted).
  """
  images: np.ndarray
  labels: np.ndarray
  train_index: np.ndarray
  test_index: np.ndarray
  permutation: np.ndarray

  @classmethod
  def load(cls, seed: int, permuted: bool = False, test_fraction: float = 0.2) -> DigitsData:
    from sklearn.datasets import load_digits  # Only this task needs scikit-learn.
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    permutation = (np.random.default_rng([seed, 0x9E27]).permutation(64) if permuted
                   else np.arange(64))
    train, test = stratified_split(labels, test_fraction, seed)
    return cls(images[:, permutation], labels, train, test, permutation)

  def train_batch(self, seed: int, step: int,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch `step` of the training stream: epochs of a seed-and-epoch permutation.

    Returns:
      (x <float32>[batch, 64, 1], y <int32>[batch]).
    """
    n = len(self.train_index)
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, n)
    picked = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
      order = np.random.default_rng([seed, 0xE90C, int(epoch)]).permutation(n)
      sel = epochs == epoch
      picked[sel] = self.train_index[order[offsets[sel]]]
    return self.images[picked][..., None], self.labels[picked]

  def test_set(self) -> tuple[np.ndarray, np.ndarray]:
    """(x <float32>[n_test, 64, 1], y <int32>[n_test]): the whole held-out split."""
    return self.images[self.test_index][..., None], self.labels[self.test_index]
