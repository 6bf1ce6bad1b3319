"""Print the tuned-vs-best-baseline table of a `make repro` record from metrics/<task>.json (not a benchmark).

    python bench/results_table.py [TASK ...]      # default: params.yaml run_tasks

Each row: the primary test metric of the best hand-written prompt (chosen on validation) and of the tuned
prompt, the gain with its paired-bootstrap 95% interval, the majority-class rate, n and whether the tuned
prompt is degenerate. It reads what `ptune report` wrote; it computes nothing new.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def row(task: str) -> str:
    path = ROOT / "metrics" / f"{task}.json"
    if not path.exists():
        return f"| {task} | not in the record: run `make repro` | | | |"
    data = json.loads(path.read_text())
    metric = next(k.split("/", 2)[2] for k in data if k.startswith("gain/test/") and k.count("/") == 2)
    digits = 2 if metric.startswith("rouge") else 4  # ROUGE is recorded x100 already
    fmt = lambda v, sign="": f"{v:{sign}.{digits}f}"  # noqa: E731
    gain = [data[f"gain/test/{metric}{s}"] for s in ("", "/ci_low", "/ci_high")]
    majority = data.get(f"baseline/majority/test/{metric}")
    degenerate = " (degenerate)" if data.get("test/degenerate") else ""
    return (f"| {task} ({metric}, n={data['test/n']}) | {fmt(data[f'baseline/best/test/{metric}'])} | "
            f"**{fmt(data[f'test/{metric}'])}**{degenerate} | {fmt(gain[0], '+')} [{fmt(gain[1], '+')}, {fmt(gain[2], '+')}] | "
            f"{fmt(majority) if majority is not None else '–'} |")


def main(tasks: list[str]) -> None:
    tasks = tasks or yaml.safe_load((ROOT / "params.yaml").read_text())["run_tasks"]
    print("| task (test metric, n) | best hand-written prompt | tuned prompt | gain [95% CI] | majority class |")
    print("|---|---|---|---|---|")
    for task in tasks:
        print(row(task))


if __name__ == "__main__":
    main(sys.argv[1:])
