"""Prompt similarity and transfer between tasks (SPoT) on a real SQLite registry with the tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import load_params
from ptune.errors import ConfigError
from ptune.model.artifacts import PromptMeta, load_prompt, save_prompt
from ptune.model.soft_prompt import init_prompt
from ptune.pipeline import stages
from ptune.registry import model_registry, tracking
from ptune.studies import transfer


def _champion(task: str, prompt: torch.Tensor, base, tmp_path, spec, fingerprint: str | None = None) -> None:
    """Register `prompt` as the @champion of a stand-in task `task` (the toy task's spec under that name)."""
    meta = PromptMeta(task, base.spec, fingerprint or base.fingerprint, label_words=("good", "bad"))
    prompt_dir = save_prompt(tmp_path / "sources" / task, prompt, meta)
    run = tracking.run_for_prompt(load_prompt(prompt_dir)[1])
    run.finish(prompt_dir, {})
    reg = model_registry.register_prompt(task, prompt_dir, run.run_id, primary_metric="test/accuracy",
                                        spec=dataclasses.replace(spec, name=task))
    model_registry.set_alias(task, "champion", reg.version)


@pytest.fixture(scope="module")
def sources(toy_project, tmp_path_factory):
    """Target task `toy` (prepared, never trained) and three champions: near it, far from it, other base."""
    tmp = tmp_path_factory.mktemp("transfer")
    run = stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp / "run")
    stages.fetch(run), stages.prepare(run)
    base = stages.load_base(run)
    target, origin = transfer.target_prompt(run, base)
    assert origin == "init 'labels'" and target.shape == (4, base.hidden_size)
    gen = torch.Generator().manual_seed(0)
    near = target + 0.01 * torch.randn(target.shape, generator=gen)
    far = -target + 0.5 * torch.randn(6, base.hidden_size, generator=gen)[:4]
    _champion("near", near, base, tmp, run.spec)
    _champion("far", far[:3], base, tmp, run.spec)  # a different prompt length still compares (mean pooling)
    _champion("elsewhere", near, base, tmp, run.spec, fingerprint="0" * 32)
    return run, base, near, toy_project


def test_similar_ranks_champions_on_the_same_base_by_pooled_cosine(sources):
    run, base, _, project = sources
    found = transfer.similar(run, base)
    assert [s.task for s in found] == ["near", "far"]  # "elsewhere" was trained on another base model
    assert found[0].cosine > 0.8 and found[1].cosine < found[0].cosine and found[1].n_tokens == 3
    assert all(s.proxy is None for s in found)
    proxied = transfer.similar(run, base, proxy=True)
    assert {s.task for s in proxied} == {"near", "far"} and all(0 <= s.proxy <= 1 for s in proxied)
    assert [s.proxy for s in proxied] == sorted((s.proxy for s in proxied), reverse=True)
    result = CliRunner().invoke(app, ["similar", "toy", "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.index(" near ") < result.output.index(" far ") and "elsewhere" not in result.output


def test_transfer_starts_from_the_source_prompt_weights(sources, tmp_path):
    run, base, near, project = sources
    moved = transfer.with_transfer(run, base, "auto")
    cfg = moved.params.train
    assert cfg.init == "file" and cfg.n_tokens == 4 and cfg.init_path.endswith("transfer_source")
    start = init_prompt(base, cfg.n_tokens, cfg.init, path=cfg.init_path)  # what train_prompt starts from
    assert torch.equal(start.weight.detach(), load_prompt(cfg.init_path)[0])
    assert torch.allclose(start.weight.detach(), near, atol=1e-6)  # step 0 = the source's weights
    with pytest.raises(ConfigError, match="its own transfer source"):
        transfer.with_transfer(run, base, "toy")

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "toy", "--transfer-from", "far", "--steps", "1", "--out", str(out),
                                      "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    trained, meta = load_prompt(out / "prompt")
    source, _ = load_prompt(out / "transfer_source")
    assert meta.init == "file" and meta.train_config["n_tokens"] == 3 and trained.shape == source.shape
    assert '"steps_run": 1,' in result.output
    assert torch.nn.functional.cosine_similarity(trained.flatten(), source.flatten(), dim=0) > 0.5
