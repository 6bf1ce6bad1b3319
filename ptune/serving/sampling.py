"""Decoding options of one served generation row (the OpenAI API's max_tokens, stop, temperature, top_p,
seed), how the next token is picked under them, and which part of a row's text is final while it grows.

temperature 0 is greedy, the decoding `ptune evaluate` scored; above 0, the logits are divided by it, cut to
the smallest set of tokens whose probability reaches top_p (nucleus sampling), and a token is drawn with the
row's own `torch.Generator` (seeded by `seed`: the same seed gives the same text, alone or in any batch, up
to fp32 reduction order). A row's text is `cut_at_stop` of its decoded tokens, as on every other path (`ptune.serving.decode`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    max_tokens: int                      # new tokens at most (finish_reason "length" when reached)
    stop: tuple[str, ...] = ()           # the task's stop strings and the request's
    temperature: float = 0.0             # 0: greedy
    top_p: float = 1.0
    seed: int | None = None              # None: a fresh random seed (temperature > 0 only)
    sink: Callable[[str], None] | None = None  # streamed text pieces, called on the model's thread

    def generator(self, device: torch.device) -> torch.Generator | None:
        if self.temperature == 0:
            return None
        gen = torch.Generator(device=device)
        return gen.manual_seed(self.seed) if self.seed is not None else gen.manual_seed(gen.seed())


@dataclass(frozen=True)
class Sampled:
    """One row's outcome: its text, why it ended ("stop": EOS or a stop string; "length"), its new tokens."""

    text: str
    finish: str
    tokens: int
    ids: tuple[int, ...] = ()  # the new token ids (not EOS)


def pick(logits: torch.Tensor, option: Sampling, generator: torch.Generator | None) -> int:
    """The next token of one row from its (V,) logits."""
    if option.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / option.temperature, dim=-1)  # (V,)
    if option.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above each one
        sorted_probs[before >= option.top_p] = 0  # keep the smallest head reaching top_p (never empty)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def settled(text: str, stops: Sequence[str]) -> str:
    """The part of a growing row's text that no later token can change: `cut_at_stop` of it without a tail that
    could still become a stop string, trailing whitespace (the final text is stripped) or a partial character."""
    text = text.lstrip()
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if ends:
        return text[:min(ends)].rstrip()
    keep = len(text)
    for stop in (s for s in stops if s):
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = min(keep, len(text) - n)
                break
    return text[:keep].rstrip().rstrip("\ufffd").rstrip()
