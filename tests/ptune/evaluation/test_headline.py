"""The headline metrics file: written by every report beside the detailed JSON, agreeing with it; declared as a
DVC metrics file of the evaluate stage; committed for the recorded tasks; and the README's `dvc exp show`
example keeps exactly its columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ptune.data.splits import Example
from ptune.evaluation.analysis import analyse
from ptune.evaluation.headline import headline, headline_path, verdict
from ptune.evaluation.report import write_report
from ptune.evaluation.scoring import EvalResult
from tests.ptune.evaluation.eval_helpers import make_spec

REPO = Path(__file__).resolve().parents[3]
KEYS = {"task", "metric", "tuned", "best_baseline", "best_baseline_name", "gain", "ci_low", "ci_high", "n",
        "majority", "below_majority", "degenerate", "verdict"}


def result(preds: list[str], targets: list[str]) -> EvalResult:
    acc = sum(p == t for p, t in zip(preds, targets, strict=True)) / len(targets)
    return EvalResult({"test/accuracy": acc, "test/f1_macro": acc / 2}, list(preds), 0.0, len(preds), 1.0)


def test_every_report_writes_a_headline_that_agrees_with_the_detail(tmp_path):
    targets = ["positive", "negative"] * 20
    flip = {"positive": "negative", "negative": "positive"}
    wrong = lambda every: [flip[t] if i % every == 0 else t for i, t in enumerate(targets)]  # noqa: E731
    results = {"majority": result(["positive"] * 40, targets), "zero_shot": result(wrong(3), targets),
               "k_shot": result(wrong(2), targets), "tuned": result(wrong(9), targets)}
    examples = [Example(str(i), f"Review: {i}\nSentiment:", t, {"text": str(i)}) for i, t in enumerate(targets)]
    analysis = analyse(make_spec(), examples, results, None, n_resamples=200)
    paths = write_report("toy", results, tmp_path, {"tuned": 10}, examples=examples, analysis=analysis)
    detail = json.loads(paths.metrics.read_text())
    head = json.loads(headline_path(paths.metrics).read_text())
    assert headline_path(paths.metrics) == tmp_path / "metrics_headline.json" and set(head) == KEYS
    assert head["task"] == "toy" and head["metric"] == "test/accuracy" and head["n"] == 40
    assert head["tuned"] == detail["test/accuracy"] and head["best_baseline"] == detail["baseline/best/test/accuracy"]
    assert head["best_baseline_name"] == analysis.selected == "zero_shot"
    assert head["gain"] == detail["gain/test/accuracy"] == pytest.approx(head["tuned"] - head["best_baseline"])
    assert (head["ci_low"], head["ci_high"]) == (detail["gain/test/accuracy/ci_low"], detail["gain/test/accuracy/ci_high"])
    assert head["majority"] == 0.5 and head["below_majority"] == 0 and head["degenerate"] == 0
    assert head["verdict"] == verdict(head["gain"], head["ci_low"], head["ci_high"], False)


@pytest.mark.parametrize("task", ["rotten_tomatoes", "aclsum_title"])
def test_the_recorded_tasks_have_their_headline_committed(task):
    detail = json.loads((REPO / "metrics" / f"{task}.json").read_text())
    committed = json.loads((REPO / "metrics" / f"{task}_headline.json").read_text())
    assert committed == headline(task, detail, committed["best_baseline_name"]) and set(committed) == KEYS
    assert detail[f"baseline/{committed['best_baseline_name']}/{committed['metric']}"] == committed["best_baseline"]


def test_the_evaluate_stage_declares_the_headline_and_the_readme_shows_its_columns():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["do"]
    metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage["metrics"]]
    assert "metrics/${item}_headline.json" in metrics
    readme = (REPO / "README.md").read_text()
    assert "dvc metrics show metrics/*_headline.json" in readme
    shown = re.search(r"dvc exp show (.*)--keep '([^']+)'", readme)
    assert shown and "--drop '.*'" in shown.group(1)
    keep = re.compile(shown.group(2))  # dvc matches from a column name's start (re.match)
    columns = [f"metrics/rotten_tomatoes_headline.json:{key}" for key in KEYS]
    kept = {c.split(":")[1] for c in columns if keep.match(c)}
    assert {"tuned", "best_baseline", "gain", "ci_low", "ci_high", "verdict"} <= kept
    assert keep.match("Experiment") and keep.match("train.lr") and not keep.match("gain/test/accuracy")
