"""Precision policy: what each setting picks on this hardware, and how far bf16 autocast moves the loss and
the task predictions from fp32 (tiny model here; SmolLM2 on real rotten_tomatoes rows in the slow test)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from ptune.errors import ConfigError
from ptune.evaluation.scoring import evaluate
from ptune.model.batching import collate, encode_pair
from ptune.model.precision import (
    BF16_MIN_PARAMS,
    autocast,
    autocast_dtype,
    bf16_support,
    cpu_bf16_units,
    frozen_weights_in,
    held_dtypes,
    hold_matmul_weights,
    inference_precision,
)
from ptune.model.soft_prompt import init_prompt, prompt_inputs, target_loss
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec

CPU = torch.device("cpu")


def test_policy_choices_on_this_cpu():
    assert autocast_dtype("fp32", CPU, 10**9) is None
    assert autocast_dtype("bf16", CPU, 10) is torch.bfloat16  # asked for: runs even on a tiny model
    has_units = bool(cpu_bf16_units())
    assert autocast_dtype("auto", CPU, BF16_MIN_PARAMS) is (torch.bfloat16 if has_units else None)
    assert autocast_dtype("auto", CPU, BF16_MIN_PARAMS - 1) is None  # tiny models stay fp32
    assert bf16_support(CPU).startswith("yes") == has_units
    with pytest.raises(ConfigError, match=r"evaluate.precision = 'half': allowed values are auto, fp32, bf16"):
        autocast_dtype("half", CPU, 10, "evaluate.precision")


def test_model_info_reports_bf16_support(tiny_causal):
    assert tiny_causal.info()["bf16"] == bf16_support(CPU)


def _loss(base, prompt, dtype) -> float:
    examples = make_examples(n=8)
    items = [encode_pair(base.tokenizer, ex.source, ex.target, encoder_decoder=base.is_encoder_decoder,
                         max_source_tokens=64, add_eos=False) for ex in examples]
    batch = collate(items, base.tokenizer.pad_token_id, base.is_encoder_decoder)
    with torch.no_grad(), autocast(CPU, dtype):
        return float(target_loss(base, prompt_inputs(base, prompt, **batch)))


def test_bf16_stays_close_to_fp32_on_the_tiny_model(tiny_base):
    prompt = init_prompt(tiny_base, 4, "random", seed=0).weight.detach()  # (P, d)
    fp32, bf16 = _loss(tiny_base, prompt, None), _loss(tiny_base, prompt, torch.bfloat16)
    assert abs(bf16 - fp32) <= 0.02 * abs(fp32)  # bf16 keeps 8 mantissa bits: ~0.4 % per op
    spec, examples = make_spec(), make_examples(n=16)
    plain = evaluate(tiny_base, spec, examples, prompt, progress=False)
    with autocast(CPU, torch.bfloat16):
        low = evaluate(tiny_base, spec, examples, prompt, progress=False)
    flips = sum(a != b for a, b in zip(plain.predictions, low.predictions, strict=True))
    assert flips <= 2, (plain.predictions, low.predictions)  # near-ties of a random model may flip


@pytest.mark.slow
def test_bf16_stays_close_to_fp32_on_smollm2(tmp_path, monkeypatch):
    """SmolLM2-135M, 64 real rotten_tomatoes test rows, zero-shot and a class-label prompt."""
    from ptune.config import Params
    from ptune.pipeline import stages

    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    run = stages.TaskRun.build("rotten_tomatoes", Params(model_dtype="fp32"))  # fp32 passes need fp32 weights
    stages.fetch(run)
    stages.prepare(run)
    base = stages.load_base(run)
    rows = run.examples("test")[:64]
    prompt = init_prompt(base, 20, "labels", label_words=run.spec.label_words, seed=0).weight.detach()
    for weight in (None, prompt):
        results = {}
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            with autocast(CPU, dtype) if dtype else contextlib.nullcontext():
                results[name] = evaluate(base, run.spec, rows, weight, batch_size=16, progress=False)
        with inference_precision(base.model, CPU, torch.bfloat16):  # how evaluation runs: weights held in bf16
            results["held"] = evaluate(base, run.spec, rows, weight, batch_size=16, progress=False)
        for name in ("bf16", "held"):
            gap = abs(results[name].metrics["test/accuracy"] - results["fp32"].metrics["test/accuracy"])
            assert gap <= 0.05, {k: v.metrics for k, v in results.items()}  # at most 3 of 64 rows differ
    assert all(p.dtype == torch.float32 for p in base.model.parameters())


def test_frozen_weights_are_held_for_the_block_and_given_back_bit_for_bit(tiny_causal):
    model = tiny_causal.model
    trainable = torch.nn.Parameter(torch.randn(3))
    model.register_parameter("adapter", trainable)  # a trainable parameter stays fp32 (autocast covers it)
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}
    with frozen_weights_in(model, torch.bfloat16):
        assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if n != "adapter")
        assert trainable.dtype == torch.float32
        with frozen_weights_in(model, torch.bfloat16):  # nested: the outer block gives the weights back
            pass
        assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if n != "adapter")
    with pytest.raises(RuntimeError, match="boom"), frozen_weights_in(model, torch.bfloat16):
        raise RuntimeError("boom")
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.data_ptr() == before[name][0], name
        assert torch.equal(p, before[name][1]), name
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 1  # only the load-time one (below)


def test_the_output_layer_gets_a_contiguous_input_once_per_model(tiny_causal):
    """Set at load (`contiguous_head_input`): a bf16 output layer on the strided slice of `logits_to_keep`
    was 6x slower at rank scoring; wrapping the model again adds no second hook."""
    from ptune.model.base import from_objects

    head, seen = tiny_causal.model.get_output_embeddings(), []
    from_objects(tiny_causal.model, tiny_causal.tokenizer, "again")
    assert len(head._forward_pre_hooks) == 1
    probe = head.register_forward_hook(lambda module, args, out: seen.append(args[0].is_contiguous()))
    try:
        ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
        with torch.no_grad():
            tiny_causal.model(input_ids=ids, logits_to_keep=1)
    finally:
        probe.remove()
    assert seen == [True]


def test_held_inference_matches_autocast_on_the_tiny_model(tiny_causal):
    """Rank scores with the weights held in bf16 stay within bf16 rounding of autocast over fp32 weights,
    with a soft prompt and with the shared-prefix cache (hard prefix)."""
    spec, examples = make_spec(), make_examples(n=16)
    prompt = init_prompt(tiny_causal, 4, "random", seed=0).weight.detach()
    with autocast(CPU, torch.bfloat16):
        low = evaluate(tiny_causal, spec, examples, prompt, prefix="Classify.", progress=False)
    with inference_precision(tiny_causal.model, CPU, torch.bfloat16):
        held = evaluate(tiny_causal, spec, examples, prompt, prefix="Classify.", progress=False)
    gap = (torch.tensor(held.label_scores) - torch.tensor(low.label_scores)).abs().max()
    assert gap <= 0.1, gap  # log-likelihoods of a few tokens, bf16 residual stream
    assert sum(a != b for a, b in zip(low.predictions, held.predictions, strict=True)) <= 2


def test_training_attention_is_eager_only_for_cpu_bf16_steps_and_restored(tiny_causal):
    """Under bf16 autocast on CPU a train step runs eager attention (faster backward than CPU flash
    attention); the loss and prompt gradient match the SDPA step within bf16 rounding, and the model's own
    implementation is back afterwards (evaluation keeps SDPA). fp32 steps are left alone."""
    from ptune.model.precision import training_attention
    from ptune.model.soft_prompt import shared_prompt_inputs

    model, cpu = tiny_causal.model, torch.device("cpu")
    model.set_attn_implementation("sdpa")
    with training_attention(model, cpu, None):
        assert model.config._attn_implementation == "sdpa"
    items = [encode_pair(tiny_causal.tokenizer, f"w{i} " * (3 + i), " yes", encoder_decoder=False, add_eos=False,
                         max_source_tokens=64) for i in range(4)]
    batch = collate(items, tiny_causal.tokenizer.pad_token_id, encoder_decoder=False)
    weight = init_prompt(tiny_causal, 5, "vocab", seed=0).weight.detach()

    def step(switch: bool) -> tuple[float, torch.Tensor]:
        prompt = weight.clone().requires_grad_(True)
        ctx = training_attention(model, cpu, torch.bfloat16) if switch else contextlib.nullcontext()
        with ctx:
            seen = model.config._attn_implementation
            with autocast(cpu, torch.bfloat16):
                loss = target_loss(tiny_causal, shared_prompt_inputs(tiny_causal, prompt, **batch))
            loss.backward()
        assert seen == ("eager" if switch else "sdpa")
        return float(loss.detach()), prompt.grad

    (eager_loss, eager_grad), (sdpa_loss, sdpa_grad) = step(True), step(False)
    assert model.config._attn_implementation == "sdpa"
    assert eager_loss == pytest.approx(sdpa_loss, rel=0.02)
    cos = torch.nn.functional.cosine_similarity(eager_grad.flatten(), sdpa_grad.flatten(), dim=0)
    assert cos > 0.99


def test_matmul_weights_held_in_bf16_give_autocasts_loss_and_gradient_bit_for_bit(tiny_causal):
    """`hold_matmul_weights`: the linear layers' weights in bf16, the tied embeddings / output layer and the norms
    in fp32. A bf16 autocast train step then gives the loss and prompt gradient of autocast over the fp32
    weights exactly, and evaluation (weights held in bf16 for the pass) the same scores."""
    from ptune.model.base import from_objects
    from ptune.model.soft_prompt import shared_prompt_inputs

    fp32 = tiny_causal
    held = from_objects(copy.deepcopy(fp32.model), fp32.tokenizer, "held")
    linear = sum(p.numel() for m in held.model.modules() if isinstance(m, torch.nn.Linear)
                 for p in m.parameters(recurse=False) if p is not held.model.get_input_embeddings().weight)
    assert hold_matmul_weights(held.model, torch.bfloat16) == linear > 0
    assert hold_matmul_weights(held.model, torch.bfloat16) == 0  # already held
    emb = held.model.get_input_embeddings().weight
    assert emb.dtype == torch.float32 and held.model.get_output_embeddings().weight is emb  # tied: stays fp32
    assert all(p.dtype == torch.float32 for n, p in held.model.named_parameters() if "norm" in n)
    assert held_dtypes(fp32.model) == "float32" and held_dtypes(held.model).startswith(("bfloat16 ", "float32 "))
    items = [encode_pair(fp32.tokenizer, f"w{i} " * (3 + i), " yes", encoder_decoder=False, add_eos=False,
                         max_source_tokens=64) for i in range(4)]
    batch = collate(items, fp32.tokenizer.pad_token_id, encoder_decoder=False)
    weight = init_prompt(fp32, 5, "vocab", seed=0).weight.detach()

    def step(base) -> tuple[float, torch.Tensor]:
        prompt = weight.clone().requires_grad_(True)
        with autocast(CPU, torch.bfloat16):
            loss = target_loss(base, shared_prompt_inputs(base, prompt, **batch))
        loss.backward()
        return float(loss.detach()), prompt.grad

    (loss_a, grad_a), (loss_b, grad_b) = step(fp32), step(held)
    assert loss_a == loss_b and torch.equal(grad_a, grad_b)
    spec, examples = make_spec(), make_examples(n=12)
    scores = []
    for base in (fp32, held):
        with inference_precision(base.model, CPU, torch.bfloat16):
            scores.append(evaluate(base, spec, examples, weight, progress=False).label_scores)
    assert scores[0] == scores[1]
    assert emb.dtype == torch.float32  # evaluation gave the embeddings back
