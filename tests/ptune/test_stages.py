"""The stage layer: a TaskRun resolves a task once, and the steps chain from raw data to a promoted version
(real MLflow store, real GX, tiny model), reading each prepared split once."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from ptune.config import Params, load_params
from ptune.data.catalog import builtin_tasks
from ptune.errors import ConfigError
from ptune.paths import metrics_path, runs_dir
from ptune.pipeline import stages, task_run
from ptune.registry import model_registry


@pytest.mark.parametrize("name", sorted(builtin_tasks()))
def test_every_builtin_task_builds_a_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    run = stages.TaskRun.build(name, Params())
    assert run.name == name and run.spec is builtin_tasks()[name]
    assert run.paths.root == runs_dir() / name and run.paths.metrics_file == metrics_path(name)
    assert run.paths.prompt_dir == run.paths.root / "prompt"


def test_overrides_are_applied_once_in_order(toy_project):
    text = (toy_project / "params.yaml").read_text()
    params = load_params(toy_project / "params.yaml")
    params = Params(**{**params.__dict__, "task_overrides": {"toy": {"train": {"max_steps": 9, "lr": 0.1}}}})
    run = stages.TaskRun.build("toy", params, source="form", train={"max_steps": 3})
    assert (run.params.train.max_steps, run.params.train.lr) == (3, 0.1)  # caller wins over task_overrides
    assert run.params.task_overrides == {} and run.params.for_task("toy") == run.params
    with pytest.raises(ConfigError, match=r"form\.train\.batch_size = 0"):
        stages.TaskRun.build("toy", params, source="form", train={"batch_size": 0})
    assert (toy_project / "params.yaml").read_text() == text



def test_model_dtype_auto_holds_the_matmul_weights_in_bf16_only_where_both_passes_compute_in_bf16(toy_project):
    """`auto` (the default): bf16 linear weights when training and evaluation both run bf16 autocast (explicitly
    here; `auto` precision keeps a tiny model in fp32), else the fp32 checkpoint; `fp32` never casts."""
    import torch

    params = load_params(toy_project / "params.yaml")
    assert params.model_dtype == "auto"

    def held(dtype: str = "auto", **sections: dict) -> set:
        run = stages.TaskRun.build("toy", Params(**{**params.__dict__, "model_dtype": dtype}), **sections)
        return {p.dtype for p in stages.load_base(run).model.parameters()}

    both = {"train": {"precision": "bf16"}, "evaluate": {"precision": "bf16"}}
    assert held() == {torch.float32}  # auto precision on a tiny model: fp32
    assert held(**both) == {torch.bfloat16, torch.float32}  # linear layers bf16; embeddings, norms fp32
    assert held(train={"precision": "bf16"}) == {torch.float32}  # fp32 evaluation needs fp32 weights
    assert held("fp32", **both) == {torch.float32}
    assert held("bf16", **both) == {torch.bfloat16}


def test_steps_chain_from_raw_data_to_a_promoted_version(toy_project, tmp_path, monkeypatch):
    reads = []
    real_load = stages.splits.load_split
    monkeypatch.setattr(stages.splits, "load_split", lambda task, split: reads.append(split) or real_load(task, split))
    task_run._read_split.cache_clear()
    run = stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp_path / "run")

    assert stages.fetch(run).name == "toy.jsonl"
    prepared = stages.prepare(run)
    assert sum(prepared.counts.values()) == 60 and prepared.data_version == run.data_version
    assert stages.validate(run)["success"]
    base = stages.load_base(run)
    trained = stages.train(run, base, track=True)
    assert trained.steps_run == 6 and trained.prompt.shape == (4, base.hidden_size) and trained.run_id
    assert MlflowClient().get_run(trained.run_id).data.params["base_weights"] == "float32"  # the holder, recorded
    reported = stages.report(run, stages.evaluate(run, base, trained.prompt, progress=False),
                             stages.baselines(run, base, progress=False), trained.trainable)
    metrics = json.loads(run.paths.metrics_file.read_text())
    assert run.paths.metrics_file == tmp_path / "run" / "report" / "metrics.json"
    assert metrics["test/accuracy"] == reported.tuned.metrics["test/accuracy"] and "baseline/best/test/accuracy" in metrics
    registered = stages.register(run, trained, reported)
    decision = stages.promote(run, registered.version, base)

    assert decision.promoted  # promote.min_gain is -1 in the toy project: the first version wins
    assert str(model_registry.alias_version("toy", "champion").version) == registered.version
    assert MlflowClient().get_run(trained.run_id).info.status == "FINISHED"
    timing = MlflowClient().get_metric_history(trained.run_id, "validation/seconds")
    assert [m.step for m in timing] == [3, 6] and all(m.value > 0 for m in timing)  # eval_every 3 in the toy project
    tags = model_registry.version_tags("toy", registered.version)
    assert "test/accuracy" in tags and not any(k.endswith("/seconds") or k.startswith("train/") for k in tags)
    saved = json.loads((trained.prompt_dir / "prompt.json").read_text())["metrics"]
    assert saved["test/accuracy"] == metrics["test/accuracy"] and "validation/accuracy" in saved
    assert sorted(reads) == ["test", "train", "validation"]  # each prepared split parsed once for all steps
    assert "../interpretation/interpretation.md" in reported.files.markdown.read_text()  # written by train
    card = MlflowClient().get_model_version("ptune-toy", registered.version).description
    assert card.startswith(f"# ptune-toy version {registered.version}") and "coherence: **" in card
