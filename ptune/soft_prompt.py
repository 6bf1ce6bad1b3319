"""The soft prompt: n trainable virtual-token embeddings prepended to a frozen model's input.

OWNER NOTE: `SoftPrompt` and `prompt_inputs` are the contract; the init modes (`init_prompt`)
are filled in by the soft-prompt work.
"""

from __future__ import annotations

import torch
from torch import nn

from ptune.models import BaseModel


class SoftPrompt(nn.Module):
    """`n_tokens` x `hidden` embeddings, kept in fp32 whatever the base model's dtype."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(f"soft prompt weight must be 2-D (n_tokens, hidden), got shape {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.detach().to(torch.float32).clone())  # (P, d)

    @property
    def n_tokens(self) -> int:
        return int(self.weight.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)  # (B, P, d)


def prompt_inputs(
    base: BaseModel,
    prompt: torch.Tensor | None,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Keyword arguments for `base.model(**kwargs)` with `prompt` prepended.

    prompt: (B, P, d) one prompt per row (rows may differ: mixed-task batches), (P, d) shared, or None.
    input_ids / attention_mask: (B, T), left or right padded. For causal LMs `labels` is (B, T) over the
    same positions and gets P leading -100s; for encoder-decoder models the prompt goes in front of the
    encoder input only and `labels` (B, T_dec) are passed through untouched.
    Position ids are recomputed from the extended mask, so left padding is handled.
    """
    embeds = base.embed(input_ids)  # (B, T, d)
    if prompt is None:
        kwargs = {"inputs_embeds": embeds, "attention_mask": attention_mask}
    else:
        if prompt.ndim == 2:
            prompt = prompt.unsqueeze(0).expand(input_ids.shape[0], -1, -1)
        prompt = prompt.to(device=embeds.device, dtype=embeds.dtype)  # (B, P, d)
        ones = attention_mask.new_ones(prompt.shape[:2])
        embeds = torch.cat([prompt, embeds], dim=1)  # (B, P+T, d)
        attention_mask = torch.cat([ones, attention_mask], dim=1)  # (B, P+T)
        if labels is not None and not base.is_encoder_decoder:
            labels = torch.cat([labels.new_full(prompt.shape[:2], -100), labels], dim=1)
        kwargs = {"inputs_embeds": embeds, "attention_mask": attention_mask}
    if not base.is_encoder_decoder:
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, P+T)
    if labels is not None:
        kwargs["labels"] = labels
    return kwargs
