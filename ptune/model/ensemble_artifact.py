"""Ensemble artifacts: K prompt artifacts of one task in one directory, plus `ensemble.json`.

Layout (format_version 1):
    <dir>/ensemble.json            {"format_version", "task", "k", "method", "members": ["members/0", ...], "seeds"}
    <dir>/members/<i>/prompt.*     one ordinary prompt artifact per member (ptune.model.artifacts)
    <dir>/prompt.{safetensors,json}  a copy of member 0, so that every single-prompt reader (pull, export,
                                     older pyfuncs) still finds a valid prompt; ensemble-aware readers
                                     (`load_ensemble`: the pyfunc, `ptune.studies.ensemble`) use all K.
Written atomically (the whole directory appears at once); `load_ensemble` checks every member (checksum,
shape, one task, one base model) and raises one ArtifactError listing every problem.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune.errors import ArtifactError
from ptune.fileio import atomic_dir
from ptune.model.artifacts import (
    ENSEMBLE_FILE,
    MEMBERS_DIR,
    META_FILE,
    PROMPT_DIR,
    TENSOR_FILE,
    PromptMeta,
    load_prompt,
    save_prompt,
)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Ensemble:
    prompts: torch.Tensor  # (K, P, d) fp32
    metas: list[PromptMeta]
    method: str  # "mean" | "vote" (ptune.evaluation.ensemble.METHODS)


def is_ensemble(directory: str | Path) -> bool:
    return (Path(directory) / ENSEMBLE_FILE).is_file()


def save_ensemble(directory: str | Path, prompts: Sequence[torch.Tensor], metas: Sequence[PromptMeta],
                  method: str = "mean") -> Path:
    """Write K prompts (each (P, d)) and their metas as one ensemble artifact at `directory`, atomically; a
    directory holding anything but prompt or ensemble files (`PROMPT_DIR`) is refused, untouched."""
    if not prompts or len(prompts) != len(metas):
        raise ArtifactError(f"cannot save ensemble to {directory}: {len(prompts)} prompts and {len(metas)} metas")
    target = Path(directory)
    with atomic_dir(target, PROMPT_DIR) as tmp:
        members = [f"{MEMBERS_DIR}/{i}" for i in range(len(prompts))]
        for path, prompt, meta in zip(members, prompts, metas, strict=True):
            save_prompt(tmp / path, prompt, meta)
        for name in (TENSOR_FILE, META_FILE):
            shutil.copy2(tmp / members[0] / name, tmp / name)
        manifest = {"format_version": FORMAT_VERSION, "task": metas[0].task, "k": len(prompts), "method": method,
                    "members": members, "seeds": [m.train_config.get("seed") for m in metas]}
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def load_ensemble(directory: str | Path, expected_fingerprint: str | None = None) -> Ensemble | None:
    """The ensemble at `directory` (None when it holds a single prompt), every member checked."""
    path = Path(directory)
    if not is_ensemble(path):
        return None
    try:
        manifest = json.loads((path / ENSEMBLE_FILE).read_text())
        members = list(manifest["members"])
        method = str(manifest.get("method", "mean"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"invalid ensemble artifact {path}: {ENSEMBLE_FILE} is unreadable ({exc})") from None
    problems, loaded = [], []
    for member in members:
        try:
            loaded.append(load_prompt(path / member, expected_fingerprint))
        except ArtifactError as exc:
            problems.append(f"{member}: {exc}")
    if loaded:
        shapes = {tuple(t.shape) for t, _ in loaded}
        keys = {(m.task, m.base_fingerprint) for _, m in loaded}
        problems += [f"members differ in shape: {sorted(shapes)}"] if len(shapes) > 1 else []
        problems += [f"members differ in task or base model: {sorted(keys)}"] if len(keys) > 1 else []
    if problems or not loaded:
        raise ArtifactError(f"invalid ensemble artifact {path}:\n  - " + "\n  - ".join(problems or ["no members"]))
    return Ensemble(torch.stack([t for t, _ in loaded]), [m for _, m in loaded], method)
