"""One Prefect test server for the whole session (it costs ~14 s to start): `prefect_harness` in tests/conftest.py.

PREFECT_HOME, result storage and the API database all live in a temp dir, so tests never touch ~/.prefect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
         "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}


@contextmanager
def harness(home: Path) -> Iterator[None]:
    """Temp PREFECT_HOME + local result storage, then Prefect's test harness (a subprocess API server)."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_HOME"] = str(home)  # subprocesses (harness server) inherit it
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}):
        with prefect_test_harness(server_startup_timeout=90):
            yield
