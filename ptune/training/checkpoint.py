"""Training checkpoints without pickle: one safetensors file holding every tensor, the rest as JSON.

`out_dir/checkpoint/state.safetensors` carries the prompt, best prompt, optimizer state tensors and the
torch RNG state(s); its safetensors header metadata carries one JSON document (step, history, best-so-far,
optimizer scalars and param groups, python RNG state, compatibility key). Written to a temp file in the
same directory and moved into place (`ptune.fileio.atomic_path`), so a kill mid-write leaves the previous checkpoint.
`encode`/`decode` are the same format as bytes, for checkpoints kept at a URL (ptune.training.store).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load, save, save_file

from ptune.errors import PtuneError
from ptune.fileio import atomic_path

FILE = "state.safetensors"
_OPT = "optimizer."
_RNG = "rng."


@functools.cache
def code_digest() -> str:
    """sha256 (16 hex) of the ptune package's Python sources. It is part of every checkpoint's compatibility key, so a
    checkpoint resumes only under the code that wrote it: after a code change `dvc repro` retrains instead of
    finishing (or, at max_steps, returning) a trajectory the old code started."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class CorruptCheckpoint(PtuneError):
    """The checkpoint file cannot be trusted (unreadable, truncated, checksum mismatch, wrong shapes)."""


def _digest(tensors: dict[str, torch.Tensor], state_json: str) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and the JSON state: any flipped byte changes it."""
    digest = hashlib.sha256(state_json.encode("utf-8"))
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_checkpoint(ckpt_dir: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Atomically write `tensors` + JSON-able `state` (+ their sha256) to `ckpt_dir/state.safetensors`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / FILE
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    doc = json.dumps(state)
    with atomic_path(final) as tmp:
        save_file(plain, str(tmp), metadata={"state": doc, "sha256": _digest(plain, doc)})
    return final


def read_checkpoint(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors on CPU, state) from `ckpt_dir`, or None when there is no checkpoint. Raises CorruptCheckpoint
    when the file is unreadable or its content does not match its sha256."""
    path = ckpt_dir / FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own types for truncated or garbled files
        raise CorruptCheckpoint(f"unreadable: {type(exc).__name__}: {exc}") from exc
    return _verified(tensors, meta)


def encode(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> bytes:
    """The bytes `write_checkpoint` writes: safetensors with the JSON state and its sha256 as metadata."""
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    doc = json.dumps(state)
    return save(plain, metadata={"state": doc, "sha256": _digest(plain, doc)})


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of `encode`; CorruptCheckpoint when the bytes are unreadable or do not match their sha256."""
    try:
        tensors = load(data)
        size = int.from_bytes(data[:8], "little")  # safetensors: u64 header length, then the JSON header
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except Exception as exc:  # safetensors raises its own types for truncated or garbled bytes
        raise CorruptCheckpoint(f"unreadable: {type(exc).__name__}: {exc}") from exc
    return _verified(tensors, meta)


def _verified(tensors: dict[str, torch.Tensor],
              meta: dict[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) when the metadata's sha256 matches the content, else CorruptCheckpoint."""
    try:
        doc, stated = meta["state"], meta.get("sha256")
        state = json.loads(doc)
    except Exception as exc:
        raise CorruptCheckpoint(f"unreadable: {type(exc).__name__}: {exc}") from exc
    if stated is None:
        raise CorruptCheckpoint("no checksum (written by an older ptune)")
    if _digest(tensors, doc) != stated:
        raise CorruptCheckpoint("checksum mismatch")
    return tensors, state


def set_aside(ckpt_dir: Path) -> Path:
    """Move a corrupt checkpoint file out of the way (kept for inspection, never deleted); returns its new path."""
    for n in range(1, 10_000):
        aside = ckpt_dir / f"{FILE}.corrupt-{n}"
        if not aside.exists():
            (ckpt_dir / FILE).rename(aside)
            return aside
    raise OSError(f"too many corrupt checkpoints set aside in {ckpt_dir}")


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors keyed 'optimizer.<param id>.<name>', JSON rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, values in state_dict["state"].items():
        scalars[str(pid)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPT}{pid}.{name}"] = value
            else:
                scalars[str(pid)][name] = value
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer` (JSON lists stand in for tuples such as betas/eps)."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(values) for pid, values in saved["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith(_OPT):
            pid, name = key[len(_OPT):].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    groups = [{k: tuple(v) if k in ("betas", "eps") and isinstance(v, list) else v for k, v in g.items()}
              for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU + every CUDA device) RNG states as tensors, python's `random` state as JSON."""
    tensors = {f"{_RNG}torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG}cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def restore_rng(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    """Put back the RNG states captured by `capture_rng` (CUDA ones only where that device exists)."""
    torch.set_rng_state(tensors[f"{_RNG}torch"])
    cuda = sorted((k for k in tensors if k.startswith(f"{_RNG}cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
