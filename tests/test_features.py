"""lstm_jax.features against direct librosa calls, and SpecAugment's masks."""

import shutil
import subprocess

import numpy as np
import pytest

from lstm_jax import features

librosa = pytest.importorskip('librosa')
SR = 16000


def _tone(sr: int = SR, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
  t = np.arange(int(sr * seconds)) / sr
  return (0.5 * np.sin(2 * np.pi * hz * t) + 0.2 * np.sin(2 * np.pi * 3 * hz * t)
          ).astype(np.float32)


def _espeak_word(word: str = 'seven') -> tuple[np.ndarray, int]:
  """A word spoken by espeak-ng (22,050 Hz WAV on stdout), or skip."""
  if not shutil.which('espeak-ng'):
    pytest.skip('espeak-ng not installed')
  import io
  import soundfile
  wav = subprocess.run(['espeak-ng', '-v', 'en', '--stdout', word], capture_output=True,
                       check=True, timeout=30).stdout
  y, sr = soundfile.read(io.BytesIO(wav), dtype='float32')
  return y, sr


def _check_against_librosa(y: np.ndarray, sr: int):
  n_fft, win, hop = features.frame_params(sr)
  assert (win, hop) == (round(0.025 * sr), round(0.010 * sr)) and n_fft >= win
  mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, win_length=win,
                                       hop_length=hop, n_mels=40, fmin=20.0)
  lm = features.log_mel(y, sr, n_mels=40)
  assert lm.shape == (mel.shape[1], 40) and lm.dtype == np.float32
  np.testing.assert_allclose(lm, np.log(np.maximum(mel, 1e-10)).T, rtol=1e-4, atol=1e-4)
  ref = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, n_fft=n_fft, win_length=win,
                             hop_length=hop, n_mels=40, fmin=20.0)
  m = features.mfcc(y, sr, n_mfcc=13, order=2)
  assert m.shape == (ref.shape[1], 39)
  np.testing.assert_allclose(m[:, :13], ref.T, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(m[:, 13:26], librosa.feature.delta(ref, order=1).T,
                             rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(m[:, 26:], librosa.feature.delta(ref, order=2).T,
                             rtol=1e-4, atol=1e-3)


def test_tone_features_match_librosa():
  _check_against_librosa(_tone(), SR)


def test_resample_matches_librosa_and_keeps_the_pitch():
  y = _tone(sr=22050)
  r = features.resample(y, 22050, SR)
  np.testing.assert_allclose(r, librosa.resample(y, orig_sr=22050, target_sr=SR), atol=1e-6)
  assert abs(len(r) - SR // 2) <= 1
  spectrum = np.abs(np.fft.rfft(r))
  assert abs(np.argmax(spectrum) * SR / len(r) - 440.0) < 3.0


def test_espeak_word_features_match_librosa():
  y, sr = _espeak_word()
  y16 = features.resample(y, sr, SR)
  _check_against_librosa(y16, SR)


def test_cmvn_per_utterance_and_global():
  rng = np.random.default_rng(0)
  x = rng.normal(5.0, 3.0, (50, 4)).astype(np.float32)
  padded = np.concatenate([x, np.zeros((10, 4), np.float32)])
  out = features.cmvn(padded, length=50)
  np.testing.assert_allclose(out[:50].mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(out[:50].std(0), 1.0, atol=1e-3)
  np.testing.assert_array_equal(out[50:], 0.0)  # Padding stays padding.
  utts = [x[:20], x[20:]]
  stats = features.fit_global_cmvn(utts)
  np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-5)
  g = features.apply_cmvn(x, stats)
  np.testing.assert_allclose(g.mean(0), 0.0, atol=1e-5)


def test_spec_augment_masks_only_what_it_should():
  rng = np.random.default_rng(0)
  x = rng.uniform(1.0, 2.0, (40, 20)).astype(np.float32)  # No zeros before masking.
  length = 30
  for seed in range(20):
    out = features.spec_augment(np.random.default_rng(seed), x, length, num_freq_masks=2,
                                max_freq_width=5, num_time_masks=2, max_time_width=8,
                                max_time_ratio=0.2)
    masked = out != x
    assert np.all(out[masked] == 0.0)  # Masked cells hold the fill value...
    assert not masked[length:].any()  # ...padding frames are never touched...
    # ...and every masked cell lies in a fully masked band or span of the valid frames.
    cols = masked[:length].all(0)
    rows = masked[:length].all(1)
    np.testing.assert_array_equal(masked[:length], cols[None, :] | rows[:, None])
    assert cols.sum() <= 10 and rows.sum() <= 2 * int(0.2 * length)
  # A pure function of the generator's state; no masks means no change.
  a = features.spec_augment(np.random.default_rng(3), x, length)
  np.testing.assert_array_equal(a, features.spec_augment(np.random.default_rng(3), x, length))
  none = features.spec_augment(np.random.default_rng(3), x, length, num_freq_masks=0,
                               num_time_masks=0)
  np.testing.assert_array_equal(none, x)


def test_deltas_on_very_short_utterances():
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  out = features.deltas(x, order=2)
  assert out.shape == (4, 9) and np.isfinite(out).all()
  assert features.deltas(x[:2], order=1)[:, 3:].tolist() == [[0.0] * 3] * 2
