"""Sweep building blocks: grids of config overrides and the names of their points.

A config module may define `sweep()` (optionally `sweep(arg)`, given the config ARG) that
yields dicts of dotted config overrides, e.g. {'model.variant': 'NFG', 'seed': 1}. These
helpers build such dicts; `experiments/sweep.py` runs them.

    sweep = seeds(product(model__variant=('V', 'NFG')), 3)   # 6 points
    product({'a': [1, 2]}, {'b': ['x', 'y']})                # 4 points, a major
    zip_({'lr': [1e-3, 1e-2], 'steps': [100, 50]})            # 2 points, paired

The reserved key 'config' is the config ARG (`--config=FILE:ARG`), as in
configs/long_range.py's sweep; every other key is a `--config.KEY=VALUE` override.
Everything here is pure and cheap: it never imports JAX.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

Point = dict[str, Any]
CONFIG_ARG = 'config'  # The reserved key: the ARG of --config=FILE:ARG.
SEED = 'seed'


def _axes(dicts: Sequence[Mapping[str, Sequence[Any]]],
          kwargs: Mapping[str, Sequence[Any]]) -> list[tuple[str, list[Any]]]:
  """Merges positional dicts and keyword axes; '__' in a keyword stands for '.'."""
  raw = [(k, v) for d in dicts for k, v in d.items()]
  raw += [(k.replace('__', '.'), v) for k, v in kwargs.items()]
  keys = [k for k, _ in raw]
  if len(set(keys)) != len(keys):
    raise ValueError(f'an axis is given twice: {keys}')
  for k, values in raw:
    if isinstance(values, str):  # A string would silently become one point per character.
      raise ValueError(f'axis {k!r} needs a list of values, got the string {values!r}')
  return [(k, list(v)) for k, v in raw]


def product(*dicts: Mapping[str, Sequence[Any]], **axes: Sequence[Any]) -> list[Point]:
  """Every combination of the axes' values; the first axis varies slowest."""
  merged = _axes(dicts, axes)
  keys = [k for k, _ in merged]
  return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in merged))]


def zip_(*dicts: Mapping[str, Sequence[Any]], **axes: Sequence[Any]) -> list[Point]:
  """The i-th values of all axes together; the axes must have one length."""
  merged = _axes(dicts, axes)
  lengths = {k: len(v) for k, v in merged}
  if len(set(lengths.values())) > 1:
    raise ValueError(f'zip_ needs axes of one length, got {lengths}')
  keys = [k for k, _ in merged]
  return [dict(zip(keys, values)) for values in zip(*(v for _, v in merged))]


def chain(*groups: Iterable[Point]) -> list[Point]:
  """The points of several grids one after the other (e.g. a grid plus a few extras)."""
  return [dict(p) for g in groups for p in g]


def cross(*groups: Iterable[Point]) -> list[Point]:
  """The product of grids of points: {**a, **b} for a in the first, b in the second..."""
  out: list[Point] = [{}]
  for group in groups:
    group = list(group)
    out = [{**a, **b} for a in out for b in group]
  return out


def seeds(points: Iterable[Point], num_seeds: int | Sequence[int], key: str = SEED
          ) -> list[Point]:
  """Each point repeated over seeds 0..n-1 (or the given seeds), seed varying fastest."""
  values = range(num_seeds) if isinstance(num_seeds, int) else num_seeds
  return [{**p, key: s} for p in points for s in values]


def _format_value(value: Any) -> str:
  """A value as --config.KEY=VALUE takes it (bools as True/False, floats round-trip)."""
  if isinstance(value, float):
    return repr(value)
  return str(value)


def overrides_to_flags(point: Mapping[str, Any]) -> list[str]:
  """`--config.KEY=VALUE` flags of a point, the reserved 'config' key left out."""
  return [f'--config.{k}={_format_value(v)}' for k, v in sorted(point.items())
          if k != CONFIG_ARG]


_UNSAFE = re.compile(r'[^A-Za-z0-9._=+-]+')


def point_name(point: Mapping[str, Any], max_length: int = 200) -> str:
  """A stable, filesystem-safe directory name: 'key=value' pairs sorted by key and joined
  by ',' (e.g. 'model.variant=NFG,seed=1'; the reserved 'config' key reads 'arg=...').
  Anything outside [A-Za-z0-9._=+-] becomes '_'. Over `max_length` the tail is replaced
  by a hash, so names stay unique and stable."""
  parts = []
  for k in sorted(point):
    key = 'arg' if k == CONFIG_ARG else k
    parts.append(_UNSAFE.sub('_', f'{key}={_format_value(point[k])}'))
  name = ','.join(parts) or 'default'
  if len(name) > max_length:
    import hashlib
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = name[:max_length - 11] + '~' + digest
  return name


def check_points(points: Sequence[Point]) -> None:
  """Raises ValueError for a non-dict point or two points that share a name (they would
  share a workdir)."""
  seen: dict[str, Point] = {}
  for p in points:
    if not isinstance(p, Mapping):
      raise ValueError(f'sweep() must yield dicts of overrides, got {p!r}')
    name = point_name(p)
    if name in seen:
      raise ValueError(f'two sweep points share the name {name!r}: {seen[name]} and {p}')
    seen[name] = dict(p)


def swept_keys(points: Sequence[Point]) -> list[str]:
  """The keys whose values differ between points (or appear in some only), in first-seen
  order: the columns of a results table."""
  keys: list[str] = []
  for p in points:
    keys.extend(k for k in p if k not in keys)
  varying = []
  for k in keys:
    values = {repr(p.get(k, '<unset>')) for p in points}
    if len(values) > 1:
      varying.append(k)
  return varying


def iter_names(points: Iterable[Point]) -> Iterator[tuple[str, Point]]:
  """(name, point) pairs, in sweep order."""
  for p in points:
    yield point_name(p), dict(p)
