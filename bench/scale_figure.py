"""The paper's Figure 1 at our two sizes: test score against model size for prompt engineering (the best
hand-written prompt, chosen on validation), prompt tuning, LoRA and full fine-tuning, one panel per task.

Two steps, so the numbers stay reviewable in git:

    # after `ptune train T`, `ptune report T` and `ptune reference T --method lora|full` in a project
    python bench/scale_figure.py collect --project DIR --model smollm2-135m --tasks rotten_tomatoes,intent
    # draw docs/img/scale.png and print the README table from bench/results/scale.json
    python bench/scale_figure.py draw

`collect` reads the project's `metrics/<task>.json` (the tuned prompt and the baselines on test, written by
`ptune report`), its `outputs/<task>/report/predictions.jsonl` (which baseline won on validation) and
`outputs/<task>/reference/<method>.json`, and replaces that model's rows in bench/results/scale.json. A row
that is missing stays missing: nothing is filled in. Numbers measured elsewhere (an older run) can be added
by hand to the JSON with their `source`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ptune.data.catalog import get_task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
FIGURE = ROOT / "docs" / "img" / "scale.png"
APPROACHES = ("prompt engineering", "prompt tuning", "LoRA", "full fine-tuning")
TASK_ORDER = ("rotten_tomatoes", "presupposition_nli", "intent")  # the order; other tasks after
MODEL_PARAMS = {"smollm2-135m": 134.5e6, "gemma3-270m": 268.1e6}


def collect(project: Path, model: str, tasks: list[str]) -> list[dict]:
    """This model's rows from one project directory (see the module docstring)."""
    rows = []
    for task in tasks:
        metrics_path = project / "metrics" / f"{task}.json"
        if metrics_path.is_file() and _prompt_model(project, task) == model:  # not a report of another model
            metrics = json.loads(metrics_path.read_text())
            name = get_task(task).metrics[0]  # the primary metric, as the report and promotion use it
            metric = f"test/{name}"
            rows.append(_row(model, task, "prompt tuning", metrics, metric, f"ptune train {task} + ptune report {task}"))
            best = _best_baseline(project, task)
            if best:
                rows.append(_row(model, task, "prompt engineering", metrics, f"baseline/{best}/test/{name}",
                                 f"ptune report {task}: {best}, chosen on validation"))
            if f"baseline/majority/test/{name}" in metrics:
                rows.append(_row(model, task, "majority class", metrics, f"baseline/majority/test/{name}",
                                 f"ptune report {task}"))
        for method, approach in (("lora", "LoRA"), ("full", "full fine-tuning")):
            ref_path = project / "outputs" / task / "reference" / f"{method}.json"
            if ref_path.is_file():
                ref = json.loads(ref_path.read_text())
                if ref.get("base_model") != model:
                    continue
                metric = f"test/{get_task(task).metrics[0]}"
                rows.append({"model": model, "params": MODEL_PARAMS.get(model), "task": task, "approach": approach,
                             "test": ref["metrics"][metric], "n": ref.get("n"), "metric": metric,
                             "source": f"ptune reference {task} --method {method} (best step {ref.get('best_step')}, "
                                       f"{ref.get('seconds')} s, seed {ref.get('seed')})"})
    return [r for r in rows if r["test"] is not None]


def _row(model: str, task: str, approach: str, metrics: dict, key: str, source: str) -> dict:
    return {"model": model, "params": MODEL_PARAMS.get(model), "task": task, "approach": approach,
            "test": metrics.get(key), "n": metrics.get("test/n"), "metric": key,
            "degenerate": bool(metrics.get(key.rsplit("/", 1)[0] + "/degenerate", 0)), "source": source}


def _prompt_model(project: Path, task: str) -> str | None:
    """The base model the project's trained prompt for `task` belongs to (its prompt.json), or None."""
    path = project / "outputs" / task / "prompt" / "prompt.json"
    return json.loads(path.read_text())["base_model"]["spec"] if path.is_file() else None


def _best_baseline(project: Path, task: str) -> str | None:
    path = project / "outputs" / task / "report" / "predictions.jsonl"
    if not path.is_file():
        return None
    with path.open() as fh:
        first = fh.readline()
    return json.loads(first).get("best_baseline") if first.strip() else None


def _task_key(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def draw(rows: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows}, key=_task_key)
    sizes = sorted({r["params"] / 1e6 for r in rows})
    names = {r["params"] / 1e6: f"{r['model']}\n({r['params'] / 1e6:.1f}M)" for r in rows}
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.0), squeeze=False)
    styles = {"prompt engineering": ("tab:orange", "s"), "prompt tuning": ("tab:blue", "o"),
              "LoRA": ("tab:green", "^"), "full fine-tuning": ("tab:red", "D")}
    for ax, task in zip(axes[0], tasks, strict=True):
        for approach in APPROACHES:
            pts = sorted((r["params"], r["test"]) for r in rows if r["task"] == task and r["approach"] == approach)
            if pts:
                color, marker = styles[approach]
                ax.plot([p / 1e6 for p, _ in pts], [v for _, v in pts], marker=marker, color=color, label=approach)
        majority = sorted((r["params"], r["test"]) for r in rows if r["task"] == task and r["approach"] == "majority class")
        if majority:
            ax.plot([p / 1e6 for p, _ in majority], [v for _, v in majority], ls="--", marker="_", markersize=14,
                    color="grey", label="majority class")
        ax.set_xscale("log")
        ax.set_xlim(sizes[0] / 1.25, sizes[-1] * 1.25)  # every panel spans every size, run or not
        ax.set_xticks(sizes, [names[s] for s in sizes])
        ax.minorticks_off()
        ax.set_title(task, fontsize=11)
        ax.set_xlabel("model parameters")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    legend = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=5, frameon=False)
    fig.suptitle("Score vs model size (SmolLM2-135M, Gemma 3 270M; seed 0, CPU)", fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """Markdown: one line per (task, model), one column per approach."""
    cols = ("majority class", *APPROACHES)
    lines = ["| task | model | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for task in sorted({r["task"] for r in rows}, key=_task_key):
        for model in sorted({r["model"] for r in rows if r["task"] == task}, key=lambda m: MODEL_PARAMS.get(m, 0)):
            cells = []
            for approach in cols:
                hit = [r for r in rows if (r["task"], r["model"], r["approach"]) == (task, model, approach)]
                cells.append(f"{hit[0]['test']:.4f}" + (" (degenerate)" if hit[0].get("degenerate") and approach != "majority class" else "")
                             if hit else "not run")
            lines.append(f"| {task} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--project", type=Path, required=True)
    c.add_argument("--model", required=True, choices=sorted(MODEL_PARAMS))
    c.add_argument("--tasks", default="rotten_tomatoes,presupposition_nli,intent")
    c.add_argument("--note", default="", help="appended to the source of the collected prompt-tuning rows")
    d = sub.add_parser("draw")
    d.add_argument("--out", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": []}
    if args.cmd == "collect":
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        new = collect(args.project, args.model, tasks)
        for row in new:
            row["source"] += f"; {args.note}" if args.note and row["approach"] == "prompt tuning" else ""
        keep = [r for r in data["rows"] if not (r["model"] == args.model and r["task"] in tasks
                                                and any((n["task"], n["approach"]) == (r["task"], r["approach"]) for n in new))]
        data["rows"] = keep + new
        RESULTS.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{len(new)} rows for {args.model} from {args.project}")
        return 0
    if not data["rows"]:
        print(f"no rows in {RESULTS}: run `collect` first", file=sys.stderr)
        return 1
    draw(data["rows"], args.out)
    print(table(data["rows"]))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
