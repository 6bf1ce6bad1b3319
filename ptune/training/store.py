"""Where training checkpoints live: a local directory (the default) or an fsspec URL (`train.checkpoint_uri`).

`location` places one run's checkpoint. Without a URI: `<run root>/checkpoint` (outputs/<task>/checkpoint for
the CLI and DVC; one file replaced by rename, ptune.training.checkpoint). With one: `<uri>/<task>/` plus the
run root's path below outputs/<task> (`prefect/<flow run>` for a Prefect flow run), so every worker running
the task with that URI finds the same checkpoint, whatever its project directory or home.

At a URL (`UrlStore`) a checkpoint is two objects, committed by the second:
    state-<step>-<random>.safetensors   the checkpoint (ptune.training.checkpoint.encode), never overwritten
    manifest.json                       {"format", "task", "step", "file", "bytes", "sha256"}: written last
A reader trusts only a complete manifest and a state file of exactly the size and sha256 it names, so a
writer killed at any point leaves the previous checkpoint readable: on object stores one PUT is all or
nothing; on file systems the manifest is written under a temporary name, then renamed. One writer per
location (one training per task at a time); a corrupt checkpoint is moved to `corrupt-<n>/`, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import secrets
from pathlib import Path
from typing import Any, Protocol

import torch

from ptune import paths
from ptune.fileio import atomic_write_bytes, sha256_text
from ptune.training import checkpoint as ckpt

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT = "ptune-checkpoint/1"
Loaded = tuple[dict[str, torch.Tensor], dict[str, Any]]


def is_url(where: str | Path) -> bool:
    """Does `where` name an fsspec URL (`scheme://...`, or a chain such as `simplecache::s3://...`)?"""
    return isinstance(where, str) and ("://" in where or "::" in where)


def location(uri: str | None, task: str, root: Path) -> str:
    """Where the run writing to `root` keeps `task`'s checkpoint (module doc). A `uri` that is a plain path
    is a local directory, relative to the project directory, used through fsspec as a file:// URL."""
    if not uri:
        return str(Path(root) / "checkpoint")
    if not is_url(uri):
        uri = (paths.project_dir() / Path(uri).expanduser()).resolve().as_uri()
    base = f"{uri.rstrip('/')}/{task}"
    home, root = (paths.runs_dir() / task).resolve(), Path(root).resolve()
    if root == home:
        return base
    if root.is_relative_to(home):
        return f"{base}/{root.relative_to(home).as_posix()}"
    # an output folder outside outputs/<task> (`ptune train --out DIR`): private to its absolute path
    return f"{base}/elsewhere/{sha256_text(str(root))[:12]}"


class Store(Protocol):
    """One checkpoint location: read the last complete checkpoint, replace it, move a corrupt one aside."""

    where: str  # what log lines name

    def read(self) -> Loaded | None: ...

    def write(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None: ...

    def set_aside(self) -> str: ...


def open_store(where: str | Path) -> Store:
    """The store for a `location`: a URL goes through fsspec (`UrlStore`), a path is a local `DirStore`."""
    return UrlStore(where) if is_url(where) else DirStore(Path(where))


class DirStore:
    """A local directory holding one `state.safetensors`, replaced by rename (ptune.training.checkpoint)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.where = str(self.directory / ckpt.FILE)

    def read(self) -> Loaded | None:
        return ckpt.read_checkpoint(self.directory)

    def write(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        ckpt.write_checkpoint(self.directory, tensors, state)

    def set_aside(self) -> str:
        return str(ckpt.set_aside(self.directory))


class UrlStore:
    """A checkpoint at an fsspec URL: state files committed by a manifest written last (module doc)."""

    def __init__(self, url: str) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.where = f"{self.url}/{MANIFEST}"

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read(self) -> Loaded | None:
        """The checkpoint the manifest names, or None without a manifest; CorruptCheckpoint when the
        manifest is incomplete or its state file is missing or differs from it."""
        try:
            raw = self.fs.cat_file(self._path(MANIFEST))
        except FileNotFoundError:
            return None
        manifest = _manifest(raw)
        name = manifest["file"]
        try:
            data = self.fs.cat_file(self._path(name))
        except FileNotFoundError:
            raise ckpt.CorruptCheckpoint(f"the state file it names is missing: {name}") from None
        if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise ckpt.CorruptCheckpoint(f"the state file differs from its size and sha256: {name}")
        return ckpt.decode(data)

    def write(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Write a new state file, then commit it with the manifest, then remove the files it replaced."""
        data = ckpt.encode(tensors, state)
        step = int(state.get("step", 0))
        name = f"state-{step:08d}-{secrets.token_hex(4)}.safetensors"
        self._put(name, data, atomic=False)  # a fresh name: no reader opens it before the manifest names it
        manifest = {"format": FORMAT, "task": state.get("meta", {}).get("task"), "step": step, "file": name,
                    "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self._put(MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"), atomic=True)  # the commit
        self._remove_stale(keep=name)

    def _put(self, name: str, data: bytes, *, atomic: bool) -> None:
        if self.local:  # fsynced, renamed into place: the manifest never reaches disk before its state file
            atomic_write_bytes(Path(self._path(name)), data)
        elif not atomic:
            self.fs.pipe_file(self._path(name), data)
        else:  # a temporary name, then a move: a rename on file systems, a whole copy on object stores
            tmp = self._path(f".{name}.{secrets.token_hex(4)}")  # as ptune.fileio names its temporary files
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, self._path(name))

    def _remove_stale(self, keep: str) -> None:
        """Delete the state and temporary files no manifest names any more (left by earlier writes or by a
        writer killed before its commit). Best effort: a failure leaves garbage, never a bad checkpoint."""
        try:
            names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.root, detail=False)]
            for name in names:
                if (name.startswith("state-") and name != keep) or name.startswith((".state-", ".manifest")):
                    self.fs.rm_file(self._path(name))
        except OSError as exc:
            log.warning("could not remove old checkpoint files at %s: %s", self.url, exc)

    def set_aside(self) -> str:
        """Move the manifest and the state file it names (if readable) to `corrupt-<n>/`; returns its URL."""
        for n in range(1, 10_000):
            aside = self._path(f"corrupt-{n}")
            if not self.fs.exists(aside):
                break
        else:
            raise OSError(f"too many corrupt checkpoints set aside at {self.url}")
        self.fs.makedirs(aside, exist_ok=True)
        try:
            named = _manifest(self.fs.cat_file(self._path(MANIFEST)))["file"]
        except (ckpt.CorruptCheckpoint, OSError):
            named = None
        for name in (named, MANIFEST):
            if name is not None and self.fs.exists(self._path(name)):
                self.fs.mv(self._path(name), f"{aside}/{name}")
        return f"{self.url}/corrupt-{n}"


def _manifest(raw: bytes) -> dict[str, Any]:
    """The manifest, checked; CorruptCheckpoint when it is not one complete manifest of this format."""
    try:
        manifest = json.loads(raw)
        fields = (manifest["format"], manifest["file"], manifest["bytes"], manifest["sha256"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ckpt.CorruptCheckpoint(f"incomplete manifest: {type(exc).__name__}: {exc}") from exc
    if fields[0] != FORMAT:
        raise ckpt.CorruptCheckpoint(f"manifest format {fields[0]!r}, expected {FORMAT!r}")
    if "/" in str(fields[1]) or not str(fields[1]).startswith("state-"):
        raise ckpt.CorruptCheckpoint(f"manifest names {fields[1]!r}, not a state file beside it")
    return manifest
