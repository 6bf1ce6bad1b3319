"""`ptune register` records the report that scored the prompt (matched by its sha256), wherever `ptune report`
wrote it (<prompt dir>/../report/ or the task's report dir), refuses with the places it looked when there is
none, never takes a newer report of another prompt, and a retry adds the metrics a version lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptune.config import Params
from ptune.data.catalog import get_task
from ptune.errors import RegistryError
from ptune.registry import model_registry
from ptune.registry.report_match import SCORED, find_report, record
from tests.ptune.registry.helpers import TASK, make_prompt, use_store

REPORT = {"test/accuracy": 0.75, "baseline/zero_shot/test/accuracy": 0.5, "test/n": 6.0}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_store(tmp_path, monkeypatch)


def _report(report_dir: Path, prompt_dir: Path, metrics: dict, metrics_file: Path) -> None:
    """What `ptune report --prompt prompt_dir` leaves: the metrics JSON and the record of the prompt it scored."""
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text(json.dumps(metrics))
    record(report_dir, prompt_dir, metrics_file)


def test_the_report_of_a_prompt_elsewhere_is_found_in_the_task_report_dir(tmp_path, tiny_causal):
    prompt = make_prompt(tmp_path / "D" / "prompt", tiny_causal)
    task_reports = tmp_path / "outputs" / TASK / "report"
    _report(task_reports, prompt, REPORT, tmp_path / "metrics" / f"{TASK}.json")
    found = find_report(TASK, prompt, [prompt.parent / "report", task_reports])
    assert found.metrics == REPORT and str(tmp_path / "metrics" / f"{TASK}.json") in found.source


def test_a_newer_report_of_another_prompt_is_not_taken_and_the_refusal_says_where_it_looked(tmp_path, tiny_causal):
    prompt = make_prompt(tmp_path / "D" / "prompt", tiny_causal, seed=1)
    other = make_prompt(tmp_path / "outputs" / TASK / "prompt", tiny_causal, seed=2)
    task_reports = tmp_path / "outputs" / TASK / "report"
    _report(task_reports, other, REPORT, tmp_path / "metrics" / f"{TASK}.json")  # newer than `prompt`, not its
    with pytest.raises(RegistryError) as err:
        find_report(TASK, prompt, [prompt.parent / "report", task_reports])
    message = str(err.value)
    assert f"not registering {prompt}: no report of this prompt" in message
    assert str(prompt.parent / "report" / SCORED) in message and str(task_reports / SCORED) in message
    assert f"`ptune report {TASK} --prompt {prompt}`" in message and "--without-report" in message
    assert find_report(TASK, prompt, [task_reports], required=False).metrics == {}


def test_a_report_whose_metrics_file_was_overwritten_since_is_not_this_prompts(tmp_path, tiny_causal):
    prompt = make_prompt(tmp_path / "D" / "prompt", tiny_causal)
    metrics = tmp_path / "metrics" / f"{TASK}.json"
    _report(prompt.parent / "report", prompt, REPORT, metrics)
    metrics.write_text(json.dumps({"test/accuracy": 0.1}))  # a later report of another prompt
    with pytest.raises(RegistryError, match="no report of this prompt"):
        find_report(TASK, prompt, [prompt.parent / "report"])


def test_a_prompt_recording_its_own_test_metrics_needs_no_report(tmp_path, tiny_causal):
    prompt = make_prompt(tmp_path / "D" / "prompt", tiny_causal, metrics={"test/accuracy": 0.7})
    found = find_report(TASK, prompt, [tmp_path / "nowhere"])
    assert found.metrics == {} and "test metrics recorded in" in found.source


def test_register_dir_uses_the_report_of_the_task_report_dir(store, tiny_causal, tmp_path, monkeypatch):
    from ptune.pipeline import stages
    from ptune.pipeline.task_run import TaskRun

    run = TaskRun.build(TASK, Params())
    prompt = make_prompt(tmp_path / "D" / "prompt", tiny_causal)
    _report(run.paths.report_dir, prompt, REPORT, run.paths.metrics_file)
    reg = stages.register_dir(run, prompt)
    assert model_registry.version_metrics(TASK, reg.version)["test/accuracy"] == 0.75
    assert "with the test and baseline metrics of its report" in reg.note


def test_a_retry_adds_the_metrics_a_version_lacks(store, tiny_causal, tmp_path):
    prompt = make_prompt(tmp_path / "D" / "prompt", tiny_causal)
    first = model_registry.register_dir(prompt, get_task(TASK), {})
    assert "test/accuracy" not in model_registry.version_metrics(TASK, first.version)
    again = model_registry.register_dir(prompt, get_task(TASK), REPORT)
    assert again.version == first.version
    assert again.note == ("already registered; added 3 metrics it lacked: baseline/zero_shot/test/accuracy, "
                          "test/accuracy, test/n")
    assert model_registry.version_metrics(TASK, first.version)["test/accuracy"] == 0.75
    assert float(model_registry.version_tags(TASK, first.version)["baseline/zero_shot/test/accuracy"]) == 0.5
    assert model_registry.register_dir(prompt, get_task(TASK), REPORT).note == "already registered; nothing new to add"
