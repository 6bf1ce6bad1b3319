"""Where the soft prompt sits (ptune.model.layout): after the BOS on causal models whose tokenizer adds one,
first everywhere else. The cached and shared paths are checked against the plain one in test_prefix_cache.py,
test_shared_prompt.py and the serving tests, for both layouts."""

from __future__ import annotations

import torch

from ptune.model.batching import left_pad
from ptune.model.layout import lead_prompt, mask_lead, strip_lead
from ptune.model.soft_prompt import prompt_inputs

TEXTS = ["the film was good", "bad", "a witty plot with a gorgeous actor"]


def test_lead_id_follows_the_tokenizer(tiny_causal, tiny_causal_nobos, tiny_t5):
    assert tiny_causal.lead_id == tiny_causal.tokenizer.bos_token_id == 1  # "<s> $A"
    assert tiny_causal_nobos.lead_id is None  # as SmolLM2: nothing changes
    assert tiny_t5.lead_id is None  # encoder-decoder: the prompt goes in front of the encoder input
    assert tiny_causal.info()["prompt_layout"] == "[BOS][prompt][text]"
    assert tiny_causal_nobos.info()["prompt_layout"] == "[prompt][text]"


def test_left_padded_rows_equal_each_row_built_by_hand(tiny_causal):
    """Each left-padded row's last-position logits = the model on [BOS][prompt][row without its BOS] alone."""
    base, tok = tiny_causal, tiny_causal.tokenizer
    prompt = torch.randn(4, base.hidden_size, generator=torch.Generator().manual_seed(0))
    rows = [tok(t)["input_ids"] for t in TEXTS]
    assert all(r[0] == base.lead_id for r in rows)
    ids, mask = left_pad(rows, tok.pad_token_id)
    with torch.no_grad():
        logits = base.model(**prompt_inputs(base, prompt, ids, mask)).logits
        batched = logits[:, -1]  # (B, V)
        for i, row in enumerate(rows):
            embeds = torch.cat([base.embed(torch.tensor([[base.lead_id]]))[0], prompt, base.embed(torch.tensor([row[1:]]))[0]])
            alone = base.model(inputs_embeds=embeds.unsqueeze(0)).logits[0, -1]
            assert torch.allclose(batched[i], alone, atol=1e-5), i
        prompt_first = torch.cat([prompt, base.embed(torch.tensor([rows[0]]))[0]]).unsqueeze(0)
        assert not torch.allclose(batched[0], base.model(inputs_embeds=prompt_first).logits[0, -1], atol=1e-3)


def test_mask_lead_masks_only_a_leading_bos_and_copies(tiny_causal, tiny_causal_nobos):
    ids = torch.tensor([[0, 0, 1, 7, 8], [1, 5, 6, 7, 8], [0, 9, 5, 6, 7]])  # left pad; BOS; truncated (no BOS)
    mask = (ids != 0).long()
    mask[1, 0] = 1
    before = mask.clone()
    out = mask_lead(tiny_causal, ids, mask)
    assert torch.equal(mask, before)  # the caller's mask is not changed
    assert out.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    right = torch.tensor([[1, 7, 8, 0], [1, 5, 0, 0]])
    assert mask_lead(tiny_causal, right, (right != 0).long()).tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]
    assert mask_lead(tiny_causal_nobos, ids, mask) is mask


def test_lead_prompt_and_strip_lead(tiny_causal, tiny_causal_nobos):
    prompt = torch.randn(3, tiny_causal.hidden_size)
    block = lead_prompt(tiny_causal, prompt)
    assert block.shape == (4, tiny_causal.hidden_size) and torch.equal(block[1:], prompt)
    assert torch.allclose(block[0], tiny_causal.embed(torch.tensor([1]))[0])
    per_row = lead_prompt(tiny_causal, prompt.expand(2, -1, -1))
    assert per_row.shape == (2, 4, tiny_causal.hidden_size) and torch.equal(per_row[1], block)
    assert lead_prompt(tiny_causal_nobos, prompt) is prompt
    assert strip_lead(tiny_causal, [1, 5, 1]) == [5, 1] and strip_lead(tiny_causal, [5, 1]) == [5, 1]
    assert strip_lead(tiny_causal_nobos, [1, 5]) == [1, 5]
