"""reference_flow against the Prefect test API on the toy task: a LoRA reference model trained in a few steps,
its JSON and MLflow run (tagged reference, never registered), the task report re-drawn with its gap closed, the
artifact; bad forms and unprepared tasks are refused with a message that says what to run."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from flows.params import ReferenceParams
from flows.reference import reference_flow
from ptune.config import project_params
from ptune.pipeline import stages
from ptune.studies import reference
from tasks.reference import rereport
from tasks.timeouts import reference_seconds, reference_timeout
from tests.flows.api import artifacts, task_states


@pytest.fixture(scope="module")
def referenced(toy_project):
    """toy prepared and a tuned prompt with its report in outputs/toy/ (as `ptune train` + `ptune report` leave
    them), then one lora reference run of 4 steps."""
    run = stages.TaskRun.build("toy", project_params())
    stages.fetch(run)
    stages.prepare(run)
    base = stages.load_base(run)
    trained = stages.train(run, base)
    stages.report(run, stages.evaluate(run, base, trained.prompt, progress=False),
                  stages.baselines(run, base, progress=False), trained.trainable)
    state = reference_flow(ReferenceParams(task="toy", method="lora", steps=4, batch_size=4), return_state=True)
    return state, toy_project, run


def test_reference_flow_trains_logs_and_redraws_the_report(referenced):
    state, root, run = referenced
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["method"], summary["steps"]) == ("lora", 4) and 1 <= summary["best_step"] <= 4
    assert set(summary["test"]) == {"test/accuracy"} and set(summary["validation"]) >= {"validation/accuracy"}
    record = json.loads((root / "outputs" / "toy" / "reference" / "lora.json").read_text())
    assert record["mlflow_run"] == summary["mlflow_run"] and record["max_steps"] == 4
    assert record["command"].startswith("ptune reference toy --method lora --steps 4 --batch-size 4")
    assert set(task_states(state.state_details.flow_run_id)) == {"load_model", "train_reference_model", "rereport"}


def test_reference_run_is_tagged_and_never_registered(referenced):
    state, _, _ = referenced
    run_id, mlc = state.result()["mlflow_run"], MlflowClient()
    tags = mlc.get_run(run_id).data.tags
    assert tags[reference.KIND_TAG] == "reference" and tags[reference.METHOD_TAG] == "lora"
    assert mlc.search_model_versions(f"run_id='{run_id}'") == [] and mlc.search_registered_models() == []


def test_report_gains_the_reference_row_and_the_artifact_its_gap(referenced):
    state, root, run = referenced
    summary = state.result()
    assert summary["gap_closed"] is not None and summary["report"] == str(run.paths.report_dir / "report.md")
    assert "Reference models" in (run.paths.report_dir / "report.md").read_text()
    assert "reference/lora/test/accuracy" in json.loads(run.paths.metrics_file.read_text())
    artifact = artifacts(state.state_details.flow_run_id)["reference-toy-lora"]
    assert "Reference model `lora` of `toy`" in artifact.data and summary["mlflow_run"] in artifact.data
    assert "Gap closed" in artifact.data and "test/accuracy" in artifact.data


def test_rereport_skips_a_task_without_a_tuned_prompt(referenced, tmp_path):
    _, _, run = referenced
    elsewhere = stages.TaskRun.build("toy", project_params(), run_dir=tmp_path / "no-prompt")
    assert rereport(elsewhere, None) is None


def test_reference_time_budget_follows_the_timeouts_section(referenced):
    _, _, run = referenced
    t = run.params.timeouts
    evals = (len(run.examples("validation")) + len(run.examples("test"))) * t.example_seconds  # last + test
    lora, full = (reference_seconds(run, method, 100, 8, 0) - evals for method in ("lora", "full"))
    assert full == 2 * lora == 2 * 100 * t.step_seconds
    assert reference_timeout(run, "multitask", 100, 8, 0) == max(t.min_seconds, (full + evals) * t.margin)


@pytest.mark.parametrize("bad", [{"method": "prefix"}, {"method": "lora", "mix": ["toy"]},
                                 {"method": "full", "mix": ["toy"]}, {"method": "lora", "lr": 0},
                                 {"method": "lora", "typo": 1}])
def test_the_form_refuses_bad_values(bad):
    with pytest.raises(ValidationError):
        ReferenceParams(task="toy", **bad)


def test_ui_form_has_the_methods_and_leaves_the_budget_to_the_task():
    form = parameter_schema(reference_flow).model_dump_for_openapi()["definitions"]["ReferenceParams"]
    assert form["properties"]["method"]["enum"] == list(reference.METHODS) and "method" in form["required"]
    assert form["properties"]["steps"]["default"] is None and form["additionalProperties"] is False


def test_the_flow_refuses_mix_without_multitask(toy_project):
    state = reference_flow(params={"task": "toy", "method": "lora", "mix": ["toy"]}, return_state=True)
    assert state.is_failed() and "multitask" in str(state.result(raise_on_failure=False))


@pytest.mark.parametrize("form", [{"task": "toy_bad", "method": "lora"},
                                  {"task": "toy", "method": "multitask", "mix": ["toy_bad"]}])
def test_an_unprepared_task_fails_naming_what_to_run(referenced, form):
    state = reference_flow(ReferenceParams(**form), return_state=True)
    error = str(state.result(raise_on_failure=False))
    assert state.is_failed() and "not prepared: toy_bad" in error
    assert "`validate` deployment" in error and "ptune prepare toy_bad" in error
