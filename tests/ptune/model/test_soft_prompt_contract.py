"""The soft prompt enters the model as a manual `inputs_embeds` concatenation would."""

import torch

from ptune.model.batching import collate, encode_pair
from ptune.model.soft_prompt import SoftPrompt, prompt_inputs


def _batch(base):
    items = [encode_pair(base.tokenizer, s, t, encoder_decoder=base.is_encoder_decoder, add_eos=False,
                         max_source_tokens=64) for s, t in [("the film was good", "positive"), ("bad", "negative")]]
    return collate(items, base.tokenizer.pad_token_id, base.is_encoder_decoder)


def test_forward_equals_manual_concatenation(tiny_base):
    """prompt_inputs equals building the sequence by hand: [prompt][rows] for T5, and for the tiny causal
    model, whose tokenizer adds BOS, [BOS][prompt][rows without their BOS] (ptune.model.layout)."""
    batch = _batch(tiny_base)
    prompt = SoftPrompt(torch.randn(5, tiny_base.hidden_size))
    out = tiny_base.model(**prompt_inputs(tiny_base, prompt(2), **batch))
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    block = prompt(2)
    if not tiny_base.is_encoder_decoder:
        assert tiny_base.lead_id is not None and (ids[:, 0] == tiny_base.lead_id).all()  # right-padded, BOS first
        block = torch.cat([tiny_base.embed(ids[:, :1]), block], dim=1)  # [BOS][prompt]
        ids, mask, labels = ids[:, 1:], mask[:, 1:], labels[:, 1:]
    embeds = torch.cat([block, tiny_base.embed(ids)], dim=1)
    full_mask = torch.cat([torch.ones(2, block.shape[1], dtype=torch.long), mask], dim=1)
    manual = {"inputs_embeds": embeds, "attention_mask": full_mask}
    if tiny_base.is_encoder_decoder:
        manual["labels"] = labels
    else:
        manual["labels"] = torch.cat([torch.full((2, block.shape[1]), -100), labels], dim=1)
    ref = tiny_base.model(**manual)
    # right padding: default position ids equal ours on every unpadded position
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)
    got = out.logits
    if not tiny_base.is_encoder_decoder:  # drop the masked-out own BOS, right after the prompt block
        got = torch.cat([got[:, :block.shape[1]], got[:, block.shape[1] + 1:]], dim=1)
    valid = full_mask.bool() if not tiny_base.is_encoder_decoder else torch.ones_like(ref.logits[..., 0], dtype=torch.bool)
    assert torch.allclose(got[valid], ref.logits[valid], atol=1e-5)


def test_labels_masked_over_prompt_and_source(tiny_causal):
    batch = _batch(tiny_causal)
    kwargs = prompt_inputs(tiny_causal, torch.zeros(3, tiny_causal.hidden_size), **batch)
    labels = kwargs["labels"]
    assert labels.shape == kwargs["attention_mask"].shape
    block = 3 + 1  # [BOS][3 prompt tokens]: the tiny tokenizer adds BOS
    assert (labels[:, :block] == -100).all()
    n_source = len(tiny_causal.tokenizer("the film was good")["input_ids"])  # its own (masked) BOS included
    assert (labels[0, block:block + n_source] == -100).all()
    assert (labels[0, block + n_source] != -100)
    assert kwargs["attention_mask"][0, block] == 0 and kwargs["attention_mask"][0, :block].all()


def test_target_loss_equals_the_models_own_loss(tiny_base):
    """The LM head applied only at target positions gives the model's full-logits loss, and the same gradient."""
    from ptune.model.soft_prompt import target_loss

    batch = _batch(tiny_base)
    weight = torch.randn(5, tiny_base.hidden_size, requires_grad=True)
    full = tiny_base.model(**prompt_inputs(tiny_base, weight, **batch)).loss
    (grad_full,) = torch.autograd.grad(full, weight)
    fast = target_loss(tiny_base, prompt_inputs(tiny_base, weight, **batch))
    (grad_fast,) = torch.autograd.grad(fast, weight)
    assert torch.allclose(fast, full, atol=1e-6)
    assert torch.allclose(grad_fast, grad_full, atol=1e-6)
