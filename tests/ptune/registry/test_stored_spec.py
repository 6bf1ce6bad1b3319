"""A registered version carries its task spec (task_spec.json, its sha256 a registry tag): the pyfunc and
`ptune serve` predict with it from anywhere, as registered, whatever the local params.yaml says, and refuse
a spec edited in the artifact store."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from ptune.config import project_params
from ptune.data.catalog import builtin_tasks, get_task
from ptune.data.spec import TaskSpec, format_input
from ptune.data.splits import Example
from ptune.errors import ArtifactError, RegistryError
from ptune.evaluation.scoring import evaluate
from ptune.model import artifacts
from ptune.model.artifacts import TASK_SPEC_FILE, PromptMeta
from ptune.registry import model_registry, stored_spec, tracking
from ptune.serving.multi_prompt import MultiPromptModel, Row
from ptune.serving.registry_source import load_version
from tests.ptune.registry.helpers import use_store

TASK = "opinions"
URI = f"models:/ptune-{TASK}/1"
TEXTS = ["a witty, gorgeous film", "dull and boring", "fine"]
REGISTERED = {"template": "Opinion: {text}\nVerdict:", "label_words": ["good", "bad"]}
CHANGED = {"template": "Text: {text}\nAnswer:", "label_words": ["yes", "no"]}  # params.yaml after registration


def write_params(project: Path, model_dir: str, entry: dict) -> None:
    """params.yaml declaring user task `opinions` with `entry`'s template and label words."""
    (project / "data").mkdir(parents=True, exist_ok=True)
    (project / "data" / "opinions.jsonl").write_text(json.dumps({"text": "ok", "label": "good"}) + "\n")
    task = {"path": "data/opinions.jsonl", "target_field": "label", "stop_strings": ["\n"], "k_shot": 2, **entry}
    (project / "params.yaml").write_text(yaml.safe_dump({"model": model_dir, "tasks": {TASK: task},
                                                         "evaluate": {"instructions": {TASK: "Is the opinion good or bad?"}}}))


@pytest.fixture
def registered(tmp_path, monkeypatch, tiny_causal) -> tuple[Path, TaskSpec, torch.Tensor]:
    """Version 1 of `ptune-opinions`, registered from a project whose params.yaml declares the user task;
    -> (that project, the spec registered, the prompt (P, d))."""
    use_store(tmp_path, monkeypatch)
    project = tmp_path / "project"
    write_params(project, tiny_causal.spec, REGISTERED)
    spec = get_task(TASK, project_params())
    weight = torch.randn(4, tiny_causal.hidden_size, generator=torch.Generator().manual_seed(3)) * 0.5  # (P, d)
    meta = PromptMeta(task=TASK, base_spec=tiny_causal.spec, base_fingerprint=tiny_causal.fingerprint,
                      label_words=spec.label_words, data_version="dv-test")
    prompt_dir = artifacts.save_prompt(tmp_path / "prompt", weight, meta)
    run = tracking.run_for_prompt(meta)
    run.finish(prompt_dir, {})
    reg = model_registry.register_prompt(TASK, prompt_dir, run.run_id, "test/accuracy", spec=spec)
    assert reg.version == "1"
    return project, spec, weight


def expected_labels(base, spec: TaskSpec, weight: torch.Tensor) -> list[str]:
    rows = [Example(str(i), format_input(spec, t), spec.label_words[0], {}) for i, t in enumerate(TEXTS)]
    return list(evaluate(base, spec, rows, weight, split="predict", progress=False).predictions)


def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working and project directory with no params.yaml."""
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(empty))
    return empty


def stored_spec_file(project: Path) -> Path:
    """The version's task_spec.json in the (local) artifact store: what someone with write access edits."""
    source = MlflowClient().get_model_version(f"ptune-{TASK}", "1").source
    location = Path(MlflowClient().get_logged_model(source.removeprefix("models:/")).artifact_location
                    .removeprefix("file://"))
    return next(location.glob(f"artifacts/*/{TASK_SPEC_FILE}"))


def test_a_user_task_version_predicts_from_a_directory_without_params_yaml(registered, tmp_path, monkeypatch,
                                                                          tiny_causal):
    _, spec, weight = registered
    elsewhere(tmp_path, monkeypatch)
    expected = expected_labels(tiny_causal, spec, weight)
    model = mlflow.pyfunc.load_model(URI)
    assert list(model.predict(pd.DataFrame({"text": TEXTS}))) == expected and set(expected) <= {"good", "bad"}
    served = MultiPromptModel(tiny_causal)
    loaded = load_version(served, TASK, "1")  # serving: by name, no local spec at all
    assert loaded.spec == spec
    assert {p.label for p in served.predict([Row(TASK, t) for t in TEXTS])} <= {"good", "bad"}


def test_a_version_predicts_as_registered_after_params_yaml_changed(registered, tmp_path, monkeypatch, tiny_causal):
    project, spec, weight = registered
    write_params(project, tiny_causal.spec, CHANGED)
    current = get_task(TASK, project_params())
    assert current.label_words == ("yes", "no") and current != spec
    expected = expected_labels(tiny_causal, spec, weight)
    assert list(mlflow.pyfunc.load_model(URI).predict(pd.DataFrame({"text": TEXTS}))) == expected
    served = MultiPromptModel(tiny_causal)
    loaded = load_version(served, current, "1")  # `ptune serve` passes the project's current spec
    assert loaded.spec == spec and loaded.spec.formatter.template == REGISTERED["template"]
    assert (loaded.spec.stop_strings, loaded.spec.k_shot) == (("\n",), 2)
    assert {p.label for p in served.predict([Row(TASK, t) for t in TEXTS])} <= {"good", "bad"}


def test_a_tampered_spec_is_refused(registered, tmp_path, monkeypatch, tiny_causal):
    project, _, _ = registered
    stored = stored_spec_file(project)
    record = json.loads(stored.read_text())
    record["label_words"] = ["bad", "good"]  # valid, rebuildable, and flips every answer
    stored.write_text(json.dumps(record))
    elsewhere(tmp_path, monkeypatch)
    refused = rf"refusing the task spec at models:/ptune-{TASK}/1.*: its sha256 is .*, but the registry recorded"
    with pytest.raises(ArtifactError, match=refused):
        mlflow.pyfunc.load_model(URI)
    with pytest.raises(ArtifactError, match=refused):
        load_version(MultiPromptModel(tiny_causal), TASK, "1")
    stored.unlink()
    with pytest.raises(ArtifactError, match=rf"the registry recorded {stored_spec.SPEC_TAG}=.*no {TASK_SPEC_FILE}"):
        load_version(MultiPromptModel(tiny_causal), TASK, "1")


def test_a_version_without_a_stored_spec_uses_the_local_one_with_a_warning(registered, tiny_causal, caplog):
    """Versions registered before specs were stored (no tag) keep working as before."""
    project, spec, _ = registered
    MlflowClient().delete_model_version_tag(f"ptune-{TASK}", "1", stored_spec.SPEC_TAG)
    write_params(project, tiny_causal.spec, CHANGED)
    current = get_task(TASK, project_params())
    with caplog.at_level(logging.WARNING, logger="ptune.registry.stored_spec"):
        assert load_version(MultiPromptModel(tiny_causal), TASK, "1").spec == current
    assert "registered before task specs were stored" in caplog.text


@pytest.mark.parametrize("name", sorted(builtin_tasks()))
def test_every_builtin_spec_round_trips_through_its_record(name):
    spec = builtin_tasks()[name]
    record = json.loads(json.dumps(stored_spec.spec_record(spec)))
    assert record["formatter"]["kind"] == "builtin" and "{" in record["formatter"]["input_template"]
    assert stored_spec.spec_from_record(record, name) == spec


def test_stored_fields_win_over_the_catalog_and_a_changed_builtin_formatter_is_refused(monkeypatch):
    registered = dataclasses.replace(get_task("rotten_tomatoes"), label_words=("bad", "good"), k_shot=1)
    record = stored_spec.spec_record(registered)
    assert stored_spec.spec_from_record(record, "v1") == registered  # the catalog's fields do not leak in
    catalog = dict(builtin_tasks())
    changed = dataclasses.replace(catalog["rotten_tomatoes"], formatter=lambda row: (f"Text: {row['text']}", "x"))
    monkeypatch.setattr(stored_spec, "builtin_tasks", lambda: {**catalog, "rotten_tomatoes": changed})
    with pytest.raises(ArtifactError, match=r"built-in task 'rotten_tomatoes'.s formatter .* now formats inputs "
                                            r"differently .*then: 'Review: \{text\}\\nSentiment:', now: 'Text: \{text\}'"):
        stored_spec.spec_from_record(record, "v1")


def test_a_function_formatter_outside_the_catalog_cannot_be_registered(tmp_path):
    spec = dataclasses.replace(get_task("rotten_tomatoes"), name="mine", formatter=lambda row: (row["text"], ""))
    with pytest.raises(RegistryError, match=r"task 'mine': its formatter .* is neither a template nor a built-in"):
        stored_spec.stage_prompt(tmp_path, spec, tmp_path / "out")


def test_ptune_serve_serves_a_user_task_from_a_directory_without_params_yaml(registered, tmp_path, monkeypatch,
                                                                            tiny_causal):
    from ptune.config import params_from_dict
    from ptune.errors import ConfigError
    from ptune.serving.server import build_service
    from ptune.serving.settings import ServeSettings

    _, spec, weight = registered
    MlflowClient().set_registered_model_alias(f"ptune-{TASK}", "champion", "1")
    elsewhere(tmp_path, monkeypatch)
    params = params_from_dict({"model": tiny_causal.spec})  # no user task here: the registry alone knows it
    service = build_service(params, [TASK], ServeSettings(poll_seconds=0))
    assert [p.label for p in service.model.predict([Row(TASK, t) for t in TEXTS])] == expected_labels(
        tiny_causal, spec, weight)
    with pytest.raises(ConfigError, match="unknown task 'no_such_task'"):  # neither local nor registered
        build_service(params, ["no_such_task"], ServeSettings(poll_seconds=0))
