"""Speech models: a sequence classifier ((Bi)LSTM, masked pooling, linear head) and a
per-frame tagger for CTC (`FrameTagger`).

    model = SpeechClassifier(num_classes=10, hidden_size=64, bidirectional=True,
                             pooling='attention')
    logits = model.apply(v, x, seq_lengths=lengths)   # x <float32>[batch, time, features]
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from lstm_jax import LSTM
from lstm_jax import pooling as pooling_lib


def _encode(module: nn.Module, x: jax.Array, seq_lengths: Optional[jax.Array],
            deterministic: bool) -> jax.Array:
  """The encoder both models share, built inside `module`'s compact `__call__`: input
  dropout, then the LSTM ('encoder'). <float32>[batch, time, features] ->
  <float32>[batch, time, directions * hidden] (zero past each length)."""
  if module.input_dropout:
    x = nn.Dropout(module.input_dropout, deterministic=deterministic)(x)
  h, _ = LSTM(hidden_size=module.hidden_size, num_layers=module.num_layers,
              bidirectional=module.bidirectional, proj_size=module.proj_size,
              dropout=module.dropout, name='encoder')(x, seq_lengths=seq_lengths,
                                                      deterministic=deterministic)
  return h


class SpeechClassifier(nn.Module):
  """LSTM ('encoder') -> pooling ('pool' for attention) -> dropout -> Dense ('head').

  Attributes:
    num_classes: output classes.
    hidden_size, num_layers, bidirectional, proj_size, dropout: of `lstm_jax.LSTM`
      (proj_size: LSTMP, Sak et al. 2014; None = off; dropout between layers).
    pooling: 'last' | 'mean' | 'max' | 'attention' (see lstm_jax.pooling).
    attention_size: width of the attention scorer.
    input_dropout: dropout on the input features (training only).
    head_dropout: dropout on the pooled vector (training only).
  """
  num_classes: int
  hidden_size: int = 64
  num_layers: int = 1
  bidirectional: bool = True
  proj_size: Optional[int] = None
  dropout: float = 0.0
  pooling: str = 'mean'
  attention_size: int = 64
  input_dropout: float = 0.0
  head_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, seq_lengths: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    """x: <float32>[batch, time, features], seq_lengths: <int32>[batch] ->
    <float32>[batch, num_classes] logits. Steps t >= seq_lengths are never read."""
    h = _encode(self, x, seq_lengths, deterministic)
    if self.pooling == 'attention':
      z, _ = pooling_lib.AttentionPool(self.attention_size, name='pool')(h, seq_lengths)
    else:
      z = pooling_lib.pool(h, seq_lengths, self.pooling, 2 if self.bidirectional else 1)
    if self.head_dropout:
      z = nn.Dropout(self.head_dropout, deterministic=deterministic)(z)
    return nn.Dense(self.num_classes, name='head')(z)


class FrameTagger(nn.Module):
  """Per-frame classifier for CTC: LSTM ('encoder') -> dropout -> Dense ('head') per frame.

  The same encoder as `SpeechClassifier`, without pooling: one logit vector per frame.

  Attributes:
    num_classes: output classes per frame, the CTC blank included.
    hidden_size, num_layers, bidirectional, proj_size, dropout: of `lstm_jax.LSTM`.
    input_dropout: dropout on the input features (training only).
    head_dropout: dropout on the encoder outputs before the head (training only).
  """
  num_classes: int
  hidden_size: int = 64
  num_layers: int = 1
  bidirectional: bool = True
  proj_size: Optional[int] = None
  dropout: float = 0.0
  input_dropout: float = 0.0
  head_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, seq_lengths: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    """x: <float32>[batch, time, features], seq_lengths: <int32>[batch] ->
    <float32>[batch, time, num_classes] logits. Frames t >= seq_lengths are never read;
    their logits are the head's bias (the encoder outputs zeros there)."""
    h = _encode(self, x, seq_lengths, deterministic)
    if self.head_dropout:
      h = nn.Dropout(self.head_dropout, deterministic=deterministic)(h)
    return nn.Dense(self.num_classes, name='head')(h)
