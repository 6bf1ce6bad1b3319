"""Prefect global concurrency limits held around work every worker of the server must share: created when
missing, then acquired strictly.

Prefect's `concurrency(...)` silently skips a limit that does not exist (strict=False) or fails (strict=True),
so `slot()` creates the limit first and then acquires it strictly: nothing runs unguarded because nobody ran
`make deploy`. An existing limit is never changed (a user may have raised it). A slot is a lease the client
renews while the block runs: a killed holder's slot frees itself after `LEASE_S`, and a renewal that fails
cancels the block (strict) rather than let a second holder in beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LEASE_S = 300.0  # Prefect's default lease; renewed every 3/4 of it while held


def create_if_missing(read: Callable[[], object], create: Callable[[], object]) -> bool:
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


def ensure_limit(name: str, limit: int = 1) -> bool:
    """Create the global concurrency limit `name` with `limit` slots if it is missing (True when created now)."""
    with get_client(sync_client=True) as client:
        return create_if_missing(
            lambda: client.read_global_concurrency_limit_by_name(name),
            lambda: client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit)))


@contextmanager
def slot(name: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold one slot of limit `name` (created with 1 slot when missing) for the block; waits while the limit is
    full, up to `timeout_s` (TimeoutError; None: no limit)."""
    ensure_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, lease_duration=LEASE_S, strict=True):
        yield
