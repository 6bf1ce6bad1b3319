"""The Prefect objects ptune's deployments need, created idempotently: `python -m flows.prefect_setup`.

- work pool `ptune-process` (type `process`): the worker of `make worker` runs flow runs as local processes;
- global concurrency limit `ptune-gpu` (limit = number of GPUs, at least 1): one training per GPU slot;
- the nightly-failure notification of flows/alerts.py when PTUNE_ALERT_WEBHOOK or PTUNE_ALERT_BLOCK is set.

`gpu_slot()` creates its limit when missing and acquires it strictly (tasks/limits.py), so a run never goes
unguarded because nobody ran `make deploy`; an existing limit is never changed (a user may have raised it).
The per-task promotion limits `ptune-promote-<task>` (1 slot) are made the same way by the promote task
(tasks/registry.py) the first time a task is promoted. With workers on several machines the limit counts the
team's GPUs: set PTUNE_GPUS to that total here, or `prefect gcl update ptune-gpu --limit N`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from tasks.limits import create_if_missing, ensure_limit, slot

WORK_POOL = "ptune-process"
GPU_LIMIT = "ptune-gpu"


def ensure_gpu_limit(name: str = GPU_LIMIT, limit: int = 1) -> bool:
    """Create the global concurrency limit if it is missing. Returns True when it was created now."""
    return ensure_limit(name, limit)


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the `process` work pool with Prefect's default job template if it is missing."""
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        return create_if_missing(
            lambda: client.read_work_pool(name),
            lambda: client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template())))


@contextmanager
def gpu_slot(name: str = GPU_LIMIT) -> Iterator[None]:
    """Hold the one GPU slot for the duration of the block (waits while another run holds it)."""
    with slot(name):
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
