"""Integrity of a registered version: the sha256 of its prompt directory and of the code it runs.

`prompt.json` already holds the sha256 of `prompt.safetensors`, which catches a damaged tensor but not a
tensor and prompt.json edited together in the artifact store. The hashes here are taken at registration
and kept where the artifact store cannot change them: as version tags in the registry database, checked
by `ptune pull`, `load_prompt_with_base("models:/...")`, `load_registered_prompt` and the pyfunc's
`load_context` (`ptune.registry.provenance`). They are also written to the model's `model_config`, for
reading only: that copy lies in the artifact store, so nothing trusts it. No MLflow here: only files and hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from ptune.errors import ArtifactError
from ptune.fileio import sha256_of
from ptune.model.artifacts import META_FILE, TENSOR_FILE

PROMPT_TAG = "prompt_sha256"  # version tag and model_config key: the prompt directory
CODE_TAG = "code_sha256"  # version tag and model_config key: the pyfunc file + the frozen ptune package
PYFUNC_FILE = "pyfunc_model.py"


def tree_sha256(files: Iterable[tuple[str, Path]]) -> str:
    """One sha256 over (name, content sha256) pairs, sorted by name: the same files give the same hash
    wherever they lie."""
    digest = hashlib.sha256()
    for name, path in sorted(files):
        digest.update(f"{name}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def prompt_sha256(prompt_dir: str | Path) -> str:
    """Hash of the two files of a prompt artifact (tensor and prompt.json together)."""
    root = Path(prompt_dir)
    return tree_sha256((name, root / name) for name in (TENSOR_FILE, META_FILE) if (root / name).is_file())


def package_files(package_dir: Path) -> list[tuple[str, Path]]:
    """Every file of a package tree except bytecode caches, named by its path relative to the tree's parent."""
    return [(str(p.relative_to(package_dir.parent)), p) for p in package_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


def code_sha256(pyfunc_file: Path, package_dir: Path | None) -> str:
    """Hash of the pyfunc's model file and (when logged as code_paths) the ptune package shipped with it."""
    files = [(PYFUNC_FILE, pyfunc_file)] + (package_files(package_dir) if package_dir is not None else [])
    return tree_sha256(files)


def check(what: str, where: str, expected: str | None, actual: str) -> None:
    """ArtifactError when a recorded hash differs from the one computed now (no record: nothing to check,
    e.g. a version registered before these hashes existed)."""
    if expected and expected != actual:
        raise ArtifactError(
            f"refusing {what} at {where}: its sha256 is {actual}, but the registry recorded {expected} when it "
            f"was registered. The artifact was changed in the store after registration (edited or replaced); "
            f"re-register the prompt from its source or restore the stored files")
