"""JSB-Chorales-style piano rolls built from the Bach chorales that music21 ships.

No download: the scores are the MusicXML files of `music21.corpus` (composer 'bach',
the `.mxl` files: 408 in music21 10.5, nearly all four-part chorales, e.g. bwv1.6.mxl).
Each score becomes a binary piano roll <uint8>[time, 88]:

  * time steps of `step` quarter notes (1.0 = quarter notes, as in Boulanger-Lewandowski
    et al.'s JSB Chorales; 0.5 = eighth notes);
  * keys MIDI 21..108 (A0..C8), column = midi - 21; pitches outside are dropped;
  * a note of the flattened score (all parts, chords split into pitches, ties left as
    consecutive steps) sounding over [offset, offset + duration) switches on the steps
    floor(offset / step) .. ceil((offset + duration) / step) - 1; grace notes
    (duration 0) are dropped; repeats are not expanded.

Split by chorale, deterministically and independent of the music21 version's file order:
u = int(sha1(file name)[:8], 16) / 2**32; train if u < 0.70, valid if u < 0.85, else test.

Parsing all scores takes ~half a minute, so the rolls are cached in one .npz under
`cache_dir` (default $LSTM_JAX_DATA or ~/.cache/lstm_jax), keyed by step and music21
version.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Optional

import numpy as np

NUM_KEYS = 88
LOWEST_MIDI = 21
SPLITS = ('train', 'valid', 'test')
SPLIT_FRACTIONS = (0.70, 0.85)  # Cumulative: train below the first, valid below the second.


def split_of(file_name: str) -> str:
  """'train', 'valid' or 'test' for a chorale, from the hash of its file name."""
  u = int(hashlib.sha1(file_name.encode()).hexdigest()[:8], 16) / 2**32
  if u < SPLIT_FRACTIONS[0]:
    return 'train'
  return 'valid' if u < SPLIT_FRACTIONS[1] else 'test'


def notes_to_roll(notes: list[tuple[float, float, int]], step: float) -> np.ndarray:
  """(offset, duration, midi) triples in quarter notes -> <uint8>[time, 88] piano roll."""
  end = max((o + d for o, d, _ in notes), default=0.0)
  roll = np.zeros((max(int(math.ceil(end / step - 1e-9)), 1), NUM_KEYS), np.uint8)
  for offset, duration, midi in notes:
    key = midi - LOWEST_MIDI
    if duration <= 0 or not 0 <= key < NUM_KEYS:
      continue
    start = int(math.floor(offset / step + 1e-9))
    stop = max(int(math.ceil((offset + duration) / step - 1e-9)), start + 1)
    roll[start:stop, key] = 1
  return roll


def score_notes(score) -> list[tuple[float, float, int]]:
  """The (offset, duration, midi) of every pitch of a music21 score, in quarter notes."""
  out = []
  for n in score.flatten().notes:
    offset, duration = float(n.offset), float(n.duration.quarterLength)
    for p in n.pitches:
      out.append((offset, duration, int(p.midi)))
  return out


def chorale_paths() -> list[str]:
  """The .mxl files of music21's bach corpus, sorted by file name."""
  from music21 import corpus
  paths = [str(p) for p in corpus.getComposer('bach') if str(p).endswith('.mxl')]
  return sorted(paths, key=os.path.basename)


def _cache_path(cache_dir: Optional[str], step: float) -> str:
  import music21
  base = cache_dir or os.environ.get('LSTM_JAX_DATA') or os.path.expanduser('~/.cache/lstm_jax')
  return os.path.join(base, f'jsb_music21-{music21.__version__}_step{step:g}.npz')


def load_chorales(step: float = 1.0, cache_dir: Optional[str] = None
                  ) -> dict[str, list[np.ndarray]]:
  """{'train'|'valid'|'test': [<uint8>[time_i, 88], ...]} in file-name order; cached."""
  path = _cache_path(cache_dir, step)
  if not os.path.exists(path):
    from music21 import corpus
    rolls, names = [], []
    for p in chorale_paths():
      rolls.append(notes_to_roll(score_notes(corpus.parse(p)), step))
      names.append(os.path.basename(p))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp.npz'  # Atomic: parallel sweep points may race here.
    np.savez_compressed(tmp, names=np.array(names), lengths=np.array([len(r) for r in rolls]),
                        rolls=np.concatenate(rolls))
    os.replace(tmp, path)
  with np.load(path) as z:
    names, lengths, flat = list(z['names']), z['lengths'], z['rolls']
  pieces = np.split(flat, np.cumsum(lengths)[:-1])
  out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
  for name, roll in zip(names, pieces):
    out[split_of(str(name))].append(roll)
  return out
