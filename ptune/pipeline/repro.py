"""`ptune repro`: `dvc --wait-for-lock repro` behind ptune's workspace lock, after refreshing task_inputs.yaml.

DVC refuses a second `dvc repro` in the same workspace ("Unable to acquire lock") unless it is given
`--wait-for-lock` (DVC >= 3), which we pass: a plain `dvc repro` started by a person is waited for. DVC's lock
alone is not enough, so we also take an exclusive `fcntl` lock on `.dvc/tmp/ptune-repro.lock` first:
Prefect steps that write the same data/ and outputs/ never run DVC, so they cannot take DVC's lock, but they
can take this one; and DVC waits forever, while we give up after `timeout_s` with a message naming the lock.
DVC runs as a subprocess (ptune never imports dvc).
Prefect's data steps (tasks/data.py) take the same lock with `workspace_lock`, so a flow and a `dvc repro`
never write one task's data/ files at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ptune.config import load_params
from ptune.errors import PtuneError
from ptune.fileio import file_lock
from ptune.pipeline import dvc_inputs


def lock_path(project: Path) -> Path:
    return project / ".dvc" / "tmp" / "ptune-repro.lock"


@contextlib.contextmanager
def workspace_lock(project: Path) -> Iterator[None]:
    """Hold the `ptune repro` lock of a DVC project for the block (waits while a repro runs); a project
    without `.dvc/` has no `dvc repro` to race, so nothing is locked (and no `.dvc/` is created)."""
    if not (Path(project) / ".dvc").is_dir():
        yield
        return
    with file_lock(lock_path(Path(project))):
        yield


def repro(args: Sequence[str] = (), project: Path | None = None, timeout_s: float = 6 * 3600,
          echo=print) -> int:
    """Run `dvc --wait-for-lock repro *args` in `project` once no other `ptune repro` runs there (task_inputs.yaml
    refreshed first); returns DVC's exit code."""
    project = (project or Path.cwd()).resolve()
    if not (project / ".dvc").is_dir():
        raise PtuneError(f"{project} is not a DVC project (no .dvc/ folder): run `dvc init` or cd to the repo")
    path = lock_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        _acquire(lock, path, timeout_s, echo)
        if (project / "params.yaml").is_file():
            dvc_inputs.write(load_params(project / "params.yaml"), project)
        cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", *args]
        return subprocess.run(cmd, cwd=project).returncode


def _acquire(lock, path: Path, timeout_s: float, echo) -> None:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        echo(f"another `ptune repro` holds {path}; waiting for it to finish")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(1.0)
    raise PtuneError(f"gave up after {timeout_s:.0f} s waiting for {path} (another dvc repro is still running)")
