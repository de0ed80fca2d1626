"""Multi-host helpers: jax.distributed start-up and cross-host agreement on host-side flags.

Each process reads its own shard of the data (global batch / process_count utterances) and
the trainer assembles global arrays with jax.make_array_from_process_local_data.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from secoustic_jax.config.train import DistributedConfig

_STARTED = False


def initialize(cfg: DistributedConfig) -> None:
    """Calls jax.distributed.initialize once when a coordinator is configured.

    Must run before anything touches a device. Fields may also come from the environment
    (SECOUSTIC_COORDINATOR, SECOUSTIC_NUM_PROCESSES, SECOUSTIC_PROCESS_ID), so one config
    can be launched on every host.
    """
    global _STARTED
    addr = cfg.coordinator_address or os.environ.get("SECOUSTIC_COORDINATOR", "")
    if not addr or _STARTED:
        return
    num = int(os.environ.get("SECOUSTIC_NUM_PROCESSES", cfg.num_processes))
    pid = int(os.environ.get("SECOUSTIC_PROCESS_ID", cfg.process_id))
    if num < 2 or not 0 <= pid < num:
        raise ValueError(f"distributed: need num_processes >= 2 and 0 <= process_id < "
                         f"num_processes, got {num}, {pid}")
    # Cross-process collectives on CPU need an explicit implementation; the flag only
    # affects the CPU client (asking for the backend here would start it too early).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"local_device_ids": list(cfg.local_device_ids)} if cfg.local_device_ids else {}
    jax.distributed.initialize(coordinator_address=addr, num_processes=num, process_id=pid,
                               **kwargs)
    _STARTED = True


def any_host(flag: bool) -> bool:
    """True if `flag` is set on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
