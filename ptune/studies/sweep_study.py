"""Where a sweep's Optuna study lives, and how sweep processes on one machine or on many join it.

- **Local** (default): SQLite `optuna.db` beside the MLflow store (`sweep_runs.optuna_storage_url`). One sweep
  of a task at a time (`exclusive`: a file lock beside the database), so a trial left RUNNING is known dead.
- **Shared**: a PostgreSQL URL (`ptune sweep --storage`, else $PTUNE_OPTUNA_STORAGE). Any number of processes
  on any machines join one study: the database hands out trial numbers (never one twice), and the pruner and
  TPE read every worker's trials from it (TPE's constant liar, on by default, steers workers away from the
  settings other workers are running). Joining (Optuna's tables, the study, the MLflow parent run) runs under
  a PostgreSQL advisory lock (`setup`): two processes creating the tables or the study at once can collide, and
  the parent run must be made once. Trials send heartbeats; a trial whose worker died is failed by the next
  worker that starts a trial after GRACE_S and queued again (the `on_stale` callback).
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.trial import FrozenTrial

from ptune.errors import ConfigError
from ptune.fileio import file_lock
from ptune.paths import redacted
from ptune.registry.locks import advisory_lock
from ptune.studies import sweep_runs

STORAGE_ENV = "PTUNE_OPTUNA_STORAGE"  # the team's shared study database: sweeps of every machine join it
HEARTBEAT_S, GRACE_S = 30, 120  # a RUNNING trial silent for GRACE_S is taken for dead
SETUP_LOCK = "ptune-sweep-setup"  # one joining process at a time per database (tables, study, parent run)
WORKERS_ATTR = "ptune_workers"  # study user attr: how many processes joined (each samples with its own seed)
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class StudyStorage:
    """An Optuna storage URL and whether processes on several machines may share it."""

    url: str  # SQLAlchemy URL, password included: show `shown`, never this
    shared: bool

    @property
    def shown(self) -> str:
        return redacted(self.url)

    @classmethod
    def resolve(cls, explicit: str | None = None) -> StudyStorage:
        """`explicit`, else $PTUNE_OPTUNA_STORAGE, else the local optuna.db. `postgresql://` gets the psycopg
        driver (psycopg 3 is the project's; SQLAlchemy's default, psycopg2, is not installed)."""
        url = explicit or os.environ.get(STORAGE_ENV, "").strip() or sweep_runs.optuna_storage_url()
        scheme, _, rest = url.partition("://")
        if scheme == "sqlite":
            return cls(url, shared=False)
        if scheme in ("postgresql", "postgres"):
            return cls(f"postgresql+psycopg://{rest}", shared=True)
        if scheme.startswith("postgresql+"):
            return cls(url, shared=True)
        raise ConfigError(f"Optuna storage {redacted(url)!r}: expected sqlite:///<file> (one machine) or "
                          "postgresql://user@host:port/database (sweeps on several machines)")


@contextmanager
def exclusive(where: StudyStorage, task: str) -> Iterator[None]:
    """For the whole sweep: a local study is one process's (a file lock beside the database); a shared one
    is anyone's (nothing held)."""
    if where.shared:
        yield
        return
    with file_lock(Path(where.url.removeprefix("sqlite:///")).with_name(f".sweep-{task}.lock")):
        yield


@contextmanager
def setup(where: StudyStorage) -> Iterator[None]:
    """Around joining: the PostgreSQL advisory lock SETUP_LOCK of a shared database (a local one is already
    `exclusive`)."""
    if not where.shared:
        yield
        return
    with advisory_lock(where.url, SETUP_LOCK):
        yield


def optuna_storage(where: StudyStorage, on_stale: StaleCallback) -> str | optuna.storages.BaseStorage:
    """The URL of a local study; for a shared one an RDBStorage with trial heartbeats, whose stale trials go
    to `on_stale` (after Optuna marked them FAIL)."""
    if not where.shared:
        return where.url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval is "experimental" since 2.9
        return optuna.storages.RDBStorage(where.url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                          heartbeat_stale_trial_callback=on_stale)


def create_or_load(name: str, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """The study `name`, created unless it exists. The database's unique study name decides a race between
    two creators: the loser gets DuplicatedStudyError and loads the winner's study."""
    try:
        return optuna.create_study(study_name=name, storage=storage, direction="maximize")
    except DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage)


def join(study: optuna.Study) -> int:
    """Count this process in the study's WORKERS_ATTR (under `setup`); returns how many joined before it."""
    before = int(study.user_attrs.get(WORKERS_ATTR, 0))
    study.set_user_attr(WORKERS_ATTR, before + 1)
    return before


def worker_id() -> str:
    """`<host>:<pid>`: which process ran a trial (a trial user attr and a tag of its MLflow run)."""
    return f"{socket.gethostname()}:{os.getpid()}"
