"""The chorales task's pure pieces: piano roll, split, training windows (no music21 needed)."""

from __future__ import annotations

import numpy as np

from experiments import chorales_data


def test_notes_to_roll_quarter_and_eighth_steps():
  notes = [(0.0, 1.0, 60), (0.0, 2.0, 64), (1.5, 0.5, 108), (2.0, 1.0, 20), (3.0, 0.0, 60)]
  roll = chorales_data.notes_to_roll(notes, step=1.0)
  assert roll.shape == (3, 88) and roll.dtype == np.uint8
  assert roll[:, 60 - 21].tolist() == [1, 0, 0]  # Grace note (duration 0) dropped.
  assert roll[:, 64 - 21].tolist() == [1, 1, 0]
  assert roll[:, 87].tolist() == [0, 1, 0]  # C8, the top key; off-beat onset floors.
  assert roll.sum() == 4  # MIDI 20 is below A0: dropped.
  eighths = chorales_data.notes_to_roll(notes, step=0.5)
  assert eighths.shape == (6, 88) and eighths[:, 87].tolist() == [0, 0, 0, 1, 0, 0]


def test_split_is_deterministic_and_roughly_70_15_15():
  names = [f'bwv{i}.{j}.mxl' for i in range(1, 200) for j in range(1, 4)]
  splits = [chorales_data.split_of(n) for n in names]
  assert splits == [chorales_data.split_of(n) for n in names]
  share = {s: splits.count(s) / len(splits) for s in chorales_data.SPLITS}
  assert abs(share['train'] - 0.70) < 0.06 and abs(share['test'] - 0.15) < 0.05


def test_training_windows_shift_targets_by_one_frame():
  from experiments.chorales import windows
  rolls = [np.eye(88, dtype=np.uint8)[:10], np.eye(88, dtype=np.uint8)[:3]]
  batch = windows(rolls, np.random.default_rng(0), 8, length=5)
  assert batch['x'].shape == (8, 5, 88) and batch['y'].shape == (8, 5, 88)
  for x, y, n in zip(batch['x'], batch['y'], batch['lengths']):
    assert n in (2, 5)  # The 3-frame chorale gives 2 predicted steps.
    np.testing.assert_array_equal(x[1:n], y[:n - 1])  # y_t = x_{t+1}.
    assert not y[n:].any()
