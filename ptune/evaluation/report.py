"""Tuned prompt vs hard-prompt baselines: one table per task, as markdown, flat JSON, a chart, and
per-example predictions. All four are written from the same `EvalResult`s, so they agree.

JSON keys (flat, so `dvc metrics show/diff` lists them one per line; "<split>" is e.g. "test"):
    "<split>/<metric>", "<split>/invalid_rate", "<split>/n", "<split>/seconds", "trainable_params"  tuned prompt
    "baseline/<name>/<split>/<metric>", ... , "baseline/<name>/trainable_params"       each baseline
    "baseline/best/<split>/<metric>"   best baseline per metric;  "gain/<split>/<metric>" tuned - that best
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptune.data.splits import Example
from ptune.evaluation.scoring import EvalResult
from ptune.fileio import atomic_path, atomic_write_text

TUNED = "tuned"
ROW_TITLES = {"zero_shot": "zero-shot", "k_shot": "k-shot", "chat_zero_shot": "chat-template zero-shot",
              TUNED: "tuned prompt"}


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path  # <out_dir>/report.md
    metrics: Path  # metrics_file, default <out_dir>/metrics.json
    chart: Path  # <out_dir>/tuned_vs_baseline.png
    predictions: Path  # <out_dir>/predictions.jsonl


def _ordered(results: Mapping[str, EvalResult]) -> list[str]:
    known = [n for n in ROW_TITLES if n in results]
    return known + [n for n in results if n not in ROW_TITLES]


def _metric_names(results: Mapping[str, EvalResult]) -> tuple[str, list[str]]:
    """(split, metric names) from the first result's keys "<split>/<metric>"; first = primary."""
    keys = list(next(iter(results.values())).metrics)
    split = keys[0].split("/", 1)[0]
    return split, [k.split("/", 1)[1] for k in keys]


def best_baseline(results: Mapping[str, EvalResult]) -> str | None:
    """Name of the baseline with the highest primary metric (None when there is none)."""
    names = [n for n in results if n != TUNED]
    if not names:
        return None
    primary = next(iter(results[names[0]].metrics))
    return max(names, key=lambda n: results[n].metrics[primary])


def flat_metrics(results: Mapping[str, EvalResult], trainable: Mapping[str, int]) -> dict[str, float]:
    """The JSON object described in the module docstring."""
    split, names = _metric_names(results)
    out: dict[str, float] = {}
    for name in _ordered(results):
        res, head = results[name], "" if name == TUNED else f"baseline/{name}/"
        out.update({f"{head}{key}": round(value, 6) for key, value in res.metrics.items()})
        out[f"{head}{split}/invalid_rate"] = round(res.invalid_rate, 6)
        out[f"{head}{split}/n"] = res.n
        out[f"{head}{split}/seconds"] = round(res.seconds, 3)
        out[f"{head}trainable_params"] = int(trainable.get(name, 0))
    baselines = [n for n in results if n != TUNED]
    for metric in names if baselines else []:
        key = f"{split}/{metric}"
        out[f"baseline/best/{key}"] = round(max(results[n].metrics[key] for n in baselines), 6)
        if TUNED in results:
            out[f"gain/{key}"] = round(results[TUNED].metrics[key] - out[f"baseline/best/{key}"], 6)
    return out


def _title(name: str, res: EvalResult) -> str:
    title = ROW_TITLES.get(name, name)
    if "k_used" in res.details:
        title += f" (k={res.details['k_used']})"
    return title


def markdown_table(task: str, results: Mapping[str, EvalResult], trainable: Mapping[str, int],
                   notes: Mapping[str, str] | None = None) -> str:
    """`## <task>` + one row per approach; numbers are the JSON values with 4 decimals."""
    split, names = _metric_names(results)
    head = ["approach", *[f"{split}/{m}" for m in names], "invalid-output rate", "trainable parameters",
            "examples", "seconds"]
    lines = [f"## {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in _ordered(results):
        res = results[name]
        cells = [_title(name, res), *[f"{res.metrics[f'{split}/{m}']:.4f}" for m in names],
                 f"{res.invalid_rate:.4f}", str(int(trainable.get(name, 0))), str(res.n), f"{res.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    best = best_baseline(results)
    if best:
        lines += ["", f"Best baseline: {ROW_TITLES.get(best, best)}."]
    lines += [f"- {name}: {note}" for name, note in (notes or {}).items()]
    return "\n".join(lines) + "\n"


def bar_chart(task: str, results: Mapping[str, EvalResult], path: Path) -> Path:
    """Grouped bars, one group per metric: tuned prompt vs the best baseline (PNG, Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, names = _metric_names(results)
    bars = [n for n in (best_baseline(results), TUNED) if n in results]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    width = 0.8 / len(bars)
    for i, name in enumerate(bars):
        values = [results[name].metrics[f"{split}/{m}"] for m in names]
        ax.bar([j + i * width for j in range(len(names))], values, width, label=_title(name, results[name]))
    ax.set_xticks([j + width * (len(bars) - 1) / 2 for j in range(len(names))], names)
    ax.set_title(f"{task}: tuned prompt vs best baseline ({split})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def write_predictions(results: Mapping[str, EvalResult], examples: Sequence[Example] | None, path: Path) -> Path:
    """JSONL, one line per example: id, source, target, best baseline's and tuned prediction, and
    every approach's prediction under "predictions"."""
    n = next(iter(results.values())).n
    best = best_baseline(results)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            ex = examples[i] if examples is not None else None
            row = {"id": ex.id if ex else str(i), "source": ex.source if ex else None,
                   "target": ex.target if ex else None, "best_baseline": best,
                   "baseline_prediction": results[best].predictions[i] if best else None,
                   "tuned_prediction": results[TUNED].predictions[i] if TUNED in results else None,
                   "predictions": {name: results[name].predictions[i] for name in _ordered(results)}}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_report(task: str, results: Mapping[str, EvalResult], out_dir: str | Path, trainable: Mapping[str, int],
                 *, examples: Sequence[Example] | None = None, notes: Mapping[str, str] | None = None,
                 metrics_file: str | Path | None = None) -> ReportPaths:
    """Write report.md, the metrics JSON, the chart and predictions.jsonl for one task.

    results: {"zero_shot" | "k_shot" | "chat_zero_shot" | "tuned" | other: EvalResult}, all on the same
    examples in the same order; trainable: parameters trained per approach (0 for baselines)."""
    if not results:
        raise ValueError(f"task {task!r}: no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out / "report.md", Path(metrics_file) if metrics_file else out / "metrics.json",
                        out / "tuned_vs_baseline.png", out / "predictions.jsonl")
    atomic_write_text(paths.markdown, markdown_table(task, results, trainable, notes))
    atomic_write_text(paths.metrics, json.dumps(flat_metrics(results, trainable), indent=2) + "\n")
    with atomic_path(paths.chart) as tmp:
        bar_chart(task, results, tmp)
    with atomic_path(paths.predictions) as tmp:
        write_predictions(results, examples, tmp)
    return paths


def read_report_metrics(prompt_dir: str | Path, metrics_file: str | Path | None = None,
                        owner: str | Path | None = None) -> dict[str, float]:
    """The numbers of the report written for the prompt at `prompt_dir` (tuned and baseline test metrics):
    <prompt_dir>/../report/metrics.json, else `metrics_file` when `prompt_dir` is `owner` (the task's default
    prompt, whose report goes to metrics/<task>.json). A report older than the prompt is not its report: {}."""
    tensor = Path(prompt_dir) / "prompt.safetensors"
    same = metrics_file is not None and owner is not None and Path(prompt_dir).resolve() == Path(owner).resolve()
    candidates = [Path(prompt_dir).parent / "report" / "metrics.json"] + ([Path(metrics_file)] if same else [])
    for path in candidates:
        if path.is_file() and tensor.is_file() and path.stat().st_mtime >= tensor.stat().st_mtime:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {}
