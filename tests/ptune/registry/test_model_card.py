"""Model cards on a real SQLite registry: every registered version gets one (artifact + description)."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from ptune.evaluation.interpret import write_interpretation
from ptune.model import artifacts
from ptune.registry import model_card, model_registry
from tests.ptune.registry.helpers import TASK, make_prompt, register, use_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_card_is_the_version_description_and_a_run_artifact(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8, baseline=0.6)
    prompt_dir = tmp_path / "prompt-0-0.8"
    tensor, meta = artifacts.load_prompt(prompt_dir)
    write_interpretation(tiny_causal, tensor, meta.label_words, tmp_path / "interpretation", task=TASK)
    (tmp_path / "metrics.json").write_text(json.dumps({
        "test/accuracy": 0.8, "test/accuracy/ci_low": 0.7, "test/accuracy/ci_high": 0.9,
        "baseline/zero_shot/test/accuracy": 0.6, "gain/test/accuracy": 0.2}))
    meta_metrics = {"test/accuracy": 0.8, "baseline/zero_shot/test/accuracy": 0.6}
    artifacts.save_prompt(prompt_dir, tensor, artifacts.PromptMeta(**{**meta.__dict__, "metrics": meta_metrics}))

    card = model_card.publish(TASK, reg.version, reg.run_id, prompt_dir, metrics_file=tmp_path / "metrics.json",
                              split_counts={"train": 6, "validation": 2, "test": 3})

    mlc = MlflowClient()
    description = mlc.get_model_version(model_registry.model_name(TASK), reg.version).description
    assert description == card
    assert f"# ptune-{TASK} version {reg.version}" in card and tiny_causal.fingerprint in card
    assert "data version: `dv-test`" in card and "train 6, validation 2, test 3" in card
    assert "| tuned prompt | 0.8000 (ci_high 0.9000, ci_low 0.7000) |" in card
    assert "| baseline: zero_shot | 0.6000 |" in card
    assert "coherence: **" in card and "label share: **" in card and "## Known limits" in card
    assert "does **not** beat" not in card
    logged = {item.path for item in mlc.list_artifacts(reg.run_id, "model_card")}
    assert logged == {"model_card/model_card.md"}
    assert {i.path for i in mlc.list_artifacts(reg.run_id, "interpretation")} >= {
        "interpretation/interpretation.md", "interpretation/interpretation.png"}


def test_register_dir_gives_every_version_a_card_and_long_cards_are_cut(store, tiny_causal, tmp_path, monkeypatch):
    from ptune.data.catalog import get_task

    prompt_dir = make_prompt(tmp_path / "run" / "prompt", tiny_causal, metrics={"test/accuracy": 0.4,
                                                                                "baseline/zero_shot/test/accuracy": 0.5})
    monkeypatch.setattr(model_card, "DESCRIPTION_LIMIT", 300)
    reg = model_registry.register_dir(prompt_dir, get_task(TASK))
    description = MlflowClient().get_model_version(reg.name, reg.version).description
    assert description.startswith(f"# ptune-{TASK} version {reg.version}") and "(cut; full card: run" in description
    assert len(description) < 400
    card = model_card.card_markdown(artifacts.load_prompt(prompt_dir)[1], name=reg.name, version=reg.version,
                                    report={"gain/test/accuracy": -0.1})
    assert "does **not** beat the best hard-prompt baseline on test (gain -0.1000)" in card
    assert "No interpretation was written" in card


def test_a_card_failure_after_registration_is_logged_not_raised(store, tiny_causal, tmp_path, monkeypatch, caplog):
    reg = register(tmp_path, tiny_causal, score=0.8)

    def unreachable(*args, **kwargs):
        raise model_card.RegistryError("MLflow model card failed: connection refused")

    monkeypatch.setattr(model_card, "publish", unreachable)  # a fault injected; the registry itself is real
    assert model_card.publish_after_registration(TASK, reg.version, reg.run_id, tmp_path / "prompt-0-0.8") is None
    assert "is registered but has no model card" in caplog.text and "connection refused" in caplog.text
    assert MlflowClient().get_model_version(model_registry.model_name(TASK), reg.version).description in ("", None)
