"""A throwaway PostgreSQL cluster for one test module: flows/postgres.py's `Cluster` in a temp folder on a free
loopback port, removed afterwards. `make setup` installs Debian's PostgreSQL server; without it the tests fail, naming it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.postgres import Cluster, pg_bin
from tests.support import free_port


@contextmanager
def throwaway_cluster(folder: Path) -> Iterator[Cluster]:
    """A started cluster whose data lives under `folder`; stopped and deleted when the block ends."""
    pg_bin("initdb")  # PostgresError naming the remedy (`make setup` installs Debian's postgresql) when missing
    cluster = Cluster(folder, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
