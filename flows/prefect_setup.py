"""The Prefect objects ptune's deployments need, created idempotently: `python -m flows.prefect_setup`.

- work pool `ptune-process` (type `process`): the worker of `make worker` runs flow runs as local processes;
- global concurrency limit `ptune-gpu` (limit = number of GPUs, at least 1): one training per GPU slot;
- the nightly-failure notification of flows/alerts.py when PTUNE_ALERT_WEBHOOK or PTUNE_ALERT_BLOCK is set.

Prefect's `concurrency(...)` silently skips a limit that does not exist (strict=False) or fails (strict=True),
so `gpu_slot()` creates the limit first when it is missing and then acquires it strictly: a run never goes
unguarded because nobody ran `make deploy`. An existing limit is never changed (a user may have raised it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

WORK_POOL = "ptune-process"
GPU_LIMIT = "ptune-gpu"


def _create_if_missing(read: Callable[[], object], create: Callable[[], object]) -> bool:
    """Run `create` unless `read` finds the object; True when it was created now. A concurrent creator
    winning the race between our read and our create counts as "already there"."""
    try:
        read()
        return False
    except ObjectNotFound:
        pass
    try:
        create()
    except ObjectAlreadyExists:
        return False
    return True


def ensure_gpu_limit(name: str = GPU_LIMIT, limit: int = 1) -> bool:
    """Create the global concurrency limit if it is missing. Returns True when it was created now."""
    with get_client(sync_client=True) as client:
        return _create_if_missing(
            lambda: client.read_global_concurrency_limit_by_name(name),
            lambda: client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit)))


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the `process` work pool with Prefect's default job template if it is missing."""
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        return _create_if_missing(
            lambda: client.read_work_pool(name),
            lambda: client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template())))


@contextmanager
def gpu_slot(name: str = GPU_LIMIT) -> Iterator[None]:
    """Hold the one GPU slot for the duration of the block (waits while another run holds it)."""
    ensure_gpu_limit(name)
    with concurrency(name, occupy=1, strict=True):
        yield


def main() -> None:
    from flows.alerts import ensure_alerts

    pool = "created" if ensure_work_pool() else "exists"
    limit = "created" if ensure_gpu_limit(limit=gpu_count()) else "exists"
    print(f"work pool {WORK_POOL!r}: {pool}; concurrency limit {GPU_LIMIT!r}: {limit}; {ensure_alerts()}")


def gpu_count() -> int:
    """Slots of `ptune-gpu` for a new limit: $PTUNE_GPUS, else the CUDA devices torch sees, else 1 (a CPU
    machine trains one prompt at a time too)."""
    if os.environ.get("PTUNE_GPUS"):
        return max(1, int(os.environ["PTUNE_GPUS"]))
    import torch

    return max(1, torch.cuda.device_count())


if __name__ == "__main__":
    main()
