"""Generation with a (optional) soft prompt, and mapping generated text to label words.

Causal LMs get `inputs_embeds` = [prompt, left-padded source] with the matching attention mask;
`generate()` derives position ids from that mask (cumsum), so padded rows equal rows run alone, and
with `inputs_embeds` and no `input_ids` it returns only the new tokens. T5 gets the prompt in front of
the encoder input; its output starts with the decoder start token, removed by skip_special_tokens.
Greedy decoding can start from a cached shared prefix (`ptune.model.prefix`): only each row's own
tokens are run, after the prefix's keys/values; same tokens as the plain path (tested).

Stop strings (`TaskSpec.stop_strings`, e.g. "\n" for one-sentence summaries): a row's output ends at the
first stop string after its leading whitespace. `StopAtText` ends that row's decoding there (a batch ends
when every row has), and `cut_at_stop` trims the decoded text, so the text is the same whether or not
decoding stopped early. Leading whitespace never stops a row: a model that opens with a newline still
gets to answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ptune.model.base import BaseModel
from ptune.model.batching import left_pad, pad_rows
from ptune.model.prefix import PrefixCache, prefix_inputs
from ptune.model.soft_prompt import prompt_inputs


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` without leading whitespace, up to its first stop string, stripped."""
    text = text.lstrip()
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(ends)] if ends else text).strip()


class StopAtText(StoppingCriteria):
    """Ends a row's decoding once its new text, leading whitespace aside, contains one of its stop strings.

    stops: one tuple of stop strings per row (rows of a mixed batch belong to different tasks; beams of a
    row follow it); () never stops on text. The ids `generate()` passes are the new tokens only (T5's
    decoder start token too, dropped by decoding without special tokens)."""

    def __init__(self, tokenizer, stops: Sequence[Sequence[str]]) -> None:
        self.tokenizer, self.stops = tokenizer, [tuple(s for s in row if s) for row in stops]
        self.done = [False] * len(self.stops)  # a stopped row stays stopped: it is not decoded again

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        if len(self.stops) != input_ids.shape[0]:
            raise ValueError(f"StopAtText: {len(self.stops)} rows of stop strings for {input_ids.shape[0]} sequences")
        for i, stops in enumerate(self.stops):
            if stops and not self.done[i]:
                text = self.tokenizer.decode(input_ids[i], skip_special_tokens=True).lstrip()
                self.done[i] = any(s in text for s in stops)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def stopping(base: BaseModel, stops: Sequence[Sequence[str]]) -> dict:
    """`generate()` kwargs that end each row at its stop strings (none when no row has one)."""
    if not any(any(row) for row in stops):
        return {}
    return {"stopping_criteria": StoppingCriteriaList([StopAtText(base.tokenizer, stops)])}


def generate_ids(base: BaseModel, source_ids: Sequence[Sequence[int]], prompt: torch.Tensor | None,
                 max_new_tokens: int, num_beams: int = 1, *, prefix: PrefixCache | None = None,
                 stop_strings: Sequence[str] = ()) -> list[list[int]]:
    """Greedy (num_beams=1) or beam decoding for B sources: B lists of new token ids, cut before EOS.

    source_ids: B token-id lists as made by `encode_source`. prompt: (P, d), (B, P, d) or None.
    prefix (causal LMs, greedy): a cached shared prefix from `split_shared` holding the prompt (pass
    prompt=None) and the shared ids; source_ids are then each row's remaining ids.
    stop_strings: each row's decoding ends once its text holds one (`StopAtText`); the ids are not cut
    there (a stop string can sit inside a token), `generate_batch` cuts the text; the pads after a stopped
    row's end are.
    """
    tok = base.tokenizer
    if base.is_encoder_decoder:
        ids = pad_rows(source_ids, tok.pad_token_id).to(base.device)  # (B, S) right-padded: encoder is bidirectional
        mask = pad_rows([[1] * len(s) for s in source_ids], 0).to(base.device)
    else:
        ids, mask = (t.to(base.device) for t in left_pad(source_ids, tok.pad_token_id))  # (B, S)
    if prefix is None:
        kwargs = prompt_inputs(base, prompt, ids, mask)
    else:
        kwargs = _cached_inputs(base, prefix, prompt, num_beams, ids, mask)
    kwargs.pop("position_ids", None)  # generate() recomputes them from the mask and extends them per step
    out = base.model.generate(**kwargs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                              **stopping(base, [stop_strings] * (ids.shape[0] * num_beams)))  # (B, new)
    if base.is_encoder_decoder:
        out = out[:, 1:]  # drop the decoder start token
    rows = []
    for row in out.tolist():
        row = row[:row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        while stop_strings and row and row[-1] == tok.pad_token_id:  # a row stopped early is padded to the batch
            row.pop()
        rows.append(row)
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
                   max_new_tokens: int, num_beams: int = 1, *, prefix: PrefixCache | None = None,
                   stop_strings: Sequence[str] = ()) -> list[str]:
    """`generate_ids` decoded (special tokens skipped), cut at the first stop string, stripped: B strings."""
    rows = generate_ids(base, source_ids, prompt, max_new_tokens, num_beams, prefix=prefix, stop_strings=stop_strings)
    return [cut_at_stop(text, stop_strings) for text in base.tokenizer.batch_decode(rows, skip_special_tokens=True)]


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
