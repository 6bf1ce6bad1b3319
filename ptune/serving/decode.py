"""Step-by-step decoding of a mixed batch, each row with its own `Sampling` (the OpenAI API's generation rows).

`generate()` takes one temperature, one top_p and the global random state for a whole batch, and hands back
text only at the end. Here the loop is ours: one forward per step over every row still running (after the
rows' own soft prompts, `ptune.serving.mixed.mixed_inputs`), then each row picks its token under its own
options and generator (`ptune.serving.sampling.pick`), ends at EOS, at its stop strings or at its max_tokens,
and hands its settled text to its `sink` as it grows: a stream sends tokens as they are produced. Greedy rows
give the text `generate()` gives (tested). Causal LMs keep a cache across steps; encoder-decoders run the
encoder once and re-run the decoder over the tokens so far (short outputs; no decoder cache).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch

from ptune.model.base import BaseModel
from ptune.model.generate import cut_at_stop
from ptune.serving.mixed import MixedRow, mixed_inputs
from ptune.serving.sampling import Sampled, Sampling, pick, settled

Steps = Generator[torch.Tensor, torch.Tensor, None]  # yields (B, V) next-token logits, is sent (B,) tokens


def sample_mixed(base: BaseModel, rows: Sequence[MixedRow]) -> list[Sampled]:
    """Decode every row under its own `sampling` (each row's `MixedRow.sampling` must be set)."""
    options: list[Sampling] = [r.sampling for r in rows]
    gens = [o.generator(base.device) for o in options]
    tok, steps = base.tokenizer, (_seq2seq_steps if base.is_encoder_decoder else _causal_steps)(base, rows)
    ids: list[list[int]] = [[] for _ in rows]
    finish: list[str | None] = [None] * len(rows)
    sent = [""] * len(rows)
    logits = next(steps)  # (B, V)
    while True:
        chosen = []
        for i, option in enumerate(options):
            token = tok.pad_token_id if finish[i] else pick(logits[i], option, gens[i])
            if not finish[i]:
                finish[i] = _advance(tok, ids[i], token, option)
                sent[i] = _stream(option, tok.decode(ids[i], skip_special_tokens=True), sent[i])
            chosen.append(token)
        if all(finish):
            break
        logits = steps.send(torch.tensor(chosen, dtype=torch.long, device=base.device))
    steps.close()
    return [_finish(tok, option, row_ids, why, shown)
            for option, row_ids, why, shown in zip(options, ids, finish, sent, strict=True)]


def _advance(tok, ids: list[int], token: int, option: Sampling) -> str | None:
    """Add `token` to a running row; why the row ends now ("stop" | "length"), or None."""
    if token == tok.eos_token_id:
        return "stop"
    ids.append(token)
    text = tok.decode(ids, skip_special_tokens=True).lstrip()
    if any(s in text for s in option.stop if s):
        return "stop"
    return "length" if len(ids) >= option.max_tokens else None


def _stream(option: Sampling, text: str, sent: str) -> str:
    """Hand the row's newly settled text to its sink; what has been sent so far."""
    now = settled(text, option.stop)
    if option.sink is not None and len(now) > len(sent) and now.startswith(sent):
        option.sink(now[len(sent):])
        return now
    return sent


def _finish(tok, option: Sampling, ids: list[int], why: str | None, sent: str) -> Sampled:
    text = cut_at_stop(tok.decode(ids, skip_special_tokens=True), option.stop)
    if option.sink is not None and len(text) > len(sent) and text.startswith(sent):
        option.sink(text[len(sent):])
    return Sampled(text, why or "length", len(ids))


def _causal_steps(base: BaseModel, rows: Sequence[MixedRow]) -> Steps:
    """Causal LM: one forward over [prompt_i][source_i] (cached prefixes or plain), then one token a step."""
    kwargs = mixed_inputs(base, rows)
    mask = kwargs["attention_mask"]  # (B, K+S) or (B, L)
    position = kwargs["position_ids"][:, -1:]  # (B, 1)
    out = base.model(**kwargs, use_cache=True, logits_to_keep=1)
    while True:
        token = yield out.logits[:, -1].float()  # (B, V)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        position = position + 1
        out = base.model(input_ids=token[:, None], attention_mask=mask, position_ids=position, cache=out.cache,
                         use_cache=True)


def _seq2seq_steps(base: BaseModel, rows: Sequence[MixedRow]) -> Steps:
    """Encoder-decoder: the encoder once over [prompt_i][source_i], the decoder over the tokens so far."""
    kwargs = mixed_inputs(base, rows)
    enc = base.model.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
    start = base.model.config.decoder_start_token_id
    decoded = torch.full((len(rows), 1), start, dtype=torch.long, device=base.device)  # (B, 1)
    while True:
        logits = base.model(encoder_outputs=(enc.last_hidden_state,), attention_mask=kwargs["attention_mask"],
                            decoder_input_ids=decoded).logits  # (B, t, V)
        token = yield logits[:, -1].float()
        decoded = torch.cat([decoded, token[:, None]], dim=1)
