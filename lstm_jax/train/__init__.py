"""The generic training harness: config defaults, the Task contract and the loop.

    from lstm_jax.train import Task, UserError, base_config, run
"""

from lstm_jax.train.config import base_config, validate
from lstm_jax.train.errors import ConfigError, NonFiniteLossError, UserError
from lstm_jax.train.state import TrainState
from lstm_jax.train.task import Batch, Task
from lstm_jax.train.trainer import check_eval_batch_size, run

__all__ = ['Batch', 'ConfigError', 'NonFiniteLossError', 'Task', 'TrainState', 'UserError',
           'base_config', 'check_eval_batch_size', 'run', 'validate']
