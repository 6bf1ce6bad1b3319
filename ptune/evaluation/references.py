"""Reference-model rows of the task report: the ceiling a soft prompt is measured against (Lester et al. 2021,
Figure 1), and how much of the way from the best hard prompt to that ceiling the tuned prompt goes.

A row comes from `outputs/<task>/reference/<method>.json`, written by `ptune reference` (ptune.studies.reference).
Rows are shown beside the prompts, never mixed with them: they have no predictions in predictions.jsonl, no
interval, and never reach the promotion gate (`report.gate_metrics` drops every "reference/" key).

    gap closed = (tuned - best hard prompt) / (reference - best hard prompt)

where the best hard prompt is the baseline chosen on validation (the one promotion uses). It is undefined
(None, printed "n/a (reference does not beat the baseline)") when the reference is not above that baseline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

METHOD_TITLES = {"lora": "LoRA r8 (q, v)", "full": "full fine-tuning", "multitask": "multi-task full fine-tuning"}
NOT_ABOVE = "n/a (reference does not beat the baseline)"
MIN_MARGIN = 1e-9  # reference - baseline at or below this is "does not beat" (no division by ~0)


@dataclass(frozen=True)
class ReferenceRow:
    """One reference model's test scores, as its JSON file records them."""

    method: str  # lora | full | multitask
    metrics: dict[str, float]  # {"test/<metric>": value}, the task's metric order
    n: int  # test examples scored
    trainable: int  # parameters trained
    steps: int  # steps run
    best_step: int  # step of the model kept (best on validation)
    extra: dict = field(default_factory=dict)  # the rest of the file (seconds, lr, mixture, ...)

    @property
    def title(self) -> str:
        return "reference: " + METHOD_TITLES.get(self.method, self.method)


def gap_closed(tuned: float, baseline: float, reference: float) -> float | None:
    """(tuned - baseline) / (reference - baseline); None when the reference does not beat the baseline."""
    margin = reference - baseline
    if not margin > MIN_MARGIN:
        return None
    return (tuned - baseline) / margin


def gap_text(value: float | None) -> str:
    return NOT_ABOVE if value is None else f"{value:.3f}"


def read_rows(directory: str | Path, data_version: str | None = None,
              split: str = "test") -> tuple[dict[str, ReferenceRow], list[str]]:
    """(rows by method, notes) from `directory`/*.json. A file for other data (data version differs) or
    without `split`'s metrics is left out, with a note saying how to refresh it."""
    rows: dict[str, ReferenceRow] = {}
    notes: list[str] = []
    for path in sorted(Path(directory).glob("*.json")) if Path(directory).is_dir() else []:
        data = json.loads(path.read_text(encoding="utf-8"))
        method, task = data.get("method", path.stem), data.get("task", "TASK")
        rerun = f"rerun `ptune reference {task} --method {method}`"
        metrics = {k: float(v) for k, v in data.get("metrics", {}).items() if k.startswith(f"{split}/")}
        if data_version is not None and data.get("data_version") != data_version:
            notes.append(f"reference {method} left out: trained on data version {data.get('data_version')}, "
                         f"the report is on {data_version}; {rerun}")
        elif not metrics:
            notes.append(f"reference {method} left out: {path.name} has no {split} metrics; {rerun}")
        else:
            rows[method] = ReferenceRow(method, metrics, int(data.get("n", 0)), int(data.get("trainable_params", 0)),
                                        int(data.get("steps", 0)), int(data.get("best_step", 0)), data)
    return rows, notes


def flat(rows: Mapping[str, ReferenceRow], tuned: Mapping[str, float] | None,
         baseline: Mapping[str, float] | None) -> dict[str, float]:
    """"reference/<method>/<split>/<metric>", ".../n", ".../trainable_params" and, when defined,
    "reference/<method>/gap_closed" (on the primary metric)."""
    out: dict[str, float] = {}
    for method, row in rows.items():
        head = f"reference/{method}/"
        out.update({head + k: round(v, 6) for k, v in row.metrics.items()})
        split = next(iter(row.metrics)).split("/", 1)[0]
        out[f"{head}{split}/n"] = row.n
        out[f"{head}trainable_params"] = row.trainable
        gap = _row_gap(row, tuned, baseline)
        if gap is not None:
            out[f"{head}gap_closed"] = round(gap, 6)
    return out


def _row_gap(row: ReferenceRow, tuned: Mapping[str, float] | None,
             baseline: Mapping[str, float] | None) -> float | None:
    primary = next(iter(row.metrics))
    if not tuned or not baseline or primary not in tuned or primary not in baseline:
        return None
    return gap_closed(tuned[primary], baseline[primary], row.metrics[primary])


def markdown(rows: Mapping[str, ReferenceRow], tuned: Mapping[str, float] | None,
             baseline: Mapping[str, float] | None, tuned_n: int | None = None) -> list[str]:
    """The "Reference models" table under the report's summary (no lines when there is no row)."""
    if not rows:
        return []
    names = [k.split("/", 1)[1] for k in next(iter(rows.values())).metrics]
    split = next(iter(next(iter(rows.values())).metrics)).split("/", 1)[0]
    head = ["reference model", *[f"{split}/{m}" for m in names], "trainable parameters", "examples",
            "best step / steps", f"gap closed ({split}/{names[0]})"]
    lines = ["", "### Reference models (the ceiling: never registered, never promoted)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows.values():
        no_pair = not tuned or not baseline
        gap = "n/a (no tuned prompt or baseline)" if no_pair else gap_text(_row_gap(row, tuned, baseline))
        cells = [row.title, *[f"{row.metrics.get(f'{split}/{m}', float('nan')):.4f}" for m in names],
                 str(row.trainable), str(row.n), f"{row.best_step} / {row.steps}", gap]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("- Gap closed = (tuned - best baseline) / (reference - best baseline), the best baseline chosen "
                 "on validation; 1 = the tuned prompt reaches the reference.")
    if tuned_n is not None and any(row.n != tuned_n for row in rows.values()):
        lines.append(f"- Some reference models were scored on a different number of {split} rows than the "
                     f"tuned prompt ({tuned_n}); compare with care.")
    return lines
