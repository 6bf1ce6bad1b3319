"""Generation with a (optional) soft prompt, and mapping generated text to label words.

Causal LMs get `inputs_embeds` = [prompt, left-padded source] with the matching attention mask;
`generate()` derives position ids from that mask (cumsum), so padded rows equal rows run alone, and
with `inputs_embeds` and no `input_ids` it returns only the new tokens. T5 gets the prompt in front of
the encoder input; its output starts with the decoder start token, removed by skip_special_tokens.
Greedy decoding can start from a cached shared prefix (`ptune.model.prefix`): only each row's own
tokens are run, after the prefix's keys/values; same tokens as the plain path (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ptune.model.base import BaseModel
from ptune.model.batching import _pad, left_pad
from ptune.model.prefix import PrefixCache, prefix_inputs
from ptune.model.soft_prompt import prompt_inputs


def generate_ids(base: BaseModel, source_ids: Sequence[Sequence[int]], prompt: torch.Tensor | None,
                 max_new_tokens: int, num_beams: int = 1, *, prefix: PrefixCache | None = None) -> list[list[int]]:
    """Greedy (num_beams=1) or beam decoding for B sources: B lists of new token ids, cut before EOS.

    source_ids: B token-id lists as made by `encode_source`. prompt: (P, d), (B, P, d) or None.
    prefix (causal LMs, greedy): a cached shared prefix from `split_shared` holding the prompt (pass
    prompt=None) and the shared ids; source_ids are then each row's remaining ids.
    """
    tok = base.tokenizer
    if base.is_encoder_decoder:
        ids = _pad(source_ids, tok.pad_token_id).to(base.device)  # (B, S) right-padded: encoder is bidirectional
        mask = _pad([[1] * len(s) for s in source_ids], 0).to(base.device)
    else:
        ids, mask = (t.to(base.device) for t in left_pad(source_ids, tok.pad_token_id))  # (B, S)
    if prefix is None:
        kwargs = prompt_inputs(base, prompt, ids, mask)
    else:
        kwargs = _cached_inputs(base, prefix, prompt, num_beams, ids, mask)
    kwargs.pop("position_ids", None)  # generate() recomputes them from the mask and extends them per step
    out = base.model.generate(**kwargs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # (B, new)
    if base.is_encoder_decoder:
        out = out[:, 1:]  # drop the decoder start token
    rows = []
    for row in out.tolist():
        rows.append(row[:row.index(tok.eos_token_id)] if tok.eos_token_id in row else row)
    return rows


def _cached_inputs(base: BaseModel, prefix: PrefixCache, prompt: torch.Tensor | None, num_beams: int,
                   ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """`generate()` kwargs after a cached prefix. generate() takes inputs_embeds for the whole sequence and
    drops the first cache-length positions itself, so the K prefix positions get zero placeholders there:
    (B, K+S, d) embeds, (B, K+S) mask; position ids come from that mask, as on the plain path."""
    if prompt is not None or base.is_encoder_decoder or num_beams != 1:
        raise ValueError("generate_ids: a prefix cache replaces the prompt (causal LMs, greedy only); pass prompt=None")
    kwargs = prefix_inputs(base, prefix, ids, mask)
    embeds = kwargs["inputs_embeds"]  # (B, S, d)
    kwargs["inputs_embeds"] = torch.cat([embeds.new_zeros(embeds.shape[0], prefix.length, embeds.shape[2]), embeds], 1)
    return kwargs


def generate_batch(base: BaseModel, source_ids: Sequence[Sequence[int]], prompt: torch.Tensor | None,
                   max_new_tokens: int, num_beams: int = 1, *, prefix: PrefixCache | None = None) -> list[str]:
    """`generate_ids` decoded (special tokens skipped) and stripped: B strings."""
    rows = generate_ids(base, source_ids, prompt, max_new_tokens, num_beams, prefix=prefix)
    return [text.strip() for text in base.tokenizer.batch_decode(rows, skip_special_tokens=True)]


def match_label(text: str, label_words: Sequence[str]) -> str | None:
    """The label word `text` names, or None (an invalid output).

    Comparison is case-insensitive after strip. Classification targets are trained without EOS, so the
    model may keep writing after the label: a label also matches when the text starts with it and the
    next character is not a letter or digit ("yes." or "yes\\nQuestion:" -> "yes"; "yesterday" -> None).
    The longest matching label wins ("not entailed" over "not")."""
    low = text.strip().lower()
    best: str | None = None
    for label in label_words:
        word = label.strip().lower()
        if low == word or (low.startswith(word) and not low[len(word)].isalnum()):
            if best is None or len(word) > len(best.strip()):
                best = label
    return best


def max_label_tokens(base: BaseModel, label_words: Sequence[str]) -> int:
    """Longest label in target tokens (same rule as training: " " + label for causal LMs)."""
    from ptune.model.batching import encode_target
    return max(len(encode_target(base.tokenizer, w, base.is_encoder_decoder, add_eos=False)) for w in label_words)
