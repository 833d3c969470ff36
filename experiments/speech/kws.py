"""Keyword spotting data synthesized with espeak-ng: 10 keywords + 'unknown' + 'silence'.

Clips are 1 s at 16 kHz: a word spoken by espeak-ng (voice = accent + variant, random
speed and pitch) placed at a random offset, optionally reverberated (exponentially
decaying noise impulse response), plus white or brown noise at a random SNR. 'unknown'
clips speak other words; 'silence' clips are noise only. Train, validation and test clips
use three disjoint sets of espeak variants (held-out speakers, in spirit), so model
selection on validation sees neither training nor test voices. Features: 40 log-mel
bands, 25 ms windows, 10 ms hop (`lstm_jax.features.log_mel`) -> <float32>[101, 40] per
clip.

Generated once, deterministically from `SEED`, inside the TFDS builder (then cached).
Needs the Debian package espeak-ng.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

from lstm_jax import features
from lstm_jax.train import UserError

KEYWORDS = ('yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go')
UNKNOWN_WORDS = ('house', 'tree', 'bird', 'happy', 'seven', 'marvin', 'cat', 'wow', 'bed',
                 'sheila', 'dog', 'learn', 'follow', 'forward', 'visual', 'three')
CLASSES = KEYWORDS + ('unknown', 'silence')
ACCENTS = ('en-gb', 'en-us', 'en-gb-scotland', 'en-gb-x-gbclan', 'en-gb-x-rp',
           'en-gb-x-gbcwmd', 'en-029', 'en-us-nyc')
TRAIN_VARIANTS = ('', 'm1', 'm2', 'm3', 'm4', 'f1', 'f2', 'f4', 'Alex', 'Andy', 'Annie',
                  'david', 'edward', 'linda', 'Mike', 'robert', 'steph', 'zac')
TEST_VARIANTS = ('m5', 'm6', 'f3', 'f5', 'Alicia', 'max', 'paul', 'belinda')
# Validation voices, disjoint from both: model selection sees neither training nor test
# voices. (espeak-ng falls back to the plain voice for an unknown variant name without a
# word; every name here was checked to give different audio from all the others.)
VAL_VARIANTS = ('m7', 'm8', 'Andrea', 'aunty', 'anika', 'john', 'Lee', 'quincy')
SR = 16000
SEED = 0
PER_CLASS = {'train': 80, 'test': 25, 'val': 25}
# Each split draws from its own stream default_rng([SEED, stream]); train and test kept
# their streams when val was added, so their clips are the same as before.
SPLITS = (('train', TRAIN_VARIANTS, 0), ('test', TEST_VARIANTS, 1), ('val', VAL_VARIANTS, 2))


def espeak(word: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
  """<float32>[samples] and the sample rate of `word` spoken by espeak-ng."""
  import soundfile
  wav = subprocess.run(['espeak-ng', '-v', voice, '-s', str(speed), '-p', str(pitch),
                        '--stdout', word], capture_output=True, check=True,
                       timeout=30).stdout
  y, sr = soundfile.read(io.BytesIO(wav), dtype='float32')
  return y, sr


def reverb(rng: np.random.Generator, y: np.ndarray, sr: int) -> np.ndarray:
  """Convolution with a synthetic room response: noise with exp decay, RT60 0.1-0.5 s."""
  rt60 = rng.uniform(0.1, 0.5)
  t = np.arange(int(rt60 * sr)) / sr
  ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
  ir[0] = 1.0  # The direct path.
  out = np.convolve(y, ir / np.sqrt(np.sum(ir ** 2)))[:len(y)]
  return out.astype(np.float32)


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
  """White or brown (integrated, high-passed) noise of unit RMS."""
  w = rng.standard_normal(n)
  if rng.random() < 0.5:
    w = np.cumsum(w)
    w -= np.convolve(w, np.ones(64) / 64, mode='same')  # Remove the drift.
  return (w / (np.sqrt(np.mean(w ** 2)) + 1e-12)).astype(np.float32)


def make_clip(rng: np.random.Generator, label: int, variants: tuple) -> np.ndarray:
  """<float32>[SR] one augmented 1 s clip of class `label`."""
  clip = np.zeros(SR, np.float32)
  if CLASSES[label] != 'silence':
    word = (KEYWORDS[label] if label < len(KEYWORDS)
            else UNKNOWN_WORDS[rng.integers(len(UNKNOWN_WORDS))])
    variant = variants[rng.integers(len(variants))]
    voice = ACCENTS[rng.integers(len(ACCENTS))] + (f'+{variant}' if variant else '')
    y, sr = espeak(word, voice, int(rng.integers(110, 221)), int(rng.integers(20, 81)))
    y = features.resample(y, sr, SR)
    nz = np.flatnonzero(np.abs(y) > 1e-3)  # Trim espeak's leading/trailing silence.
    y = y[nz[0]:nz[-1] + 1][:SR] if len(nz) else y[:SR]
    start = int(rng.integers(0, SR - len(y) + 1))
    clip[start:start + len(y)] = y / (np.max(np.abs(y)) + 1e-9) * rng.uniform(0.3, 0.9)
    if rng.random() < 0.5:
      clip = reverb(rng, clip, SR)
    snr_db = rng.uniform(5.0, 25.0)
    rms = np.sqrt(np.mean(clip[start:start + len(y)] ** 2)) + 1e-9
    clip = clip + noise(rng, SR) * rms / 10 ** (snr_db / 20)
  else:
    clip = noise(rng, SR) * rng.uniform(0.001, 0.1)
  return clip.astype(np.float32)


def read_kws() -> dict:
  """{'train', 'val', 'test'}: (list of <float32>[101, 40] log-mel, labels), each split
  spoken by its own voices (TRAIN_VARIANTS, VAL_VARIANTS, TEST_VARIANTS)."""
  if not shutil.which('espeak-ng'):
    raise UserError('keyword spotting synthesizes its audio with espeak-ng, which is not '
                    'installed: `apt-get install espeak-ng` (Debian/Ubuntu) or '
                    '`brew install espeak-ng` (macOS).')
  out = {}
  for split, variants, stream in SPLITS:
    rng = np.random.default_rng([SEED, stream])
    labels = np.repeat(np.arange(len(CLASSES)), PER_CLASS[split]).astype(np.int32)
    seqs = [features.log_mel(make_clip(rng, int(c), variants), SR, n_mels=40)
            for c in labels]
    out[split] = (seqs, labels)
  return out
