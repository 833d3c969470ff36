"""Orbax checkpoints: periodic and final saves, latest N plus the best, safe resumption.

Orbax writes each step into a temporary directory and renames it when complete, so a
save killed half-way leaves a `<step>.orbax-checkpoint-tmp-*` directory that the manager
ignores (and that we leave for the user to inspect). A finalized step that still cannot
be read (disk corruption, a hand-edited file) is moved to WORKDIR/checkpoints_corrupt/
with a warning, and the previous step is restored instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as pp

from lstm_jax import parallel
from lstm_jax.train.errors import UserError


def _path_key(path) -> tuple[str, ...]:
  """A tree path as plain strings: Orbax's metadata uses dict keys and list indices
  where the live state has attributes and tuples."""
  return tuple(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)


def _shapes(tree: Any) -> dict[tuple[str, ...], tuple]:
  return {_path_key(p): (tuple(x.shape), str(x.dtype))
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _drop_closed_loop_callbacks() -> None:
  """Silences one harmless echo of a failed restore, process-wide and idempotently.

  When a read fails, Orbax's asyncio loop closes while tensorstore reads of the same
  checkpoint are still in flight; each of them then completes into the closed loop and
  Python prints a 'RuntimeError: Event loop is closed' traceback (an "unraisable"
  exception), before the read's own error reaches us or long after. The failure is reported
  by `restore_latest`; any other unraisable exception still reaches the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_callbacks', False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
      logging.debug('ignored a read that completed after a failed restore: %s', error)
      return
    previous(unraisable)

  hook.drops_closed_loop_callbacks = True
  sys.unraisablehook = hook


def describe_mismatch(saved: Any, target: Any) -> Optional[str]:
  """How a checkpoint's arrays differ from the state the config builds, or None."""
  a, b = _shapes(saved), _shapes(target)
  # Parameters first: their names are the ones users recognise.
  for key in sorted(set(a) | set(b), key=lambda k: (k[0] != 'params', k)):
    name = '/'.join(key)
    if key not in a:
      return f'the config has {name} {b[key]}, the checkpoint does not'
    if key not in b:
      return f'the checkpoint has {name} {a[key]}, the config does not'
    if a[key] != b[key]:
      return f'{name} is {a[key]} in the checkpoint but {b[key]} in the config'
  return None


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs with the current shardings: the target to restore onto, whatever
  device count wrote the checkpoint."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      tree)


class Checkpointer:
  """WORKDIR/checkpoints through one `ocp.CheckpointManager`.

  Keeps the latest `keep` steps plus the best by `best_metric` among steps saved with
  metrics. Saves are asynchronous; `close()` waits for them.
  """

  def __init__(self, workdir: str, keep: int, best_metric: str, best_mode: str):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.corrupt_dir = os.path.join(os.path.abspath(workdir), 'checkpoints_corrupt')
    self.best_metric = best_metric
    best_fn = lambda metrics: metrics[best_metric]
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep),
        pp.BestN(get_metric_fn=best_fn, reverse=(best_mode == 'min'), n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    self._options = ocp.CheckpointManagerOptions(
        best_fn=best_fn, best_mode=best_mode, preservation_policy=policy,
        enable_async_checkpointing=True, create=True)
    # The handler is named up front so that item_metadata() works before any save.
    self.manager = ocp.CheckpointManager(self.directory, options=self._options,
                                         item_handlers=ocp.StandardCheckpointHandler())

  def save(self, step: int, state: Any, metrics: Optional[dict[str, float]] = None) -> None:
    if step in self.manager.all_steps():
      return  # Already there (e.g. a final save right after a periodic one).
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best_step(self) -> Optional[int]:
    return self.manager.best_step()

  def restore_latest(self, target: Any) -> tuple[Any, Optional[int]]:
    """Restores the newest readable step onto `target`'s shapes and shardings.

    Returns (state, step), or (target, None) when there is nothing to restore. Unreadable
    steps are reported, moved aside to `checkpoints_corrupt/` and skipped. A readable
    checkpoint whose shapes differ from `target` (the config changed) is a UserError:
    nothing is moved, the user picks another workdir or the old config.
    """
    abstract = abstract_like(target)
    _drop_closed_loop_callbacks()  # Before the first read: echoes can precede its error.
    bad = []
    restored, step = target, None
    for candidate in sorted(self.manager.all_steps(), reverse=True):
      try:
        saved = self.manager.item_metadata(candidate)
      except Exception as e:  # Unreadable metadata: treated like unreadable data below.
        saved, error = None, e
      else:
        error = None
      if saved is not None:
        mismatch = describe_mismatch(saved, abstract)
        if mismatch:
          raise UserError(
              f'the checkpoint at step {candidate} in {self.directory} does not fit this '
              f'config: {mismatch}. Use a new --workdir, or the config the run started with '
              '(its config.json).')
      try:
        if error is not None:
          raise error
        restored = self.manager.restore(candidate, args=ocp.args.StandardRestore(abstract))
        step = candidate
        break
      except Exception as e:  # Orbax/tensorstore raise many types for a bad file.
        reason = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:300]
        logging.warning('checkpoint at step %d is unreadable (%s); trying an older one.',
                        candidate, reason)
        bad.append((candidate, reason))
    if bad:
      self._move_aside([s for s, _ in bad])
      msg = (f'warning: the latest checkpoint(s) at step(s) {[s for s, _ in bad]} could not '
             f'be read ({bad[0][1]}); moved to {self.corrupt_dir}/. ')
      msg += (f'Resuming from step {step}.' if step is not None
              else 'No readable checkpoint left: starting from scratch.')
      if jax.process_index() == 0:
        print(msg, flush=True, file=sys.stderr)
    return restored, step

  def _move_aside(self, steps: list[int]) -> None:
    """Moves unreadable step directories out of the manager's sight; deletes nothing."""
    parallel.sync('checkpoint_fallback_before')
    if jax.process_index() == 0:
      os.makedirs(self.corrupt_dir, exist_ok=True)
      for step in steps:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.corrupt_dir, f'{step}.{time.strftime("%Y%m%d-%H%M%S")}')
        if os.path.exists(src):
          shutil.move(src, dst)
    parallel.sync('checkpoint_fallback_after')
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
