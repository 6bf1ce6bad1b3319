"""What an MLflow user sees and relies on: run names and standard tags, the dataset input, the version's
signature and input example (batch_size honoured), LoggedModel metrics read by promotion, frozen code,
integrity hashes checked on every way out of the store, and registration that a retry does not repeat.
All against a real SQLite store in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ptune.errors import ArtifactError, RegistryError
from ptune.model import artifacts
from ptune.registry import integrity, model_registry, promotion, pyfunc_logging, tracking
from ptune.registry.loading import load_prompt_with_base
from tests.ptune.registry.helpers import ROWS, TASK, examples, make_prompt, register, use_store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_store(tmp_path, monkeypatch)


def _model_dir(reg: model_registry.RegisteredPrompt) -> Path:
    """Where the version's files lie in the local artifact store (what an attacker with disk access edits)."""
    found = MlflowClient().get_model_version(reg.name, reg.version)
    location = MlflowClient().get_logged_model(model_registry.logged_model_id(found)).artifact_location
    return Path(location.removeprefix("file://"))


def test_runs_are_named_and_carry_the_standard_tags(store, tiny_causal):
    params = tracking.training_params(TASK, "org/tiny-model", "fp", {"n_tokens": 4}, "dv1")
    default = tracking.TrainingRun(TASK, params)
    default.start()
    named = tracking.TrainingRun(TASK, params, run_name="train-rotten_tomatoes-flowy-otter",
                                 tags={"prefect.flow_run_url": "http://127.0.0.1:4200/flow-runs/flow-run/abc"})
    named.start()
    first, second = (MlflowClient().get_run(r.run_id) for r in (default, named))
    assert first.info.run_name.startswith(f"train-{TASK}-tiny-model-20")  # train-<task>-<model>-<date>
    assert second.info.run_name == "train-rotten_tomatoes-flowy-otter"
    assert second.data.tags["prefect.flow_run_url"].endswith("/flow-run/abc")
    package_root = Path(tracking.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_root, capture_output=True, text=True).stdout
    assert first.data.tags["mlflow.source.git.commit"] == head.strip()
    assert first.data.tags["mlflow.user"] and first.data.tags["mlflow.source.name"]
    assert first.data.tags["ptune.task"] == TASK


def test_training_data_is_the_runs_input_dataset(store):
    run = tracking.TrainingRun(TASK, {"base_model": "m"})
    rows = {"train": examples(6), "validation": examples(2), "test": examples(3)}
    tracking.log_training_data(run.start(), TASK, "0123456789abcdef", rows, "data/prepared/rotten_tomatoes")
    (found,) = MlflowClient().get_run(run.run_id).inputs.dataset_inputs
    assert (found.dataset.name, found.dataset.digest) == (TASK, "0123456789abcdef")
    tags = {t.key: t.value for t in found.tags}
    assert tags["mlflow.data.context"] == "training"
    assert (tags["rows.train"], tags["rows.validation"], tags["rows.test"]) == ("6", "2", "3")
    assert '"num_rows": 6' in found.dataset.profile


def test_version_has_signature_input_example_and_honours_batch_size(store, tiny_causal, tmp_path):
    prompt_dir = make_prompt(tmp_path / "prompt", tiny_causal)
    run = tracking.TrainingRun(TASK, {"base_model": tiny_causal.spec})
    run.finish(prompt_dir, {"test/accuracy": 0.8})
    reg = model_registry.register_prompt(TASK, prompt_dir, run.run_id, "test/accuracy",
                                         example={"text": "a witty film", "category": "fresh", "source": "x"})
    model = mlflow.pyfunc.load_model(reg.model_uri)
    assert model.metadata.get_input_schema().input_names() == ["text", "source"]  # not the target column
    assert [(p.name, p.default) for p in model.metadata.get_params_schema().params] == [("batch_size", 16)]
    assert model.input_example.to_dict(orient="list") == {"text": ["a witty film"]}
    inner, seen = model.unwrap_python_model(), []

    def record(module, args, kwargs):
        tensor = kwargs.get("inputs_embeds", kwargs.get("input_ids"))
        seen.append(tensor.shape[0])

    handle = inner.base.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        frame = pd.DataFrame({"text": [text for text, _ in ROWS]})  # 6 rows
        small = model.predict(frame, params={"batch_size": 2})
        at_two, seen[:] = max(seen), []
        large = model.predict(frame, params={"batch_size": 16})
        at_sixteen = max(seen)
    finally:
        handle.remove()
    # rank classification scores each row once per label word: the widest pass is rows-per-batch x labels
    assert at_sixteen == 3 * at_two  # all 6 rows in one batch vs 2 rows per batch
    assert small == large and len(small) == 6


def test_a_version_registered_without_an_example_gets_one_its_pyfunc_answers(store, tiny_causal, tmp_path, caplog):
    """Ensembles and scripts register without a data row: the example is a placeholder text, never an empty
    source (MLflow runs the pyfunc on the example at logging time; an empty one failed deep inside torch)."""
    prompt_dir = make_prompt(tmp_path / "prompt", tiny_causal)
    run = tracking.TrainingRun(TASK, {"base_model": tiny_causal.spec})
    run.finish(prompt_dir, {"test/accuracy": 0.8})
    with caplog.at_level("WARNING", logger="mlflow"):
        reg = model_registry.register_prompt(TASK, prompt_dir, run.run_id, "test/accuracy")
    assert "Failed to validate serving input example" not in caplog.text
    model = mlflow.pyfunc.load_model(reg.model_uri)
    assert model.input_example.to_dict(orient="list") == {"text": [pyfunc_logging.PLACEHOLDER_INPUT]}
    assert len(model.predict(model.input_example)) == 1


@pytest.mark.parametrize("frame, rows", [
    (pd.DataFrame({"source": ["Review: fine\nSentiment:", "", "   "]}), "1, 2"),
    (pd.DataFrame({"text": ["a witty film", None, ""]}), "1, 2"),
])
def test_empty_inputs_are_refused_naming_the_rows(store, tiny_causal, tmp_path, frame, rows):
    reg = register(tmp_path, tiny_causal, score=0.8, baseline=0.5)
    model = mlflow.pyfunc.load_model(reg.model_uri)
    with pytest.raises(Exception, match=rf"row\(s\) {rows} have an empty input .*expected non-empty text"):
        model.predict(frame)


def test_metrics_are_logged_model_metrics_and_promotion_reads_them(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8, baseline=0.5)
    assert model_registry.version_metrics(TASK, reg.version) == {"test/accuracy": 0.8,
                                                                 "baseline/zero_shot/test/accuracy": 0.5}
    # the tags say the opposite: the decision follows the LoggedModel metrics
    model_registry.set_version_tags(TASK, reg.version, {"test/accuracy": "0.1", "baseline/zero_shot/test/accuracy": "0.9"})
    decision = promotion.promote_if_better(TASK, reg.version, 0.0, evaluator=lambda v, s: {}, dry_run=True)
    assert (decision.alias, decision.candidate, decision.best_baseline) == ("champion", 0.8, 0.5)


def test_versions_registered_before_model_metrics_are_read_from_tags(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8, baseline=0.5)
    mlc = MlflowClient()
    old = mlc.create_model_version(reg.name, f"runs:/{reg.run_id}/prompt", run_id=reg.run_id,
                                   tags={"primary_metric": "test/accuracy", "test/accuracy": "0.7",
                                         "baseline/zero_shot/test/accuracy": "0.75"})
    assert model_registry.version_metrics(TASK, old.version) == {}
    decision = promotion.promote_if_better(TASK, old.version, 0.0, evaluator=lambda v, s: {}, dry_run=True)
    assert (decision.candidate, decision.best_baseline, decision.alias) == (0.7, 0.75, "challenger")


def test_version_freezes_the_ptune_code_it_runs(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8)
    root = _model_dir(reg)
    assert (root / "code" / "ptune" / "registry" / "pyfunc_model.py").is_file()
    tags = model_registry.version_tags(TASK, reg.version)
    assert tags["code_sha256"] == integrity.code_sha256(pyfunc_logging.PYFUNC_MODEL_FILE, pyfunc_logging.PTUNE_PACKAGE)
    # a fresh process (as `mlflow models serve` is) imports the copy shipped with the version
    script = (f"import mlflow; m = mlflow.pyfunc.load_model({str(root)!r}); import ptune; print(ptune.__file__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(root / "code" / "ptune" / "__init__.py")


def _replace_stored_prompt(reg: model_registry.RegisteredPrompt) -> None:
    """Overwrite the stored prompt with another consistent one: tensor and prompt.json (its checksum) together."""
    (prompt_dir,) = (p.parent for p in (_model_dir(reg) / "artifacts").glob("*/prompt.json"))
    tensor, meta = artifacts.load_prompt(prompt_dir)
    artifacts.save_prompt(prompt_dir, tensor + 1.0, meta)


def test_prompt_edited_in_the_store_is_refused_everywhere(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8)
    model_registry.set_alias(TASK, "champion", reg.version)
    _replace_stored_prompt(reg)
    for load in (lambda: model_registry.download_prompt(TASK, tmp_path / "pulled"),
                 lambda: model_registry.load_registered_prompt(TASK),
                 lambda: load_prompt_with_base(f"models:/ptune-{TASK}@champion"),
                 lambda: mlflow.pyfunc.load_model(reg.model_uri)):
        with pytest.raises(ArtifactError, match="changed in the store after registration"):
            load()
    assert not (tmp_path / "pulled").exists()


def test_code_edited_in_the_store_is_refused(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8)
    stored = _model_dir(reg) / "code" / "ptune" / "evaluation" / "scoring.py"
    stored.write_text(stored.read_text() + "\n# edited\n")
    with pytest.raises(ArtifactError, match="refusing the pyfunc code"):
        model_registry.download_prompt(TASK, tmp_path / "pulled", version=reg.version)
    with pytest.raises(ArtifactError, match="refusing the pyfunc code"):
        mlflow.pyfunc.load_model(reg.model_uri)


def test_retried_registration_reuses_the_version_of_its_run(store, tiny_causal, tmp_path, monkeypatch):
    real, calls = model_registry._create_version, []

    def created_then_lost(*args, **kwargs):  # injected fault: the version is made, the answer is lost
        calls.append(real(*args, **kwargs))
        raise MlflowException("connection reset by peer")

    prompt_dir = tmp_path / "prompt"
    torch.manual_seed(0)
    artifacts.save_prompt(prompt_dir, torch.randn(4, tiny_causal.hidden_size),
                          artifacts.PromptMeta(TASK, tiny_causal.spec, tiny_causal.fingerprint, data_version="dv"))
    run = tracking.TrainingRun(TASK, {"base_model": tiny_causal.spec})
    run.finish(prompt_dir, {"test/accuracy": 0.8}, {"zero_shot": {"test/accuracy": 0.5}})
    monkeypatch.setattr(model_registry, "_create_version", created_then_lost)
    with pytest.raises(RegistryError, match="connection reset"):
        model_registry.register_prompt(TASK, prompt_dir, run.run_id, "test/accuracy")
    monkeypatch.setattr(model_registry, "_create_version", real)
    again = model_registry.register_prompt(TASK, prompt_dir, run.run_id, "test/accuracy")
    versions = MlflowClient().search_model_versions(f"name='ptune-{TASK}'")
    assert [str(v.version) for v in versions] == [calls[0]] == [again.version]  # one version, not two
