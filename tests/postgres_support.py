"""A throwaway PostgreSQL cluster for one test module: flows/postgres.py's `Cluster` in a temp folder on a free
loopback port, removed afterwards (skipped where Debian's PostgreSQL server is not installed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.postgres import Cluster, PostgresError, pg_bin
from tests.support import free_port


@contextmanager
def throwaway_cluster(folder: Path) -> Iterator[Cluster]:
    """A started cluster whose data lives under `folder`; stopped and deleted when the block ends."""
    try:
        pg_bin("initdb")
    except PostgresError as exc:
        pytest.skip(str(exc))
    cluster = Cluster(folder, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
