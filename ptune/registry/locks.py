"""Locks that serialize one task's promotion: on one host (a file) or on every machine of a team (PostgreSQL).

A `TaskLock` is any `task -> context manager` held around promotion's read-decide-write
(`promotion.promote_if_better(..., lock=...)`); ptune ships two and picks one with `configured_lock()`:
- `file_task_lock` (default): an fcntl lock on `$PTUNE_HOME/locks/<task>-<registry>.lock`. It serializes the
  processes that share that folder, so one machine only.
- `advisory_task_lock(url)`, when `PTUNE_LOCK_URL` names a PostgreSQL database: the session advisory lock
  `pg_advisory_lock(key)`, key = 64 bits of sha256("ptune-promote:<task>"). Every machine that reaches the
  database sees it, and the server drops it when the holder's connection ends, so a killed process never leaves
  it held. The Prefect flows hold a Prefect global concurrency limit around either (tasks/registry.py): ptune
  itself never imports prefect.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ptune.errors import ConfigError, RegistryError
from ptune.fileio import file_lock, sha256_text
from ptune.paths import ptune_home, redacted
from ptune.registry.tracking import tracking_uri

TaskLock = Callable[[str], AbstractContextManager[None]]  # task -> held around read-decide-write
LOCK_URL_ENV = "PTUNE_LOCK_URL"  # postgresql://user@host/db: promotions of every machine wait on each other
WAIT_S = 3600.0  # a holder taking longer than this is taken for stuck: RegistryError, not an endless wait


def lock_path(task: str) -> Path:
    """`$PTUNE_HOME/locks/<task>-<registry>.lock`: one lock per task and registry (a hash of the tracking URI),
    so projects sharing a cache but not a registry never wait on each other."""
    registry_key = sha256_text(tracking_uri())[:12]
    return ptune_home() / "locks" / f"{task}-{registry_key}.lock"


@contextmanager
def file_task_lock(task: str) -> Iterator[None]:
    """Exclusive fcntl lock on the task's lock file (threads and processes of one machine)."""
    with file_lock(lock_path(task)):
        yield



def libpq_url(url: str) -> str:
    """The libpq form of a PostgreSQL URL (`postgresql+psycopg://` -> `postgresql://`); ConfigError otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ConfigError(f"{redacted(url)!r} is not a PostgreSQL URL: expected postgresql://user@host:port/database")
    return f"postgresql://{rest}"


def advisory_key(name: str) -> int:
    """The signed 64-bit key of `name` for pg_advisory_lock (sha256, so every ptune version agrees)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(url: str, name: str, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock `name` in the database at `url` for the block (waits up to
    `wait_s` for another holder; RegistryError after that or when the database cannot be reached)."""
    import psycopg

    where = redacted(url)
    try:
        conn = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10,
                               application_name=f"ptune lock {name}"[:63])
    except psycopg.OperationalError as exc:
        raise RegistryError(f"cannot reach the lock database {where}: {str(exc).strip().splitlines()[0]}") from exc
    with conn:
        key = advisory_key(name)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(wait_s * 1000)}ms",))
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg.errors.LockNotAvailable as exc:
            raise RegistryError(f"waited {wait_s:.0f} s for lock {name!r} in {where}: another holder still has "
                                "it (see pg_locks)") from exc
        try:
            yield
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def advisory_task_lock(url: str) -> TaskLock:
    """The team's promotion lock: `advisory_lock(url, "ptune-promote:<task>")` (a key per task only, so
    machines that spell the registry's URL differently still share it)."""
    libpq_url(url)  # a bad URL fails here, before any promotion starts
    return lambda task: advisory_lock(url, f"ptune-promote:{task}")


def configured_lock() -> TaskLock:
    """`advisory_task_lock($PTUNE_LOCK_URL)` when that is set, else the host-local `file_task_lock`."""
    url = os.environ.get(LOCK_URL_ENV, "").strip()
    return advisory_task_lock(url) if url else file_task_lock
