"""What the MLflow UI shows: experiments opened on their runs (not the GenAI view), run names and kinds that tell
training, reference, sweep and registration runs apart, a short tag list per version (the detail is in its
LoggedModel metrics) and the model card's input template. All against a real SQLite store in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ptune.data.catalog import get_task
from ptune.model import artifacts
from ptune.registry import model_card, model_registry, promotion, tracking
from ptune.studies import sweep_runs
from tests.ptune.registry.helpers import TASK, make_prompt, use_store

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_store(tmp_path, monkeypatch)


def test_experiments_are_marked_as_training_so_the_ui_opens_on_runs(store):
    mlc = tracking.client()  # this test's store (a bare MlflowClient() keeps the URI an earlier test set)
    created = mlc.get_experiment(tracking.ensure_experiment(TASK))
    assert created.tags["mlflow.experimentKind"] == "custom_model_development"
    old = mlc.create_experiment(tracking.experiment_name("toy"))  # made before ptune set the mark
    assert tracking.ensure_experiment("toy") == old
    assert mlc.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    chosen = mlc.create_experiment(tracking.experiment_name("chosen"), tags={"mlflow.experimentKind": "genai_development"})
    tracking.ensure_experiment("chosen")  # a kind someone picked in the UI stays
    assert mlc.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_run_names_and_kinds_tell_the_runs_apart(store, tiny_causal, tmp_path):
    params = tracking.training_params(TASK, "org/tiny-model", "fp", {"n_tokens": 4}, "dv1")
    train = tracking.TrainingRun(TASK, params)
    train.start()
    _, meta = artifacts.load_prompt(make_prompt(tmp_path / "prompt", tiny_causal))
    registration = tracking.run_for_prompt(meta, registered_from="somewhere")
    registration.start()
    parent = sweep_runs.start_parent(TASK, "study-1", {"trials": 2})
    trial = sweep_runs.child_run(TASK, parent, "study-1", 0, params)
    mlc = tracking.client()  # this test's store (a bare MlflowClient() keeps the URI an earlier test set)
    found = {kind: mlc.get_run(run_id) for kind, run_id in
             {"train": train.run_id, "register": registration.run_id, "sweep": parent, "trial": trial.run_id}.items()}
    assert found["train"].info.run_name.startswith(f"train-{TASK}-tiny-model-20")
    assert found["register"].info.run_name.startswith(f"register-{TASK}-")
    assert found["sweep"].info.run_name == f"sweep-{TASK}" and found["trial"].info.run_name == "trial-0"
    assert {kind: run.data.tags[tracking.RUN_KIND_TAG] for kind, run in found.items()} == {
        "train": "train", "register": "register", "sweep": "sweep", "trial": "trial"}
    assert tracking.default_run_name(TASK, "org/m", "reference-lora").startswith(f"reference-lora-{TASK}-m-20")


def test_a_version_carries_a_short_tag_list_and_every_result_as_a_model_metric(store, tiny_causal, tmp_path):
    report = json.loads((REPO / "metrics" / "rotten_tomatoes.json").read_text())
    results = {k: float(v) for k, v in report.items() if not k.endswith("/seconds")}
    prompt_dir = make_prompt(tmp_path / "prompt", tiny_causal)
    run = tracking.TrainingRun(TASK, tracking.training_params(TASK, tiny_causal.spec, tiny_causal.fingerprint, {}, "dv"))
    run.finish(prompt_dir, results)
    reg = model_registry.register_prompt(TASK, prompt_dir, run.run_id, primary_metric="test/accuracy")
    promotion.promote_if_better(TASK, reg.version, evaluator=lambda *a: pytest.fail("no champion to re-evaluate"))
    tags = model_registry.version_tags(TASK, reg.version)
    assert len(tags) <= 25 and not any(k.startswith("baseline/") and k != "baseline/best/test/accuracy" for k in tags)
    assert {"prompt_sha256", "code_sha256", "base_model", "data_version", "primary_metric", "test/accuracy",
            "baseline/best/test/accuracy", "gain/test/accuracy/ci_low", "promotion_decision"} <= set(tags)
    assert model_registry.version_metrics(TASK, reg.version) == pytest.approx(results)


def test_the_card_shows_the_input_template_not_the_source(store, tiny_causal, tmp_path):
    prompt_dir = make_prompt(tmp_path / "prompt", tiny_causal)
    reg = model_registry.register_dir(prompt_dir, get_task(TASK))
    card = MlflowClient().get_model_version(reg.name, reg.version).description
    assert "```text\nReview: {text}\nSentiment:\n```" in card
    assert get_task(TASK).description not in card and get_task(TASK).source.describe() not in card
    _, meta = artifacts.load_prompt(prompt_dir)
    assert model_card.input_template("not-a-task", meta) == meta.template  # a task ptune does not know
