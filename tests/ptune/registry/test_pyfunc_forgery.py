"""The pyfunc checks what it loads against the registry database, never against the artifact store it was
loaded from: a forged prompt whose MLmodel hashes were edited (or deleted) to match is refused, so is a
version whose registry record lacks the hashes, and a model that no registry version was made from
(unless PTUNE_ALLOW_UNREGISTERED=1). The base model it loads is the one the registry's tag names."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ptune.data.catalog import get_task
from ptune.errors import ArtifactError
from ptune.model.artifacts import META_FILE, TENSOR_FILE
from ptune.registry import loading, pyfunc_logging, tracking
from ptune.registry.integrity import CODE_TAG, PROMPT_TAG, prompt_sha256
from tests.ptune.registry.helpers import ROWS, TASK, make_prompt, register, use_store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PTUNE_ALLOW_UNREGISTERED", raising=False)
    return use_store(tmp_path, monkeypatch)


def _stored_model_dir(name: str, version: str) -> Path:
    """The logged model's directory in the (local) artifact store: what an attacker with write access edits."""
    source = MlflowClient().get_model_version(name, version).source
    location = MlflowClient().get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://"))


def _forge(model_dir: Path, forged_prompt: Path, mlmodel_hash: str | None) -> None:
    """Replace the stored prompt by `forged_prompt` (tensor and prompt.json, consistent with each other) and
    set the MLmodel's model_config prompt hash to `mlmodel_hash` (None: delete the hash keys)."""
    stored = next(model_dir.glob(f"artifacts/*/{META_FILE}")).parent
    for name in (TENSOR_FILE, META_FILE):
        shutil.copyfile(forged_prompt / name, stored / name)
    mlmodel = model_dir / "MLmodel"
    data = yaml.safe_load(mlmodel.read_text())
    config = data["flavors"]["python_function"]["config"]  # model_config
    if mlmodel_hash is None:
        config.pop(PROMPT_TAG), config.pop(CODE_TAG)
    else:
        config[PROMPT_TAG] = mlmodel_hash
    mlmodel.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("mlmodel", ["edited to the forged hash", "hash keys deleted"])
def test_a_forged_prompt_is_refused_whatever_the_mlmodel_says(store, tiny_causal, tmp_path, mlmodel):
    """Tensor, prompt.json and the MLmodel's prompt_sha256 changed together (or the MLmodel's hash keys
    removed): the MLmodel agrees with the forgery, the registry's tag does not, and the registry decides."""
    reg = register(tmp_path, tiny_causal, score=0.9)
    forged = make_prompt(tmp_path / "forged", tiny_causal, seed=7)  # valid prompt.json checksum, other weights
    _forge(_stored_model_dir(reg.name, reg.version), forged,
           prompt_sha256(forged) if mlmodel.startswith("edited") else None)
    assert mlflow.artifacts.download_artifacts(f"{reg.model_uri}/MLmodel")  # the store serves the forgery
    with pytest.raises(ArtifactError, match=rf"refusing the prompt artifact at models:/ptune-{TASK}/1: its sha256 is "
                                            rf"{prompt_sha256(forged)}, but the registry recorded"):
        mlflow.pyfunc.load_model(reg.model_uri)


def test_a_version_whose_registry_record_lacks_the_hashes_is_refused(store, tiny_causal, tmp_path):
    """Nothing forged: the files are as registered, but with no hash in the registry there is nothing to
    check them against, and the MLmodel's own copy is no reference."""
    reg = register(tmp_path, tiny_causal, score=0.9)
    mlflow.pyfunc.load_model(reg.model_uri)  # intact and recorded: loads
    MlflowClient().delete_model_version_tag(reg.name, reg.version, PROMPT_TAG)
    with pytest.raises(ArtifactError, match=rf"the registry has no {PROMPT_TAG} tag for models:/ptune-{TASK}/1"):
        mlflow.pyfunc.load_model(reg.model_uri)


def test_a_model_no_version_was_registered_from_is_refused_unless_allowed(store, tiny_causal, tiny_causal_dir,
                                                                         tmp_path, monkeypatch):
    """A logged but never registered pyfunc, loaded from its bare path: refused; with PTUNE_ALLOW_UNREGISTERED=1
    it loads, with params.yaml's base model. A registered model copied to a path is still found by its ids."""
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    run = tracking.TrainingRun(TASK, tracking.training_params(TASK, tiny_causal.spec, tiny_causal.fingerprint, {}, "dv"))
    model_id = pyfunc_logging.log_pyfunc(run.start(), prompt, get_task(TASK), None, {})
    bare = MlflowClient().get_logged_model(model_id).artifact_location.removeprefix("file://")
    with pytest.raises(ArtifactError, match=r"no ptune-<task> version in the registry .* was registered from it"):
        mlflow.pyfunc.load_model(bare)
    monkeypatch.setenv("PTUNE_ALLOW_UNREGISTERED", "1")
    (store / "project" / "params.yaml").write_text(yaml.safe_dump({"model": str(tiny_causal_dir)}))
    model = mlflow.pyfunc.load_model(bare)
    assert len(model.predict(pd.DataFrame({"text": [ROWS[0][0]]}))) == 1
    monkeypatch.delenv("PTUNE_ALLOW_UNREGISTERED")
    reg = register(tmp_path, tiny_causal, score=0.9, seed=2)
    copied = mlflow.artifacts.download_artifacts(reg.model_uri, dst_path=str(tmp_path / "copy"))
    assert mlflow.pyfunc.load_model(copied).unwrap_python_model().base.fingerprint == tiny_causal.fingerprint


def test_the_pyfunc_loads_the_base_model_the_registry_names_not_prompt_json(store, tiny_causal, tmp_path,
                                                                           monkeypatch):
    """The version's base_model tag (registry) names another model than prompt.json: refused before any base
    model is loaded. Registration itself loads the model once (MLflow's input-example check) with the prompt's
    own base, before a registry record exists."""
    loads: list[str] = []
    real = loading.load_base_model
    monkeypatch.setattr(loading, "load_base_model", lambda spec, **kw: loads.append(spec) or real(spec, **kw))
    reg = register(tmp_path, tiny_causal, score=0.9)
    assert loads == [tiny_causal.spec]  # the input example was checked with the prompt's base
    elsewhere = str(tmp_path / "another-model")
    MlflowClient().set_model_version_tag(reg.name, reg.version, loading.BASE_TAG, elsewhere)
    with pytest.raises(ArtifactError, match=rf"names the base model '{tiny_causal.spec}', but the base model allowed "
                                            rf"here is '{elsewhere}'"):
        mlflow.pyfunc.load_model(reg.model_uri)
    assert loads == [tiny_causal.spec]  # refused before loading anything
