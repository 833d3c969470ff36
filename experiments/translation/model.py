"""Attention encoder-decoder LSTM for translation, and its token losses.

    model = Seq2Seq(vocab_size=8000, embed_size=256, hidden_size=256, attention='general')
    logits, attn = model.apply(v, src, src_len, tgt_in)          # teacher forcing
    state = model.apply(v, src, src_len, method=Seq2Seq.init_decode_state)
    log_probs, state = model.apply(v, tokens, state, method=Seq2Seq.decode_step)

Shapes: `src` <int32>[batch, S] (source pieces, padded), `src_len` <int32>[batch],
`tgt_in` <int32>[batch, T] (BOS + target), `logits` <float32>[batch, T, vocab], `attn`
<float32>[batch, T, S] (zero at source padding, and everywhere for attention='none').

The architecture (Luong, Pham & Manning 2015 unless stated):

* one embedding table shared by source and target (the SentencePiece vocabulary is joint);
* encoder: `lstm_jax.LSTM`, bidirectional, `hidden_size // 2` units per direction so that
  the concatenated outputs (the attention memory) have `hidden_size` features, the size
  of the decoder state: Luong's 'dot' score needs them equal (the OpenNMT convention);
* bridge: h_0 = tanh(W_h [h_fwd; h_bwd] + b), c_0 = tanh(W_c' [c_fwd; c_bwd] + b') from
  the top encoder layer's final states (the reverse direction's final state has read the
  whole sentence backwards);
* decoder: one LSTM cell (`lstm_jax.cells.lstm_step`) stepped with `nn.scan`. At step t,
  with input x_t = E[y_{t-1}] (+ h~_{t-1}: input feeding):
    - 'dot' / 'general': h_t = LSTM(x_t, h_{t-1}); c_t = attend(query=h_t);
    - 'bahdanau' (Bahdanau et al. 2015): c_t = attend(query=h_{t-1}) is fed into the cell,
      h_t = LSTM([x_t; c_t], h_{t-1});
    - 'none': no attention; c_t = [h_fwd; h_bwd], the encoder summary, at every step (as
      in Cho et al. 2014's decoder, which sees the summary at every step). The baseline
      then has the same layers as 'general' less W_a, and only the final encoder states
      reach the decoder.
  The attentional vector h~_t = tanh(W_c [c_t; h_t]) (Luong eq. 5; used for Bahdanau too,
  in place of its maxout deep output) goes through dropout, then to the output layer;
  with input feeding it is also concatenated to the next step's input.
* output: logits = h~ W_o + b, or with tied embeddings logits = (h~ P) E^T + b (P
  <float32>[hidden, embed] only when the sizes differ; Press & Wolf 2017).

Teacher-forced `__call__` and `decode_step` run the same step module, so decoding
reproduces the teacher-forced logits step by step (tested).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import LSTM
from lstm_jax.attention import BahdanauAttention, LuongAttention
from lstm_jax.cells import LSTMState, LSTMStructure, lstm_step

Array = jax.Array
ATTENTIONS = ('dot', 'general', 'bahdanau', 'none')
# The entries of the decoding state that hold the encoder output (fixed per sentence).
ENCODER_KEYS = ('mask', 'memory', 'keys', 'summary')


def _lstm_bias_init(key, shape, dtype=jnp.float32):
  """Zero bias but 1.0 on the forget block (PyTorch gate order i, f, g, o), as LSTMCell."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


class DecoderStep(nn.Module):
  """One decoder step: the LSTM cell, the attention and the attentional vector.

  Attributes:
    hidden_size: H, the decoder state and memory size.
    embed_size: E, the target embedding size.
    attention: one of ATTENTIONS.
    input_feeding: concatenate h~_{t-1} to the step's input.
    dropout: rate on h~_t (training only).
    attention_units: width of Bahdanau's tanh layer.
  """
  hidden_size: int
  embed_size: int
  attention: str = 'general'
  input_feeding: bool = True
  dropout: float = 0.0
  attention_units: int = 256

  def setup(self):
    h = self.hidden_size
    features = (self.embed_size + (h if self.input_feeding else 0)
                + (h if self.attention == 'bahdanau' else 0))
    # The parameters of `lstm_jax.cells.lstm_step` for the plain LSTM, initialised as
    # `LSTMCell` does (lecun-normal input, orthogonal recurrent kernel, forget bias 1).
    self.cell = {
        'input_kernel': self.param('input_kernel', nn.initializers.lecun_normal(),
                                   (features, 4 * h)),
        'recurrent_kernel': self.param('recurrent_kernel', nn.initializers.orthogonal(),
                                       (h, 4 * h)),
        'bias': self.param('bias', _lstm_bias_init, (4 * h,)),
    }
    if self.attention in ('dot', 'general'):
      self.attend = LuongAttention(kind=self.attention)
    elif self.attention == 'bahdanau':
      self.attend = BahdanauAttention(units=self.attention_units)
    self.combine = nn.Dense(h, name='W_c')
    self.drop = nn.Dropout(self.dropout)

  def precompute_keys(self, memory: Array) -> Array:
    """Bahdanau's U_a memory, <float32>[batch, S, units]: once per source sentence."""
    return self.attend.precompute_keys(memory)

  def __call__(self, carry: tuple[Array, Array, Array], emb: Array, enc: dict[str, Array],
               deterministic: bool = True) -> tuple[tuple[Array, Array, Array],
                                                    tuple[Array, Array]]:
    """One step.

    Args:
      carry: (h, c, feed), each <float32>[n, H]: the LSTM state and h~_{t-1}.
      emb: <float32>[n, E], the embedding of the previous target token.
      enc: the encoder's output (`Seq2Seq.encode`): 'mask' <bool>[n, S] and, by attention
        type, 'memory' <float32>[n, S, H], 'keys' <float32>[n, S, units] or 'summary'
        <float32>[n, H].
      deterministic: False turns dropout on (needs a 'dropout' rng).

    Returns:
      ((h_t, c_t, h~_t), (h~_t <float32>[n, H], weights <float32>[n, S])).
    """
    h, c, feed = carry
    x = jnp.concatenate([emb, feed], -1) if self.input_feeding else emb
    if self.attention == 'bahdanau':  # Query: the previous state; context into the cell.
      context, weights = self.attend(h, enc['memory'], enc['mask'],
                                     projected_keys=enc['keys'])
      x = jnp.concatenate([x, context], -1)
    state, h = lstm_step(self.cell, LSTMState(h, c), x, LSTMStructure(self.hidden_size))
    if self.attention in ('dot', 'general'):  # Query: the new state.
      context, weights = self.attend(h, enc['memory'], enc['mask'])
    elif self.attention == 'none':
      context, weights = enc['summary'], jnp.zeros(enc['mask'].shape, jnp.float32)
    h_tilde = jnp.tanh(self.combine(jnp.concatenate([context, h], -1)))
    h_tilde = self.drop(h_tilde, deterministic=deterministic)
    return (h, state.c, h_tilde), (h_tilde, weights)


class Seq2Seq(nn.Module):
  """Bidirectional-LSTM encoder, attention LSTM decoder; see the module docstring.

  Attributes:
    vocab_size: V, the joint vocabulary.
    embed_size: E.
    hidden_size: H, the decoder size and the encoder's concatenated size (even).
    encoder_layers: stacked bidirectional encoder layers.
    attention: 'dot' | 'general' | 'bahdanau' | 'none'.
    input_feeding: feed h~_{t-1} to the decoder input (Luong et al. 2015, section 3.3).
    dropout: rate on the embeddings, between encoder layers and on h~ (training only).
    tied_embeddings: output layer = the embedding table transposed.
    attention_units: Bahdanau's tanh width; 0 = hidden_size.
  """
  vocab_size: int
  embed_size: int = 256
  hidden_size: int = 256
  encoder_layers: int = 1
  attention: str = 'general'
  input_feeding: bool = True
  dropout: float = 0.0
  tied_embeddings: bool = False
  attention_units: int = 0

  def setup(self):
    if self.attention not in ATTENTIONS:
      raise ValueError(f'attention must be one of {ATTENTIONS}, got {self.attention!r}.')
    if self.hidden_size % 2:
      raise ValueError(f'hidden_size must be even (two encoder directions of '
                       f'hidden_size // 2), got {self.hidden_size}.')
    self.embed = nn.Embed(self.vocab_size, self.embed_size,
                          embedding_init=nn.initializers.normal(self.embed_size ** -0.5))
    self.encoder = LSTM(hidden_size=self.hidden_size // 2, num_layers=self.encoder_layers,
                        bidirectional=True, dropout=self.dropout)
    self.bridge_h = nn.Dense(self.hidden_size)
    self.bridge_c = nn.Dense(self.hidden_size)
    self.decoder = DecoderStep(
        hidden_size=self.hidden_size, embed_size=self.embed_size, attention=self.attention,
        input_feeding=self.input_feeding, dropout=self.dropout,
        attention_units=self.attention_units or self.hidden_size)
    self.drop = nn.Dropout(self.dropout)
    if self.tied_embeddings:
      if self.hidden_size != self.embed_size:
        self.to_embed = nn.Dense(self.embed_size, use_bias=False)
      self.output_bias = self.param('output_bias', nn.initializers.zeros, (self.vocab_size,))
    else:
      self.output = nn.Dense(self.vocab_size)

  # ------------------------------------------------------------------------ encoder

  def encode(self, src: Array, src_len: Array,
             deterministic: bool = True) -> tuple[dict[str, Array], tuple[Array, Array, Array]]:
    """Runs the encoder and the bridge.

    Args:
      src: <int32>[batch, S]; src_len: <int32>[batch]. Tokens at t >= src_len are never read.

    Returns:
      (enc, carry): enc holds 'mask' <bool>[batch, S] and what the attention type needs
      ('memory' <float32>[batch, S, H] zero at padding, 'keys', 'summary'); carry the
      decoder's initial (h, c, feed), each <float32>[batch, H].
    """
    x = self.drop(self.embed(src), deterministic=deterministic)
    memory, final = self.encoder(x, seq_lengths=src_len, deterministic=deterministic)
    # Top layer, forward then reverse direction (PyTorch order on the leading axis).
    last_h = jnp.concatenate([final.h[-2], final.h[-1]], -1)
    last_c = jnp.concatenate([final.c[-2], final.c[-1]], -1)
    h0 = jnp.tanh(self.bridge_h(last_h))
    c0 = jnp.tanh(self.bridge_c(last_c))
    mask = jnp.arange(src.shape[1])[None, :] < src_len[:, None]
    enc = {'mask': mask}
    if self.attention == 'none':
      enc['summary'] = last_h
    else:
      enc['memory'] = memory
    if self.attention == 'bahdanau':
      enc['keys'] = self.decoder.precompute_keys(memory)
    return enc, (h0, c0, jnp.zeros_like(h0))

  # ------------------------------------------------------------------------ decoder

  def logits(self, h_tilde: Array) -> Array:
    """<float32>[..., H] attentional vectors -> <float32>[..., V] logits."""
    if not self.tied_embeddings:
      return self.output(h_tilde)
    if self.hidden_size != self.embed_size:
      h_tilde = self.to_embed(h_tilde)
    return self.embed.attend(h_tilde) + self.output_bias

  def __call__(self, src: Array, src_len: Array, tgt_in: Array,
               train: bool = False) -> tuple[Array, Array]:
    """Teacher-forced forward pass.

    Args:
      src: <int32>[batch, S]; src_len: <int32>[batch].
      tgt_in: <int32>[batch, T], BOS followed by the target (padding anywhere after).
      train: turn dropout on (needs rngs={'dropout': key}).

    Returns:
      (logits <float32>[batch, T, V], attention <float32>[batch, T, S]).
    """
    deterministic = not train
    enc, carry = self.encode(src, src_len, deterministic)
    emb = self.drop(self.embed(tgt_in), deterministic=deterministic)

    def body(module, carry, emb_t):
      return module.decoder(carry, emb_t, enc, deterministic)

    scan = nn.scan(body, variable_broadcast='params',
                   split_rngs={'params': False, 'dropout': True})
    _, (h_tilde, weights) = scan(self, carry, jnp.swapaxes(emb, 0, 1))
    return self.logits(jnp.swapaxes(h_tilde, 0, 1)), jnp.swapaxes(weights, 0, 1)

  def init_decode_state(self, src: Array, src_len: Array) -> dict[str, Array]:
    """The decoding state for `decode_step`: the encoder output, the decoder carry
    ('h', 'c', 'feed') and the last step's attention 'weights' <float32>[batch, S], every
    leaf with a leading batch axis (beam search tiles and gathers them)."""
    enc, (h, c, feed) = self.encode(src, src_len)
    weights = jnp.zeros(enc['mask'].shape, jnp.float32)  # Of the last step; fixed structure.
    return {**enc, 'h': h, 'c': c, 'feed': feed, 'weights': weights}

  def decode_step(self, tokens: Array, state: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """One step for `lstm_jax.decoding`: <int32>[n] previous tokens ->
    (log-probabilities <float32>[n, V], new state); the attention weights of the step are
    returned in the state as 'weights' <float32>[n, S]."""
    enc = {k: state[k] for k in ENCODER_KEYS if k in state}
    carry, (h_tilde, weights) = self.decoder((state['h'], state['c'], state['feed']),
                                             self.embed(tokens), enc, True)
    new_state = dict(state, h=carry[0], c=carry[1], feed=carry[2], weights=weights)
    return jax.nn.log_softmax(self.logits(h_tilde).astype(jnp.float32)), new_state


# -------------------------------------------------------------------------- losses


def target_mask(tgt_len: Array, time: int) -> Array:
  """<float32>[batch, time]: 1 at the first tgt_len positions (target + EOS)."""
  return (jnp.arange(time)[None, :] < tgt_len[:, None]).astype(jnp.float32)


def smoothed_cross_entropy(logits: Array, targets: Array, label_smoothing: float) -> Array:
  """<float32>[..., V] logits, <int32>[...] targets -> <float32>[...] cross-entropy
  against (1 - ls) one_hot(target) + ls / V (Szegedy et al. 2016; the smoothing mass is
  spread over the whole vocabulary, padding id included)."""
  labels = jax.nn.one_hot(targets, logits.shape[-1])
  if label_smoothing:
    labels = optax.smooth_labels(labels, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)


def training_loss(logits: Array, tgt_out: Array, tgt_len: Array, weight: Array,
                  label_smoothing: float, tokens_per_example: float) -> Array:
  """The training objective: a mean over examples that weighs every target token alike.

      loss = (1 / B) sum_b weight_b sum_{t < tgt_len_b} xent_bt / tokens_per_example

  Each example contributes its summed token loss, divided by one constant (the mean
  target length of the training set), so every token in the run counts the same (short
  sentences are not up-weighted as with a per-sentence mean), while the loss stays a mean
  over examples as the Task contract asks: pmap's mean of per-device losses is then the
  global loss. Its value is close to the per-token cross-entropy but varies with the
  batch's lengths; the exact per-token figures are the metrics.

  Args:
    logits: <float32>[B, T, V]; tgt_out <int32>[B, T]; tgt_len <int32>[B];
    weight: <float32>[B] (0 for padding rows).
    label_smoothing: in [0, 1).
    tokens_per_example: the constant normaliser (> 0).
  """
  xent = smoothed_cross_entropy(logits, tgt_out, label_smoothing)
  per_example = jnp.sum(xent * target_mask(tgt_len, tgt_out.shape[1]), axis=1)
  return jnp.mean(per_example * weight) / tokens_per_example


def token_stats(logits: Array, tgt_out: Array, tgt_len: Array,
                weight: Array) -> dict[str, tuple[Array, Array]]:
  """Per-token metrics as (sum, count) over the real target tokens (EOS included):
  'loss' (cross-entropy in nats, no smoothing: log-perplexity) and 'accuracy'
  (teacher-forced argmax)."""
  mask = target_mask(tgt_len, tgt_out.shape[1]) * weight[:, None]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tgt_out)
  correct = (jnp.argmax(logits, -1) == tgt_out).astype(jnp.float32)
  count = jnp.sum(mask)
  return {'loss': (jnp.sum(nll * mask), count), 'accuracy': (jnp.sum(correct * mask), count)}


def num_params(params: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


__all__ = ['ATTENTIONS', 'DecoderStep', 'ENCODER_KEYS', 'Seq2Seq', 'smoothed_cross_entropy',
           'target_mask', 'token_stats', 'training_loss', 'num_params']
