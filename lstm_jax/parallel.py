"""Devices and processes: distributed start-up, the mesh, shardings and global batches.

One code path from a laptop to a cluster: a 1-D `Mesh` over all devices of all
processes with axis 'data'. Batches are sharded on that axis and parameters replicated.
Each process produces only its own rows of the global batch; `global_batch` turns them
into one global `jax.Array` without moving data between hosts.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
# Environment variables that mean "this process is part of a cluster job", by launcher.
_CLUSTER_ENV = ('SLURM_JOB_ID', 'OMPI_COMM_WORLD_SIZE', 'OMPI_MCA_orte_hnp_uri',
                'TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS',
                'JAX_COORDINATOR_ADDRESS')


def initialize_distributed(mode: str, *, coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           coordinator_bind_address: Optional[str] = None,
                           heartbeat_timeout_seconds: int = 100,
                           initialization_timeout: int = 300) -> bool:
  """Starts `jax.distributed` as `mode` asks; returns whether it did.

  Args:
    mode: 'none' (one process), 'explicit' (the arguments below) or 'auto': JAX's own
      detection (SLURM, Open MPI, TPU pods, ...) and the variables JAX_COORDINATOR_ADDRESS,
      JAX_NUM_PROCESSES, JAX_PROCESS_ID (what `launch/local.sh` sets); with none of these
      present it stays a single process.
  Must run before anything touches the devices.
  """
  if mode == 'none':
    return False
  if mode == 'auto':
    env = os.environ
    if not any(k in env for k in _CLUSTER_ENV):
      logging.info('parallelism.distributed=auto: no cluster detected; one process.')
      return False
    if 'JAX_NUM_PROCESSES' in env or 'JAX_PROCESS_ID' in env:  # JAX reads only the address.
      missing = [k for k in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID') if k not in env]
      if missing:
        raise ValueError(f'{missing[0]} is not set; JAX_NUM_PROCESSES and JAX_PROCESS_ID '
                         'go together (launch/local.sh sets both).')
      num_processes = int(env['JAX_NUM_PROCESSES'])
      process_id = int(env['JAX_PROCESS_ID'])
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id, coordinator_bind_address=coordinator_bind_address,
      heartbeat_timeout_seconds=heartbeat_timeout_seconds,
      initialization_timeout=initialization_timeout)
  # Every process says so (not only process 0), so a launcher's log shows who took part.
  print(f'jax.distributed: process {jax.process_index()} of {jax.process_count()}, '
        f'{jax.local_device_count()} local / {jax.device_count()} global devices',
        file=sys.stderr, flush=True)
  return True


def cpu_cores() -> int:
  """The cores this process may run on."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def set_cpu_devices(count: int) -> int:
  """Splits the host CPU into `count` XLA devices (0: one per core); returns the count.

  On CPU a small recurrent step runs on one core, so the way to use the others is data
  parallelism over host devices: each device runs its share of the batch on its own thread.
  1 leaves JAX as it is (one CPU device unless XLA_FLAGS asks for more). GPU/TPU runs are
  unaffected: their devices stay the default backend. Must run before anything touches the
  devices.

  Raises:
    RuntimeError: JAX already started with another number of CPU devices.
  """
  if count == 0:
    count = cpu_cores()
  if count == 1:
    return 1
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # JAX is already running; fine if it has the wanted devices.
    if len(jax.devices('cpu')) != count:
      raise RuntimeError(
          f'JAX already started with {len(jax.devices("cpu"))} CPU device(s), so it cannot '
          f'split the CPU into {count}; set the count before any JAX computation (or '
          f'start with XLA_FLAGS=--xla_force_host_platform_device_count={count}).') from None
  return count


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices, ordered by process so each owns a contiguous block."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def process_slice(global_size: int) -> slice:
  """The rows of a global batch of `global_size` that this process feeds."""
  count, index = jax.process_count(), jax.process_index()
  if global_size % count:
    raise ValueError(f'batch of {global_size} does not split over {count} processes')
  local = global_size // count
  return slice(index * local, (index + 1) * local)


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows `<T>[local_batch, ...]` -> global arrays `<T>[batch, ...]`."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def pmap_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Like `global_batch` but shaped for `jax.pmap`: `<T>[devices, batch / devices, ...]`."""
  n = jax.local_device_count()
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(
              sharding, np.asarray(v).reshape((n, -1) + np.shape(v)[1:]))
          for k, v in local.items()}


def host_copy(tree: Any) -> Any:
  """NumPy copy of a replicated pytree, on any process (reads one local shard)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def sync(name: str) -> None:
  """A barrier across processes (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def globalize_replicated(tree: Any, mesh: Mesh) -> Any:
  """Replicated arrays on this process's devices (what `jax.pmap` returns for
  out_axes=None) -> replicated global arrays over `mesh`, which Orbax can save from
  several processes. Arrays already on `mesh` pass through; no data moves."""
  sharding = replicated(mesh)
  local = set(mesh.local_devices)

  def convert(x):
    if not isinstance(x, jax.Array) or x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    shards = [s.data for s in x.addressable_shards if s.device in local]
    return jax.make_array_from_single_device_arrays(x.shape, sharding, shards)
  return jax.tree.map(convert, tree)
