"""Evaluation throughput (examples/s): `ptune.evaluation.scoring.evaluate` vs a plain transformers loop doing the
same rank classification (tokenise "source label" per label, right-pad, one forward per label, sum the
label tokens' log-probs, argmax), same batch size, same examples, no soft prompt.

Data: data/prepared/rotten_tomatoes/test.jsonl when prepared, else generated review-like rows.
Model: SmolLM2-135M (2 threads) when it loads, else the tiny test model (printed).
Usage: python bench/bench_eval_throughput.py [--n N] [--batch B] [--tiny]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_rank import load  # noqa: E402  (bench/ is on sys.path when run as a script)

from bench.common import bench_args  # noqa: E402
from ptune.data.catalog import get_task  # noqa: E402
from ptune.data.splits import Example, load_split  # noqa: E402
from ptune.evaluation.scoring import evaluate  # noqa: E402

REVIEWS = ["a witty, gorgeous film whose actors never stop having fun", "dull and far too long",
           "the plot is thin but the performances carry it to a happy ending that works",
           "an awful mess", "sad, beautiful and honest about people and the years that pass them by"]


def examples(n: int) -> tuple[list[Example], str]:
    try:
        return load_split("rotten_tomatoes", "test")[:n], "rotten_tomatoes test split"
    except Exception:  # noqa: BLE001 - not prepared here: generate rows of the same shape
        rows = [Example(str(i), f"Review: {REVIEWS[i % 5]}\nSentiment:", ("positive", "negative")[i % 2], {})
                for i in range(n)]
        return rows, "generated review-like rows (rotten_tomatoes not prepared)"


@torch.inference_mode()
def plain_loop(model, tok, sources: list[str], labels: tuple[str, ...], batch: int) -> list[str]:
    """Reference implementation with plain transformers calls: one full forward per (batch, label)."""
    tok.padding_side = "right"
    preds = []
    for i in range(0, len(sources), batch):
        chunk, scores = sources[i:i + batch], []
        n_src = [len(tok(s)["input_ids"]) for s in chunk]
        for label in labels:
            enc = tok([s + " " + label for s in chunk], return_tensors="pt", padding=True)
            logp = torch.log_softmax(model(**enc).logits[:, :-1].float(), -1)  # (B, T-1, V)
            tgt = enc["input_ids"][:, 1:]
            tok_lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            pos = torch.arange(tgt.shape[1]).unsqueeze(0)
            mask = (pos >= torch.tensor(n_src).unsqueeze(1) - 1) & enc["attention_mask"][:, 1:].bool()
            scores.append((tok_lp * mask).sum(-1))
        preds += [labels[j] for j in torch.stack(scores, 1).argmax(-1).tolist()]
    return preds


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], n=64, batch=16)
    base, name = load(args.tiny)
    spec = get_task("rotten_tomatoes")
    rows, origin = examples(args.n)
    print(f"model: {name}; {len(rows)} examples from {origin}; batch {args.batch}; rank classification, 2 labels")
    evaluate(base, spec, rows[:4], batch_size=4, progress=False)  # warm-up
    start = time.perf_counter()
    ours = evaluate(base, spec, rows, batch_size=args.batch, progress=False)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    ref = plain_loop(base.model, base.tokenizer, [ex.source for ex in rows], spec.label_words, args.batch)
    t_ref = time.perf_counter() - start
    agree = sum(a == b for a, b in zip(ours.predictions, ref, strict=True)) / len(rows)
    print(f"{'':22} {'examples/s':>10} {'seconds':>8}")
    print(f"{'ptune evaluate':22} {len(rows) / t_ours:>10.1f} {t_ours:>8.2f}")
    print(f"{'plain transformers':22} {len(rows) / t_ref:>10.1f} {t_ref:>8.2f}")
    print(f"speed-up {t_ref / t_ours:.2f}x; predictions agree on {agree:.1%} of examples")


if __name__ == "__main__":
    main()
