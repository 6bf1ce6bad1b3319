"""Tuned prompt vs hard-prompt baselines: one table per task, as markdown, flat JSON, a chart, and
per-example predictions. All four are written from the same `EvalResult`s and `Analysis`, so they agree.

JSON keys (flat, so `dvc metrics show/diff` lists them one per line; "<split>" is e.g. "test", <p> the
primary metric):
    "<split>/<metric>", "<split>/invalid_rate", "<split>/n", "<split>/seconds", "trainable_params"  tuned prompt
    "<split>/majority_share", "<split>/degenerate" (1 = one answer for >= evaluate.degenerate_share of rows),
    "<split>/<p>/ci_low", "<split>/<p>/ci_high"   95% bootstrap interval of the score
    "baseline/<name>/..."   the same for each baseline row
    "baseline/best/<split>/<metric>"  the best baseline, CHOSEN ON VALIDATION ("baseline/best/validation/<p>")
    "gain/<split>/<metric>" tuned - that best; "gain/<split>/<p>/ci_low|ci_high" its paired 95% interval
    "kshot/<split>/<p>/mean|std|best"  k-shot over the demonstration draws (best = draw chosen on validation)
    "reference/<method>/<split>/<metric>", "reference/<method>/gap_closed"  reference models, when their files
        exist (ptune.evaluation.references); never in `gate_metrics`, so never in MLflow or the promotion gate
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptune.data.splits import Example
from ptune.evaluation import references as refs
from ptune.evaluation.analysis import TUNED, Analysis
from ptune.evaluation.chart import CHART_NAME, report_chart
from ptune.evaluation.headline import write_headline
from ptune.evaluation.scoring import EvalResult
from ptune.fileio import atomic_path, atomic_write_text

ROW_TITLES = {"majority": "majority class", "zero_shot": "zero-shot", "k_shot": "k-shot",
              "chat_zero_shot": "chat-template zero-shot", TUNED: "tuned prompt"}


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path  # <out_dir>/report.md
    metrics: Path  # metrics_file, default <out_dir>/metrics.json
    chart: Path  # <out_dir>/tuned_vs_baseline.png (stable name: MLflow report/, Prefect, DVC plots)
    predictions: Path  # <out_dir>/predictions.jsonl


def _ordered(results: Mapping[str, EvalResult]) -> list[str]:
    """Baseline rows in the order they were run, the tuned prompt last."""
    return [n for n in results if n != TUNED] + ([TUNED] if TUNED in results else [])


def _metric_names(results: Mapping[str, EvalResult]) -> tuple[str, list[str]]:
    """(split, metric names) from the first result's keys "<split>/<metric>"; first = primary."""
    keys = list(next(iter(results.values())).metrics)
    split = keys[0].split("/", 1)[0]
    return split, [k.split("/", 1)[1] for k in keys]


def best_baseline(results: Mapping[str, EvalResult], analysis: Analysis | None = None) -> str | None:
    """The baseline chosen on validation (`analysis.selected`); without an analysis, the highest primary
    metric among `results` (None when there is no baseline)."""
    if analysis is not None:
        return analysis.selected
    names = [n for n in results if n != TUNED]
    if not names:
        return None
    primary = next(iter(results[names[0]].metrics))
    return max(names, key=lambda n: results[n].metrics[primary])


def flat_metrics(results: Mapping[str, EvalResult], trainable: Mapping[str, int],
                 analysis: Analysis | None = None) -> dict[str, float]:
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
        if analysis is not None:
            out.update(_row_stats(analysis, name, head, split))
    best = best_baseline(results, analysis)
    if best is not None:
        out.update(_best_stats(results, analysis, best, split, names))
    return out


def gate_metrics(flat: Mapping[str, float]) -> dict[str, float]:
    """The JSON keys MLflow keeps beside the metrics, for the promotion gate: the tuned row's n, answer share,
    degenerate flag and interval, "baseline/best/*" and "gain/*" (intervals included)."""
    rows = ("baseline/", "kshot/", "reference/")
    return {k: float(v) for k, v in flat.items() if (k.startswith("baseline/best/") or not k.startswith(rows))
            and not k.endswith(("/seconds", "/invalid_rate")) and k != "trainable_params"}


def _row_stats(analysis: Analysis, name: str, head: str, split: str) -> dict[str, float]:
    ci = analysis.intervals[name]
    return {f"{head}{split}/majority_share": round(analysis.shares[name], 6),
            f"{head}{split}/degenerate": int(analysis.degenerate(name)),
            f"{head}{ci.metric}/ci_low": round(ci.low, 6), f"{head}{ci.metric}/ci_high": round(ci.high, 6)}


def _best_stats(results: Mapping[str, EvalResult], analysis: Analysis | None, best: str, split: str,
                names: list[str]) -> dict[str, float]:
    """"baseline/best/...", "gain/..." (+ interval) and the k-shot summary."""
    out: dict[str, float] = {}
    for metric in names:
        key = f"{split}/{metric}"
        out[f"baseline/best/{key}"] = round(results[best].metrics[key], 6)
        if TUNED in results:
            out[f"gain/{key}"] = round(results[TUNED].metrics[key] - results[best].metrics[key], 6)
    if analysis is None:
        return out
    if best in analysis.validation:
        out[f"baseline/best/validation/{names[0]}"] = round(analysis.validation[best], 6)
    if analysis.gain is not None:
        out[f"gain/{analysis.metric}/ci_low"] = round(analysis.gain.low, 6)
        out[f"gain/{analysis.metric}/ci_high"] = round(analysis.gain.high, 6)
    out.update({f"kshot/{analysis.metric}/{k}": round(v, 6) for k, v in analysis.kshot.items() if k != "draws"})
    return out


def _title(name: str, res: EvalResult) -> str:
    base, calibrated = (name.removesuffix("_calibrated"), name.endswith("_calibrated"))
    title = ROW_TITLES.get(base, base)
    if base.startswith("k_shot_"):
        title = f"k-shot draw {base.removeprefix('k_shot_')}"  # "k_shot" is draw 1, titled "k-shot"
    if "k_used" in res.details:
        title += f" (k={res.details['k_used']})"
    return title + (", calibrated" if calibrated else "")


def markdown_table(task: str, results: Mapping[str, EvalResult], trainable: Mapping[str, int],
                   notes: Mapping[str, str] | None = None, analysis: Analysis | None = None) -> str:
    """`## <task>` + one row per approach; numbers are the JSON values with 4 decimals; then the best
    baseline (chosen on validation), the tuned prompt's gain with its interval, k-shot draws, warnings."""
    split, names = _metric_names(results)
    stats = ["95% CI", "top answer share"] if analysis else []
    head = ["approach", *[f"{split}/{m}" for m in names], *stats, "invalid-output rate", "trainable parameters",
            "examples", "seconds"]
    lines = [f"## {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in _ordered(results):
        res = results[name]
        cells = [_title(name, res), *[f"{res.metrics[f'{split}/{m}']:.4f}" for m in names],
                 *(_stat_cells(analysis, name) if analysis else []),
                 f"{res.invalid_rate:.4f}", str(int(trainable.get(name, 0))), str(res.n), f"{res.seconds:.1f}"]
        if analysis and name == analysis.selected:
            cells[0] = f"**{cells[0]}** (best baseline)"
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + (_summary(results, analysis) if analysis else _legacy_best(results))
    lines += [f"- {name}: {note}" for name, note in (notes or {}).items()]
    return "\n".join(lines) + "\n"


def _stat_cells(analysis: Analysis, name: str) -> list[str]:
    ci, share = analysis.intervals[name], analysis.shares[name]
    flag = " **degenerate**" if analysis.degenerate(name) else ""
    return [f"[{ci.low:.4f}, {ci.high:.4f}]", f"{share_text(share, analysis.threshold)}{flag}"]


def share_text(share: float, threshold: float | None) -> str:
    """Two digits, or three within 0.01 of the degenerate threshold (0.947 next to a rule at 0.95, not 0.95)."""
    near = threshold is not None and abs(share - threshold) < 0.01
    return f"{share:.3f}" if near else f"{share:.2f}"


def _below_majority(results: Mapping[str, EvalResult], metric: str) -> list[str]:
    """A tuned prompt under the majority class's score, said plainly whatever its gain over the best baseline."""
    tuned, majority = results.get("tuned"), results.get("majority")
    if tuned is None or majority is None or metric not in tuned.metrics or metric not in majority.metrics:
        return []
    t, m = tuned.metrics[metric], majority.metrics[metric]
    return [f"- **Below the majority rate**: the tuned prompt's {metric} {t:.4f} is under the majority class's "
            f"{m:.4f} (always answering the most frequent label)."] if t < m else []


def _legacy_best(results: Mapping[str, EvalResult]) -> list[str]:
    best = best_baseline(results)
    return [f"Best baseline: {ROW_TITLES.get(best, best)}."] if best else []


def _summary(results: Mapping[str, EvalResult], analysis: Analysis) -> list[str]:
    """The lines under the table: selection, gain interval, k-shot draws, degenerate approaches."""
    out = []
    best, metric = analysis.selected, analysis.metric
    if best is not None:
        val = analysis.validation.get(best)
        chosen = (f"chosen on the validation split ({val:.4f})" if val is not None
                  else f"chosen on the {analysis.selected_on} split (no validation results were given)")
        out.append(f"- Best baseline: {_title(best, results[best])}, {chosen}; {metric} {results[best].metrics[metric]:.4f}.")
    if analysis.gain is not None:
        out.append(f"- Tuned - best baseline: {analysis.gain.text()} (paired bootstrap, "
                   f"{analysis.gain.n_resamples} resamples).")
    if analysis.kshot:
        k = analysis.kshot
        line = f"- k-shot over {int(k['draws'])} draws: mean {k['mean']:.4f} ± {k['std']:.4f}"
        if analysis.best_draw is not None:
            line += f"; best on validation: {_title(analysis.best_draw, results[analysis.best_draw])}, {k['best']:.4f}"
        out.append(line + ".")
    out += _below_majority(results, metric)
    flagged = [n for n in _ordered(results) if analysis.degenerate(n)]
    if flagged:
        out.append(f"- **Degenerate** (one answer for >= {analysis.threshold:.0%} of rows; never promoted): "
                   + ", ".join(_title(n, results[n]) for n in flagged) + ".")
    return out


def write_predictions(results: Mapping[str, EvalResult], examples: Sequence[Example] | None, path: Path,
                      best: str | None = None) -> Path:
    """JSONL, one line per example: id, source, target, best baseline's and tuned prediction, and
    every approach's prediction under "predictions"."""
    n = next(iter(results.values())).n
    best = best or best_baseline(results)
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
                 metrics_file: str | Path | None = None, analysis: Analysis | None = None,
                 curve: str | Path | None = None,
                 references: Mapping[str, refs.ReferenceRow] | None = None) -> ReportPaths:
    """Write report.md, the metrics JSON and its headline (`ptune.evaluation.headline`), the chart and
    predictions.jsonl for one task.

    results: {"zero_shot" | "k_shot" | "chat_zero_shot" | "tuned" | other: EvalResult}, all on the same
    examples in the same order; trainable: parameters trained per approach (0 for baselines); analysis:
    intervals and the validation-chosen best baseline (`ptune.evaluation.analysis`); curve: the training
    curve CSV drawn beside the scores; references: reference-model rows (ptune.evaluation.references), in
    their own table and in the chart, with the gap each closes."""
    if not results:
        raise ValueError(f"task {task!r}: no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out / "report.md", Path(metrics_file) if metrics_file else out / "metrics.json",
                        out / CHART_NAME, out / "predictions.jsonl")
    references = references or {}
    tuned, best = _gap_ends(results, analysis)
    table = markdown_table(task, results, trainable, notes, analysis)
    table += "\n".join(refs.markdown(references, tuned, best, results[TUNED].n if TUNED in results else None))
    atomic_write_text(paths.markdown, table.rstrip("\n") + "\n")
    flat = {**flat_metrics(results, trainable, analysis), **refs.flat(references, tuned, best)}
    atomic_write_text(paths.metrics, json.dumps(flat, indent=2) + "\n")
    write_headline(paths.metrics, task, flat, best_baseline(results, analysis))  # <stem>_headline.json beside it
    titles = {name: _title(name, res) for name, res in results.items()}
    ceiling = {row.title: next(iter(row.metrics.values())) for row in references.values()}
    with atomic_path(paths.chart) as tmp:
        report_chart(task, results, titles, tmp, analysis=analysis, curve=curve, references=ceiling)
    with atomic_path(paths.predictions) as tmp:
        write_predictions(results, examples, tmp, best_baseline(results, analysis))
    return paths


def _gap_ends(results: Mapping[str, EvalResult],
              analysis: Analysis | None) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(tuned metrics, best baseline's metrics) for the gap closed; None where there is no such row."""
    best = best_baseline(results, analysis)
    return (results[TUNED].metrics if TUNED in results else None), (results[best].metrics if best else None)
