"""Shared fixtures. `train_cli` runs `python -m experiments.main` in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = 'configs/synthetic.py:tiny'

# The tests compile hundreds of small programs and run most of them a few times, so LLVM's
# optimisations cost more time than they save (a translation-model test: 16.7 -> 10.8 s).
# XLA's own passes (fusion, layout) still run as in a user's program.
FAST_COMPILE = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


class TrainCLI:
  """Runs the training CLI in subprocesses with a shared persistent compilation cache
  (the same programs compile once per test session, not once per run)."""

  def __init__(self, cache_dir: Path):
    self.cache_dir = cache_dir

  def env(self, devices: int = 1, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop('XLA_FLAGS', None)
    env.update(
        XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}',
        JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
        JAX_COMPILATION_CACHE_DIR=str(self.cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    env.update(extra)
    return env

  def command(self, workdir: Path, *overrides: str, config: str = TINY) -> list[str]:
    return [sys.executable, '-m', 'experiments.main', f'--config={config}',
            f'--workdir={workdir}', *overrides]

  def start(self, workdir: Path, *overrides: str, devices: int = 1, config: str = TINY,
            **env: str) -> subprocess.Popen:
    return subprocess.Popen(self.command(workdir, *overrides, config=config), cwd=REPO,
                            env=self.env(devices, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

  def run(self, workdir: Path, *overrides: str, devices: int = 1, config: str = TINY,
          timeout: float = 120, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(self.command(workdir, *overrides, config=config), cwd=REPO,
                          env=self.env(devices, **env), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
      raise AssertionError(f'exit {proc.returncode}\nstdout:\n{proc.stdout}\n'
                           f'stderr:\n{proc.stderr[-4000:]}')
    return proc

  @staticmethod
  def records(workdir: Path, split: str = 'train') -> list[dict]:
    lines = (Path(workdir) / 'metrics.jsonl').read_text().splitlines()
    return [r for r in map(json.loads, lines) if r['split'] == split]

  @classmethod
  def losses(cls, workdir: Path, split: str = 'train') -> dict[int, float]:
    """{step: loss}; asserts that no step is logged twice."""
    records = cls.records(workdir, split)
    steps = [r['step'] for r in records]
    assert len(steps) == len(set(steps)), f'duplicate {split} steps in metrics.jsonl: {steps}'
    return {r['step']: r['metrics']['loss'] for r in records}

  @staticmethod
  def wait_for_step(workdir: Path, proc: subprocess.Popen, step: int,
                    timeout: float = 90) -> int:
    """Polls metrics.jsonl until a train line with step >= `step` appears."""
    path = Path(workdir) / 'metrics.jsonl'
    deadline = time.time() + timeout
    while time.time() < deadline:
      assert proc.poll() is None, f'process ended early: {proc.communicate()[1][-3000:]}'
      if path.exists():
        for line in reversed(path.read_text().splitlines()):
          try:
            record = json.loads(line)
          except json.JSONDecodeError:
            continue
          if record['step'] >= step:
            return record['step']
          break
      time.sleep(0.01)
    proc.kill()
    raise AssertionError(f'step {step} not reached in {timeout} s')

  @staticmethod
  def free_port() -> int:
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      return s.getsockname()[1]


@pytest.fixture(scope='session')
def train_cli(tmp_path_factory) -> TrainCLI:
  # The parent of basetemp is shared by all xdist workers of this session.
  cache = tmp_path_factory.getbasetemp().parent / 'jax_compilation_cache'
  cache.mkdir(exist_ok=True)
  return TrainCLI(cache)


# The reference run the parallel and resumption tests compare against: the tiny
# config, constant learning rate, one device, a train line every step; long enough to be
# interrupted mid-run (a step takes a few ms once compiled).
REFERENCE_STEPS = 120
REFERENCE = (f'--config.total_steps={REFERENCE_STEPS}', '--config.checkpoint_every=10',
             '--config.eval_every=40', '--config.log_every=1')


def reference_until(steps: int) -> tuple[str, ...]:
  """REFERENCE, stopped after `steps` (the same run, cut short: constant schedule)."""
  return tuple(f'--config.total_steps={steps}' if a.startswith('--config.total_steps=') else a
               for a in REFERENCE)


@pytest.fixture(scope='session')
def reference_run(train_cli, tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp('reference')
  train_cli.run(workdir, *REFERENCE)
  return workdir


@pytest.fixture(scope='session')
def reference_losses(train_cli, reference_run) -> dict[int, float]:
  return train_cli.losses(reference_run)
