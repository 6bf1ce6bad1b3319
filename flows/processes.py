"""The stack's processes: pid files under `.ptune/stack/` of the project, and stopping a process with everything
it started.

A pid file holds "<pid> <start time>" (field 22 of /proc/<pid>/stat): `running` and `stop` never take a process
that merely reuses a recorded pid for ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def state_dir(project: Path) -> Path:
    return project / ".ptune" / "stack"


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def running(project: Path) -> dict[str, int]:
    """Name -> pid of the stack's processes that are alive and are the ones we started."""
    alive = {}
    for pid_file in sorted(state_dir(project).glob("*.pid")):
        pid, started = pid_file.read_text().split()
        if start_time(int(pid)) == started:
            alive[pid_file.stem] = int(pid)
    return alive


def record(project: Path, name: str, pid: int) -> None:
    (state_dir(project) / f"{name}.pid").write_text(f"{pid} {start_time(pid)}\n")


def spawn(project: Path, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    """Start `cmd` in its own session (process group) with stdout+stderr in .ptune/stack/<name>.log."""
    folder = state_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    record(project, name, proc.pid)
    return proc.pid


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def tree(pid: int) -> set[int]:
    """`pid`, its process group and all their descendants (flow-run processes may start their own session)."""
    table = processes()
    found = {p for p, (_, pgid, _) in table.items() if pgid == pid} | ({pid} if pid in table else set())
    grew = True
    while grew:
        more = {p for p, (ppid, _, _) in table.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def alive(pids: set[int]) -> set[int]:
    table = processes()
    return {p for p in pids if p in table and table[p][2] != "Z"}


def stop(pid: int, timeout: float) -> None:
    """SIGTERM the process we started and everything it started, SIGKILL what is left after `timeout`."""
    victims = tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for victim in alive(victims):
            try:
                os.kill(victim, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while alive(victims) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not alive(victims):
            return
