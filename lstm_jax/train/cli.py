"""Command-line plumbing for `experiments/main.py`: clean one-line errors, exit status 2.

absl and ml_collections report a bad flag with a Python traceback or a bare
`AttributeError: 'nope'`; users should instead read which field is wrong and what it
accepts.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, NoReturn, Optional, Sequence

from absl import flags

EXIT_USER_ERROR = 2


def fail(message: str) -> NoReturn:
  """Prints `error: message` to stderr and exits with status 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def _last_line(text: str) -> str:
  lines = [l.strip() for l in str(text).splitlines() if l.strip()]
  return lines[-1] if lines else str(text)


def _config_arg(argv: Sequence[str], name: str) -> Optional[str]:
  for i, a in enumerate(argv):
    if a.startswith(f'--{name}='):
      return a.split('=', 1)[1]
    if a == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config(spec: str) -> Any:
  """`path.py[:ARG]` -> its get_config(ARG), as config_flags would call it."""
  path, *args = spec.split(':', 1)
  module_spec = importlib.util.spec_from_file_location('_user_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*args)


def unknown_field_message(argv: Sequence[str], name: str) -> Optional[str]:
  """Names the first `--NAME.a.b=...` override whose path the config lacks, with the
  fields that exist at that level; None if it cannot tell."""
  spec = _config_arg(argv, name)
  if spec is None:
    return None
  try:
    config = _load_config(spec)
  except Exception:  # The file itself is broken: the caller reports that.
    return None
  for arg in argv:
    if not arg.startswith(f'--{name}.'):
      continue
    path = arg[len(name) + 3:].split('=', 1)[0]
    node, seen = config, []
    for part in path.split('.'):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        where = '.'.join(seen) or 'the top level'
        return (f'unknown config field {".".join(seen + [part])!r} in {arg.split("=")[0]}; '
                f'fields at {where}: {", ".join(sorted(keys)) or "(none)"}.')
      node, seen = node[part], seen + [part]
  return None


def config_file_first(argv: Sequence[str], name: str = 'config') -> list[str]:
  """Moves `--NAME=FILE` (or `--NAME FILE`) ahead of the `--NAME.KEY=VALUE` overrides:
  ml_collections rejects an override seen before its file, launch wrappers add theirs
  first."""
  argv = list(argv)
  for i, a in enumerate(argv[1:], start=1):
    if a.startswith(f'--{name}='):
      return [argv[0], a] + argv[1:i] + argv[i + 1:]
    if a == f'--{name}' and i + 1 < len(argv):
      return [argv[0], a, argv[i + 1]] + argv[1:i] + argv[i + 2:]
  return argv


def parse_flags(argv: list[str], config_flag: str = 'config') -> list[str]:
  """`flags.FLAGS(argv)`, but every failure is one `error:` line and exit status 2."""
  argv = config_file_first(argv, config_flag)
  if sys.argv[1:] and sys.argv[0] == argv[0]:
    sys.argv[:] = argv  # config_flags reads the order from sys.argv itself.
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if 'Traceback' in text:  # An exception inside the config file, wrapped by absl.
      fail(f'could not load --{config_flag}: {_last_line(text)}')
    fail(f'{text.splitlines()[0]}\nRun with --help for the flags.')
  except (KeyError, AttributeError) as e:  # config_flags on an override of a missing key.
    fail(unknown_field_message(argv, config_flag) or f'unknown config field: {e}')
  except Exception as e:
    fail(f'could not parse the flags: {type(e).__name__}: {_last_line(e)}')


def config_value(holder: flags.FlagHolder) -> Any:
  """The loaded config, or a clean error if its file could not be loaded."""
  try:
    value = holder.value
    if value is not None:
      value.keys()  # A file that failed to load yields an object that raises here.
  except Exception as e:  # config_flags defers file errors to the first access.
    fail(f'could not load --{holder.name}: {_last_line(e)}')
  if value is None:
    fail(f'--{holder.name}=configs/NAME.py is required.')
  return value
