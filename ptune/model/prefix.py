"""A shared prefix's keys/values, computed once with batch size 1 and reused by every row (causal LMs).

Every row of an evaluation starts the same way: the soft prompt (P, d) and, most of the time, the same
token ids (BOS, a baseline's instruction + demonstrations, a template's head). In a causal LM those
positions attend only to each other, so their per-layer keys/values are the same in every row. We run
them once (`build_prefix`), repeat the cache over the batch (`expand_prefix`) and run only each row's
own tokens after it (`prefix_inputs`).

Layout: [prefix (K)][left padding][row tokens]; with a soft prompt on a BOS-first model the prefix is
[BOS][prompt][shared ids] and each row's own BOS is masked out (`ptune.model.layout`). The prefix sits at positions 0..K-1 and a row's tokens
continue at K, K+1, ...: the same positions and the same visible keys as the plain path (`prompt_inputs`:
[prompt][left padding][source]), so results are equal up to float rounding (attention adds the same
terms in another order). Tested against the plain path in tests/ptune/evaluation/test_prefix_cache.py.

Token split (`split_shared`): nothing is re-tokenised. Each row is encoded exactly as the plain path
encodes it, and the shared ids are the longest run of leading ids common to every row. A hard prefix
whose last token merges with the source text is therefore cut before that token, and rows truncated at
their start share nothing (they keep the plain path unless a soft prompt is still shared). Each row keeps
at least one id of its own: its last position gives the next-token distribution.

Used only where it is exact: causal LMs whose layers all keep a plain full-attention `DynamicLayer`
(a sliding window counts padding positions, so moving the padding would change what it sees), with a
shared (P, d) prompt or none. Encoder-decoders and per-row (B, P, d) prompts keep the plain path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ptune.model.base import BaseModel
from ptune.model.layout import lead_prompt, mask_lead, strip_lead


@dataclass(frozen=True)
class PrefixCache:
    """Per-layer keys and values of a shared prefix, each (1, kv_heads, K, head_dim), batch size 1."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    length: int  # K = soft prompt tokens + shared token ids
    n_ids: int  # shared token ids (the rows' ids that the prefix replaces)
    leads: bool = False  # holds [BOS][prompt] (ptune.model.layout): a row's own leading BOS is masked out


def shared_len(rows: Sequence[Sequence[int]]) -> int:
    """Leading ids common to every row, leaving each row at least one id of its own (0 if a row is empty)."""
    if not rows or min(len(r) for r in rows) == 0:
        return 0
    first, limit = rows[0], min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def build_prefix(base: BaseModel, prompt: torch.Tensor | None, ids: Sequence[int]) -> PrefixCache | None:
    """Run [prompt (P, d)][ids] once (batch 1) and keep its keys/values; None where caching would not be
    exact (see the module docstring) or there is nothing to share. Differentiable in `prompt` unless the
    caller disables grad."""
    if base.is_encoder_decoder or (prompt is not None and prompt.ndim != 2):
        return None
    n_ids = len(ids)
    if prompt is not None:
        ids = strip_lead(base, ids)  # a shared leading BOS goes in front of the prompt instead
    embeds = base.embed(torch.tensor([list(ids)], dtype=torch.long, device=base.device))  # (1, n, d)
    if prompt is not None:
        block = lead_prompt(base, prompt.to(device=embeds.device, dtype=embeds.dtype))  # (P, d) or (P+1, d)
        embeds = torch.cat([block.unsqueeze(0), embeds], dim=1)
    length = embeds.shape[1]  # K
    cache = DynamicCache(config=base.model.config)  # layer types known from the config, before any forward
    if length == 0 or not _full_attention(cache):
        return None
    mask = torch.ones(1, length, dtype=torch.long, device=base.device)
    base.model.base_model(inputs_embeds=embeds, attention_mask=mask, cache=cache, use_cache=True,
                          position_ids=torch.arange(length, device=base.device).unsqueeze(0))
    if not cache.layers or not _full_attention(cache):
        return None
    return PrefixCache(tuple((layer.keys, layer.values) for layer in cache.layers), length, n_ids,
                       leads=prompt is not None and base.lead_id is not None)


def _full_attention(cache: DynamicCache) -> bool:
    """Every layer is a plain DynamicLayer (sliding-window, linear and shared-KV layers: plain path)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def expand_prefix(prefix: PrefixCache, batch: int) -> DynamicCache:
    """A fresh DynamicCache holding the prefix for `batch` rows: (batch, kv_heads, K, head_dim) per layer.
    The stored prefix is not modified, so one PrefixCache serves every batch."""
    return DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix.layers])


def prefix_inputs(base: BaseModel, prefix: PrefixCache, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor) -> dict[str, torch.Tensor | DynamicCache]:
    """Keyword arguments for `base.model(**kwargs)`: the rows' own tokens after the cached prefix.

    input_ids / attention_mask: (B, S) left-padded rows without the shared part. Returns inputs_embeds
    (B, S, d), attention_mask (B, K+S) with ones over the prefix, position_ids (B, S) = K + the row's own
    cumulative count - 1 (what `prompt_inputs` gives the same tokens), and `cache` (the expanded prefix).
    """
    if prefix.leads:
        attention_mask = mask_lead(base, input_ids, attention_mask)  # the BOS is in the prefix already
    ones = attention_mask.new_ones(attention_mask.shape[0], prefix.length)
    full_mask = torch.cat([ones, attention_mask], dim=1)  # (B, K+S)
    positions = (full_mask.long().cumsum(-1) - 1)[:, prefix.length:]  # (B, S): pads get K-1, masked anyway
    return {"inputs_embeds": base.embed(input_ids), "attention_mask": full_mask, "position_ids": positions,
            "cache": expand_prefix(prefix, input_ids.shape[0])}


def split_shared(base: BaseModel, prompt: torch.Tensor | None,
                 rows: Sequence[Sequence[int]]) -> tuple[PrefixCache | None, list[list[int]]]:
    """(prefix, rows without the shared ids) for one evaluate/predict call, or (None, rows unchanged) where
    the plain path must be used. Build it once per call: every batch reuses it."""
    n = shared_len(rows)
    prefix = build_prefix(base, prompt, list(rows[0][:n]) if rows else [])
    if prefix is None:
        return None, [list(r) for r in rows]
    return prefix, [list(r[n:]) for r in rows]
