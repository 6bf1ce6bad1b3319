"""Where the soft prompt sits among the input tokens: [prompt][text], or [BOS][prompt][text].

Most of ptune's models take the prompt in front of everything. A causal LM whose tokenizer starts each
text with BOS (`BaseModel.lead_id`: Gemma, Llama) saw that BOS at position 0 throughout pretraining and
leans on it (an attention sink), so there the prompt goes after it. One rule for every path (training,
the shared-prefix cache, rank scoring, generation, serving's mixed batches):

- the prompt block becomes [BOS embedding][prompt], (P+1, d) (`lead_prompt`);
- the row's own leading BOS, which the tokenizer still adds, is dropped: in id lists by `strip_lead`, in
  padded tensors by masking it out (`mask_lead`: a masked position is invisible to every other
  position, exactly as if it were padding, whether the batch is left or right padded).

Models whose tokenizer adds no BOS (SmolLM2) and encoder-decoders (T5) are unchanged: every function here
returns its input. The saved artifact stays the plain (P, d) prompt; the BOS row is the frozen model's
own embedding and is added at use. PEFT's PromptTuning always puts the virtual tokens first, so a prompt
exported for a BOS-first model runs there as [prompt][BOS][text] (docs/models.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel

logger = logging.getLogger(__name__)


def lead_prompt(base: BaseModel, prompt: torch.Tensor) -> torch.Tensor:
    """(P, d) -> (P+1, d) or (B, P, d) -> (B, P+1, d) with the frozen BOS embedding in front, in
    `prompt`'s dtype and device; `prompt` itself when the model takes the prompt first."""
    if base.lead_id is None:
        return prompt
    bos = base.embed(torch.tensor([base.lead_id], device=base.device)).to(device=prompt.device, dtype=prompt.dtype)
    if prompt.ndim == 2:
        return torch.cat([bos, prompt], dim=0)  # (P+1, d)
    return torch.cat([bos.unsqueeze(0).expand(prompt.shape[0], -1, -1), prompt], dim=1)  # (B, P+1, d)


def mask_lead(base: BaseModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask (B, T) with each row's first attended token masked out where it is the lead BOS (a
    new tensor; rows without one, e.g. truncated at their start, keep theirs)."""
    if base.lead_id is None or input_ids.shape[1] == 0:
        return attention_mask
    first = attention_mask.long().argmax(dim=1, keepdim=True)  # (B, 1): first attended position, left or right padding
    at_first = attention_mask.gather(1, first)
    is_lead = (input_ids.gather(1, first) == base.lead_id) & (at_first != 0)
    return attention_mask.scatter(1, first, at_first.masked_fill(is_lead, 0))


def strip_lead(base: BaseModel, ids: Sequence[int]) -> list[int]:
    """A row's token ids without its leading BOS when the prompt block carries it."""
    ids = list(ids)
    return ids[1:] if base.lead_id is not None and ids[:1] == [base.lead_id] else ids


def warn_if_layout_differs(meta: PromptMeta, base: BaseModel, where: str | Path) -> None:
    """Warn when a prompt was trained in another layout than `base` runs it in (`BaseModel.prompt_layout`; prompt.json
    records it since 2026-11-29, older artifacts say nothing). Its scores would quietly drop. Every load that
    runs a prompt calls this: `ptune.registry.loading` (CLI, pyfunc, report) and the server."""
    if meta.prompt_layout and meta.prompt_layout != base.prompt_layout:
        logger.warning("the %r prompt at %s was trained as %s, but %s now runs prompts as %s: it will score lower "
                       "than it did; retrain it (docs/models.md)", meta.task, where, meta.prompt_layout,
                       meta.base_spec, base.prompt_layout)
