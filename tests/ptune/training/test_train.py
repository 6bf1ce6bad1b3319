"""train_prompt on tiny models: base frozen, loss falls, early stopping, checkpoint/resume equivalence."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest
import torch

from ptune.config import TrainConfig
from ptune.data.catalog import TaskSpec
from ptune.errors import ConfigError, DataError
from ptune.model.soft_prompt import init_prompt
from ptune.training import checkpoint as ckpt
from ptune.training import train as train_mod
from ptune.training.train import StepInfo, train_prompt

try:
    from ptune.data.splits import Example
except ImportError:  # ptune.data.splits is written concurrently: same fields as design.md until it exists
    @dataclass(frozen=True)
    class Example:  # type: ignore[no-redef]
        id: str
        source: str
        target: str
        fields: dict = field(default_factory=dict)

SPEC = TaskSpec(name="toy", kind="classification", source=None, columns=("text",),
                formatter=lambda row: (f"Review: {row['text']}\nSentiment:", row["label"]),
                label_words=("negative", "positive"), metrics=("accuracy",), max_source_tokens=32)
WORDS = ("good", "bad", "great", "awful", "fun", "dull", "happy", "sad")


def toy(n: int, seed: int) -> list[Example]:
    """'Review: x y z' -> positive iff the first word is a positive one (deterministic target)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(3)]
        label = "positive" if words[0] in ("good", "great", "fun", "happy") else "negative"
        rows.append(Example(f"{seed}-{i}", f"Review: {' '.join(words)}\nSentiment:", label, {}))
    return rows


TRAIN, VALID = toy(20, 0), toy(6, 1)
BASE_CFG = TrainConfig(n_tokens=4, init="random", batch_size=4, max_steps=12, eval_every=4, patience=0,
                       checkpoint_every=3, seed=3)


def test_base_is_bitwise_unchanged_and_only_the_prompt_trains(tiny_base, tmp_path):
    before = {k: v.clone() for k, v in tiny_base.model.state_dict().items()}
    initial = train_mod._initial_prompt(tiny_base, SPEC, BASE_CFG, None).weight.detach().clone()
    cfg = replace(BASE_CFG, max_steps=5, eval_every=0, checkpoint_every=5)
    result = train_prompt(tiny_base, SPEC, TRAIN, VALID, cfg, tmp_path)
    after = tiny_base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in tiny_base.model.parameters())
    assert not torch.equal(result.prompt.weight.detach(), initial)  # the prompt got gradients and moved
    assert result.prompt.weight.dtype == torch.float32 and result.steps_run == 5
    tensors, doc = ckpt.read_checkpoint(tmp_path / "checkpoint")
    assert doc["optimizer"]["param_groups"][0]["params"] == [0] and list(doc["optimizer"]["scalars"]) == ["0"]


def _pretrained_like(base, emb_std: float) -> None:
    """Re-initialise a tiny random model so a prompt can steer it, as it can a trained model.

    As built (weights std 0.02, tied embeddings) its logits span about +-0.6, so no prompt can push the
    loss much below log(vocab): 'loss falls to 0.7x' would measure the model, not the trainer. Linear
    weights get std 1/sqrt(fan_in) (signals keep their scale) and embeddings `emb_std`, which gives logit
    ranges like a trained model's (about +-16 causal, +-11 T5, whose tied head is scaled by d^-0.5)."""
    gen = torch.Generator().manual_seed(0)
    embedding = base.model.get_input_embeddings().weight
    with torch.no_grad():
        for name, param in base.model.named_parameters():
            if param is embedding:
                param.copy_(torch.randn(param.shape, generator=gen) * emb_std)
            elif param.ndim == 2 and "relative_attention_bias" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)


def test_loss_falls_on_a_learnable_toy_task(tiny_base, tmp_path):
    _pretrained_like(tiny_base, emb_std=2.0 if tiny_base.is_encoder_decoder else 0.5)
    data = toy(48, 2)
    cfg = TrainConfig(n_tokens=8, init="random", lr=0.3, batch_size=8, max_steps=60, eval_every=0,
                      checkpoint_every=0)
    initial = train_mod._initial_prompt(tiny_base, SPEC, cfg, None).weight.detach()
    loss0 = train_mod._validation_loss(tiny_base, SPEC, data, initial, 16)
    result = train_prompt(tiny_base, SPEC, data, [], cfg, tmp_path)
    loss1 = train_mod._validation_loss(tiny_base, SPEC, data, result.prompt.weight.detach(), 16)
    assert loss1 < 0.7 * loss0, (loss0, loss1)
    late = sum(h.loss for h in result.history[-5:]) / 5
    assert late < 0.8 * sum(h.loss for h in result.history[:3]) / 3
    assert not (tmp_path / "checkpoint").exists()  # checkpoint_every=0 writes none


def test_early_stopping_keeps_the_best_prompt(tiny_causal, tmp_path, monkeypatch):
    scripted, seen = iter([0.1, 0.5, 0.5, 0.4, 0.9, 0.9]), []

    def fake_validate(base, spec, validation, weight):
        seen.append(weight.clone())
        return {"validation/accuracy": next(scripted)}

    monkeypatch.setattr(train_mod, "_validate", fake_validate)
    calls: list[StepInfo] = []
    cfg = replace(BASE_CFG, max_steps=40, eval_every=2, patience=2, checkpoint_every=0)
    result = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path, callback=calls.append)
    assert result.steps_run == 8 and len(calls) == 8 and len(seen) == 4  # evals at 2, 4 (best), 6, 8 -> stop
    assert [c.step for c in calls if c.metrics] == [2, 4, 6, 8]
    assert result.best_step == 4 and result.best_metrics["validation/accuracy"] == 0.5
    assert "validation/loss" in result.best_metrics
    assert torch.equal(result.prompt.weight.detach(), seen[1])
    assert not torch.equal(seen[1], seen[3])


def test_validation_loss_read_off_label_scores_equals_the_loss_pass(tiny_base):
    """Classification validation takes its loss from the rank scores (no second pass): same value as the
    teacher-forced pass, for a causal LM (prefix-cached scoring) and T5; a target that is not a label word
    falls back to the pass."""
    _pretrained_like(tiny_base, emb_std=2.0 if tiny_base.is_encoder_decoder else 0.5)
    weight = init_prompt(tiny_base, 4, "random", seed=3).weight.detach()
    data = toy(10, 5)
    metrics = train_mod._validate(tiny_base, SPEC, data, weight)
    passed = train_mod._validation_loss(tiny_base, SPEC, data, weight, 4)
    assert metrics["validation/loss"] == pytest.approx(passed, rel=1e-4, abs=1e-5)
    assert list(train_mod._evaluate(tiny_base, SPEC, data, weight, BASE_CFG, None)) == \
        ["validation/loss", "validation/accuracy"]
    odd = [replace(data[0], target="neutral"), *data[1:]]
    assert "validation/loss" not in train_mod._validate(tiny_base, SPEC, odd, weight)
    assert train_mod._evaluate(tiny_base, SPEC, odd, weight, BASE_CFG, None)["validation/loss"] > 0


def test_real_validation_metrics_are_reported(tiny_causal, tmp_path):
    cfg = replace(BASE_CFG, max_steps=6, eval_every=3, checkpoint_every=0)
    result = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    evals = [h.metrics for h in result.history if h.metrics]
    assert len(evals) == 2 and all(0.0 <= m["validation/accuracy"] <= 1.0 for m in evals)
    assert all(m["validation/loss"] > 0 for m in evals)
    assert result.best_step in (3, 6) and result.best_metrics in evals
    # step time and validation time are recorded apart; validation only on evaluation steps
    assert all(h.step_seconds > 0 for h in result.history)
    assert [h.step for h in result.history if h.validation_seconds is not None] == [3, 6]
    assert result.validation_seconds > 0 and result.step_seconds > 0


class Kill(Exception):
    pass


def _kill_at(step: int):
    def callback(info: StepInfo) -> None:
        if info.step == step:
            raise Kill
    return callback


@pytest.mark.parametrize("arch,optimizer", [("causal", "adafactor"), ("t5", "adafactor"), ("causal", "adamw")])
def test_resumed_run_equals_uninterrupted_run(arch, optimizer, request, tmp_path):
    base = request.getfixturevalue("tiny_causal" if arch == "causal" else "tiny_t5")
    cfg = replace(BASE_CFG, optimizer=optimizer, lr=0.3 if optimizer == "adafactor" else 0.05, warmup_steps=3)
    a = train_prompt(base, SPEC, TRAIN, VALID, cfg, tmp_path / "a")  # 5 batches/epoch: crosses epochs
    with pytest.raises(Kill):
        train_prompt(base, SPEC, TRAIN, VALID, cfg, tmp_path / "b", callback=_kill_at(8))
    b = train_prompt(base, SPEC, TRAIN, VALID, cfg, tmp_path / "b")
    assert a.resumed_from is None and b.resumed_from == 6  # last checkpoint before the kill
    assert b.steps_run == a.steps_run == 12
    final_a = ckpt.read_checkpoint(tmp_path / "a" / "checkpoint")[0]["prompt"]
    final_b = ckpt.read_checkpoint(tmp_path / "b" / "checkpoint")[0]["prompt"]
    assert torch.equal(final_a, final_b)
    assert torch.equal(a.prompt.weight, b.prompt.weight) and a.best_step == b.best_step
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert a.best_metrics == b.best_metrics


def test_rerun_and_changed_settings(tiny_causal, tmp_path):
    cfg = replace(BASE_CFG, max_steps=3, eval_every=0)
    first = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    again = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)  # finished: nothing to do
    assert again.resumed_from == 3 and torch.equal(again.prompt.weight, first.prompt.weight)
    longer = train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, max_steps=6), tmp_path)
    assert longer.resumed_from == 3 and longer.steps_run == 6 and len(longer.history) == 6
    fresh = train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, lr=0.1), tmp_path)
    assert fresh.resumed_from is None and fresh.steps_run == 3
    other_data = train_prompt(tiny_causal, SPEC, TRAIN[:-1], VALID, replace(cfg, lr=0.1), tmp_path)
    assert other_data.resumed_from is None


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    ckpt.write_checkpoint(tmp_path, {"prompt": torch.ones(2, 3)}, {"step": 1})

    def broken(tensors, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError):
        ckpt.write_checkpoint(tmp_path, {"prompt": torch.zeros(2, 3)}, {"step": 2})
    tensors, state = ckpt.read_checkpoint(tmp_path)
    assert state == {"step": 1} and torch.equal(tensors["prompt"], torch.ones(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.FILE]


def test_config_and_data_errors(tiny_causal, tmp_path):
    with pytest.raises(ConfigError) as info:
        TrainConfig(lr=-1, optimizer="sgd", n_tokens=5000, eval_every=-1)
    for name in ("train.lr", "train.optimizer", "train.n_tokens", "train.eval_every"):
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="init_path"):
        train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(BASE_CFG, init="file"), tmp_path)
    with pytest.raises(DataError, match="empty"):
        train_prompt(tiny_causal, SPEC, [], VALID, BASE_CFG, tmp_path)


def test_forced_bf16_autocast_keeps_the_prompt_fp32(tiny_causal, tmp_path):
    """precision bf16: autocast runs, the prompt and the optimizer state stay fp32; fp32 turns it off."""
    cfg = replace(BASE_CFG, max_steps=3, eval_every=3, checkpoint_every=0, precision="bf16")
    result = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    assert result.autocast == "bfloat16" and result.device == "cpu"
    assert result.prompt.weight.dtype == torch.float32
    assert all(h.loss == h.loss and h.loss < 100 for h in result.history)
    plain = train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, precision="fp32"), tmp_path / "fp32")
    assert plain.autocast is None


def test_bf16_held_weights_train_an_fp32_prompt_close_to_the_fp32_holder(tiny_causal_dir, tmp_path):
    """model_dtype bf16: the frozen weights are bf16, the prompt and its optimizer state stay fp32, the
    gradient reaches the prompt, and the losses stay near those of the fp32-held model (same seed, data)."""
    from ptune.model.base import load_base_model

    cfg = replace(BASE_CFG, max_steps=4, eval_every=4, checkpoint_every=0, precision="bf16")
    held = train_prompt(load_base_model(tiny_causal_dir, dtype="bfloat16"), SPEC, TRAIN, VALID, cfg, tmp_path / "a")
    ref = train_prompt(load_base_model(tiny_causal_dir), SPEC, TRAIN, VALID, cfg, tmp_path / "b")
    assert held.prompt.weight.dtype == torch.float32
    init = init_prompt(load_base_model(tiny_causal_dir), cfg.n_tokens, cfg.init, seed=cfg.seed).weight
    assert not torch.equal(held.prompt.weight.detach(), init.detach())  # it trained
    for a, b in zip(held.history, ref.history, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=0.05, abs=0.05)


def test_matmul_weights_held_in_bf16_train_bit_for_bit_like_autocast_over_fp32(tiny_causal_dir, tmp_path):
    """model_dtype auto under bf16 (`hold_matmul_weights`): the same losses, validation metrics and prompt, bit for
    bit, as bf16 autocast over the fp32 checkpoint, because autocast casts each linear weight the same way."""
    from ptune.model.base import load_base_model
    from ptune.model.precision import hold_matmul_weights

    cfg = replace(BASE_CFG, max_steps=6, eval_every=3, checkpoint_every=0, precision="bf16")
    held = load_base_model(tiny_causal_dir)
    assert hold_matmul_weights(held.model, torch.bfloat16) > 0
    a = train_prompt(held, SPEC, TRAIN, VALID, cfg, tmp_path / "held")
    b = train_prompt(load_base_model(tiny_causal_dir), SPEC, TRAIN, VALID, cfg, tmp_path / "fp32")
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert a.best_metrics == b.best_metrics
    assert torch.equal(a.prompt.weight, b.prompt.weight)
    assert {p.dtype for p in held.model.parameters()} == {torch.bfloat16, torch.float32}  # kept as held


def test_cli_train_writes_a_prompt_artifact(tiny_causal, tmp_path, monkeypatch):
    """`ptune train TASK --steps N --out DIR` wires params, data, base model, training and the artifact."""
    from typer.testing import CliRunner

    from ptune.cli import app
    from ptune.model.artifacts import load_prompt
    from ptune.pipeline import stages, task_run

    # the CLI calls ptune.pipeline.stages: stand in for the catalog, the data and the base model there
    monkeypatch.setattr(task_run, "get_task", lambda name, params=None: SPEC)
    monkeypatch.setattr(task_run, "_read_split", lambda task, split, stamp: TRAIN if split == "train" else VALID)
    monkeypatch.setattr(task_run.splits, "data_version", lambda task: "v-test")
    monkeypatch.setattr(stages, "load_held_model", lambda spec, model_dtype, policies, **_: tiny_causal)
    params = tmp_path / "params.yaml"
    params.write_text("train: {n_tokens: 4, init: random, batch_size: 4, eval_every: 2, checkpoint_every: 2}\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["train", "toy", "--params", str(params), "--steps", "4", "--out", str(out),
                                   "--no-track"])  # the data layer is stood in for: no MLflow run of it
    assert res.exit_code == 0, res.output
    weight, meta = load_prompt(out / "prompt", expected_fingerprint=tiny_causal.fingerprint)
    assert weight.shape == (4, tiny_causal.hidden_size) and meta.data_version == "v-test"
    assert meta.train_config["max_steps"] == 4 and "validation/accuracy" in meta.metrics
    assert (out / "checkpoint" / ckpt.FILE).is_file() and '"steps_run": 4' in res.output


def test_shared_prompt_pass_trains_the_same_prompt_as_the_plain_path(tiny_causal, tmp_path, monkeypatch):
    """Training runs the prompt's pass once per batch (`shared_prompt_inputs`); over several steps with
    padded batches it moves the prompt exactly as the plain per-row prompt pass does."""
    from ptune.model.soft_prompt import prompt_inputs

    cfg = replace(BASE_CFG, max_steps=6, eval_every=3, checkpoint_every=0)
    shared = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "shared")
    monkeypatch.setattr(train_mod, "shared_prompt_inputs", prompt_inputs)
    plain = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "plain")
    assert torch.allclose(shared.prompt.weight, plain.prompt.weight, atol=1e-5, rtol=0)
    assert [h.loss for h in shared.history] == pytest.approx([h.loss for h in plain.history], abs=1e-5)
    assert shared.best_metrics == pytest.approx(plain.best_metrics, abs=1e-5)
