"""Mixed-task batches: every row carries its own soft prompt (prompts of different lengths in one batch).

Two ways to put per-row prompts in front of the rows, both equal to running each task alone (tested):
- cached (causal LMs): each prompt's keys/values were computed once at load (`ptune.model.prefix`). The
  batch's cache is each row's prefix left-padded to the longest one, K = max K_i:
  [pad (K-K_i)][prefix_i (K_i)][pad][row tokens]. Padded slots are masked out; the prefix keys already
  carry positions 0..K_i-1 and a row's tokens continue at K_i, K_i+1, ... (cumulative mask count), so every
  row sees exactly the keys and positions it sees alone.
- plain: per-row embeddings [prompt_i][source_i] padded as one sequence (left for causal LMs, right for
  encoder-decoders, whose encoder takes the prompt, Lester et al.). Used by T5 and by models whose layers
  cannot share a cache exactly (sliding windows).
On models whose tokenizer adds BOS, each prompt block is [BOS][prompt_i] and the row's own BOS is dropped
(`ptune.model.layout`), as on every other path.
Rank classification then scores each row's own label words (tasks differ in number and length of labels)
in one more forward, the source cache selected once per label; generation runs one `generate()` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ptune.evaluation.scoring import token_logprobs
from ptune.model.base import BaseModel
from ptune.model.batching import left_pad, pad_rows
from ptune.model.generate import cut_at_stop, stopping
from ptune.model.layout import lead_prompt, strip_lead
from ptune.model.prefix import PrefixCache
from ptune.serving.sampling import Sampling


@dataclass(frozen=True)
class MixedRow:
    """One row of a mixed batch: its source ids, its task's prompt (P_i, d) and cached prefix, its labels."""

    source_ids: list[int]
    prompt: torch.Tensor  # (P_i, d) fp32
    prefix: PrefixCache | None  # the prompt's keys/values (causal LMs), None for the plain path
    label_ids: list[list[int]]  # L_i label words as target ids; [] for generation rows
    max_new_tokens: int = 16  # generation rows: the task's limit
    stop_strings: tuple[str, ...] = ()  # generation rows: the task's stop strings (`ptune.model.generate`)
    sampling: Sampling | None = None  # generation rows decoded step by step (`ptune.serving.decode`); None: greedy


def _cached_inputs(base: BaseModel, rows: Sequence[MixedRow]) -> dict:
    """Model kwargs for rows after their own cached prefixes: inputs_embeds (B, S, d), attention_mask
    (B, K+S), position_ids (B, S), cache (B, heads, K, hd) per layer (see the module docstring)."""
    sources = [strip_lead(base, r.source_ids) if r.prefix.leads else r.source_ids for r in rows]  # BOS: in the prefix
    ids, mask = (t.to(base.device) for t in left_pad(sources, base.tokenizer.pad_token_id))
    width = max(r.prefix.length for r in rows)  # K
    layers = []
    for layer in range(len(rows[0].prefix.layers)):
        keys, values = [], []
        for r in rows:
            k, v = r.prefix.layers[layer]  # (1, heads, K_i, hd)
            pad = width - r.prefix.length
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        layers.append((torch.cat(keys), torch.cat(values)))  # (B, heads, K, hd)
    prefix_mask = pad_rows([[1] * r.prefix.length for r in rows], 0, left=True).to(mask)  # (B, K)
    full_mask = torch.cat([prefix_mask, mask], dim=1)  # (B, K+S)
    positions = (full_mask.long().cumsum(-1) - 1).clamp(min=0)[:, width:]  # (B, S)
    return {"inputs_embeds": base.embed(ids), "attention_mask": full_mask, "position_ids": positions,
            "cache": DynamicCache(layers)}


def _plain_inputs(base: BaseModel, rows: Sequence[MixedRow]) -> dict:
    """Model kwargs with [prompt_i][source_i] per row, padded as one sequence: inputs_embeds (B, L, d),
    attention_mask (B, L), position_ids (B, L) for causal LMs. Left padding (causal) or right (T5)."""
    seqs = []
    for r in rows:
        ids = torch.tensor([strip_lead(base, r.source_ids)], dtype=torch.long, device=base.device)
        embeds = base.embed(ids)[0]  # (S_i, d)
        block = lead_prompt(base, r.prompt.to(device=embeds.device, dtype=embeds.dtype))  # [BOS] + prompt_i
        seqs.append(torch.cat([block, embeds]))  # (P_i+S_i, d), +1 on BOS-first models
    width, left = max(len(s) for s in seqs), not base.is_encoder_decoder
    out = seqs[0].new_zeros(len(seqs), width, seqs[0].shape[1])  # (B, L, d)
    mask = torch.zeros(len(seqs), width, dtype=torch.long, device=out.device)
    for i, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        out[i, span], mask[i, span] = seq, 1
    kwargs = {"inputs_embeds": out, "attention_mask": mask}
    if left:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    return kwargs


def mixed_inputs(base: BaseModel, rows: Sequence[MixedRow]) -> dict:
    """The cached path when every row has a prefix (causal LMs), else the plain path."""
    if not base.is_encoder_decoder and all(r.prefix is not None for r in rows):
        return _cached_inputs(base, rows)
    return _plain_inputs(base, rows)


def _labels(base: BaseModel, rows: Sequence[MixedRow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """(row index (N,), label ids (N, T), label mask (N, T), label count per row) over every row's labels."""
    counts = [len(r.label_ids) for r in rows]
    index = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(counts)).to(base.device)  # (N,)
    flat = [ids for r in rows for ids in r.label_ids]
    pad_id = base.tokenizer.pad_token_id
    return index, pad_rows(flat, pad_id).to(base.device), pad_rows([[1] * len(x) for x in flat], 0).to(base.device), counts


def score_mixed(base: BaseModel, rows: Sequence[MixedRow]) -> list[torch.Tensor]:
    """Per row, the (L_i,) summed log-likelihood of each of its label words given its prompt and source."""
    fn = _score_seq2seq if base.is_encoder_decoder else _score_causal
    return list(fn(base, rows))


def _score_causal(base: BaseModel, rows: Sequence[MixedRow]) -> tuple[torch.Tensor, ...]:
    model, kwargs = base.model, mixed_inputs(base, rows)
    out = model(**kwargs, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): next token after each source
    index, lab, lab_mask, counts = _labels(base, rows)  # (N,), (N, T), (N, T)
    cache = out.cache
    cache.batch_select_indices(index)  # row b's keys/values once per label of row b
    past_mask = kwargs["attention_mask"][index]  # (N, K+S) or (N, L)
    positions = past_mask.sum(-1, keepdim=True) + torch.arange(lab.shape[1], device=lab.device)  # (N, T)
    logits = model(input_ids=lab, attention_mask=torch.cat([past_mask, lab_mask], dim=1), position_ids=positions,
                   cache=cache, use_cache=True).logits  # (N, T, V)
    score = first[index].gather(1, lab[:, :1]).squeeze(1)  # (N,)
    if lab.shape[1] > 1:
        score = score + token_logprobs(logits[:, :-1], lab[:, 1:], lab_mask[:, 1:])
    return score.split(counts)


def _score_seq2seq(base: BaseModel, rows: Sequence[MixedRow]) -> tuple[torch.Tensor, ...]:
    model, kwargs = base.model, _plain_inputs(base, rows)
    enc = model.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
    index, lab, lab_mask, counts = _labels(base, rows)
    labels = lab.masked_fill(lab_mask == 0, -100)  # (N, T)
    logits = model(encoder_outputs=(enc.last_hidden_state[index],), attention_mask=kwargs["attention_mask"][index],
                   decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels)).logits
    return token_logprobs(logits, labels, lab_mask.float()).split(counts)


def generate_mixed(base: BaseModel, rows: Sequence[MixedRow]) -> list[str]:
    """Greedy generation for every row (each cut at its own max_new_tokens, EOS and stop strings), stripped text."""
    tok, kwargs = base.tokenizer, mixed_inputs(base, rows)
    if "cache" in kwargs:  # generate() drops the first cache-length positions of inputs_embeds itself
        embeds = kwargs["inputs_embeds"]
        width = kwargs["attention_mask"].shape[1] - embeds.shape[1]
        kwargs["inputs_embeds"] = torch.cat([embeds.new_zeros(embeds.shape[0], width, embeds.shape[2]), embeds], 1)
    kwargs.pop("position_ids", None)  # generate() derives them from the mask (cumulative count)
    out = base.model.generate(**kwargs, max_new_tokens=max(r.max_new_tokens for r in rows), num_beams=1,
                              do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                              **stopping(base, [r.stop_strings for r in rows]))
    if base.is_encoder_decoder:
        out = out[:, 1:]  # the decoder start token
    texts = []
    for r, ids in zip(rows, out.tolist(), strict=True):
        ids = ids[:r.max_new_tokens]
        ids = ids[:ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
        texts.append(cut_at_stop(tok.decode(ids, skip_special_tokens=True), r.stop_strings))
    return texts
