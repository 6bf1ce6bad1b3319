"""The report's markdown, JSON, chart and predictions file agree with each other and with the results."""

from __future__ import annotations

import dataclasses
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
    (tmp_path / "params.yaml").write_text(f"model: {tiny_causal_dir}\n")  # the base eval/report/predict may load
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


def _analysed(tmp_path, long_name: bool = False):
    """Six rows of 40 examples: a degenerate zero-shot that wins on TEST, a k-shot that wins on VALIDATION."""
    from ptune.data.splits import Example
    from ptune.evaluation.analysis import analyse

    targets = ["positive", "negative"] * 20
    flip = {"positive": "negative", "negative": "positive"}
    def preds(wrong_every):
        return [flip[t] if i % wrong_every == 0 else t for i, t in enumerate(targets)]
    results = {"majority": _result(["positive"] * 40, targets), "zero_shot": _result(["positive"] * 39 + ["negative"], targets),
               "k_shot": _result(preds(3), targets, k_used=4), "k_shot_2": _result(preds(2), targets, k_used=4),
               "tuned": _result(preds(7), targets)}
    if long_name:
        results["a_reference_row_with_a_very_long_name_that_could_be_clipped_calibrated"] = _result(preds(5), targets)
    val = {name: _result(r.predictions, targets) for name, r in results.items() if name != "tuned"}
    val["zero_shot"] = _result(preds(2), targets)  # zero-shot is worse on validation than k-shot
    val = {n: dataclasses.replace(r, metrics={k.replace("test/", "validation/"): v for k, v in r.metrics.items()})
           for n, r in val.items()}
    examples = [Example(str(i), f"Review: {i}\nSentiment:", t, {"text": str(i)}) for i, t in enumerate(targets)]
    return results, analyse(make_spec(), examples, results, val, n_resamples=200), examples


def test_report_marks_the_validation_choice_intervals_and_degenerate_rows(tmp_path):
    results, analysis, examples = _analysed(tmp_path)
    assert analysis.selected == "k_shot" and results["zero_shot"].metrics["test/accuracy"] == 0.525
    assert analysis.degenerate("majority") and analysis.degenerate("zero_shot") and not analysis.degenerate("tuned")
    paths = write_report("toy", results, tmp_path, {"tuned": 10}, examples=examples, analysis=analysis)
    data, md = json.loads(paths.metrics.read_text()), paths.markdown.read_text()
    assert data["baseline/best/test/accuracy"] == results["k_shot"].metrics["test/accuracy"]  # not the best on test
    assert data["baseline/best/validation/accuracy"] == analysis.validation["k_shot"]
    assert data["gain/test/accuracy/ci_low"] <= data["gain/test/accuracy"] <= data["gain/test/accuracy/ci_high"]
    assert data["baseline/zero_shot/test/degenerate"] == 1 and data["test/degenerate"] == 0
    assert data["test/accuracy/ci_low"] <= data["test/accuracy"] <= data["test/accuracy/ci_high"]
    assert data["kshot/test/accuracy/mean"] == pytest.approx((data["baseline/k_shot/test/accuracy"]
                                                              + data["baseline/k_shot_2/test/accuracy"]) / 2)
    assert "chosen on the validation split" in md and "95% CI" in md and "**Degenerate**" in md
    assert "**k-shot (k=4)** (best baseline)" in md and "majority class" in md and "k-shot draw 2" in md
    assert lines_best(paths) == "k_shot"


def lines_best(paths):
    return json.loads(paths.predictions.read_text().splitlines()[0])["best_baseline"]


def test_chart_is_written_and_no_text_leaves_the_figure(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from ptune.evaluation.chart import chart_figure

    results, analysis, examples = _analysed(tmp_path, long_name=True)
    curve = tmp_path / "curve.csv"
    curve.write_text("step,train/loss,validation/accuracy\n1,0.9,\n3,0.7,0.6\n6,0.5,0.8\n")
    paths = write_report("toy", results, tmp_path, {"tuned": 10}, examples=examples, analysis=analysis, curve=curve)
    assert paths.chart.name == "tuned_vs_baseline.png" and paths.chart.read_bytes()[:4] == b"\x89PNG"
    fig = chart_figure("a_task_with_a_long_name_like_presupposition_nli_$$", results, {n: n for n in results},
                       analysis=analysis, curve=curve)
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    drawn = fig.get_tightbbox(renderer)  # inches; every drawn artist (ticks outside the view are not drawn)
    inches = fig.bbox_inches
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= inches.x1 + 0.01 and drawn.y1 <= inches.y1 + 0.01
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and not any(t in (*ax.get_xticklabels(), *ax.get_yticklabels()) for ax in fig.axes)]
    texts += [t for ax in fig.axes for t in ax.get_yticklabels()]  # one per approach row, all in view
    assert any("95% CI" in t.get_text() for t in texts) and any("validation" in t.get_text() for t in texts)
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert (extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1 and extent.y0 >= box.y0 - 1
                and extent.y1 <= box.y1 + 1), f"clipped: {text.get_text()!r} {extent} outside {box}"
    assert len(fig.axes[0].lines) >= 2 * len(results)  # a dot and an interval per approach
    plt.close(fig)


def test_report_says_below_the_majority_rate_and_shows_three_digits_near_the_rule(tmp_path):
    """A tuned prompt at 0.5606 under a 0.5833 majority read as a gain over the best baseline; say it plainly.
    A 0.947 share next to the 0.95 rule prints as 0.947, not 0.95."""
    from ptune.evaluation.report import share_text

    results, analysis, examples = _analysed(tmp_path)
    majority = results["majority"].metrics["test/accuracy"]
    results["tuned"] = dataclasses.replace(results["tuned"], metrics={**results["tuned"].metrics,
                                                                      "test/accuracy": majority - 0.02})
    md = write_report("toy", results, tmp_path / "below", {"tuned": 10}, examples=examples,
                      analysis=analysis).markdown.read_text()
    assert f"**Below the majority rate**: the tuned prompt's test/accuracy {majority - 0.02:.4f}" in md
    above = write_report("toy", {**results, "tuned": dataclasses.replace(
        results["tuned"], metrics={**results["tuned"].metrics, "test/accuracy": majority + 0.02})},
        tmp_path / "above", {"tuned": 10}, examples=examples, analysis=analysis).markdown.read_text()
    assert "Below the majority rate" not in above
    assert (share_text(0.947, 0.95), share_text(0.80, 0.95), share_text(0.955, 0.95)) == ("0.947", "0.80", "0.955")
