"""Errors a user can fix without reading our code: reported as one line, no traceback."""


class UserError(Exception):
  """A problem with the run's inputs (config, data, workdir) rather than a bug.

  `experiments.main` prints `error: <message>` to stderr and exits with status 2.
  Experiments raise it for, e.g., a dataset that is not on disk; the message should say
  what is wrong and how to fix it.
  """


class ConfigError(UserError):
  """A config field with an unknown name, a wrong type or an impossible value."""


class NonFiniteLossError(UserError):
  """Training produced a NaN or Inf loss; the message names the step and checkpoint."""
