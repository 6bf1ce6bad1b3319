"""Prompt artifacts: one directory per trained prompt, safetensors + json, no pickle anywhere.

Layout (format_version 1):
    <dir>/prompt.safetensors   one tensor `prompt_embeddings`, (n_tokens, hidden), float32
    <dir>/prompt.json          PromptMeta.to_dict(), including the sha256 of prompt.safetensors

`save_prompt` writes into a temporary directory beside the target and renames it into place, so a
reader sees either the old artifact or the new one, never half of one. `load_prompt` checks every
property it can and raises one `ArtifactError` listing all problems with the path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ptune.errors import ArtifactError
from ptune.fileio import DirKind, atomic_dir, sha256_of

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
TENSOR_FILE = "prompt.safetensors"
META_FILE = "prompt.json"
TENSOR_KEY = "prompt_embeddings"
ENSEMBLE_FILE = "ensemble.json"  # an ensemble's manifest (ptune.model.ensemble_artifact)
MEMBERS_DIR = "members"  # an ensemble's members/<i>/prompt.* (ptune.model.ensemble_artifact)
TASK_SPEC_FILE = "task_spec.json"  # a registered version's task spec (ptune.registry.stored_spec; `ptune pull` writes it)
# Every entry ptune writes into a prompt directory, single prompt or ensemble (one may replace the other):
# `save_prompt`, `save_ensemble` and `ptune pull` replace a directory only when it holds nothing else.
PROMPT_DIR = DirKind("prompt artifact", files=(
    TENSOR_FILE, META_FILE, ENSEMBLE_FILE, TASK_SPEC_FILE, f"{MEMBERS_DIR}/[0-9]*/{TENSOR_FILE}", f"{MEMBERS_DIR}/[0-9]*/{META_FILE}"),
    dirs=(MEMBERS_DIR, f"{MEMBERS_DIR}/[0-9]*"))


@dataclass(frozen=True)
class PromptMeta:
    """Everything needed to use, trust and reproduce a prompt; serialised as prompt.json."""

    task: str  # task name, e.g. "rotten_tomatoes"
    base_spec: str  # base model spec as the user gave it ("smollm2-135m", a directory, a hub id)
    base_fingerprint: str  # ptune.model.base.fingerprint of the base the prompt was trained on
    n_tokens: int = 0  # P; 0 = take it from the tensor in save_prompt
    hidden: int = 0  # d; 0 = take it from the tensor in save_prompt
    init: str = "random"  # PromptInit value used to initialise the prompt
    label_words: tuple[str, ...] = ()  # classification targets in label order; () for generation
    template: str = ""  # how sources were formatted (free text; informational)
    train_config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    data_version: str = ""  # ptune.data.splits.data_version of the training data
    metrics: dict[str, float] = field(default_factory=dict)  # "<split>/<metric>" -> value
    prompt_layout: str = ""  # BaseModel.prompt_layout it was trained in; "" = not recorded (older artifacts)
    sha256: str = ""  # of prompt.safetensors; filled by save_prompt
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The prompt.json object (base model nested as {"spec", "fingerprint"})."""
        raw = asdict(self)
        base = {"spec": raw.pop("base_spec"), "fingerprint": raw.pop("base_fingerprint")}
        raw["label_words"] = list(self.label_words)
        out = {"format_version": raw.pop("format_version"), "task": raw.pop("task"), "base_model": base}
        out.update(raw)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptMeta:
        """Inverse of to_dict; raises ArtifactError listing missing or mistyped fields."""
        problems = _meta_problems(data)
        if problems:
            raise ArtifactError("invalid prompt metadata:\n  - " + "\n  - ".join(problems))
        base = data["base_model"]
        return cls(
            task=data["task"], base_spec=base["spec"], base_fingerprint=base["fingerprint"],
            n_tokens=data["n_tokens"], hidden=data["hidden"], init=data.get("init", "random"),
            label_words=tuple(data.get("label_words", ())), template=data.get("template", ""),
            train_config=dict(data.get("train_config") or {}), data_version=data.get("data_version", ""),
            metrics=dict(data.get("metrics") or {}), sha256=data.get("sha256", ""),
            prompt_layout=data.get("prompt_layout", ""),
            format_version=data["format_version"],
        )


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format_version": int, "task": str, "base_model": dict, "n_tokens": int, "hidden": int, "sha256": str,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "init": str, "label_words": list, "template": str, "train_config": dict, "data_version": str, "metrics": dict,
    "prompt_layout": str,
}


def _meta_problems(data: Any) -> list[str]:
    """Every missing or mistyped field of a prompt.json object."""
    if not isinstance(data, dict):
        return [f"{META_FILE} must hold a JSON object, got {type(data).__name__}"]
    problems = []
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in data:
            if key in _REQUIRED:
                problems.append(f"{META_FILE}: missing field {key!r}")
        elif not isinstance(data[key], kind) or isinstance(data[key], bool):
            problems.append(f"{META_FILE}: field {key!r} has type {type(data[key]).__name__}")
    base = data.get("base_model")
    if isinstance(base, dict):
        problems += [f"{META_FILE}: base_model.{k} must be a string" for k in ("spec", "fingerprint")
                     if not isinstance(base.get(k), str)]
    version = data.get("format_version")
    if isinstance(version, int) and version not in SUPPORTED_FORMAT_VERSIONS:
        problems.append(f"format_version {version} not supported (supported: {list(SUPPORTED_FORMAT_VERSIONS)})")
    return problems



def save_prompt(directory: str | Path, prompt: torch.Tensor, meta: PromptMeta, base_hidden: int | None = None) -> Path:
    """Write `prompt` (P, d) and `meta` as an artifact at `directory`, atomically; returns the path.

    n_tokens/hidden/sha256 in the written prompt.json come from the tensor and file; a meta that states a
    different n_tokens or hidden, a prompt of 0 tokens, or d != `base_hidden` (the base model's hidden size,
    when the caller knows it) is refused. An existing artifact is replaced safely; a directory holding
    anything but prompt files (`PROMPT_DIR`) is never replaced: ArtifactError naming what it holds."""
    target = Path(directory)
    tensor = _checked_tensor(prompt, meta, target, base_hidden)  # (P, d) fp32, contiguous, on CPU
    with atomic_dir(target, PROMPT_DIR) as tmp:
        save_file({TENSOR_KEY: tensor}, str(tmp / TENSOR_FILE), metadata={"format": "pt"})
        final = replace(meta, n_tokens=tensor.shape[0], hidden=tensor.shape[1],
                        sha256=sha256_of(tmp / TENSOR_FILE), format_version=FORMAT_VERSION)
        (tmp / META_FILE).write_text(json.dumps(final.to_dict(), indent=2, sort_keys=False) + "\n")
    return target


def _checked_tensor(prompt: torch.Tensor, meta: PromptMeta, target: Path, base_hidden: int | None) -> torch.Tensor:
    """The tensor to write (P, d) fp32 CPU, or ArtifactError listing what is wrong with it."""
    problems = []
    if prompt.ndim != 2:
        raise ArtifactError(f"cannot save prompt to {target}: tensor must be 2-D (n_tokens, hidden), "
                            f"got shape {tuple(prompt.shape)}")
    tensor = prompt.detach().to("cpu", torch.float32).contiguous()
    if tensor.shape[0] == 0:
        problems.append("the prompt has 0 tokens (expected n_tokens >= 1)")
    if base_hidden is not None and tensor.shape[1] != base_hidden:
        problems.append(f"hidden size {tensor.shape[1]} but the base model {meta.base_spec!r} has hidden size "
                        f"{base_hidden}")
    if not torch.isfinite(tensor).all():
        problems.append("tensor has non-finite values (nan/inf)")
    for name, stated, actual in (("n_tokens", meta.n_tokens, tensor.shape[0]), ("hidden", meta.hidden, tensor.shape[1])):
        if stated and stated != actual:
            problems.append(f"meta.{name}={stated} but the tensor has {actual}")
    if problems:
        raise ArtifactError(f"cannot save prompt to {target}:\n  - " + "\n  - ".join(problems))
    return tensor


def load_prompt(directory: str | Path, expected_fingerprint: str | None = None) -> tuple[torch.Tensor, PromptMeta]:
    """Read and validate an artifact -> (prompt (P, d) fp32 CPU, meta).

    Checks: files exist, JSON parses and has every field, format version supported, the single tensor
    `prompt_embeddings` is float32 with shape (n_tokens, hidden) and finite, the sha256 matches, and the
    base fingerprint equals `expected_fingerprint` when given. Raises one ArtifactError listing all."""
    path = Path(directory)
    if not path.is_dir():
        raise ArtifactError(f"prompt artifact {path} does not exist or is not a directory")
    problems: list[str] = []
    meta = _read_meta(path, problems)
    tensor = _read_tensor(path, meta, problems)
    if meta is not None and (path / TENSOR_FILE).is_file():
        actual = sha256_of(path / TENSOR_FILE)
        if actual != meta.sha256:
            problems.append(f"checksum mismatch for {TENSOR_FILE}: {META_FILE} says {meta.sha256}, file has {actual}")
    if meta is not None and expected_fingerprint is not None and meta.base_fingerprint != expected_fingerprint:
        problems.append(
            f"base model mismatch: prompt was trained on {meta.base_spec!r} (fingerprint {meta.base_fingerprint}), "
            f"expected fingerprint {expected_fingerprint}")
    if problems:
        raise ArtifactError(f"invalid prompt artifact {path}:\n  - " + "\n  - ".join(problems))
    assert tensor is not None and meta is not None
    return tensor, meta


def _read_meta(path: Path, problems: list[str]) -> PromptMeta | None:
    """Parse prompt.json, appending problems; None when it cannot be used."""
    file = path / META_FILE
    if not file.is_file():
        problems.append(f"missing {META_FILE}")
        return None
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{META_FILE} is not valid JSON: {exc}")
        return None
    found = _meta_problems(data)
    problems.extend(found)
    return None if found else PromptMeta.from_dict(data)


def _read_tensor(path: Path, meta: PromptMeta | None, problems: list[str]) -> torch.Tensor | None:
    """Read prompt.safetensors (no pickle), appending problems; None when it cannot be used."""
    file = path / TENSOR_FILE
    if not file.is_file():
        problems.append(f"missing {TENSOR_FILE}")
        return None
    try:
        with safe_open(str(file), framework="pt") as fh:
            keys = list(fh.keys())
            if keys != [TENSOR_KEY]:
                problems.append(f"{TENSOR_FILE} must hold exactly one tensor {TENSOR_KEY!r}, found {keys}")
                return None
            tensor = fh.get_tensor(TENSOR_KEY)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        problems.append(f"{TENSOR_FILE} is not a readable safetensors file: {exc}")
        return None
    before = len(problems)
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        problems.append(f"tensor shape {tuple(tensor.shape)}: expected (n_tokens >= 1, hidden)")
    if tensor.dtype != torch.float32:
        problems.append(f"tensor dtype is {tensor.dtype}, expected torch.float32")
    if meta is not None and tuple(tensor.shape) != (meta.n_tokens, meta.hidden):
        problems.append(f"tensor shape {tuple(tensor.shape)} does not match {META_FILE} "
                        f"(n_tokens={meta.n_tokens}, hidden={meta.hidden})")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        problems.append("tensor has non-finite values (nan/inf)")
    return tensor if len(problems) == before else None


