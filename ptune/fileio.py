"""File primitives every module shares: atomic writes (file and directory), sha256, one exclusive lock.

A reader never sees half a file or half a directory: content is written next to its target and
renamed into place; on any failure the temporary copy is removed and the previous target stays.
Nothing the user kept is lost: a directory is replaced only when it holds nothing but what ptune writes
into that kind of directory (`DirKind`, `check_replaceable`), and a replaced file or folder keeps its mode.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ptune.errors import ArtifactError

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it is fsynced and renamed onto `path`.

    The file keeps the mode of the `path` it replaces (a new one gets the umask's, as `open` would give)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(path.parent, f".{path.name}.", lambda p: os.close(os.open(p, _NEW_FILE, 0o666)))
    try:
        yield tmp
        fsync(tmp)
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class DirKind:
    """What ptune writes into one kind of output directory: `atomic_dir` replaces an existing directory only
    when every entry in it is one of these. Paths are relative, '/'-separated, matched part by part with
    fnmatch (so "members/[0-9]*/prompt.json" never matches "members/0/notes/prompt.json")."""

    what: str  # "prompt artifact", "PEFT adapter": how messages name the directory
    files: tuple[str, ...]  # files ptune writes there
    dirs: tuple[str, ...] = ()  # sub-directories ptune writes there


@contextmanager
def atomic_dir(target: Path, kind: DirKind | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory beside `target`; when the block succeeds it replaces `target`.

    `target` must be absent, an empty directory, or a directory holding only `kind`'s files (`check_replaceable`,
    run on entry and again just before the swap); kind None: absent or empty only. The new directory keeps the
    mode of the one it replaces (a new one gets the umask's, not mkdtemp's 0700). An existing `target` is moved
    aside first and removed only after the new one is in place (put back if the rename fails). On failure the
    temporary directory is removed and `target` is untouched."""
    target = Path(target)
    check_replaceable(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(target.parent, f".{target.name}.tmp-", os.mkdir)
    try:
        yield tmp
        for item in tmp.rglob("*"):
            fsync(item)
        check_replaceable(target, kind)  # the user may have put something there meanwhile
        _keep_mode(target, tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fresh(parent: Path, prefix: str, make: Callable[[Path], object]) -> Path:
    """A new path `parent/prefix<random>` created by `make` (os.mkdir, or an exclusive open): like mkdtemp and
    mkstemp, but with the umask's mode instead of 0700/0600."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            make(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name {prefix}* in {parent}")


def _keep_mode(target: Path, tmp: Path) -> None:
    """Give `tmp` the permission bits of the `target` it is about to replace (nothing when there is none)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def _swap_into_place(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)  # put the previous version back
        raise
    fsync(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories: best effort, not every OS allows it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `fcntl` lock on `path` (created with its parent folders) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_replaceable(target: Path, kind: DirKind | None) -> None:
    """Refuse (ArtifactError, nothing touched) to replace `target` unless it is absent, an empty directory, or a
    directory whose every entry is one of `kind`'s (None: none is): an output directory must never take a
    file the user kept with it. A file, a symbolic link or anything else that is not a directory is refused."""
    target = Path(target)
    what = kind.what if kind is not None else "directory"
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ArtifactError(f"refusing to write {what} to {target}: it exists and is not a directory")
    if not target.exists():
        return
    unknown = _unknown_entries(target, "", kind)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        problem = (f"{shown} {'is' if len(unknown) == 1 else 'are'} not part of a {what}" if kind is not None
                   else f"it is not empty ({shown})")
        raise ArtifactError(f"refusing to replace {target}: {problem}; move {'it' if len(unknown) == 1 else 'them'} "
                            "away or choose another output directory")


def _unknown_entries(root: Path, prefix: str, kind: DirKind | None) -> list[str]:
    """Relative paths under `root/prefix` that are not `kind`'s files or folders (folders end in '/'), sorted."""
    unknown = []
    with os.scandir(root / prefix if prefix else root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False) and _matches(rel, kind.dirs if kind else ()):
                unknown += _unknown_entries(root, f"{rel}/", kind)
            elif entry.is_dir(follow_symlinks=False):
                unknown.append(f"{rel}/")
            elif not (entry.is_file(follow_symlinks=False) and _matches(rel, kind.files if kind else ())):
                unknown.append(rel)
    return unknown


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    parts = rel.split("/")
    return any(len(p.split("/")) == len(parts) and all(map(fnmatch.fnmatchcase, parts, p.split("/")))
               for p in patterns)
