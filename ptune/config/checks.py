"""Checks shared by the configuration sections: each appends a readable problem to a list, so a section
can report every bad field at once; `error` turns the list into one ConfigError."""

from __future__ import annotations

import difflib
import math
from typing import Any

from ptune.errors import ConfigError


def number(problems: list[str], where: str, value: Any, lo: float | None = None, hi: float | None = None,
            *, integer: bool = False, lo_open: bool = False) -> None:
    """Append a problem unless `value` is a number (an int if `integer`) within [lo, hi] (lo excluded if lo_open)."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        problems.append(f"{where} = {value!r}: must be {kind}")
        return
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        low = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        high = "" if hi is None else f"<= {hi}"
        problems.append(f"{where} = {value!r}: must be {kind} {' and '.join(x for x in (low, high) if x)}")


def choice(problems: list[str], where: str, value: Any, allowed: tuple) -> None:
    """Append a problem unless `value` is one of `allowed` (bools compared by identity, not as 0/1)."""
    if not any(value is a if isinstance(a, bool) else (value == a and not isinstance(value, bool)) for a in allowed):
        names = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
        problems.append(f"{where} = {value!r}: allowed values are {names}")


READ_ONLY_SCHEMES = ("http", "https", "github", "git", "zip", "tar", "libarchive", "data", "reference", "dvc")


def storage_url(problems: list[str], where: str, value: Any) -> None:
    """Append a problem unless `value` is a local directory or a URL of a writable fsspec file system whose
    implementation is installed. Nothing is contacted: an unreachable host fails when it is first used."""
    expected = "expected a local directory or a writable fsspec URL (file://, s3://, gs://, memory://, ...)"
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where} = {value!r}: {expected}")
        return
    import fsspec

    for part in value.split("::"):  # a chain such as simplecache::s3://bucket/prefix
        scheme = part.split("://", 1)[0] if "://" in part else None
        if scheme is None:
            continue
        if scheme in READ_ONLY_SCHEMES:
            problems.append(f"{where} = {value!r}: {scheme}:// is read-only; {expected}")
            return
        try:
            fsspec.get_filesystem_class(scheme)
        except ImportError as exc:
            problems.append(f"{where} = {value!r}: {scheme}:// needs a missing package ({exc}); "
                            + expected)
            return
        except ValueError:
            problems.append(f"{where} = {value!r}: unknown storage scheme {scheme}://; {expected}")
            return


def floatify(obj: Any, *names: str) -> None:
    """YAML 1.1 reads `1e-5` as a string and `1` as an int: accept both for float fields."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str):
            try:
                object.__setattr__(obj, name, float(value))
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, name, float(value))


def unknown(where: str, key: str, known: Any) -> str:
    """'unknown setting' problem with the closest known names as a suggestion."""
    close = difflib.get_close_matches(key, list(known), n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(known)}"
    return f"{where}: unknown setting{hint}"


def error(problems: list[str], source: str = "config") -> ConfigError:
    """One ConfigError whose message lists every problem; the list is kept on `.problems`."""
    err = ConfigError(f"invalid {source} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  - "
                      + "\n  - ".join(problems))
    err.problems = list(problems)  # type: ignore[attr-defined]
    return err
