"""Step-by-step decoding of generation rows, each under its own `Sampling`, in a batch rows join and leave.

`generate()` takes one temperature, one top_p and the global random state for a whole batch, runs until the
batch's longest row ends and hands back text only then. Here the loop is ours (`DecodeBatch`):
- `join(rows)` runs the new rows' prompts in one forward (after each row's own soft prompt,
  `ptune.serving.mixed.mixed_inputs`) and picks each new row's first token;
- `step()` runs one forward over every running row and picks each row's next token under its own options and
  generator (`ptune.serving.sampling.pick`). A row ends at EOS, at its stop strings or at its max_tokens and
  leaves the batch at once, freeing its slot; its settled text goes to its `sink` as it grows (streaming).

Causal LMs: each row keeps its own keys and values. The batch's cache is the rows' caches left-padded to the
longest ([pad][row's own prompt, source and tokens so far]) with the padding masked out, and a row's positions
are its own count of real tokens, so a row computes what it computes alone (greedy rows give the tokens
`generate()` gives one row at a time: tested, mixed prompt lengths). Joining pads the shorter side and
concatenates; leaving selects the remaining rows and drops columns that became padding for every row. Models
whose cache is not full attention everywhere (sliding windows) cannot merge caches exactly: there a batch only
takes new rows when it is empty (static batching). Encoder-decoders run each row's encoder once and re-run the
decoder over every row's tokens so far (right-padded; outputs are short), so rows join at any step.
`sample_mixed` is the static use: every row joins at once and the batch runs until the last one ends.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ptune.model.base import BaseModel
from ptune.model.generate import cut_at_stop
from ptune.serving.mixed import MixedRow, mixed_inputs
from ptune.serving.sampling import Sampled, Sampling, pick, settled


@dataclass(eq=False)
class Running:
    """One generation row in a `DecodeBatch`: its options, its tokens so far, the text its sink has had."""

    key: Hashable  # the caller's name for the row
    option: Sampling
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)  # new tokens so far (not EOS)
    sent: str = ""
    encoded: torch.Tensor | None = None  # encoder-decoders: the row's encoder output (S_i, d)


class DecodeBatch:
    """Generation rows decoding together; rows join (`join`) and leave (when they end) between steps."""

    def __init__(self, base: BaseModel) -> None:
        self.base, self.rows = base, []
        self.cache: DynamicCache | None = None  # causal: (B, heads, T, hd) per layer
        self.mask: torch.Tensor | None = None  # causal: (B, T), 1 where a row has a real key
        self.position: torch.Tensor | None = None  # causal: (B, 1), position of each row's last fed token
        self.mergeable = True  # False once a cache with sliding-window layers is seen

    def __len__(self) -> int:
        return len(self.rows)

    def can_join(self) -> bool:
        """Whether new rows may join now (always, except for caches that cannot merge while rows run)."""
        return self.mergeable or not self.rows

    def join(self, rows: Sequence[tuple[Hashable, MixedRow]]) -> list[tuple[Hashable, Sampled]]:
        """Start `rows` (key, row with `sampling` set); the rows that end already (first token EOS, ...)."""
        if not rows:
            return []
        runs = [Running(key, r.sampling, r.sampling.generator(self.base.device)) for key, r in rows]
        if self.base.is_encoder_decoder:
            kwargs = mixed_inputs(self.base, [r for _, r in rows])  # right-padded [prompt_i][source_i]
            enc = self.base.model.get_encoder()(inputs_embeds=kwargs["inputs_embeds"],
                                                attention_mask=kwargs["attention_mask"]).last_hidden_state
            for i, run in enumerate(runs):
                run.encoded = enc[i, :int(kwargs["attention_mask"][i].sum())]  # (S_i, d)
            self.rows += runs
            return []  # their first token comes from the next step's decoder pass
        kwargs = mixed_inputs(self.base, [r for _, r in rows])
        out = self.base.model(**kwargs, use_cache=True, logits_to_keep=1)
        cache, mask, position = out.cache, kwargs["attention_mask"], kwargs["position_ids"][:, -1:]
        self.mergeable = self.mergeable and not any(getattr(layer, "is_sliding", False) for layer in cache.layers)
        ended, keep = self._pick(runs, out.logits[:, -1].float())
        if not keep:
            return ended
        if len(keep) < len(runs):
            cache.batch_select_indices(torch.tensor(keep, device=mask.device))
            mask, position = mask[keep], position[keep]
        runs = [runs[i] for i in keep]
        if self.rows:
            cache, mask = _merge(self.cache, self.mask, cache, mask)
            position = torch.cat([self.position, position])
        self.rows, self.cache, self.mask, self.position = self.rows + runs, cache, mask, position
        return ended

    def step(self) -> list[tuple[Hashable, Sampled]]:
        """One token for every running row; the rows that end with it."""
        if not self.rows:
            return []
        if self.base.is_encoder_decoder:
            ended, keep = self._pick(self.rows, self._decoder_logits())
            self.rows = [self.rows[i] for i in keep]
            return ended
        tokens = torch.tensor([run.ids[-1] for run in self.rows], dtype=torch.long, device=self.mask.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.position = self.position + 1
        out = self.base.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.position,
                              cache=self.cache, use_cache=True)
        self.cache = out.cache
        ended, keep = self._pick(self.rows, out.logits[:, -1].float())
        if len(keep) < len(self.rows):
            self._keep(keep)
        return ended

    def _pick(self, runs: list[Running], logits: torch.Tensor) -> tuple[list[tuple[Hashable, Sampled]], list[int]]:
        """Each row's next token from its (V,) logits: (rows that end, with their outcome; indices still running)."""
        tok, ended, keep = self.base.tokenizer, [], []
        for i, run in enumerate(runs):
            token = pick(logits[i], run.option, run.generator)
            why = "stop" if token == tok.eos_token_id else None
            if why is None:
                run.ids.append(token)
                text = tok.decode(run.ids, skip_special_tokens=True)
                if any(s in text.lstrip() for s in run.option.stop if s):
                    why = "stop"
                elif len(run.ids) >= run.option.max_tokens:
                    why = "length"
                else:
                    _stream(run, settled(text, run.option.stop))
            if why is None:
                keep.append(i)
            else:
                ended.append((run.key, _finish(tok, run, why)))
        return ended, keep

    def _keep(self, keep: list[int]) -> None:
        """Only the rows at `keep` go on; columns that are padding for all of them are dropped."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.position = None
            return
        self.cache.batch_select_indices(torch.tensor(keep, device=self.mask.device))
        self.mask, self.position = self.mask[keep], self.position[keep]
        first = int(self.mask.any(0).long().argmax())  # the first column some row still uses
        if first and self.mergeable:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def _decoder_logits(self) -> torch.Tensor:
        """Encoder-decoders: (B, V) next-token logits of every row, its decoder over [start][tokens so far]."""
        model, width = self.base.model, max(len(run.encoded) for run in self.rows)
        enc = torch.stack([torch.nn.functional.pad(run.encoded, (0, 0, 0, width - len(run.encoded)))
                           for run in self.rows])  # (B, S, d)
        enc_mask = torch.stack([torch.arange(width, device=enc.device) < len(run.encoded) for run in self.rows]).long()
        start, pad = model.config.decoder_start_token_id, self.base.tokenizer.pad_token_id
        lengths = [1 + len(run.ids) for run in self.rows]
        decoded = torch.full((len(self.rows), max(lengths)), pad, dtype=torch.long, device=enc.device)  # (B, t)
        for i, run in enumerate(self.rows):
            decoded[i, :lengths[i]] = torch.tensor([start, *run.ids], device=enc.device)
        logits = model(encoder_outputs=(enc,), attention_mask=enc_mask, decoder_input_ids=decoded).logits  # (B, t, V)
        last = torch.tensor(lengths, device=enc.device) - 1
        return logits[torch.arange(len(self.rows), device=enc.device), last].float()


def _merge(cache_a: DynamicCache, mask_a: torch.Tensor, cache_b: DynamicCache,
           mask_b: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Two batches' caches as one: each left-padded to the longer, then stacked (a's rows first)."""
    width = max(mask_a.shape[1], mask_b.shape[1])

    def left(x: torch.Tensor, dim_from_end: int) -> torch.Tensor:
        missing = width - x.shape[-dim_from_end]
        return x if not missing else torch.nn.functional.pad(x, (0, 0) * (dim_from_end - 1) + (missing, 0))

    layers = [(torch.cat([left(a.keys, 2), left(b.keys, 2)]), torch.cat([left(a.values, 2), left(b.values, 2)]))
              for a, b in zip(cache_a.layers, cache_b.layers, strict=True)]
    return DynamicCache(layers), torch.cat([left(mask_a, 1), left(mask_b, 1)])


def _stream(run: Running, now: str) -> None:
    """Hand the row's newly settled text to its sink."""
    if run.option.sink is not None and len(now) > len(run.sent) and now.startswith(run.sent):
        run.option.sink(now[len(run.sent):])
        run.sent = now


def _finish(tok, run: Running, why: str) -> Sampled:
    text = cut_at_stop(tok.decode(run.ids, skip_special_tokens=True), run.option.stop)
    _stream(run, text)
    return Sampled(text, why, len(run.ids), tuple(run.ids))


def sample_mixed(base: BaseModel, rows: Sequence[MixedRow]) -> list[Sampled]:
    """Decode every row under its own `sampling` (each row's `MixedRow.sampling` must be set), all starting
    together; the outcomes in row order."""
    batch, done = DecodeBatch(base), {}
    done.update(batch.join(list(enumerate(rows))))
    while batch:
        done.update(batch.step())
    return [done[i] for i in range(len(rows))]
