"""Training's shared prompt pass (`shared_prompt_inputs`): the prompt's keys/values computed once at batch
size 1 give the plain path's loss and prompt gradient, with right- and left-padded rows."""

from __future__ import annotations

import pytest
import torch

from ptune.model.batching import collate, encode_pair, pad_rows
from ptune.model.soft_prompt import prompt_inputs, shared_prompt_inputs, target_loss

PAIRS = [("the film was good", "positive"), ("bad", "negative"),
         ("a witty plot with a gorgeous actor and a sad story that was fun", "maybe neutral")]


def _batch(base, left: bool) -> dict[str, torch.Tensor]:
    items = [encode_pair(base.tokenizer, s, t, encoder_decoder=base.is_encoder_decoder, add_eos=True,
                         max_source_tokens=64) for s, t in PAIRS]
    if not left or base.is_encoder_decoder:
        return collate(items, base.tokenizer.pad_token_id, base.is_encoder_decoder)
    seqs = [it.source_ids + it.target_ids for it in items]
    return {"input_ids": pad_rows(seqs, base.tokenizer.pad_token_id, left=True),
            "attention_mask": pad_rows([[1] * len(s) for s in seqs], 0, left=True),
            "labels": pad_rows([[-100] * len(it.source_ids) + it.target_ids for it in items], -100, left=True)}


def _loss_and_grad(base, build, batch):
    weight = torch.randn(5, base.hidden_size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = target_loss(base, build(base, weight, **batch))
    (grad,) = torch.autograd.grad(loss, weight)
    return loss.detach(), grad


@pytest.mark.parametrize("model", ["tiny_causal", "tiny_causal_nobos"])  # [BOS][prompt][text] and [prompt][text]
@pytest.mark.parametrize("left", [False, True])
def test_shared_prompt_pass_gives_the_plain_loss_and_gradient(model, left, request):
    tiny_causal = request.getfixturevalue(model)
    batch = _batch(tiny_causal, left)
    assert batch["attention_mask"].min() == 0  # padded rows are in the batch
    kwargs = shared_prompt_inputs(tiny_causal, torch.zeros(5, tiny_causal.hidden_size), **batch)
    assert "cache" in kwargs and kwargs["inputs_embeds"].shape[1] == batch["input_ids"].shape[1]
    shared_loss, shared_grad = _loss_and_grad(tiny_causal, shared_prompt_inputs, batch)
    plain_loss, plain_grad = _loss_and_grad(tiny_causal, prompt_inputs, batch)
    full = tiny_causal.model(**prompt_inputs(tiny_causal, torch.zeros(5, tiny_causal.hidden_size), **batch)).loss
    assert torch.allclose(shared_loss, plain_loss, atol=1e-5, rtol=0), (shared_loss - plain_loss).abs()
    assert torch.allclose(shared_grad, plain_grad, atol=1e-5, rtol=0), (shared_grad - plain_grad).abs().max()
    assert (shared_grad - plain_grad).abs().max() <= 1e-4 * plain_grad.abs().max()  # small gradients: relative too
    assert shared_grad.abs().sum() > 0 and torch.isfinite(full)


def test_t5_and_per_row_prompts_keep_the_plain_inputs(tiny_t5, tiny_causal):
    batch = _batch(tiny_t5, left=False)
    weight = torch.randn(4, tiny_t5.hidden_size)
    got, want = shared_prompt_inputs(tiny_t5, weight, **batch), prompt_inputs(tiny_t5, weight, **batch)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    per_row = torch.randn(len(PAIRS), 4, tiny_causal.hidden_size)
    assert "cache" not in shared_prompt_inputs(tiny_causal, per_row, **_batch(tiny_causal, left=False))
