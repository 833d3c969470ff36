"""Trains and evaluates one experiment, all of it described by a config file.

    python -m experiments.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

The config's `experiment` field picks the module in experiments/ (see EXPERIMENTS in
experiments/__init__.py). Rerunning with the same --workdir resumes from its latest
checkpoint. Mistakes in the config, the flags or the workdir end with `error: ...` on
stderr and exit status 2. Orbax's INFO logs are hidden unless --verbosity=0 is given.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lstm_jax.train import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, configs/NAME.py[:ARG]; override fields with '
    '--config.KEY=VALUE (e.g. --config.total_steps=100 --config.optimizer.name=sgd).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics.jsonl, TensorBoard events, '
    'report.json and plots. An existing one is resumed.')
_VERBOSE = [False]


def _parse_flags(argv: list[str]) -> list[str]:
  argv = cli.parse_flags(argv)
  # absl switches INFO on after parsing unless --verbosity was given.
  _VERBOSE[0] = not flags.FLAGS['verbosity'].using_default_value
  return argv


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments {argv[1:]}; pass settings as --config.KEY=VALUE.')
  config = cli.config_value(_CONFIG)
  if not _WORKDIR.value:
    cli.fail('--workdir=DIR is required.')
  if not _VERBOSE[0]:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  import experiments  # Imported after parsing so that --help stays fast.
  from lstm_jax.train import UserError, run
  try:
    result = run(config, _WORKDIR.value, experiments.get_experiment(config.experiment).build_task)
  except UserError as e:
    cli.fail(str(e))
  if result.get('preempted'):
    sys.exit(0)


class _NoMetricsWarning(logging.logging.Filter):
  """Orbax warns at every save between evals that it got no metrics: expected here."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


if __name__ == '__main__':
  logging.get_absl_logger().addFilter(_NoMetricsWarning())
  app.run(main, flags_parser=_parse_flags)
