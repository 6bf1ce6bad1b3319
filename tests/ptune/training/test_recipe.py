"""The training recipe: lr schedules with warmup, the loss-spike guard, residual reparameterization (folded
at save), and bit-exact resume of all of them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ptune.config import TrainConfig
from ptune.errors import ConfigError
from ptune.model.base import BaseModel
from ptune.model.reparam import ResidualMLP, TrainablePrompt
from ptune.model.soft_prompt import SoftPrompt, prompt_inputs
from ptune.training import checkpoint as ckpt
from ptune.training import train as train_mod
from ptune.training.history import StepInfo
from ptune.training.train import train_prompt
from tests.ptune.training.test_train import BASE_CFG, SPEC, TRAIN, VALID, Kill, _kill_at


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_with_warmup(tiny_causal, tmp_path, schedule):
    cfg = replace(BASE_CFG, schedule=schedule, warmup_steps=4, max_steps=12, lr=0.2, eval_every=0)
    lrs = [h.lr for h in train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path).history]
    assert lrs[:5] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])  # linear warmup from 0 (transformers)
    after = lrs[4:]
    if schedule == "constant":
        assert after == pytest.approx([0.2] * 8)
    elif schedule == "linear":
        assert after == pytest.approx([0.2 * (12 - s) / 8 for s in range(4, 12)])
    else:
        assert after == pytest.approx([0.1 * (1 + math.cos(math.pi * (s - 4) / 8)) for s in range(4, 12)])


@pytest.mark.parametrize("arch", ["causal", "t5"])
def test_resume_is_bit_exact_with_schedule_reparam_and_guard(arch, request, tmp_path):
    """Killed mid-run and resumed: the same prompt, MLP, losses and lrs as the uninterrupted run."""
    base = request.getfixturevalue("tiny_causal" if arch == "causal" else "tiny_t5")
    cfg = replace(BASE_CFG, schedule="cosine", warmup_steps=3, reparam="residual", reparam_bottleneck=8,
                  spike_factor=1.5)
    a = train_prompt(base, SPEC, TRAIN, VALID, cfg, tmp_path / "a")
    with pytest.raises(Kill):
        train_prompt(base, SPEC, TRAIN, VALID, cfg, tmp_path / "b", callback=_kill_at(8))
    b = train_prompt(base, SPEC, TRAIN, VALID, cfg, tmp_path / "b")
    assert b.resumed_from == 6 and a.steps_run == b.steps_run == 12
    ta, tb = (ckpt.read_checkpoint(tmp_path / d / "checkpoint")[0] for d in "ab")
    assert sorted(ta) == sorted(tb) and any(k.startswith("reparam.") for k in ta)
    assert any(k.startswith("rollback.optimizer.") for k in ta)  # the guard's known-good state is saved too
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # prompt, MLP, optimizer state, RNG
    assert torch.equal(a.prompt.weight, b.prompt.weight)
    assert [(h.loss, h.lr, h.skipped) for h in a.history] == [(h.loss, h.lr, h.skipped) for h in b.history]


def test_a_decaying_schedule_does_not_resume_with_other_max_steps(tiny_causal, tmp_path):
    cfg = replace(BASE_CFG, schedule="linear", max_steps=3, eval_every=0)
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    longer = train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, max_steps=6), tmp_path)
    assert longer.resumed_from is None  # the lr curve depends on max_steps: start fresh
    constant = replace(cfg, schedule="constant")
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, constant, tmp_path / "c")
    assert train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(constant, max_steps=6), tmp_path / "c").resumed_from == 3



def test_a_checkpoint_resumes_only_under_the_code_that_wrote_it(tiny_causal, tmp_path, monkeypatch, caplog):
    """A finished run's checkpoint, written by other ptune code, would otherwise be "resumed" at max_steps and hand
    back the old code's prompt (seen: `dvc repro` after a code change retrained presupposition_nli in 0.3 s)."""
    cfg = replace(BASE_CFG, max_steps=3, eval_every=0)
    first = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    assert train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path).resumed_from == 3  # same code: resumes
    monkeypatch.setattr(ckpt, "code_digest", lambda: "0123456789abcdef")  # as after an edit under ptune/
    again = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    assert again.resumed_from is None and "base model or ptune code: starting fresh" in caplog.text
    assert len(again.history) == 3 and torch.equal(again.prompt.weight, first.prompt.weight)  # retrained, same result
    monkeypatch.undo()
    assert len(ckpt.code_digest()) == 16 and ckpt.code_digest() == ckpt.code_digest()


def test_spike_guard_skips_the_update_rolls_back_the_previous_one_and_counts_it(tiny_causal, tmp_path, monkeypatch,
                                                                                caplog):
    """A step whose loss is 100x the others is not applied, and the update before it is undone: the prompt
    is back to the state that gave the last normal loss (after step 6), then training goes on from there."""
    real = train_mod.target_loss
    calls = {"n": 0}

    def spiky(base, kwargs):
        loss = real(base, kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 8:
                return loss * 100
        return loss
    monkeypatch.setattr(train_mod, "target_loss", spiky)
    seen: list[StepInfo] = []
    cfg = replace(BASE_CFG, max_steps=10, eval_every=0, spike_factor=5.0, checkpoint_every=1)
    prompts = []
    result = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path,
                          callback=lambda info: (seen.append(info), prompts.append(
                              ckpt.read_checkpoint(tmp_path / "checkpoint")[0]["prompt"])))
    assert [h.skipped for h in result.history] == [False] * 7 + [True, False, False]
    assert [h.skipped_steps for h in seen] == [0] * 7 + [1, 1, 1]
    assert not torch.equal(prompts[5], prompts[6])  # step 7 was applied ...
    assert torch.equal(prompts[5], prompts[7])  # ... and rolled back when step 8 spiked
    assert not torch.equal(prompts[7], prompts[8])  # step 9 is applied again
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "update skipped" in r.getMessage()]
    assert warned == [f"{SPEC.name} step 8: loss {result.history[7].loss:.4f} > 5 x running median: update skipped, "
                      "previous update rolled back"]  # names the task: several tasks share one Prefect log
    monkeypatch.setattr(train_mod, "target_loss", real)
    calls["n"] = 0
    off = train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, spike_factor=0.0), tmp_path / "off")
    assert not any(h.skipped for h in off.history)


def test_is_spike_uses_the_running_median_of_applied_steps():
    hist = [StepInfo(i + 1, loss, None, 0.1) for i, loss in enumerate([1.0, 2.0, 1.0, 3.0, 1.0])]
    assert not train_mod._is_spike(4.9, hist, 5.0) and train_mod._is_spike(5.1, hist, 5.0)
    assert not train_mod._is_spike(100.0, hist[:4], 5.0)  # too little history
    assert train_mod._is_spike(float("nan"), hist, 5.0) and not train_mod._is_spike(1e9, hist, 0.0)
    skipped = [*hist, StepInfo(6, 50.0, None, 0.1, skipped=True)]
    assert train_mod._is_spike(5.1, skipped, 5.0)  # a skipped loss does not raise the median


def _logits(base: BaseModel, prompt: torch.Tensor) -> torch.Tensor:
    enc = base.tokenizer(["Review: good fun\nSentiment:", "Review: sad"], return_tensors="pt", padding=True)
    kwargs = prompt_inputs(base, prompt, enc["input_ids"], enc["attention_mask"])
    if base.is_encoder_decoder:
        kwargs["decoder_input_ids"] = torch.zeros(2, 1, dtype=torch.long)
    return base.model(**kwargs).logits


def test_folded_prompt_gives_the_logits_of_the_unfolded_network(tiny_base):
    torch.manual_seed(0)
    trainable = TrainablePrompt(SoftPrompt(torch.randn(4, tiny_base.hidden_size) * 0.1), "residual", 16)
    with torch.no_grad():
        for p in trainable.mlp.parameters():  # away from the zero-gain start, so the MLP matters
            p.add_(torch.randn_like(p) * 0.3)
        unfolded = _logits(tiny_base, trainable())
        folded = _logits(tiny_base, trainable.fold())
    assert not torch.allclose(trainable.fold(), trainable.raw)
    assert torch.allclose(unfolded, folded, atol=1e-5) and trainable.fold().shape == (4, tiny_base.hidden_size)


def test_residual_mlp_starts_as_identity_and_is_the_papers_shape():
    mlp = ResidualMLP(hidden=12, bottleneck=5)
    x = torch.randn(3, 12)
    assert torch.equal(mlp(x), x)
    assert mlp.down.weight.shape == (5, 12) and mlp.up.weight.shape == (12, 5)


def test_reparam_trains_jointly_and_saves_a_plain_prompt(tiny_causal, tmp_path):
    """The artifact written by the stages is a plain (P, d) prompt: the MLP is folded in, never saved."""
    from safetensors import safe_open

    from ptune.model.artifacts import PromptMeta, load_prompt, save_prompt

    cfg = replace(BASE_CFG, reparam="residual", reparam_bottleneck=8, max_steps=6, eval_every=3)
    result = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    tensors, doc = ckpt.read_checkpoint(tmp_path / "checkpoint")
    assert len(doc["optimizer"]["param_groups"][0]["params"]) == 7  # prompt + 6 MLP tensors in one optimizer
    assert tensors["reparam.norm.weight"].abs().sum() > 0  # the gain left 0: the MLP took part
    saved = save_prompt(tmp_path / "prompt", result.prompt.weight.detach(),
                        PromptMeta("toy", "tiny", tiny_causal.fingerprint, train_config=cfg.to_dict()))
    weight, meta = load_prompt(saved, expected_fingerprint=tiny_causal.fingerprint)
    assert weight.shape == (4, tiny_causal.hidden_size) and meta.n_tokens == 4
    with safe_open(str(saved / "prompt.safetensors"), framework="pt") as fh:
        assert list(fh.keys()) == ["prompt_embeddings"]
    assert torch.equal(weight, tensors["best_prompt"])  # the best validated prompt, folded


def test_recipe_settings_are_validated():
    with pytest.raises(ConfigError) as err:
        TrainConfig(schedule="step", reparam="deep", spike_factor=0.5, reparam_bottleneck=0)
    text = str(err.value)
    for part in ("train.schedule", "train.reparam", "train.spike_factor", "train.reparam_bottleneck"):
        assert part in text
    assert TrainConfig(spike_factor=5).spike_factor == 5.0


def test_max_token_rms_caps_every_raw_prompt_token_after_each_update(tiny_causal, tmp_path):
    """train.max_token_rms: after every applied update each raw prompt token's RMS is at most that multiple of
    the vocabulary's RMS; without it the same run leaves tokens above (the uniform init is far above)."""
    from ptune.model.soft_prompt import vocab_rms

    cap = 1.5 * vocab_rms(tiny_causal)
    cfg = replace(BASE_CFG, max_steps=6, eval_every=0, checkpoint_every=1, max_token_rms=1.5)
    raws: list[torch.Tensor] = []
    keep = lambda _info: raws.append(ckpt.read_checkpoint(tmp_path / "on" / "checkpoint")[0]["prompt"])  # noqa: E731
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "on", callback=keep)
    rms = torch.stack([r.pow(2).mean(dim=1).sqrt() for r in raws])  # (steps, P)
    assert len(raws) == 6 and float(rms.max()) <= cap * (1 + 1e-5)
    assert float(rms.max()) >= cap * (1 - 1e-5)  # scaled back to the cap, not below it
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, max_token_rms=0.0), tmp_path / "off")
    off = ckpt.read_checkpoint(tmp_path / "off" / "checkpoint")[0]["prompt"]
    assert float(off.pow(2).mean(dim=1).sqrt().max()) > 2 * cap


def test_cap_token_rms_leaves_small_rows_alone():
    from ptune.model.soft_prompt import cap_token_rms

    weight = torch.tensor([[3.0, 4.0], [0.1, 0.1]])  # row RMS 3.54 and 0.1
    cap_token_rms(weight, 1.0)
    assert weight[0].pow(2).mean().sqrt().item() == pytest.approx(1.0)
    assert torch.equal(weight[1], torch.tensor([0.1, 0.1]))
    with pytest.raises(ConfigError, match="train.max_token_rms"):
        TrainConfig(max_token_rms=-1)
