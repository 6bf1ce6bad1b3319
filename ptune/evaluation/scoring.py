"""Evaluation: rank classification (shared source pass), generation + exact match, and metrics.

Rank classification scores every label word by the SUM of its target-token log-probabilities given
(soft prompt +) hard prefix + source, and predicts the argmax. Sum, not mean, because a mean favours
long labels whose later tokens are near-certain once the first is chosen; `length_normalize=True`
divides by the label's token count for tasks whose label words differ a lot in length.
The source is run once per example and shared across its L labels:
- causal LM: one forward over [prompt, left-padded source] with use_cache=True; the DynamicCache is
  repeated L times in the batch (`Cache.batch_repeat_interleave`) and all B*L label continuations are
  scored in one more forward with position ids continuing each row's own length;
- T5: the encoder runs once, its output is repeated L times, the decoder scores all labels at once.
`score_labels_naive` (one full forward per label) is the reference both must equal, used by the tests
and benchmarks. Labels are tokenised with `encode_target`, exactly as in training.
What every source of a `predict` call starts with (the (P, d) soft prompt, a baseline's instruction and
demonstrations, BOS) is run once per call and its keys/values reused by every batch (causal LMs, rank
and greedy generation; `ptune.model.prefix`, `_shared_prefix`); same results as the plain path (tested).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.errors import ConfigError, DataError
from ptune.evaluation.metrics import compute_metrics
from ptune.model.base import BaseModel
from ptune.model.batching import Encoded, collate, encode_source, encode_target, left_pad, pad_rows
from ptune.model.generate import generate_batch, match_label, max_label_tokens
from ptune.model.prefix import PrefixCache, prefix_inputs, split_shared
from ptune.model.soft_prompt import prompt_inputs

log = logging.getLogger(__name__)
LOG_PARTS = 10  # progress lines per prediction pass (every ~10 % of the batches), whatever `progress` says

SHARE_PREFIX = True  # False: every batch runs prompt + full source (the plain path tests compare against)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # {"<split>/<metric>": value}, spec.metrics order (first = primary)
    predictions: list[str]  # one per example, in input order (label word, or raw text if invalid)
    invalid_rate: float  # fraction of generated outputs that name no label (0 for rank / generation tasks)
    n: int  # examples evaluated
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # mode, k used by a k-shot baseline, notes...
    label_scores: list[list[float]] | None = None  # rank mode: (n, L) label log-likelihoods (calibration)


def join_prefix(prefix: str, source: str) -> str:
    """Hard-prompt text before the source, separated by a blank line (nothing when prefix is empty)."""
    return f"{prefix.rstrip()}\n\n{source}" if prefix.strip() else source


def label_target_ids(base: BaseModel, labels: Sequence[str]) -> list[list[int]]:
    """The ids each label's score sums over: the training target of a classification row (no EOS)."""
    return [encode_target(base.tokenizer, w, base.is_encoder_decoder, add_eos=False) for w in labels]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log p(target): logits (N, T, V), targets/mask (N, T) -> (N,)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)  # (N,)


def _score_causal(base: BaseModel, source_ids: Sequence[Sequence[int]], label_ids: list[list[int]],
                  prompt: torch.Tensor | None, prefix: PrefixCache | None = None) -> torch.Tensor:
    model, dev, n_labels = base.model, base.device, len(label_ids)
    ids, mask = (t.to(dev) for t in left_pad(source_ids, base.tokenizer.pad_token_id))  # (B, S)
    kwargs = prompt_inputs(base, prompt, ids, mask) if prefix is None else prefix_inputs(base, prefix, ids, mask)
    out = model(**kwargs, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): next token after the source
    if max(len(x) for x in label_ids) == 1:  # one token per label: the source pass already holds every score
        return first[:, [x[0] for x in label_ids]]  # (B, L)
    cache = out.cache  # transformers 5: DynamicCache (formerly past_key_values)
    cache.batch_repeat_interleave(n_labels)  # (B*L, heads, P+S or K+S, hd) per layer
    lab = pad_rows(label_ids, base.tokenizer.pad_token_id).to(dev)  # (L, T)
    lab_mask = pad_rows([[1] * len(x) for x in label_ids], 0).to(dev)  # (L, T)
    batch = ids.shape[0]
    lab_ids, lab_mask = lab.repeat(batch, 1), lab_mask.repeat(batch, 1)  # (B*L, T), row b*L + l
    past_mask = kwargs["attention_mask"].repeat_interleave(n_labels, dim=0)  # (B*L, P+S) or (B*L, K+S)
    start = past_mask.sum(-1, keepdim=True)  # each row's own length = position of its first label token
    positions = start + torch.arange(lab.shape[1], device=dev)  # (B*L, T)
    logits = model(input_ids=lab_ids, attention_mask=torch.cat([past_mask, lab_mask], dim=1),
                   position_ids=positions, cache=cache, use_cache=True).logits  # (B*L, T, V)
    score = first.repeat_interleave(n_labels, dim=0).gather(1, lab_ids[:, :1]).squeeze(1)  # (B*L,)
    if lab.shape[1] > 1:
        score = score + token_logprobs(logits[:, :-1], lab_ids[:, 1:], lab_mask[:, 1:])
    return score.view(batch, n_labels)


def _score_seq2seq(base: BaseModel, source_ids: Sequence[Sequence[int]], label_ids: list[list[int]],
                   prompt: torch.Tensor | None) -> torch.Tensor:
    model, dev, n_labels = base.model, base.device, len(label_ids)
    ids = pad_rows(source_ids, base.tokenizer.pad_token_id).to(dev)  # (B, S)
    mask = pad_rows([[1] * len(s) for s in source_ids], 0).to(dev)
    kwargs = prompt_inputs(base, prompt, ids, mask)
    enc = model.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
    hidden = enc.last_hidden_state.repeat_interleave(n_labels, dim=0)  # (B*L, P+S, d)
    enc_mask = kwargs["attention_mask"].repeat_interleave(n_labels, dim=0)
    labels = pad_rows(label_ids, -100).to(dev).repeat(ids.shape[0], 1)  # (B*L, T)
    logits = model(encoder_outputs=(hidden,), attention_mask=enc_mask,
                   decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels)).logits
    return token_logprobs(logits, labels, (labels != -100).float()).view(ids.shape[0], n_labels)


def score_labels(base: BaseModel, source_ids: Sequence[Sequence[int]], labels: Sequence[str],
                 prompt: torch.Tensor | None = None, *, length_normalize: bool = False,
                 prefix: PrefixCache | None = None) -> torch.Tensor:
    """(B, L) log-likelihood of each label given each source, sharing the source pass across labels.

    source_ids: B lists from `encode_source`; labels: L label words; prompt: (P, d), (B, P, d) or None.
    prefix (causal LMs): a cached shared prefix from `split_shared`, which already holds the prompt
    (pass prompt=None) and the shared ids (source_ids are then each row's remaining ids)."""
    label_ids = label_target_ids(base, labels)
    if prefix is not None:
        if prompt is not None or base.is_encoder_decoder:
            raise ValueError("score_labels: a prefix cache replaces the prompt (causal LMs only); pass prompt=None")
        scores = _score_causal(base, source_ids, label_ids, None, prefix)
    else:
        fn = _score_seq2seq if base.is_encoder_decoder else _score_causal
        scores = fn(base, source_ids, label_ids, prompt)
    if length_normalize:
        scores = scores / torch.tensor([len(x) for x in label_ids], device=scores.device, dtype=scores.dtype)
    return scores


def score_labels_naive(base: BaseModel, source_ids: Sequence[Sequence[int]], labels: Sequence[str],
                       prompt: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for `score_labels`: one full forward of (prompt, source, label) per label. (B, L)."""
    cols = []
    for ids in label_target_ids(base, labels):
        batch = collate([Encoded(list(s), ids) for s in source_ids], base.tokenizer.pad_token_id,
                        base.is_encoder_decoder)
        batch = {k: v.to(base.device) for k, v in batch.items()}
        kwargs = prompt_inputs(base, prompt, **batch)
        labels_t = kwargs.pop("labels")
        if base.is_encoder_decoder:
            kwargs["decoder_input_ids"] = base.model.prepare_decoder_input_ids_from_labels(labels=labels_t)
        logits = base.model(**kwargs).logits
        if not base.is_encoder_decoder:
            logits, labels_t = logits[:, :-1], labels_t[:, 1:]  # position t predicts token t+1
        cols.append(token_logprobs(logits, labels_t, (labels_t != -100).float()))
    return torch.stack(cols, dim=1)


def metric_meta(spec: TaskSpec, examples: Sequence[Example]) -> dict[str, Any]:
    """What some metrics need beyond (predictions, references): label set, MultiRC question ids,
    ReCoRD answer lists (from each example's raw `fields`)."""
    meta: dict[str, Any] = {"label_words": tuple(spec.label_words)}
    fields = [getattr(ex, "fields", None) or {} for ex in examples]
    qids = [_question_id(f) for f in fields]
    if all(q is not None for q in qids):
        meta["group_ids"] = qids
    if all(isinstance(f.get("answers"), list) and f["answers"] for f in fields):
        meta["answers"] = [list(f["answers"]) for f in fields]
    return meta


def _question_id(fields: dict[str, Any]) -> Any:
    if "question_id" in fields:
        return fields["question_id"]
    idx = fields.get("idx")
    if isinstance(idx, dict) and "question" in idx:  # SuperGLUE MultiRC: {"paragraph", "question", "answer"}
        return (idx.get("paragraph"), idx["question"])
    if "paragraph" in fields and "question" in fields:  # MultiRC rows without idx: same text = same question
        return (fields["paragraph"], fields["question"])
    return None


def evaluate(base: BaseModel, spec: TaskSpec, examples: Sequence[Example], prompt: torch.Tensor | None = None, *,
             prefix: str = "", batch_size: int = 16, mode: str | None = None, split: str = "test",
             max_examples: int | None = None, length_normalize: bool = False, num_beams: int = 1,
             progress: bool = True, label: str = "") -> EvalResult:
    """Score `examples` of `spec` with (optional) soft prompt (P, d) and hard `prefix`; `label` names the pass
    in its progress bar and log lines ("<task>/<split> [<label>]").

    mode: "rank" (classification default) or "generate" (generation default; for classification it
    is generation + exact match against the label words, invalid outputs counted wrong)."""
    examples = list(examples)[:max_examples]
    if not examples:
        raise DataError(f"task {spec.name!r}: split {split!r} has no examples to evaluate")
    start = time.perf_counter()
    mode = _mode(spec, mode)
    scores: list[list[float]] = []
    predictions, invalid = predict(base, spec, [join_prefix(prefix, ex.source) for ex in examples], prompt,
                                   mode=mode, batch_size=batch_size, length_normalize=length_normalize,
                                   num_beams=num_beams, progress=progress,
                                   desc=f"{spec.name}/{split}" + (f" [{label}]" if label else ""),
                                   scores_out=scores)
    scores = scores if mode == "rank" else None
    metrics = compute_metrics(spec.metrics, predictions, [ex.target for ex in examples], split,
                              **metric_meta(spec, examples))
    return EvalResult(metrics, predictions, sum(invalid) / len(invalid), len(examples),
                      time.perf_counter() - start, {"mode": mode, "prefix_chars": len(prefix)}, scores)


def _mode(spec: TaskSpec, mode: str | None) -> str:
    mode = mode or ("rank" if spec.kind == "classification" else "generate")
    if mode not in ("rank", "generate") or (mode == "rank" and not spec.label_words):
        raise ConfigError(f"task {spec.name!r}: evaluation mode {mode!r} is not possible; use 'rank' "
                          "(classification tasks with label words) or 'generate'")
    return mode


def predict(base: BaseModel, spec: TaskSpec, sources: Sequence[str], prompt: torch.Tensor | None = None, *,
            mode: str | None = None, batch_size: int = 16, length_normalize: bool = False, num_beams: int = 1,
            progress: bool = False, desc: str = "predict",
            scores_out: list[list[float]] | None = None) -> tuple[list[str], list[bool]]:
    """(predictions, invalid flags) for formatted source texts, in order. A prediction is a label word,
    generated text, or (classification by generation) the raw text of an invalid output. Rank mode with
    `scores_out`: each row's L label log-likelihoods are appended to it, in input order."""
    mode = _mode(spec, mode)
    if isinstance(prompt, torch.nn.Module):  # a SoftPrompt
        prompt = prompt.weight.detach()
    ids = [encode_source(base.tokenizer, text, spec.max_source_tokens, base.is_encoder_decoder) for text in sources]
    raw = _predict(base, spec, ids, prompt, mode, batch_size, length_normalize, num_beams, progress, desc, scores_out)
    if mode == "rank" or spec.kind != "classification":
        return raw, [False] * len(raw)
    matched = [match_label(text, spec.label_words) for text in raw]
    return [m if m is not None else t for m, t in zip(matched, raw, strict=True)], [m is None for m in matched]


def _predict(base: BaseModel, spec: TaskSpec, sources: list[list[int]], prompt: torch.Tensor | None, mode: str,
             batch_size: int, length_normalize: bool, num_beams: int, progress: bool, desc: str,
             scores_out: list[list[float]] | None = None) -> list[str]:
    """Predictions in input order; batches are formed from length-sorted sources (less padding)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    label_scores: list[list[float]] = [[] for _ in sources]
    if spec.kind == "classification":
        new_tokens = max_label_tokens(base, spec.label_words) + 1  # +1 shows where the word ends
    else:
        new_tokens = spec.max_target_tokens
    with torch.inference_mode(), tqdm(total=len(sources), desc=desc, disable=not progress, leave=False) as bar:
        prefix, sources = _shared_prefix(base, sources, prompt, mode, num_beams)  # once per call, not per batch
        prompt = None if prefix is not None else prompt  # the prefix holds it
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            rows = [sources[j] for j in idx]
            if mode == "rank":
                best = score_labels(base, rows, spec.label_words, prompt, length_normalize=length_normalize,
                                    prefix=prefix)
                texts = [spec.label_words[k] for k in best.argmax(-1).tolist()]
                for j, row in zip(idx, best.float().tolist(), strict=True):
                    label_scores[j] = row
            else:
                texts = generate_batch(base, rows, prompt, new_tokens, num_beams, prefix=prefix,
                                       stop_strings=spec.stop_strings)
            for j, text in zip(idx, texts, strict=True):
                out[j] = text
            bar.update(len(idx))
            _log_progress(desc, i // batch_size + 1, min(i + batch_size, len(order)), len(order), batch_size)
    if scores_out is not None and mode == "rank":
        scores_out.extend(label_scores)
    return out


def _log_progress(desc: str, batch: int, done: int, total: int, batch_size: int) -> None:
    """An INFO line every ~1/LOG_PARTS of the batches and at the end; `extra["ptune_progress"]` = (desc, done,
    total) lets a logging handler (e.g. the Prefect tasks' progress artifact) follow without a callback API."""
    every = max(1, -(-total // batch_size) // LOG_PARTS)
    if batch % every == 0 or done == total:
        log.info("%s: %d/%d examples", desc, done, total, extra={"ptune_progress": (desc, done, total)})


def _shared_prefix(base: BaseModel, sources: list[list[int]], prompt: torch.Tensor | None, mode: str,
                   num_beams: int) -> tuple[PrefixCache | None, list[list[int]]]:
    """(cached prefix, each source's own ids) when every source starts with the same soft prompt and/or
    ids (`ptune.model.prefix`); (None, sources) for the plain path: encoder-decoders, per-row prompts,
    beam search, nothing shared, or SHARE_PREFIX off."""
    if not SHARE_PREFIX or (mode == "generate" and num_beams != 1):
        return None, sources
    return split_shared(base, prompt, sources)
