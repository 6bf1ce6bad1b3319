"""The soft prompt: n trainable virtual-token embeddings prepended to a frozen model's input.

`SoftPrompt` holds the (P, d) weight, `prompt_inputs` builds the model's keyword arguments with the prompt
in front, and `init_prompt` makes the initial weight in one of the `PromptInit` modes (Lester et al. 2021).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ptune.config import INITS, PromptInit
from ptune.errors import ConfigError
from ptune.model.artifacts import load_prompt
from ptune.model.base import BaseModel
from ptune.model.batching import encode_target
from ptune.model.layout import lead_prompt, mask_lead
from ptune.model.prefix import build_prefix, prefix_inputs

logger = logging.getLogger(__name__)
VOCAB_INIT_TOP_IDS = 5000  # `vocab` init samples among the first ids (see `vocab_candidate_ids`)


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
    """Keyword arguments for `base.model(**kwargs)` with `prompt` prepended (after the BOS for models whose
    tokenizer adds one: `ptune.model.layout`).

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
        prompt = lead_prompt(base, prompt.to(device=embeds.device, dtype=embeds.dtype))  # (B, P, d); +1 BOS row
        attention_mask = mask_lead(base, input_ids, attention_mask)  # the row's own BOS now sits in the prompt block
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


def shared_prompt_inputs(base: BaseModel, prompt: torch.Tensor, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """`prompt_inputs` for one (P, d) prompt shared by every row, with the prompt's pass run once.

    In a causal LM the prompt positions attend only to the prompt, so their keys/values are the same in
    every row: they are computed at batch size 1 (`ptune.model.prefix.build_prefix`), repeated over the
    batch, and only the rows' T tokens run after them. Returns inputs_embeds (B, T, d), attention_mask
    (B, P+T), position_ids (B, T), the prompt's `cache` and labels (B, T) as given (the prompt positions
    are not in the output, and predict no target). The gradient reaches `prompt` through the cached
    keys/values. Same loss and prompt gradient as `prompt_inputs` (tested, left and right padding);
    encoder-decoders and models with sliding-window/linear layers get `prompt_inputs` itself."""
    prefix = build_prefix(base, prompt, []) if prompt.ndim == 2 else None
    if prefix is None:
        return prompt_inputs(base, prompt, input_ids, attention_mask, labels)
    kwargs: dict = prefix_inputs(base, prefix, input_ids, attention_mask)
    if labels is not None:
        kwargs["labels"] = labels
    return kwargs


def init_prompt(base: BaseModel, n_tokens: int, init: PromptInit | str, *, label_words: Sequence[str] = (),
                text: str | None = None, path: str | Path | None = None, seed: int = 0) -> SoftPrompt:
    """A new SoftPrompt (n_tokens, hidden) on base.device, fp32, deterministic for a given seed.

    `labels` with no label words (generation tasks, where the default init is still `labels`) falls
    back to `vocab` with a warning, so one default config serves every task.

    Raises ConfigError naming every bad argument (and the allowed init values)."""
    mode = _check_init_args(n_tokens, init, label_words, text, path)
    gen = torch.Generator().manual_seed(int(seed))
    if mode is PromptInit.RANDOM:
        weight = torch.rand(n_tokens, base.hidden_size, generator=gen) - 0.5  # (P, d) in [-0.5, 0.5)
    elif mode is PromptInit.VOCAB:
        weight = vocab_rows(base, n_tokens, gen)
    elif mode is PromptInit.LABELS and not label_words:  # generation task: no classes, use vocab
        logger.warning("init 'labels' without label words (generation task?): using 'vocab' init instead")
        weight = vocab_rows(base, n_tokens, gen)
    elif mode is PromptInit.LABELS:
        weight = label_rows(base, n_tokens, label_words, gen)
    elif mode is PromptInit.TEXT:
        weight = text_rows(base, n_tokens, str(text))
    else:
        weight = file_rows(base, n_tokens, Path(str(path)))
    return SoftPrompt(weight.to(base.device))


def _check_init_args(n_tokens: int, init: PromptInit | str, label_words: Sequence[str], text: str | None,
                     path: str | Path | None) -> PromptInit:
    """Validate init_prompt's arguments; one ConfigError listing every problem."""
    problems = []
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        problems.append(f"n_tokens={n_tokens!r}: must be an integer >= 1")
    try:
        mode = PromptInit(init.value if isinstance(init, PromptInit) else str(init).lower())
    except ValueError:
        mode = None
        problems.append(f"init={init!r}: allowed values are {list(INITS)}")
    if mode is PromptInit.LABELS and any(not str(w).strip() for w in label_words):
        problems.append(f"label_words={tuple(label_words)!r}: init 'labels' needs non-empty label words")
    if mode is PromptInit.TEXT and not (text and text.strip()):
        problems.append(f"text={text!r}: init 'text' needs a non-empty init sentence")
    if mode is PromptInit.FILE and path is None:
        problems.append("path=None: init 'file' needs the path of a prompt artifact")
    if problems or mode is None:
        raise ConfigError("invalid soft prompt init:\n  - " + "\n  - ".join(problems))
    return mode


def vocab_candidate_ids(base: BaseModel) -> list[int]:
    """Token ids `vocab` init samples from: the first VOCAB_INIT_TOP_IDS ids, minus special tokens.

    No token-frequency list ships with the models, so we use the id order as a proxy: BPE vocabularies
    list merges in the order they were learned (most frequent first) and SentencePiece vocabularies are
    sorted by score, so low ids are common tokens (Lester et al. sample from the 5,000 most common)."""
    rows = base.model.get_input_embeddings().weight.shape[0]
    limit = min(VOCAB_INIT_TOP_IDS, rows, len(base.tokenizer))
    special = set(base.tokenizer.all_special_ids)
    return [i for i in range(limit) if i not in special]


def vocab_rows(base: BaseModel, n: int, gen: torch.Generator) -> torch.Tensor:
    """Embeddings (n, d) of n distinct sampled candidate tokens (with repeats only if too few exist)."""
    ids = torch.tensor(vocab_candidate_ids(base), dtype=torch.long)
    if len(ids) >= n:
        pick = ids[torch.randperm(len(ids), generator=gen)[:n]]  # (n,)
    else:
        pick = ids[torch.randint(len(ids), (n,), generator=gen)]  # (n,)
    return _embed_ids(base, pick)  # (n, d)


def vocab_rms(base: BaseModel) -> float:
    """RMS of the input embeddings of the `vocab` init candidates (as the model scales them): the scale a soft
    prompt starts at, and what `train.max_token_rms` is a multiple of (SmolLM2-135M: 0.122; its whole
    embedding matrix: 0.136)."""
    return float(_embed_ids(base, torch.tensor(vocab_candidate_ids(base))).float().pow(2).mean().sqrt())


def cap_token_rms(weight: torch.Tensor, max_rms: float) -> None:
    """Scale each row of `weight` (P, d) whose RMS exceeds `max_rms` back to it, in place, outside autograd."""
    with torch.no_grad():
        rms = weight.pow(2).mean(dim=1, keepdim=True).sqrt()  # (P, 1)
        weight.mul_(torch.clamp(max_rms / rms.clamp_min(1e-12), max=1.0))


def label_word_embeddings(base: BaseModel, label_words: Sequence[str]) -> torch.Tensor:
    """(L, d): each label word's mean sub-token embedding, tokenised as `batching.encode_target` does."""
    rows = []
    for word in label_words:
        ids = encode_target(base.tokenizer, word, base.is_encoder_decoder, add_eos=False)
        if not ids:
            raise ConfigError(f"label word {word!r} tokenises to no tokens; cannot use it for init 'labels'")
        rows.append(_embed_ids(base, torch.tensor(ids)).mean(dim=0))  # (d,)
    return torch.stack(rows)  # (L, d)


def label_rows(base: BaseModel, n: int, label_words: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """(n, d): label embeddings in the first rows, the rest from `vocab_rows`.

    With more labels than tokens, label i goes to row i % n and each row is the mean of its labels, so
    every label still contributes."""
    labels = label_word_embeddings(base, label_words)  # (L, d)
    if len(labels) >= n:
        slot = torch.arange(len(labels)) % n  # (L,)
        sums = torch.zeros(n, labels.shape[1]).index_add_(0, slot, labels)
        return sums / torch.bincount(slot, minlength=n).unsqueeze(1).to(sums.dtype)  # (n, d)
    return torch.cat([labels, vocab_rows(base, n - len(labels), gen)])  # (n, d)


def text_rows(base: BaseModel, n: int, text: str) -> torch.Tensor:
    """(n, d): embeddings of `text` tokenised without special tokens, repeated or cut to n rows."""
    ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"text={text!r} tokenises to no tokens; cannot use it for init 'text'")
    reps = -(-n // len(ids))
    return _embed_ids(base, torch.tensor((ids * reps)[:n]))  # (n, d)


def file_rows(base: BaseModel, n: int, path: Path) -> torch.Tensor:
    """(n, d) from a prompt artifact trained on this same base model (transfer / warm start)."""
    tensor, meta = load_prompt(path, expected_fingerprint=base.fingerprint)  # (P, d)
    if tuple(tensor.shape) != (n, base.hidden_size):
        raise ConfigError(f"prompt artifact {path} has shape {tuple(tensor.shape)} (n_tokens={meta.n_tokens}, "
                          f"hidden={meta.hidden}); init 'file' needs ({n}, {base.hidden_size})")
    return tensor


def _embed_ids(base: BaseModel, ids: torch.Tensor) -> torch.Tensor:
    """Frozen input embeddings of 1-D ids -> (len, d) fp32 on CPU, detached."""
    with torch.no_grad():
        return base.embed(ids.to(base.device).unsqueeze(0))[0].detach().to("cpu", torch.float32)


def target_loss(base: BaseModel, kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over target tokens for `base.model(**kwargs)` (kwargs from `prompt_inputs`).

    For causal LMs the LM head runs only at the positions that predict a target token, not over the
    whole (B, P+T) sequence: with a 49k-word vocabulary the full (B, P+T, V) logits and their gradient
    dominate a prompt-tuning step's memory. Same value as the model's own loss (tested); models that
    post-process logits (soft-capping, logit scale) take the ordinary path. kwargs may also come from
    `shared_prompt_inputs` (a cached prompt: `cache` is then used and labels cover the rows only).
    """
    model = base.model
    if base.is_encoder_decoder or _rescales_logits(model.config):
        return model(**kwargs).loss.float()
    kwargs = dict(kwargs)
    labels = kwargs.pop("labels")[:, 1:]  # (B, L-1): token t+1 is predicted at position t
    hidden = model.base_model(**kwargs, use_cache="cache" in kwargs).last_hidden_state[:, :-1]  # (B, L-1, d)
    keep = labels != -100
    logits = model.get_output_embeddings()(hidden[keep])  # (N, V), N = target tokens in the batch
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _rescales_logits(config) -> bool:
    return bool(getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
                or getattr(config, "logits_scaling", None))
