"""Audio features for sequence models, in NumPy on the host (data pipeline side).

    from lstm_jax import features
    y = features.resample(wave, 22050, 16000)
    fb = features.log_mel(y, 16000)                        # <float32>[time, n_mels]
    m = features.mfcc(y, 16000, n_mfcc=13, deltas=2)      # <float32>[time, 39]
    m = features.cmvn(m)                                   # per utterance
    stats = features.fit_global_cmvn(train_list); m = features.apply_cmvn(m, stats)
    m_aug = features.spec_augment(np.random.default_rng(0), m, length=len(m))

Every feature matrix is time-major, <float32>[time, features] (librosa returns
[features, time]; we transpose once here so models see [batch, time, features]). The
framing defaults are the speech-recognition usual: 25 ms windows, 10 ms hop. librosa is
imported lazily: importing this module costs nothing until a feature is computed.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import numpy as np


def _librosa():
  import librosa  # Lazy: ~1 s of import and numba JIT that most runs never need.
  return librosa


def frame_params(sr: int, win_ms: float = 25.0, hop_ms: float = 10.0) -> tuple[int, int, int]:
  """(n_fft, win_length, hop_length) in samples; n_fft the next power of two >= window."""
  win = int(round(sr * win_ms / 1000.0))
  hop = int(round(sr * hop_ms / 1000.0))
  n_fft = 1 << (win - 1).bit_length()
  return n_fft, win, hop


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """<float>[samples] at orig_sr -> <float32>[samples'] at target_sr (librosa soxr_hq)."""
  y = np.asarray(y, np.float32)
  if orig_sr == target_sr:
    return y
  return _librosa().resample(y, orig_sr=orig_sr, target_sr=target_sr).astype(np.float32)


def mel_power(y: np.ndarray, sr: int, n_mels: int = 40, win_ms: float = 25.0,
              hop_ms: float = 10.0, fmin: float = 20.0, fmax: Optional[float] = None
              ) -> np.ndarray:
  """<float>[samples] -> <float32>[time, n_mels] mel power spectrogram (Hann window,
  centered frames, Slaney mel scale: librosa's defaults)."""
  n_fft, win, hop = frame_params(sr, win_ms, hop_ms)
  s = _librosa().feature.melspectrogram(
      y=np.asarray(y, np.float32), sr=sr, n_fft=n_fft, win_length=win, hop_length=hop,
      n_mels=n_mels, fmin=fmin, fmax=fmax, power=2.0)
  return s.T.astype(np.float32)


def log_mel(y: np.ndarray, sr: int, n_mels: int = 40, floor: float = 1e-10,
            **kwargs) -> np.ndarray:
  """<float>[samples] -> <float32>[time, n_mels]: natural log of the mel power, floored so
  that digital silence gives log(floor), not -inf. kwargs go to `mel_power`."""
  return np.log(np.maximum(mel_power(y, sr, n_mels=n_mels, **kwargs), floor)).astype(
      np.float32)


def deltas(x: np.ndarray, order: int = 2, width: int = 9) -> np.ndarray:
  """<float32>[time, f] -> [time, f * (order + 1)]: x, its delta, delta-delta, ...

  librosa's Savitzky-Golay deltas with edge handling 'interp'; utterances shorter than
  `width` frames use the largest odd width that fits (at least 3), else zeros.
  """
  x = np.asarray(x, np.float32)
  time = x.shape[0]
  w = min(width, time if time % 2 else time - 1)
  out = [x]
  for k in range(1, order + 1):
    if w < 3:
      out.append(np.zeros_like(x))
    else:
      out.append(_librosa().feature.delta(x.T, width=w, order=k, axis=-1).T.astype(np.float32))
  return np.concatenate(out, axis=-1)


def mfcc(y: np.ndarray, sr: int, n_mfcc: int = 13, n_mels: int = 40, order: int = 0,
         **kwargs) -> np.ndarray:
  """<float>[samples] -> <float32>[time, n_mfcc * (order + 1)]: MFCC (DCT-II, ortho, of
  the mel power in dB, as librosa.feature.mfcc) plus `order` orders of deltas.
  kwargs go to `mel_power` (win_ms, hop_ms, fmin, fmax)."""
  librosa = _librosa()
  s_db = librosa.power_to_db(mel_power(y, sr, n_mels=n_mels, **kwargs).T)
  c = librosa.feature.mfcc(S=s_db, n_mfcc=n_mfcc).T.astype(np.float32)
  return deltas(c, order) if order else c


def cmvn(x: np.ndarray, length: Optional[int] = None, variance: bool = True,
         eps: float = 1e-5) -> np.ndarray:
  """Per-utterance cepstral mean (and variance) normalization over the valid frames.

  Args:
    x: <float32>[time, features].
    length: frames that are real (the rest, padding, is left as zeros); None = all.
    variance: also divide by the standard deviation.

  Returns:
    <float32>[time, features].
  """
  x = np.asarray(x, np.float32)
  n = x.shape[0] if length is None else int(length)
  valid = x[:n]
  out = valid - valid.mean(0, keepdims=True)
  if variance:
    out = out / (valid.std(0, keepdims=True) + eps)
  return np.concatenate([out, np.zeros_like(x[n:])]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class CMVNStats:
  """Global statistics: mean and std, each <float32>[features]."""
  mean: np.ndarray
  std: np.ndarray


def fit_global_cmvn(utterances: Iterable[np.ndarray], eps: float = 1e-5) -> CMVNStats:
  """Mean and std over all frames of all utterances (each <float>[time_i, features]):
  fit on the training set only, then `apply_cmvn` to every split."""
  frames = np.concatenate([np.asarray(u, np.float64) for u in utterances], axis=0)
  return CMVNStats(mean=frames.mean(0).astype(np.float32),
                   std=(frames.std(0) + eps).astype(np.float32))


def apply_cmvn(x: np.ndarray, stats: CMVNStats) -> np.ndarray:
  """<float>[..., features] -> <float32>[..., features], (x - mean) / std."""
  return ((np.asarray(x, np.float32) - stats.mean) / stats.std).astype(np.float32)


def spec_augment(rng: np.random.Generator, x: np.ndarray, length: Optional[int] = None,
                 num_freq_masks: int = 2, max_freq_width: int = 8, num_time_masks: int = 2,
                 max_time_width: int = 10, max_time_ratio: float = 0.2,
                 fill: float = 0.0) -> np.ndarray:
  """SpecAugment-style masking (Park et al. 2019, without time warping), for training.

  Frequency masks: `num_freq_masks` bands of width in [0, max_freq_width] across all valid
  frames. Time masks: `num_time_masks` spans of width in [0, min(max_time_width,
  max_time_ratio * length)] inside the valid frames. Masked cells become `fill` (0 is the
  mean after CMVN). Padding frames (t >= length) are never touched.

  Args:
    rng: the generator; the result is a pure function of its state, x and the arguments.
    x: <float32>[time, features].
    length: the number of valid frames; None = all.

  Returns:
    <float32>[time, features], a masked copy.
  """
  x = np.array(x, np.float32, copy=True)
  time, feats = x.shape
  n = time if length is None else int(length)
  for _ in range(num_freq_masks):
    w = int(rng.integers(0, min(max_freq_width, feats) + 1))
    f0 = int(rng.integers(0, feats - w + 1))
    x[:n, f0:f0 + w] = fill
  limit = int(min(max_time_width, max_time_ratio * n))
  for _ in range(num_time_masks):
    w = int(rng.integers(0, limit + 1))
    t0 = int(rng.integers(0, max(n - w, 0) + 1))
    x[t0:t0 + w] = fill
  return x
