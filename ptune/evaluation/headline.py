"""The headline of a report: the dozen numbers a reader checks first (tuned score, best baseline, gain with its
95% interval, majority rate, degenerate flag, verdict), written beside the detailed metrics JSON as
`<stem>_headline.json` (`metrics/<task>_headline.json`: the evaluate stage's small DVC metrics file, so
`dvc metrics show` and `dvc exp show` give one readable row per task). Built from the detailed JSON's keys
alone, so a report written before headlines existed gets the same file (`write_headline`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptune.fileio import atomic_write_text

SUFFIX = "_headline"
_ROWS = ("baseline/", "gain/", "kshot/", "reference/")  # keys that are not the tuned prompt's own


def headline_path(metrics_file: str | Path) -> Path:
    """metrics/<task>.json -> metrics/<task>_headline.json."""
    path = Path(metrics_file)
    return path.with_name(f"{path.stem}{SUFFIX}{path.suffix}")


def primary_metric(flat: Mapping[str, Any]) -> str:
    """The tuned row's first "<split>/<metric>" key (the report writes the primary metric first)."""
    return next(k for k in flat if not k.startswith(_ROWS) and k.count("/") == 1 and k != "trainable_params")


def best_name(flat: Mapping[str, Any], metric: str) -> str | None:
    """The baseline whose `metric` is the recorded best one (the first, on a tie), or None."""
    best = flat.get(f"baseline/best/{metric}")
    names = [k.removeprefix("baseline/").removesuffix(f"/{metric}") for k in flat
             if k.startswith("baseline/") and k.endswith(f"/{metric}") and k.count("/") == metric.count("/") + 2]
    return next((n for n in names if n != "best" and flat[f"baseline/{n}/{metric}"] == best), None)


def verdict(gain: float | None, low: float | None, high: float | None, degenerate: bool) -> str:
    """One phrase: how the tuned prompt stands against the best baseline (the paired interval decides)."""
    if degenerate:
        return "degenerate"
    if gain is None:
        return "no baseline"
    if low is None or high is None:
        return "better (no interval)" if gain > 0 else "not better (no interval)"
    return "better" if low > 0 else "worse" if high < 0 else "no significant difference"


def headline(task: str, flat: Mapping[str, Any], best: str | None = None) -> dict[str, Any]:
    """The headline of the detailed metrics `flat` (report.flat_metrics; `best`: the best baseline's name when
    the caller knows it). Absent values are None."""
    metric = primary_metric(flat)
    split = metric.split("/", 1)[0]
    tuned, majority = flat.get(metric), flat.get(f"baseline/majority/{metric}")
    gain, low, high = (flat.get(f"gain/{metric}{end}") for end in ("", "/ci_low", "/ci_high"))
    degenerate = bool(flat.get(f"{split}/degenerate", 0))
    return {"task": task, "metric": metric, "tuned": tuned, "best_baseline": flat.get(f"baseline/best/{metric}"),
            "best_baseline_name": best or best_name(flat, metric), "gain": gain, "ci_low": low, "ci_high": high,
            "n": flat.get(f"{split}/n"), "majority": majority,
            "below_majority": None if majority is None or tuned is None else int(tuned < majority),
            "degenerate": int(degenerate), "verdict": verdict(gain, low, high, degenerate)}


def write_headline(metrics_file: str | Path, task: str | None = None, flat: Mapping[str, Any] | None = None,
                   best: str | None = None) -> Path:
    """Write `<stem>_headline.json` beside `metrics_file`, from `flat` (default: the file's contents); the task
    defaults to the file's stem. Returns its path."""
    path = Path(metrics_file)
    flat = flat if flat is not None else json.loads(path.read_text(encoding="utf-8"))
    out = headline_path(path)
    atomic_write_text(out, json.dumps(headline(task or path.stem, flat, best), indent=2) + "\n")
    return out
