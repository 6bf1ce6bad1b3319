"""A PostgreSQL cluster of the project (Debian's `postgresql` package): the team stack's database, and the
tests' throwaway ones.

`Cluster(folder, port)` keeps its data in `<folder>/data`, its log in `<folder>/postgres.log` and the password
of its one role (`ptune`) in `<folder>/password` (0600). It listens on 127.0.0.1 only (and a Unix socket in the
data folder, never /var/run), with scram-sha-256 password authentication for every TCP connection. PostgreSQL
refuses to run as root, so as root the server runs as Debian's `postgres` user and the data folder is that
user's (outside the project when that user cannot reach the project's folder: `Cluster.home`); the server is started and stopped with `pg_ctl`, by the pid it writes (`postmaster.pid`).

`serve_databases` is what `make up STACK=team` (flows/stack.py) calls: the project's cluster, or a managed server
given by URL, with the databases it needs; `check` turns a failed connection (server down, wrong password) into
one `PostgresError` line that names the URL through `redact`, never with its password.

Why not Debian's `pg_createcluster`: it writes under /etc and /var/lib, one cluster per machine and version;
the project's cluster lives in the project (and each test's in its tmp folder), like the SQLite stack's files.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from ptune.paths import redacted

ROLE = "ptune"
SERVER_HOMES = Path("/var/lib/ptune/postgres")  # as root, for project folders Debian's postgres user cannot reach
PG_BIN_ROOTS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # the newest version first


class PostgresError(RuntimeError):
    """The cluster could not be set up, started or reached: one line with the remedy."""


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL server tool (initdb, pg_ctl); PostgresError naming the package when missing."""
    for root in PG_BIN_ROOTS:
        if (root / tool).exists():
            return str(root / tool)
    found = shutil.which(tool)
    if found:
        return found
    raise PostgresError(f"{tool} not found: install Debian's PostgreSQL server (`apt-get install postgresql`, "
                        "which `make setup` does as root)")


def _as_server_user(cmd: list[str]) -> list[str]:
    """`cmd` as the `postgres` user when we are root (initdb and postgres refuse root), else as we are."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _reachable(folder: Path) -> bool:
    """Whether Debian's postgres user can reach `folder` (every folder above it lets others pass)."""
    return subprocess.run(_as_server_user(["test", "-x", str(folder)]), capture_output=True).returncode == 0



def database_url(server: str, database: str, driver: str = "postgresql+psycopg") -> str:
    """`server` (postgresql://user:password@host:port[/any][?query], e.g. a managed PostgreSQL) for `database`
    through `driver` (`postgresql+asyncpg` for Prefect, `postgresql+psycopg` for MLflow, `postgresql` for psycopg)."""
    parts = urlsplit(server)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres") or not parts.hostname:
        raise PostgresError(f"not a PostgreSQL server URL: {redacted(server)} (expected "
                            "postgresql://USER:PASSWORD@HOST:PORT)")
    return urlunsplit((driver, parts.netloc, f"/{database}" if database else "", parts.query, ""))


def _one_line(exc: BaseException) -> str:
    """A driver's error as one line (libpq's messages span lines: "connection failed: ...\n\tIs the server ...")."""
    return " ".join(str(exc).split()) or type(exc).__name__


def check(url: str, timeout: float = 10) -> None:
    """Connect to `url` once; PostgresError naming the database without its password when that fails
    (server down, wrong credentials, unknown database)."""
    import psycopg

    target = database_url(url, urlsplit(url).path.lstrip("/") or "postgres", "postgresql")
    try:
        psycopg.connect(target, connect_timeout=int(timeout)).close()
    except psycopg.Error as exc:
        raise PostgresError(f"cannot connect to the database {redacted(target)}: {_one_line(exc)}") from None


def create_database(server: str, name: str) -> None:
    """Create database `name` on `server` (its `postgres` database is the maintenance one) unless it exists."""
    import psycopg

    maintenance = database_url(server, "postgres", "postgresql")
    check(maintenance)
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise PostgresError(f"cannot create database {name!r} on {redacted(maintenance)}: {_one_line(exc)}") from None


def serve_databases(folder: Path, port: int, databases: Sequence[str], server: str | None = None) -> tuple[str, int | None]:
    """The URL of a PostgreSQL server that holds `databases` (created when missing), and the pid of a postmaster
    started now (None when none was). `server` (a managed PostgreSQL: postgresql://USER:PASSWORD@HOST:PORT) is
    used as it is; without it, the project's cluster in `folder` is initialised and started on `port` as needed."""
    started = None
    if server is None:
        cluster = Cluster(folder, port)
        cluster.init()
        if cluster.pid() is None:
            cluster.start()
            started = cluster.pid()
        server = cluster.url("postgres")
    for name in databases:
        create_database(server, name)
    return database_url(server, "", "postgresql"), started


@dataclass(frozen=True)
class Cluster:
    folder: Path
    port: int

    @property
    def home(self) -> Path:
        """Where the server's own files are: `folder`, or (as root, when Debian's postgres user cannot reach
        `folder`, e.g. inside a 0700 temporary folder) /var/lib/ptune/postgres/<id>, linked as `folder`/server."""
        link = self.folder / "server"
        return link.resolve() if link.is_symlink() else self.folder

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def password(self) -> str:
        secret = self.folder / "password"
        if not secret.exists() and (self.data / "PG_VERSION").exists():
            raise PostgresError(f"the cluster in {self.data} has lost its password file {secret}: restore it from a "
                                "backup, or remove the folder to start an empty cluster")
        return secret.read_text().strip()

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of `database` (`postgresql+asyncpg` for Prefect, `postgresql+psycopg` for MLflow and
        Optuna), password included: give it to processes through their environment, never print it."""
        return f"{driver}://{ROLE}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    def init(self) -> bool:
        """Create the cluster unless it exists (True when created now)."""
        if (self.data / "PG_VERSION").exists():
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        secret = self.folder / "password"
        if not secret.exists():
            secret.write_text(secrets.token_urlsafe(24) + "\n")
            secret.chmod(0o600)
        if os.geteuid() == 0 and not _reachable(self.folder):
            home = SERVER_HOMES / hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
            home.mkdir(parents=True, exist_ok=True)
            shutil.chown(home, "postgres", "postgres")
            (self.folder / "server").symlink_to(home, target_is_directory=True)
        pwfile = self.home / ".initdb-password"  # readable by the server user for initdb only
        pwfile.write_text(self.password + "\n")
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run([pg_bin("initdb"), "-D", str(self.data), "-U", ROLE, f"--pwfile={pwfile}",
                       "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# ptune: loopback only\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.data}'\n")
        return True

    def start(self) -> None:
        """Start the server on `port` (no-op when it runs) and wait until it accepts connections. The port is the
        Cluster's, whatever the one postgresql.conf was written with at `init`."""
        if self.pid() is not None:
            return
        if os.geteuid() == 0 and not self.log.exists():
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", f"-p {self.port}", "-w",
                   "-t", "120", "start"], "pg_ctl start")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions roll back); no-op when it is not running."""
        if self.pid() is None:
            return
        self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "120", "stop"], "pg_ctl stop")

    def remove(self) -> None:
        """Stop the server and delete the cluster's files (a test's throwaway cluster; never called by the stack)."""
        self.stop()
        if self.home != self.folder:
            shutil.rmtree(self.home)
        shutil.rmtree(self.folder)

    def pid(self) -> int | None:
        """The running postmaster's pid (from postmaster.pid, checked alive), or None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists."""
        create_database(self.url("postgres", "postgresql"), name)

    def _run(self, cmd: list[str], what: str) -> None:
        done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PostgresError(f"{what} failed for the cluster in {self.data} ({tail[0]}); its log: {self.log}")
