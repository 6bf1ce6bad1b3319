"""params.yaml <-> ptune.config: the shipped file is valid, every problem is reported at once, overrides apply."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ptune.config import (
    DataConfig,
    EvalConfig,
    Params,
    PromoteConfig,
    TrainConfig,
    load_params,
    params_from_dict,
)
from ptune.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_params_yaml_is_valid_and_mirrored():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    assert params.model == raw["model"]
    assert params.run_tasks == tuple(raw["run_tasks"])
    for section in ("data", "train", "evaluate", "promote"):
        assert {k: getattr(getattr(params, section), k) for k in raw[section]} == raw[section]
    for task in params.run_tasks:
        params.for_task(task)  # every task's merged settings are valid too


def test_defaults_are_the_paper_defaults():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.warmup_steps, cfg.grad_clip) == ("adafactor", 0.3, 0, 1.0)
    assert (cfg.device, cfg.precision, cfg.threads) == ("auto", "auto", None)
    assert cfg.to_dict()["n_tokens"] == 20 and "section" not in cfg.to_dict()


def test_task_overrides_apply_to_that_task_only(tmp_path):
    params = load_params(ROOT / "params.yaml")
    xsum = params.for_task("xsum")
    assert (xsum.train.max_steps, xsum.train.eval_every, xsum.train.batch_size) == (60, 30, 4)
    assert (xsum.evaluate.max_examples, xsum.evaluate.batch_size) == (40, 16)
    assert xsum.train.lr == params.train.lr and xsum.data == params.data
    plain = params.for_task("strategyqa")  # no overrides: the default recipe (docs/training.md)
    assert (plain.train, plain.evaluate, plain.data) == (params.train, params.evaluate, params.data)
    assert (plain.train.schedule, plain.train.reparam, plain.train.spike_factor) == ("cosine", "residual", 5.0)
    # the default recipe at the peak lr (and prompt length) their validation chose
    for name, n_tokens in (("rotten_tomatoes", 50), ("presupposition_nli", params.train.n_tokens)):
        task = params.for_task(name)
        assert task.train == replace(params.train, lr=0.03, n_tokens=n_tokens) and task.evaluate == params.evaluate
    assert params.for_task("intent").train == replace(params.train, n_tokens=100)  # lr 0.3, 100 prompt tokens
    assert xsum.task_overrides == {} and xsum.for_task("xsum") == xsum  # applied exactly once


def test_with_overrides_validates_and_names_its_source():
    params = Params().with_overrides("form", model="m", train={"max_steps": 3}, evaluate={})
    assert (params.model, params.train.max_steps, params.evaluate) == ("m", 3, Params().evaluate)
    with pytest.raises(ConfigError, match=r"form\.train\.n_tokens = 0"):
        Params().with_overrides("form", train={"n_tokens": 0})


def test_model_dtype_is_checked_against_the_precision_policies():
    assert Params().model_dtype == "auto"
    assert params_from_dict({"model_dtype": "auto", "evaluate": {"precision": "fp32"}}).model_dtype == "auto"
    assert Params(model_dtype="bf16").model_dtype == "bf16"  # both policies auto
    with pytest.raises(ConfigError, match=r"model_dtype = 'fp16': allowed values are auto, fp32, bf16"):
        Params(model_dtype="fp16")
    with pytest.raises(ConfigError, match=r"evaluate.precision = 'fp32' with model_dtype = 'bf16'"):
        params_from_dict({"model_dtype": "bf16", "evaluate": {"precision": "fp32"}})


def test_train_config_lists_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        TrainConfig(n_tokens=0, init="zeros", optimizer="sgd", lr=0.0, batch_size=0, device="tpu", precision="yes",
                    threads=0, weight_decay=-1)
    message = str(info.value)
    for expected in ("train.n_tokens = 0", "1000", "train.init = 'zeros'", "random, vocab, labels, text, file",
                     "train.optimizer = 'sgd'", "adafactor, adamw", "train.lr = 0.0", "> 0",
                     "train.batch_size = 0", "train.device = 'tpu'", "train.precision = 'yes'", "train.threads = 0",
                     "train.weight_decay = -1"):
        assert expected in message
    assert len(info.value.problems) == 9


def test_params_file_reports_all_sections_unknown_keys_and_overrides(tmp_path):
    bad = {
        "modle": "x",
        "data": {"min_class_share": 2},
        "train": {"lr": "fast", "batchsize": 4, "init": "text"},
        "evaluate": {"k_shot": -1},
        "promote": {"min_gain": "none"},
        "task_overrides": {"xsum": {"trian": {}, "train": {"max_step": 3, "patience": -2}}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message
    for expected in ("modle: unknown setting; did you mean model?", "data.min_class_share = 2",
                     "train.lr = 'fast'", "train.batchsize: unknown setting; did you mean batch_size?",
                     "train.init_text = None", "evaluate.k_shot = -1", "promote.min_gain = 'none'",
                     "task_overrides.xsum.trian: unknown setting; did you mean train?",
                     "task_overrides.xsum.train.max_step: unknown setting; did you mean max_steps",
                     "task_overrides.xsum.train.patience = -2"):
        assert expected in message
    assert len(info.value.problems) == 10


def test_yaml_number_quirks_are_accepted():
    cfg = TrainConfig.from_dict({"lr": "1e-3", "weight_decay": 0, "grad_clip": 1})
    assert (cfg.lr, cfg.weight_decay, cfg.grad_clip) == (1e-3, 0.0, 1.0)
    assert TrainConfig.from_dict({"precision": "fp32", "device": "cpu", "threads": 2}).threads == 2


def test_missing_sections_take_defaults_and_bad_shapes_are_errors(tmp_path):
    params = params_from_dict({"model": "some/dir"})
    assert params == Params(model="some/dir")
    assert (params.data, params.evaluate, params.promote) == (DataConfig(), EvalConfig(), PromoteConfig())
    with pytest.raises(ConfigError, match="run_tasks"):
        params_from_dict({"run_tasks": "xsum"})
    with pytest.raises(ConfigError, match="train: must be a mapping"):
        params_from_dict({"train": [1, 2]})
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_project_params_default_file_is_optional_a_named_one_is_not(tmp_path, monkeypatch):
    from ptune.config import project_params

    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    assert project_params() == Params() and project_params("params.yaml").base_dir == tmp_path
    with pytest.raises(ConfigError, match=r"typo\.yaml: params file not found"):
        project_params("typo.yaml")
    (tmp_path / "other.yaml").write_text("train: {max_steps: 7}\n")
    assert project_params("other.yaml").train.max_steps == 7


def test_a_run_task_whose_test_cap_is_under_promote_min_examples_is_named_before_training(caplog):
    """The shipped xsum override scores 40 test rows and the gate wants 100: say so when the run is built."""
    import logging

    from ptune.config import project_params
    from ptune.pipeline.task_run import TaskRun, scored_test_cap

    params = project_params()
    assert scored_test_cap(params.for_task("xsum")) < params.promote.min_examples <= scored_test_cap(params)
    with caplog.at_level(logging.WARNING, logger="ptune.pipeline.task_run"):
        TaskRun.build("rotten_tomatoes", params)
        assert not caplog.records
        TaskRun.build("xsum", params)
    assert len(caplog.records) == 1
    assert ("task xsum: at most 40 test examples are scored" in caplog.text
            and "promote.min_examples is 100" in caplog.text and "@challenger" in caplog.text)
