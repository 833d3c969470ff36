"""lstm_jax.ctc: the loss against a float64 NumPy CTC forward algorithm, greedy decoding
on hand-made logits, and edit distance on hand cases and against a plain DP."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import ctc


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_ctc_nll(logits: np.ndarray, labels: list, blank: int = 0) -> float:
  """-log p(labels | logits) by the CTC forward (alpha) recursion, float64, log space.

  logits: [T, K] for ONE sequence, already cut to its length. Graves et al. 2006, eq. 6-8,
  on the extended sequence l' = (blank, l_1, blank, l_2, ..., l_U, blank).
  """
  logp = _log_softmax(np.asarray(logits, np.float64))
  ext = [blank]
  for c in labels:
    ext += [c, blank]
  time, states = len(logp), len(ext)
  alpha = np.full(states, -np.inf)
  if time == 0:
    return 0.0 if not labels else np.inf
  alpha[0] = logp[0, ext[0]]
  if states > 1:
    alpha[1] = logp[0, ext[1]]
  for t in range(1, time):
    new = np.full(states, -np.inf)
    for s in range(states):
      terms = [alpha[s]]
      if s >= 1:
        terms.append(alpha[s - 1])
      # Skipping a blank is allowed only between two different labels.
      if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
        terms.append(alpha[s - 2])
      new[s] = np.logaddexp.reduce(terms) + logp[t, ext[s]]
    alpha = new
  final = alpha[-1] if states == 1 else np.logaddexp(alpha[-1], alpha[-2])
  return -final


def _pad(rows: list, width: int, fill) -> np.ndarray:
  out = np.full((len(rows), width), fill, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def test_ctc_loss_matches_numpy_forward_algorithm_with_padding():
  rng = np.random.default_rng(0)
  batch, time, classes, max_labels = 7, 9, 5, 4
  lengths = np.array([9, 6, 4, 1, 7, 5, 8], np.int32)
  labels = [[1, 2, 3], [2, 2], [4, 1, 4, 3], [3], [], [1, 1, 1], [4, 2, 2, 1]]
  label_lengths = np.array([len(l) for l in labels], np.int32)
  # Padding labels hold a valid class (not only zeros): they must still be ignored.
  padded_labels = _pad(labels, max_labels, 3)
  logits = rng.normal(0.0, 2.0, (batch, time, classes)).astype(np.float32)
  loss = np.asarray(ctc.ctc_loss(jnp.asarray(logits), lengths, padded_labels,
                                 label_lengths))
  expected = [reference_ctc_nll(logits[b, :lengths[b]], labels[b]) for b in range(batch)]
  np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-4)
  # Whatever sits in the padded frames (huge values, NaN) changes neither loss nor gradient.
  garbage = logits.copy()
  for b in range(batch):
    garbage[b, lengths[b]:] = rng.normal(0.0, 50.0, (time - lengths[b], classes))
  garbage[1, 8] = np.nan
  loss2 = np.asarray(ctc.ctc_loss(jnp.asarray(garbage), lengths, padded_labels,
                                  label_lengths))
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  grad = jax.grad(lambda x: ctc.ctc_loss(x, lengths, padded_labels, label_lengths).sum())
  g1, g2 = np.asarray(grad(jnp.asarray(logits))), np.asarray(grad(jnp.asarray(garbage)))
  assert np.all(np.isfinite(g2))
  np.testing.assert_allclose(g2, g1, atol=1e-6)
  assert np.all(g1[6, 8:] == 0)  # No gradient reaches padded frames.


def test_ctc_loss_gradient_matches_finite_differences_of_the_reference():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(1, 5, 4)).astype(np.float32)
  labels, lengths = np.array([[2, 2]], np.int32), np.array([5], np.int32)
  grad = np.asarray(jax.grad(lambda x: ctc.ctc_loss(x, lengths, labels,
                                                    np.array([2])).sum())(logits))[0]
  eps, x = 1e-6, logits[0].astype(np.float64)
  for t, k in [(0, 0), (2, 2), (4, 1), (3, 3)]:
    up, down = x.copy(), x.copy()
    up[t, k] += eps
    down[t, k] -= eps
    fd = (reference_ctc_nll(up, [2, 2]) - reference_ctc_nll(down, [2, 2])) / (2 * eps)
    assert grad[t, k] == pytest.approx(fd, abs=1e-4)


def _one_hot_logits(frames: list, classes: int = 4) -> np.ndarray:
  """Logits whose argmax per frame is `frames[t]` (with some distractor mass)."""
  x = np.full((len(frames), classes), -1.0, np.float32)
  x[np.arange(len(frames)), frames] = 2.0
  return x


def test_greedy_decode_collapses_repeats_then_drops_blanks():
  cases = [  # frame argmaxes -> decoded, blank = 0
      ([1, 1, 0, 1, 2, 2, 0], [1, 1, 2]),
      ([0, 0, 0], []),
      ([3, 3, 3, 3], [3]),
      ([2, 0, 2, 0, 2], [2, 2, 2]),
      ([1, 2, 3, 1], [1, 2, 3, 1]),
  ]
  time = 8
  logits = np.zeros((len(cases), time, 4), np.float32)
  lengths = np.array([len(f) for f, _ in cases], np.int32)
  for i, (frames, _) in enumerate(cases):
    logits[i, :len(frames)] = _one_hot_logits(frames)
    logits[i, len(frames):, 3] = 9.0  # Padding votes for class 3: must be ignored.
  tokens, n = jax.jit(ctc.greedy_decode)(logits, lengths)
  tokens, n = np.asarray(tokens), np.asarray(n)
  for i, (_, expected) in enumerate(cases):
    assert n[i] == len(expected)
    assert tokens[i, :n[i]].tolist() == expected
    assert np.all(tokens[i, n[i]:] == -1)
  # Another blank id: with blank = 3, the last case's 3 disappears.
  t3, n3 = ctc.greedy_decode(logits[4:], lengths[4:], blank_id=3)
  assert np.asarray(t3)[0, :int(n3[0])].tolist() == [1, 2, 1]


def _levenshtein(a: list, b: list) -> int:
  d = np.arange(len(b) + 1)
  for i, x in enumerate(a, 1):
    prev, d[0] = d.copy(), i
    for j, y in enumerate(b, 1):
      d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (x != y))
  return int(d[-1])


@pytest.mark.parametrize('ref, hyp, expected', [
    ([1, 2, 3], [1, 2, 3], 0),
    ([1, 2, 3], [1, 3], 1),          # a deletion
    ([1, 2, 3], [1, 2, 4, 3], 1),    # an insertion
    ([1, 2, 3], [1, 5, 3], 1),       # a substitution
    ([], [4, 4], 2),
    ([7, 7, 7], [], 3),
    ([1, 2, 3, 4, 5], [2, 3, 4, 5, 1], 2),
    ([3, 1, 4, 1, 5], [2, 7, 1, 8], 4),
])
def test_edit_distance_hand_cases(ref, hyp, expected):
  r = _pad([ref], 6, 9)  # The padding holds a real symbol: it must be ignored.
  h = _pad([hyp], 7, 1)
  got = ctc.edit_distance(r, np.array([len(ref)]), h, np.array([len(hyp)]))
  assert int(got[0]) == expected == _levenshtein(ref, hyp)


def test_edit_distance_batch_against_plain_dp_and_error_rate():
  rng = np.random.default_rng(2)
  refs = [rng.integers(0, 3, rng.integers(0, 6)).tolist() for _ in range(40)]
  hyps = [rng.integers(0, 3, rng.integers(0, 8)).tolist() for _ in range(40)]
  got = np.asarray(jax.jit(ctc.edit_distance)(
      _pad(refs, 5, 0), np.array([len(r) for r in refs]),
      _pad(hyps, 7, 0), np.array([len(h) for h in hyps])))
  expected = [_levenshtein(r, h) for r, h in zip(refs, hyps)]
  assert got.tolist() == expected
  assert ctc.error_rate(np.array([1, 0, 2]), np.array([3, 4, 3])) == pytest.approx(0.3)
  assert ctc.error_rate(np.array([0]), np.array([0])) == 0.0


def test_decode_of_a_perfect_alignment_recovers_the_labels():
  # Spiky posteriors as a trained CTC model gives: label, blanks, repeated label...
  frames = [0, 2, 0, 0, 2, 2, 0, 1, 0]
  tokens, n = ctc.greedy_decode(_one_hot_logits(frames)[None], np.array([9]))
  decoded = np.asarray(tokens)[0, :int(n[0])]
  assert decoded.tolist() == [k for k, _ in itertools.groupby(frames) if k != 0]
  edits = ctc.edit_distance(np.array([[2, 2, 1]]), np.array([3]), tokens, n)
  assert int(edits[0]) == 0
