"""A joint SentencePiece vocabulary for source and target, trained once and cached.

    tok = train_or_load(sentences_fn, path, vocab_size=8000)   # -> Tokenizer
    ids = tok.encode('Au commencement, Dieu créa les cieux et la terre.')
    tok.decode(ids + [tok.eos_id, 57])  # -> the sentence (stops at the first EOS)

Settings (see docs/translation.md, "Data"): BPE (Sennrich et al. 2016) in SentencePiece,
one vocabulary for both languages (so the model can share one embedding table and copy
names), `character_coverage=1.0` (the alphabets are small), digits split into single
pieces, and no text normalization inside SentencePiece ('identity'): the corpora are
NFC-normalized by `normalize` before training and before encoding, so
`decode(encode(s)) == s` for any normalized `s` whose characters are in the vocabulary
(no byte fallback: at vocab 8000, 0-2 held-out sentences per corpus and pair hold a
character unseen in training, which becomes unk).

Fixed ids: pad 0, bos 1, eos 2, unk 3. Training is deterministic: BPE merges are counts,
so the pieces do not depend on the number of threads (SentencePiece's unigram trainer
gave different vocabularies with 1 and 2 threads, and took 8 s instead of 1 s on the
Bible), and every training sentence is used (no sampling below `MAX_SENTENCES`). The
file is written atomically (a temporary file in the same directory, then `os.replace`),
so parallel processes that race to build it all end up reading one complete file.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import unicodedata
from typing import Callable, Iterable, Sequence

from lstm_jax.train.errors import ConfigError

# Bump when the settings below change: it is part of the cache key (see data.py).
VERSION = 1
PAD, BOS, EOS, UNK = 0, 1, 2, 3
# Far above the corpora here (Bible pair ~60k lines, Ding ~29k); caps time on a big one.
MAX_SENTENCES = 1_000_000
_SPACES = re.compile(r'\s+')


def normalize(text: str) -> str:
  """NFC, typographic apostrophe -> ASCII, runs of white space -> one space, stripped.

  Applied to the corpora when they are built and to anything `Tokenizer.encode` gets, so
  the same sentence always maps to the same pieces.
  """
  text = unicodedata.normalize('NFC', text).replace('\u2019', "'")
  return _SPACES.sub(' ', text).strip()


class Tokenizer:
  """A trained SentencePiece model with fixed special ids.

  Attributes:
    vocab_size: number of pieces, special ids included (the embedding table's rows).
    path: the .model file it was loaded from.
  """
  pad_id = PAD
  bos_id = BOS
  eos_id = EOS
  unk_id = UNK

  def __init__(self, path: str):
    import sentencepiece as spm
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_file=path)
    self.vocab_size: int = self._sp.get_piece_size()
    assert (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id()) == (
        PAD, BOS, EOS, UNK), f'{path}: unexpected special ids'

  def encode(self, text: str) -> list[int]:
    """Piece ids of `text` (normalized first), without BOS or EOS."""
    return self._sp.encode(normalize(text))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of each text, multithreaded inside SentencePiece."""
    return self._sp.encode([normalize(t) for t in texts], num_threads=os.cpu_count() or 1)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids` up to (not including) the first EOS; PAD and BOS are skipped."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS:
        break
      if i not in (PAD, BOS):
        out.append(i)
    return self._sp.decode(out)

  def piece(self, id: int) -> str:  # pylint: disable=redefined-builtin
    """The piece of `id`, e.g. '▁Dieu' ('▁' marks a word start): attention map labels."""
    return self._sp.id_to_piece(int(id))


def train(sentences: Iterable[str], path: str, *, vocab_size: int) -> None:
  """Trains a model on `sentences` (already normalized) and writes it to `path` atomically.

  `hard_vocab_limit=False` lets a tiny corpus (tests) end with fewer pieces than asked
  instead of failing; on the real corpora the size is exactly `vocab_size`. The model
  goes through memory (`model_writer`) rather than a model_prefix, whose (temporary)
  name SentencePiece would store in the file.
  """
  import sentencepiece as spm
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  model = io.BytesIO()
  spm.set_random_generator_seed(0)  # Only used if sampling ever kicks in.
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model,
        vocab_size=vocab_size, model_type='bpe', character_coverage=1.0,
        normalization_rule_name='identity', split_digits=True,
        input_sentence_size=MAX_SENTENCES, shuffle_input_sentence=False,
        max_sentence_length=8192, hard_vocab_limit=False,
        pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK,
        num_threads=os.cpu_count() or 1, minloglevel=2)
  except RuntimeError as e:
    # Every character of the training text needs a piece (character_coverage=1.0).
    need = re.search(r'smaller than required_chars\. \d+ vs (\d+)', str(e))
    if need:
      raise ConfigError(f'data.vocab_size must be at least {int(need.group(1)) + 4} for '
                        f'this corpus and pair (its characters and 4 special pieces); '
                        f'got {vocab_size}.') from None
    raise
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.spm-', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(model.getvalue())
    os.replace(tmp, path)  # Atomic on one file system: readers see all or nothing.
  except BaseException:
    os.unlink(tmp)
    raise


def train_or_load(sentences_fn: Callable[[], Iterable[str]], path: str, *,
                  vocab_size: int) -> Tokenizer:
  """The model at `path`, trained first on `sentences_fn()` if the file is missing."""
  if not os.path.exists(path):
    train(sentences_fn(), path, vocab_size=vocab_size)
  return Tokenizer(path)
