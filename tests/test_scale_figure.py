"""bench/scale_figure.py: rows come only from runs of the named model, missing cells stay missing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("scale_figure", ROOT / "bench" / "scale_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project(root: Path, model: str) -> Path:
    task = "rotten_tomatoes"
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / f"{task}.json").write_text(json.dumps({
        "test/accuracy": 0.85, "test/n": 400, "test/seconds": 3.0, "test/degenerate": 0,
        "baseline/majority/test/accuracy": 0.57, "baseline/majority/test/degenerate": 1,
        "baseline/k_shot_2_calibrated/test/accuracy": 0.82, "baseline/k_shot_2_calibrated/test/degenerate": 0}))
    out = root / "outputs" / task
    (out / "prompt").mkdir(parents=True)
    (out / "prompt" / "prompt.json").write_text(json.dumps({"base_model": {"spec": model}}))
    (out / "report").mkdir()
    (out / "report" / "predictions.jsonl").write_text(json.dumps({"best_baseline": "k_shot_2_calibrated"}) + "\n")
    (out / "reference").mkdir()
    (out / "reference" / "lora.json").write_text(json.dumps({
        "metrics": {"test/accuracy": 0.8375}, "n": 400, "best_step": 125, "seconds": 600, "seed": 0,
        "base_model": model}))
    return root


def test_collect_reads_the_runs_of_the_named_model_only(tmp_path):
    scale = _module()
    project = _project(tmp_path / "p", "gemma3-270m")
    rows = {r["approach"]: r for r in scale.collect(project, "gemma3-270m", ["rotten_tomatoes"])}
    assert {k: v["test"] for k, v in rows.items()} == {"prompt tuning": 0.85, "prompt engineering": 0.82,
                                                       "majority class": 0.57, "LoRA": 0.8375}
    assert "k_shot_2_calibrated" in rows["prompt engineering"]["source"] and rows["LoRA"]["params"] == 268.1e6
    assert scale.collect(project, "smollm2-135m", ["rotten_tomatoes"]) == []  # another model's report: nothing


def test_draw_writes_the_figure_and_the_table_marks_missing_cells(tmp_path):
    scale = _module()
    rows = scale.collect(_project(tmp_path / "p", "gemma3-270m"), "gemma3-270m", ["rotten_tomatoes"])
    scale.draw(rows, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"
    table = scale.table(rows)
    assert "| rotten_tomatoes | gemma3-270m | 0.5700 | 0.8200 | 0.8500 | 0.8375 | not run |" in table
