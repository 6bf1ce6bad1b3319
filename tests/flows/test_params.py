"""Flow parameter forms: bounds and enums are enforced, the UI schema carries them, and params.yaml merges right."""

from __future__ import annotations

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from flows.common import task_run, train_form
from flows.nightly import nightly_flow
from flows.params import NightlyParams, TrainFlowParams, TrainOverrides
from flows.train import train_task_flow
from tests.support import build_project, project_env


@pytest.mark.parametrize("bad", [{"lr": 0.0}, {"max_steps": 0}, {"init": "zeros"}, {"optimizer": "sgd"},
                                 {"n_tokens": 10_000}, {"typo_steps": 3}])
def test_train_overrides_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        TrainOverrides(**bad)


def test_task_names_are_checked():
    with pytest.raises(ValidationError):
        TrainFlowParams(task="Rotten Tomatoes")
    with pytest.raises(ValidationError):
        NightlyParams(tasks=["ok", "not ok"])


def test_ui_schema_has_descriptions_bounds_and_enums():
    schema = parameter_schema(train_task_flow).model_dump_for_openapi()
    text = str(schema)
    assert "Training steps" in text and "'exclusiveMinimum': 0.0" in text
    assert "'adafactor', 'adamw'" in text and "'random', 'vocab', 'labels', 'text', 'file'" in text
    assert not parameter_schema(nightly_flow).model_dump_for_openapi().get("required")  # nightly runs with no input


def test_task_run_applies_task_overrides_then_the_form(tmp_path, tiny_causal_dir):
    root = build_project(tmp_path, tiny_causal_dir)
    text = (root / "params.yaml").read_text() + "task_overrides:\n  toy:\n    train: {max_steps: 9, lr: 0.1}\n"
    (root / "params.yaml").write_text(text)
    with project_env(root):
        plain = task_run(TrainFlowParams(task="toy"), "toy").params
        assert plain.train.max_steps == 9 and plain.train.lr == 0.1
        form = TrainFlowParams(task="toy", model="other-model", max_eval_examples=7, train=TrainOverrides(max_steps=3))
        run = task_run(form, "toy")
        merged = run.params
        assert merged.train.max_steps == 3 and merged.train.lr == 0.1  # form wins, the rest stays
        assert merged.model == "other-model" and merged.evaluate.max_examples == 7
        assert merged.task_overrides == {} and merged.for_task("toy") == merged  # applied once: nothing to undo
        assert run.spec.name == "toy" and run.paths.root.parts[-3:-1] == ("toy", "prefect")


def test_nightly_passes_its_form_to_each_task():
    nightly = NightlyParams(model="m", train=TrainOverrides(max_steps=2), promote=False)
    form = train_form(nightly, "toy")
    assert (form.task, form.model, form.train.max_steps, form.promote) == ("toy", "m", 2, False)


def test_form_offers_the_projects_tasks_and_prefills_nothing(tmp_path, tiny_causal_dir):
    with project_env(build_project(tmp_path, tiny_causal_dir)):
        schema = parameter_schema(train_task_flow).model_dump_for_openapi()["definitions"]
    task = schema["TrainFlowParams"]["properties"]["task"]
    assert {"toy", "toy_bad", "rotten_tomatoes", "xsum"} <= set(task["enum"])
    train = schema["TrainOverrides"]["properties"]
    for name, field in train.items():  # a pre-filled value would be submitted and beat the task's own recipe
        assert "default" not in field, name
        assert "Empty = the task's own value" in field["description"], name
    assert "params.yaml's global value: 6" in train["max_steps"]["description"]
    form = schema["TrainFlowParams"]["properties"]
    assert "default" not in form["model"] and "default" not in form["max_eval_examples"]
    assert TrainFlowParams(task="toy").train.max_steps is None  # a Python caller still inherits params.yaml
