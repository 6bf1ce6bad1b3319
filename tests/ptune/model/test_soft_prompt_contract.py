"""The soft prompt enters the model as a manual `inputs_embeds` concatenation would."""

import torch

from ptune.model.batching import collate, encode_pair
from ptune.model.soft_prompt import SoftPrompt, prompt_inputs


def _batch(base):
    items = [encode_pair(base.tokenizer, s, t, encoder_decoder=base.is_encoder_decoder, add_eos=False,
                         max_source_tokens=64) for s, t in [("the film was good", "positive"), ("bad", "negative")]]
    return collate(items, base.tokenizer.pad_token_id, base.is_encoder_decoder)


def test_forward_equals_manual_concatenation(tiny_base):
    batch = _batch(tiny_base)
    prompt = SoftPrompt(torch.randn(5, tiny_base.hidden_size))
    out = tiny_base.model(**prompt_inputs(tiny_base, prompt(2), **batch))
    embeds = torch.cat([prompt(2), tiny_base.embed(batch["input_ids"])], dim=1)
    mask = torch.cat([torch.ones(2, 5, dtype=torch.long), batch["attention_mask"]], dim=1)
    manual = {"inputs_embeds": embeds, "attention_mask": mask}
    if tiny_base.is_encoder_decoder:
        manual["labels"] = batch["labels"]
    else:
        manual["labels"] = torch.cat([torch.full((2, 5), -100), batch["labels"]], dim=1)
    ref = tiny_base.model(**manual)
    # right padding: default position ids equal ours on every unpadded position
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)
    valid = mask.bool() if not tiny_base.is_encoder_decoder else torch.ones_like(ref.logits[..., 0], dtype=torch.bool)
    assert torch.allclose(out.logits[valid], ref.logits[valid], atol=1e-5)


def test_labels_masked_over_prompt_and_source(tiny_causal):
    batch = _batch(tiny_causal)
    kwargs = prompt_inputs(tiny_causal, torch.zeros(3, tiny_causal.hidden_size), **batch)
    labels = kwargs["labels"]
    assert labels.shape == kwargs["attention_mask"].shape
    assert (labels[:, :3] == -100).all()
    n_source = len(tiny_causal.tokenizer("the film was good")["input_ids"])
    assert (labels[0, 3:3 + n_source] == -100).all()
    assert (labels[0, 3 + n_source] != -100)


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
