"""A small synthetic `Prepared` series for tests (hourly, daily cycle plus noise)."""

import numpy as np

from experiments.forecasting import data, windows


def toy_prepared(length: int = 1000) -> windows.Prepared:
  rng = np.random.default_rng(0)
  t = np.arange(length)
  target = (10 + np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=length))[None]
  s = data.SeriesSet('toy', target.astype(np.float32), np.ones(target.shape, bool),
                     rng.normal(size=(1, length, 1)).astype(np.float32),
                     np.zeros((1, length, 0), np.float32),
                     (1_400_000_000 + 3600 * t).astype(np.int64), ('a',), ('k',), (), 'h',
                     24)
  return windows.prepare(s, windows.WindowSpec(48, 24, (1, 2, 24, 168)), 800)
