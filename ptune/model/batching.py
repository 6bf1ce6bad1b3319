"""Tokenising (source, target) pairs the same way for training and scoring, and padding them.

One rule for every caller (train, evaluate, baseline, serve), so a label scored at evaluation time is
tokenised exactly as it was trained:
- causal LM: ids = source_ids + target_ids, where target_ids = tokens of " " + target (no specials),
  plus EOS when `add_eos` (generation tasks); loss only on the target.
- encoder-decoder: encoder ids = source (with the tokenizer's specials), labels = target (+ EOS).
Sources longer than `max_source_tokens` keep their *end* for causal LMs (the cue "Answer:" lives
there) and their start for encoder-decoders.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Encoded:
    source_ids: list[int]
    target_ids: list[int]


def encode_source(tok: PreTrainedTokenizerBase, text: str, max_tokens: int, encoder_decoder: bool) -> list[int]:
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if len(ids) <= max_tokens:
        return ids
    return ids[:max_tokens - 1] + ids[-1:] if encoder_decoder else ids[-max_tokens:]


def encode_target(tok: PreTrainedTokenizerBase, text: str, encoder_decoder: bool, add_eos: bool,
                  max_tokens: int | None = None) -> list[int]:
    if encoder_decoder:
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tok(" " + text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if add_eos and tok.eos_token_id is not None:
        ids = ids + [tok.eos_token_id]
    return ids


def encode_pair(tok: PreTrainedTokenizerBase, source: str, target: str, *, encoder_decoder: bool,
                add_eos: bool, max_source_tokens: int, max_target_tokens: int | None = None) -> Encoded:
    return Encoded(
        encode_source(tok, source, max_source_tokens, encoder_decoder),
        encode_target(tok, target, encoder_decoder, add_eos, max_target_tokens),
    )


def collate(items: Sequence[Encoded], pad_id: int, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Causal: input_ids/attention_mask/labels (B, T) with labels -100 off-target.
    Encoder-decoder: input_ids/attention_mask (B, S) and labels (B, L) padded with -100."""
    if encoder_decoder:
        return {
            "input_ids": pad_rows([it.source_ids for it in items], pad_id),
            "attention_mask": pad_rows([[1] * len(it.source_ids) for it in items], 0),
            "labels": pad_rows([it.target_ids for it in items], -100),
        }
    seqs = [it.source_ids + it.target_ids for it in items]
    labels = [[-100] * len(it.source_ids) + it.target_ids for it in items]
    return {
        "input_ids": pad_rows(seqs, pad_id),
        "attention_mask": pad_rows([[1] * len(s) for s in seqs], 0),
        "labels": pad_rows(labels, -100),
    }


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            if left:
                out[i, width - len(row):] = torch.tensor(row)
            else:
                out[i, : len(row)] = torch.tensor(row)
    return out


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad for generation: (input_ids, attention_mask), both (B, T)."""
    return pad_rows(rows, pad_id, left=True), pad_rows([[1] * len(r) for r in rows], 0, left=True)


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                     bucket_factor: int = 50) -> Iterator[list[int]]:
    """Shuffled batches of indices whose lengths are similar (less padding).

    Indices are shuffled, cut into pools of `batch_size * bucket_factor`, sorted by length inside a
    pool, cut into batches, and the batches are shuffled again. One pass over the data."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * bucket_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    yield from batches
