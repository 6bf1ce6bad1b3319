"""The report chart (PNG, matplotlib Agg): every approach with its 95% interval, and the validation curve.

Left: one row per approach (baselines, calibrated twins, majority class, tuned prompt, and any other row
such as reference runs), a dot at its score and a bar over its bootstrap interval; the best baseline (chosen
on validation) and the tuned prompt are coloured, degenerate rows are grey and say so. Reference models (the
ceiling, `ptune reference`) sit on top as purple diamonds without an interval, under a dashed separator. Right: the tuned
prompt's validation metric over training steps, with the best baseline's validation score as a line.
Constrained layout and wrapped titles keep every text inside the figure (tested). The file name is stable,
`tuned_vs_baseline.png`, so MLflow (`report/`), the Prefect artifact and DVC plots find it at one path.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Mapping
from pathlib import Path

from ptune.evaluation.analysis import TUNED, Analysis
from ptune.evaluation.scoring import EvalResult

CHART_NAME = "tuned_vs_baseline.png"
COLORS = {"tuned": "#1b7837", "best": "#2166ac", "other": "#555555", "degenerate": "#bbbbbb", "reference": "#762a83"}


def read_curve(path: str | Path | None, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of column `metric` (e.g. "validation/accuracy") of a training curve CSV; empty if absent."""
    if path is None or not Path(path).is_file():
        return [], []
    steps, values = [], []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get(metric):
                steps.append(int(row["step"]))
                values.append(float(row[metric]))
    return steps, values


def report_chart(task: str, results: Mapping[str, EvalResult], titles: Mapping[str, str], path: Path, *,
                 analysis: Analysis | None = None, curve: str | Path | None = None,
                 references: Mapping[str, float] | None = None) -> Path:
    """Write the chart described in the module docstring to `path` (PNG); returns `path`.
    references: {row title: primary metric} of reference models."""
    import matplotlib.pyplot as plt

    fig = chart_figure(task, results, titles, analysis=analysis, curve=curve, references=references)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def chart_figure(task: str, results: Mapping[str, EvalResult], titles: Mapping[str, str], *,
                 analysis: Analysis | None = None, curve: str | Path | None = None,
                 references: Mapping[str, float] | None = None):
    """The matplotlib Figure of `report_chart` (open: the caller closes it). Its texts are literal: a "$"
    in a task or label name is not mathtext (two of them made matplotlib raise at draw time)."""
    import matplotlib
    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        return _chart_figure(task, results, titles, analysis=analysis, curve=curve, references=references)


def _chart_figure(task: str, results: Mapping[str, EvalResult], titles: Mapping[str, str], *,
                  analysis: Analysis | None, curve: str | Path | None, references: Mapping[str, float] | None):
    import matplotlib.pyplot as plt

    names = [n for n in results if n != TUNED] + ([TUNED] if TUNED in results else [])
    metric = next(iter(results[names[0]].metrics))
    references = dict(references or {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 2.2 + 0.32 * (len(names) + len(references))),
                                      layout="constrained", width_ratios=(3, 2))
    _scores(left, names, results, titles, analysis, metric)
    _references(left, references, len(names))
    _curve(right, curve, metric, results, analysis)
    fig.suptitle(_wrap(f"{task}: every approach on the {metric.split('/', 1)[0]} split, with 95% intervals", 90),
                 fontsize=11)
    return fig


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _color(name: str, analysis: Analysis | None) -> str:
    if analysis is not None and analysis.degenerate(name):
        return COLORS["degenerate"]
    if name == TUNED:
        return COLORS["tuned"]
    return COLORS["best"] if analysis is not None and name == analysis.selected else COLORS["other"]


def _scores(ax, names: list[str], results: Mapping[str, EvalResult], titles: Mapping[str, str],
            analysis: Analysis | None, metric: str) -> None:
    """Dot-and-interval rows, the tuned prompt on top."""
    for y, name in enumerate(names):
        score = results[name].metrics[metric]
        color = _color(name, analysis)
        if analysis is not None and name in analysis.intervals:
            ci = analysis.intervals[name]
            ax.plot([ci.low, ci.high], [y, y], color=color, linewidth=3, alpha=0.6, solid_capstyle="butt")
        ax.plot([score], [y], "o", color=color, markersize=7)
    labels = [titles.get(n, n) + (" (degenerate)" if analysis and analysis.degenerate(n) else "")
              + (" [best baseline]" if analysis and n == analysis.selected else "") for n in names]
    ax.set_yticks(range(len(names)), [_wrap(label, 38) for label in labels], fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    if analysis is not None and analysis.selected in results:
        ax.axvline(results[analysis.selected].metrics[metric], color=COLORS["best"], linestyle=":", linewidth=1)
    ax.set_xlabel(metric, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    gain = analysis.gain if analysis is not None else None
    ax.set_title(_wrap("tuned - best baseline: " + gain.text(3), 60) if gain else "scores", fontsize=9)


def _references(ax, references: Mapping[str, float], first: int) -> None:
    """Reference models above the prompts: diamonds, no interval, a dashed line between the two groups."""
    if not references:
        return
    ticks, labels = list(ax.get_yticks()), [t.get_text() for t in ax.get_yticklabels()]
    for y, (title, score) in enumerate(references.items(), start=first):
        ax.plot([score], [y], "D", color=COLORS["reference"], markersize=7)
        ticks.append(y)
        labels.append(_wrap(f"{title} (ceiling)", 38))
    ax.axhline(first - 0.5, color=COLORS["reference"], linestyle="--", linewidth=0.8)
    ax.set_yticks(ticks, labels, fontsize=8)
    for label in ax.get_yticklabels()[first:]:
        label.set_color(COLORS["reference"])
    ax.set_ylim(-0.6, first + len(references) - 0.4)


def _curve(ax, curve: str | Path | None, metric: str, results: Mapping[str, EvalResult],
           analysis: Analysis | None) -> None:
    """The tuned prompt's validation curve and the best baseline's validation score."""
    val_metric = "validation/" + metric.split("/", 1)[1]
    steps, values = read_curve(curve, val_metric)
    if steps:
        ax.plot(steps, values, "o-", color=COLORS["tuned"], label="tuned prompt", markersize=4)
    best_val = analysis.validation.get(analysis.selected) if analysis and analysis.selected else None
    if best_val is not None:
        ax.axhline(best_val, color=COLORS["best"], linestyle=":", label="best baseline")
    if steps or best_val is not None:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no validation curve", ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_xlabel("training step", fontsize=9)
    ax.set_ylabel(val_metric, fontsize=9)
    ax.set_title("validation during training", fontsize=9)
    ax.grid(alpha=0.3)
