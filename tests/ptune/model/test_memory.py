"""ptune.model.memory: the arithmetic against hand-computed numbers, size parsing, the fits verdict, the CLI, and
the estimate against the measured peak RSS of real training steps on SmolLM2 within 20% (a tiny model's peak is
mostly the fixed runtime, which moves by tens of MiB between environments, so it tests nothing of the model)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ptune.config import Params
from ptune.errors import ConfigError
from ptune.model import memory
from ptune.model.memory import (
    CPU_RUNTIME,
    LLAMA2_7B,
    NF4_BYTES,
    TOKENIZER_PER_ENTRY,
    Setting,
    estimate,
    fits,
    parse_size,
    peaks,
    settings_for,
    shape_of,
)

ROOT = Path(__file__).resolve().parents[3]
TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "tie_word_embeddings": True}
SMALL = Setting(batch_size=2, seq_len=10, n_tokens=4, target_tokens=3, reparam_bottleneck=8)  # fp32, sdpa, cpu


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "bench" / "bench_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    return shape_of(TINY)


def test_shape_counts_the_tiny_llama_by_hand(tiny):
    # per layer: q 32x32, k and v 32x16, o 32x32, gate/up/down 3 x 32x64; norms 2 x 32; final norm 32; tied
    assert tiny.linear_params == 2 * (1024 + 512 + 512 + 1024 + 3 * 2048) == 18432
    assert tiny.linear_rows == 2 * (32 + 16 + 16 + 32 + 64 + 64 + 32)
    assert (tiny.embed_params, tiny.other_params, tiny.n_params) == (300 * 32, 2 * 64 + 32, 28192)


def test_llama2_7b_shape_has_its_parameter_count():
    assert shape_of(LLAMA2_7B).n_params == 6_738_415_616


def test_train_estimate_equals_the_hand_computed_terms(tiny):
    got = estimate(tiny, SMALL)
    # per text position and layer (fp32): norms 2*32*4, MLP 3*64*4, k+v 2*32*4*(14/10), q 32*4, out 32*4, lse 4*4
    rows = 2 * 20 * (256 + 768 + 358.4 + 128 + 128 + 16)
    prompt = 2 * 4 * (256 + 768 + 256 + 128 + 128 + 16)  # the prompt's pass at batch 1, keys over 4
    cache = 2 * 2 * 14 * 2 * 2 * 8 * 4  # layers x B x (P+T) x k,v x kv heads x head_dim x 4
    small = 2 * 10 * 14 * 4 + 2 * 2 * 10 * 8 * 4 + 2 * 10 * 32 * 4  # mask, rope, final norm
    logits = 2 * 2 * 3 * 300 * 4  # fp32 target logits and their gradient
    working = 20 * (3 * 64 * 4 + 2 * 32 * 4)
    assert got.activations == pytest.approx(rows + prompt + cache + small + logits + working)
    n = 4 * 32 + (8 * 32 + 8) + (32 * 8 + 32) + 2 * 32  # prompt, MLP down, up, LayerNorm
    adafactor = 4 * ((4 + 32) + (8 + 32) + 8 + (32 + 8) + 32 + 32 + 32)  # factored matrices, whole vectors
    assert (got.trainable, got.grads) == (4 * n, 4 * n)
    assert got.optimizer == adafactor + 4 * n + adafactor  # + the spike guard's copy
    assert got.weights == 28192 * 4
    assert got.runtime == CPU_RUNTIME + TOKENIZER_PER_ENTRY * 300
    assert got.allocator == 2 * 20 * (64 + 2 * 32) * 4  # layers x positions x (intermediate + 2 hidden) x 4
    assert estimate(tiny, SMALL, device="cuda").allocator == 0
    assert estimate(tiny, SMALL, optimizer="adamw", spike_guard=False).optimizer == 8 * n


def test_checkpointed_train_estimate_equals_the_hand_computed_terms(tiny):
    got, plain = estimate(tiny, SMALL, checkpointing=True), estimate(tiny, SMALL)
    # the prompt runs in every row: 2 x (4 + 10) = 28 positions of 14 keys; no prompt pass, no prompt cache
    inputs = 2 * 28 * 32 * 4  # layers x positions x hidden x fp32: what the checkpoint keeps
    layer = 28 * (256 + 768 + 256 + 128 + 128 + 16)  # one layer's saved set while the backward recomputes it
    small = 2 * 14 * 14 * 4 + 2 * 2 * 14 * 8 * 4 + 2 * 14 * 32 * 4  # mask, rope, final norm
    logits = 2 * 2 * 3 * 300 * 4
    working = 28 * (3 * 64 * 4 + 2 * 32 * 4)
    assert got.activations == pytest.approx(inputs + layer + small + logits + working) == 100640
    assert got.allocator == 2 * 28 * (64 + 2 * 32) * 4  # the kept inputs strand the freed temporaries alike
    assert (got.weights, got.trainable, got.grads, got.optimizer) == (plain.weights, plain.trainable, plain.grads,
                                                                     plain.optimizer)
    assert got.activations < plain.activations  # with 2 layers the once-per-step terms dominate
    bf16 = Setting(**{**SMALL.__dict__, "precision": "bf16", "checkpointing": True})
    assert memory._autocast_copies(tiny, bf16) == 2 * (300 * 32 + 18432 / 2)  # head + one layer's bf16 weights


def test_quantized_weights_keep_embeddings_and_norms(tiny):
    rest = (9600 + 160) * 4
    assert estimate(tiny, SMALL, quantize="int8").weights == 18432 * 1 + 4 * 512 + rest
    assert estimate(tiny, SMALL, quantize="nf4").weights == pytest.approx(18432 * NF4_BYTES + rest)
    assert NF4_BYTES == pytest.approx(0.5 + 0.127 / 8, abs=1e-4)  # QLoRA's 0.127 bits/param of double-quantized absmax
    assert estimate(tiny, SMALL, held="bf16").weights == 28192 * 2
    assert estimate(tiny, SMALL, held="auto", precision="bf16").weights == 18432 * 2 + rest


def test_full_fine_tuning_costs_16_bytes_per_parameter_and_saves_linear_inputs(tiny):
    ft = estimate(tiny, SMALL, mode="full_ft_adamw", held="bf16", precision="bf16")
    assert ft.weights + ft.trainable + ft.grads + ft.optimizer == 16 * 28192
    extra = memory.layer_saved(tiny, SMALL, 1, 1, 1, full_ft=True) - memory.layer_saved(tiny, SMALL, 1, 1, 1)
    assert extra == (2 * 32 + 32 + 64) * 4  # two normed states, attention output, MLP product
    with pytest.raises(ConfigError, match="quantize must be 'none'"):
        estimate(tiny, SMALL, mode="full_ft_adamw", quantize="nf4")


def test_7b_prompt_tuning_on_nf4_is_a_small_fraction_of_full_fine_tuning():
    rows = _bench().projection(shape_of(LLAMA2_7B))
    assert rows[0]["batch_size"] == 1 and rows[0]["ratio"] < 0.1
    assert rows[1]["batch_size"] == 8 and rows[1]["ratio"] > 0.1 > rows[1]["ratio_checkpointed"]  # 0.171, 0.050
    assert all(r["prompt_tuning_nf4_checkpointed"]["total"] < r["prompt_tuning_nf4"]["total"] for r in rows)
    assert all(r["prompt_tuning_nf4"]["total"] < r["full_ft_adamw"]["total"] for r in rows)


@pytest.mark.parametrize(("text", "size"), [("24GB", 24 * 2**30), ("24GiB", 24 * 2**30), ("80G", 80 * 2**30),
                                            ("16000MB", 16000 * 2**20), ("1.5 GB", 3 * 2**29), ("512mib", 2**29)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "24XB", "-3GB", "0GB", "GB24"])
def test_parse_size_rejects_garbage_in_one_line(text):
    with pytest.raises(ConfigError) as info:
        parse_size(text)
    assert "\n" not in str(info.value) and repr(text) in str(info.value)


def test_setting_lists_every_bad_value():
    with pytest.raises(ConfigError) as info:
        Setting(quantize="int4", precision="fp16", batch_size=-1, checkpointing="yes")
    assert all(word in str(info.value) for word in ("int4", "fp16", "batch_size", "checkpointing"))


def test_settings_for_follows_train_gradient_checkpointing():
    params = Params()
    assert not settings_for(params)[0].checkpointing
    on = replace(params, train=replace(params.train, gradient_checkpointing=True))
    train, evaluate = settings_for(on)
    assert train.checkpointing and not evaluate.checkpointing


def test_fits_flips_at_each_budget():
    shape = shape_of(LLAMA2_7B)
    train, evaluate = settings_for(Params(), seq_len=512)
    peak = {q: max(t.total, e.total) for q, (t, e) in peaks(shape, train, evaluate).items()}
    assert peak["none"] > peak["int8"] > peak["nf4"]
    assert fits(shape, train, evaluate, int(peak["none"]) + 1).quantize == "none"
    assert fits(shape, train, evaluate, int(peak["none"]) - 1).quantize == "int8"
    assert fits(shape, train, evaluate, int(peak["int8"]) - 1).quantize == "nf4"
    budget = int(peak["nf4"]) - 1
    verdict = fits(shape, train, evaluate, budget)
    devices = -(-(peak["none"] - memory.CUDA_RUNTIME) // (budget - memory.CUDA_RUNTIME))  # each holds a runtime
    assert (verdict.device_map, verdict.quantize, verdict.devices) == ("auto", "none", devices)
    assert f"device_map auto over {int(devices)} devices" in verdict.line


def test_cli_prints_a_row_per_quantize_mode_and_the_verdict(tiny_causal_dir, monkeypatch, capsys, tmp_path):
    from ptune.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ptune", "model-info", str(tiny_causal_dir), "--gpu-memory", "24GB",
                                      "--seq-len", "64"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "GB and MB are read as GiB and MiB" in out and "20 prompt + 64 text" in out
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")][1:] == list(memory.QUANTIZE)
    assert out.strip().splitlines()[-1].startswith("fits: quantize none on one device")
    monkeypatch.setattr(sys, "argv", ["ptune", "model-info", "--gpu-memory", "lots"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1 and capsys.readouterr().err.strip().startswith("error: memory size 'lots'")


def _check(bench, job: dict) -> dict:
    row = bench.compare({"job": job})[0]
    assert 0.8 <= row["ratio"] <= 1.2, row
    return row


@pytest.mark.slow
def test_estimate_within_20_percent_of_smollm2_training():
    bench = _bench()
    row = _check(bench, {**bench.SMOLLM2, "what": "train", "batch_size": 8, "seq_len": 96, "steps": 1})
    assert row["peak"] > row["runtime"] + 900 * 2**20  # weights + activations were really there
