"""The report's markdown, JSON, chart and predictions file agree with each other and with the results."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ptune.evaluation.baseline import run_baselines, trainable_params
from ptune.evaluation.report import flat_metrics, write_report
from ptune.evaluation.scoring import EvalResult, evaluate
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec


def _result(preds, targets, seconds=1.0, **details):
    acc = sum(p == t for p, t in zip(preds, targets, strict=True)) / len(targets)
    return EvalResult({"test/accuracy": acc, "test/f1_macro": acc / 2}, list(preds), 0.25, len(preds), seconds,
                      dict(details))


@pytest.fixture
def real_results(tiny_causal):
    spec, test = make_spec(max_source_tokens=256), make_examples()
    results = dict(run_baselines(tiny_causal, spec, make_examples() * 2, test, k=2, progress=False))
    prompt = torch.randn(5, tiny_causal.hidden_size)
    results["tuned"] = evaluate(tiny_causal, spec, test, prompt, progress=False)
    trainable = {name: 0 for name in results} | {"tuned": trainable_params(prompt)}
    return results, trainable, test, tiny_causal.hidden_size


def _markdown_rows(text):
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in row.strip("|").split("|")), strict=True)) for row in rows[1:]]


def test_report_files_agree(tmp_path, real_results):
    results, trainable, test, hidden = real_results
    paths = write_report("toy", results, tmp_path / "report", trainable, examples=test,
                         notes={"chat_zero_shot": "skipped: no chat template"},
                         metrics_file=tmp_path / "metrics" / "toy.json")
    assert paths.chart.stat().st_size > 1000 and paths.chart.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(paths.metrics.read_text())
    md = paths.markdown.read_text()
    rows = {row["approach"].split(" (")[0]: row for row in _markdown_rows(md)}
    assert set(rows) == {"zero-shot", "k-shot", "tuned prompt"} and "skipped: no chat template" in md
    for title, head in [("zero-shot", "baseline/zero_shot/"), ("k-shot", "baseline/k_shot/"), ("tuned prompt", "")]:
        row = rows[title]
        for metric in ("accuracy", "f1_macro"):
            assert float(row[f"test/{metric}"]) == pytest.approx(data[f"{head}test/{metric}"], abs=5e-5)
        assert float(row["invalid-output rate"]) == pytest.approx(data[f"{head}test/invalid_rate"], abs=5e-5)
        assert int(row["trainable parameters"]) == data[f"{head}trainable_params"]
        assert int(row["examples"]) == data[f"{head}test/n"] == len(test)
    assert data["trainable_params"] == 5 * hidden and data["baseline/k_shot/trainable_params"] == 0
    lines = [json.loads(line) for line in paths.predictions.read_text().splitlines()]
    assert [line["id"] for line in lines] == [ex.id for ex in test]
    tuned_acc = sum(line["tuned_prediction"] == line["target"] for line in lines) / len(lines)
    assert tuned_acc == pytest.approx(data["test/accuracy"], abs=1e-6)
    best = lines[0]["best_baseline"]
    base_acc = sum(line["baseline_prediction"] == line["target"] for line in lines) / len(lines)
    assert base_acc == pytest.approx(data["baseline/best/test/accuracy"], abs=1e-6)
    assert data["baseline/best/test/accuracy"] == pytest.approx(data[f"baseline/{best}/test/accuracy"])
    assert data["gain/test/accuracy"] == pytest.approx(data["test/accuracy"] - data["baseline/best/test/accuracy"])


def test_flat_keys_are_split_metric_and_numbers_only():
    targets = ["a", "b", "a", "b"]
    results = {"zero_shot": _result(["a", "a", "a", "a"], targets), "k_shot": _result(["a", "b", "b", "b"], targets,
                                                                                    k_used=3),
               "tuned": _result(["a", "b", "a", "a"], targets)}
    data = flat_metrics(results, {"tuned": 100})
    assert data["test/accuracy"] == 0.75 and data["baseline/zero_shot/test/accuracy"] == 0.5
    assert data["baseline/best/test/accuracy"] == 0.75 and data["gain/test/accuracy"] == 0.0
    assert data["baseline/best/test/f1_macro"] == 0.375 and data["trainable_params"] == 100
    assert all(isinstance(v, (int, float)) for v in data.values())
    assert all(re.fullmatch(r"(baseline/\w+/|gain/)?(test/\w+|trainable_params)", k) for k in data)


def test_k_used_shows_in_markdown(tmp_path):
    targets = ["a", "b"]
    results = {"k_shot": _result(["a", "b"], targets, k_used=3), "tuned": _result(["a", "a"], targets)}
    paths = write_report("toy", results, tmp_path, {"tuned": 10})
    assert "k-shot (k=3)" in paths.markdown.read_text()
    assert paths.metrics == tmp_path / "metrics.json"
    lines = [json.loads(line) for line in paths.predictions.read_text().splitlines()]
    assert lines[1]["predictions"] == {"k_shot": "b", "tuned": "a"} and lines[1]["id"] == "1"


def test_cli_eval_report_predict_on_a_tiny_model(tmp_path, monkeypatch, tiny_causal_dir):
    """`ptune eval/report/predict` end to end: prepared rotten_tomatoes-shaped files + a tiny model."""
    from typer.testing import CliRunner

    from ptune.cli import app
    from ptune.model.artifacts import PromptMeta, save_prompt
    from ptune.model.base import load_base_model

    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    prepared = tmp_path / "data" / "prepared" / "rotten_tomatoes"
    prepared.mkdir(parents=True)
    for split, rows in {"train": make_examples() * 2, "validation": make_examples(), "test": make_examples()}.items():
        with (prepared / f"{split}.jsonl").open("w") as fh:
            for ex in rows:
                fh.write(json.dumps({"id": ex.id, "source": ex.source, "target": ex.target, "fields": ex.fields}) + "\n")
    base = load_base_model(str(tiny_causal_dir), threads=1)
    save_prompt(tmp_path / "outputs" / "rotten_tomatoes" / "prompt", torch.randn(4, base.hidden_size),
                PromptMeta(task="rotten_tomatoes", base_spec=str(tiny_causal_dir), base_fingerprint=base.fingerprint))
    runner = CliRunner()
    out = runner.invoke(app, ["eval", "rotten_tomatoes"])
    assert out.exit_code == 0, out.output
    scores = json.loads(out.stdout[out.stdout.index("{"):])
    assert scores["test/n"] == len(make_examples()) and "test/accuracy" in scores
    out = runner.invoke(app, ["report", "rotten_tomatoes"])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "metrics" / "rotten_tomatoes.json").read_text())
    assert data["test/accuracy"] == pytest.approx(scores["test/accuracy"])
    assert data["trainable_params"] == 4 * base.hidden_size and "baseline/k_shot/test/accuracy" in data
    assert (tmp_path / "outputs" / "rotten_tomatoes" / "report" / "report.md").exists()
    out = runner.invoke(app, ["predict", "rotten_tomatoes", "a witty film"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().splitlines()[-1] in ("positive", "negative")
