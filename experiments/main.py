"""Trains and evaluates one experiment, all of it described by a config file.

    python -m experiments.main --config=configs/NAME.py[:ARG] --workdir=DIR \
        [--config.KEY=VALUE ...]

The config's `experiment` field picks the module in experiments/ (see EXPERIMENTS in
experiments/__init__.py). Rerunning with the same --workdir resumes from its latest
checkpoint. Mistakes in the config, the flags or the workdir end with `error: ...` on
stderr and exit status 2.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, configs/NAME.py[:ARG]; override fields with '
    '--config.KEY=VALUE (e.g. --config.total_steps=100 --config.optimizer.name=sgd).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics.jsonl, TensorBoard events, '
    'report.json and plots. An existing one is resumed.')


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag or config is one `error:` line and status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}\nRun with --help for the flags.')
  except Exception as e:  # Errors raised while loading the config file itself.
    _fail(f'could not load the config: {type(e).__name__}: {e}')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}; pass settings as --config.KEY=VALUE.')
  if _CONFIG.value is None:
    _fail('--config=configs/NAME.py is required.')
  if not _WORKDIR.value:
    _fail('--workdir=DIR is required.')
  import experiments  # After flag parsing: keeps --help fast.
  from lstm_jax.train import UserError, run
  try:
    config = _CONFIG.value
    experiment = experiments.get_experiment(config.experiment)
    result = run(config, _WORKDIR.value, experiment.build_task)
  except UserError as e:
    _fail(str(e))
  if result.get('preempted'):
    sys.exit(0)


class _QuietOrbax(logging.logging.Filter):
  """Drops Orbax's per-save warning for checkpoints saved between evals (no metrics)."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


if __name__ == '__main__':
  # Orbax logs every save at INFO; --verbosity=0 brings that back.
  flags.FLAGS.set_default('verbosity', logging.WARNING)
  logging.get_absl_logger().addFilter(_QuietOrbax())
  app.run(main, flags_parser=_parse_flags)
