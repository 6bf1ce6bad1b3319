"""The train flow's summary artifact links only what the Prefect UI can open: the report's relative link to the
interpretation becomes the MLflow page of the run's `interpretation/interpretation.md` artifact."""

from __future__ import annotations

import re

from flows.common import train_summary_markdown
from ptune.evaluation.interpret import report_note

SUMMARY = {"task": "toy", "experiment_id": "3", "run_id": "abcdef0123456789", "model": "ptune-toy", "version": "2",
           "decision": "challenger", "reason": "tie", "model_uri": "models:/ptune-toy/2", "steps": 5,
           "train_seconds": 1.0, "best_step": 5, "base_model": "tiny"}


def test_the_interpretation_link_opens_the_mlflow_artifact(tmp_path, monkeypatch):
    (tmp_path / "interpretation").mkdir()
    (tmp_path / "interpretation" / "interpretation.md").write_text("# tokens\n")
    note = report_note(tmp_path)["interpretation"]  # what report.md carries, relative to the report folder
    monkeypatch.setenv("PTUNE_MLFLOW_UI", "http://127.0.0.1:5300")
    md = train_summary_markdown(SUMMARY, f"## toy\n\n- interpretation: {note}\n")
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert ("http://127.0.0.1:5300/#/experiments/3/runs/abcdef0123456789/artifactPath/interpretation/interpretation.md"
            in links)
    assert all(link.startswith(("http://", "https://")) for link in links if link), links


def test_the_experiment_link_opens_the_runs_table_not_the_genai_view(monkeypatch):
    monkeypatch.setenv("PTUNE_MLFLOW_UI", "http://127.0.0.1:5300/")
    md = train_summary_markdown(SUMMARY, "## toy\n")
    # MLflow 3.17's UI sends a bare experiment link to its GenAI overview in a fresh browser (its workflow
    # switch defaults to GenAI); the URL's workflowType wins over the switch (checked in bench/screenshots.py)
    assert "(http://127.0.0.1:5300/#/experiments/3/runs?workflowType=machine_learning)" in md
