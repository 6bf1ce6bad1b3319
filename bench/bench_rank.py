"""Rank classification: ptune's shared source pass vs one full forward per label, side by side.

Tasks shaped like presupposition_nli (3 labels) and intent (7 labels): batch of sources of mixed
lengths with a 20-token soft prompt. Runs on SmolLM2-135M (2 threads) when `load_base_model` works,
else on the tiny test model (printed). Settings are interleaved; the median of the reps is reported.
Usage: python bench/bench_rank.py [--reps N] [--batch B] [--tiny]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_args  # noqa: E402
from ptune.data.catalog import get_task  # noqa: E402
from ptune.evaluation.scoring import score_labels, score_labels_naive  # noqa: E402
from ptune.model.base import BaseModel, from_objects, load_base_model  # noqa: E402
from ptune.model.batching import encode_source  # noqa: E402

WORDS = ("the premise says that a man who was walking his dog in the park yesterday had never owned a pet "
         "before so the claim about the hypothesis is").split()


def load(tiny: bool) -> tuple[BaseModel, str]:
    """SmolLM2 with 2 threads, or the tiny test model with 1 (and say why)."""
    if not tiny:
        try:
            return load_base_model("smollm2-135m", threads=2), "smollm2-135m (2 threads)"
        except Exception as exc:  # noqa: BLE001 - any failure: fall back, but say so
            print(f"note: smollm2-135m did not load ({type(exc).__name__}: {exc}); using the tiny test model")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_models import build_causal
    path = build_causal(Path(tempfile.mkdtemp()) / "tiny")
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return from_objects(model, AutoTokenizer.from_pretrained(path), str(path)), "tiny llama (1 thread)"


def sources(base: BaseModel, batch: int) -> list[list[int]]:
    """`batch` sources of 25..60 words (mixed lengths -> left padding)."""
    texts = [" ".join((WORDS * 3)[: 25 + (i * 7) % 36]) + "\nAnswer:" for i in range(batch)]
    return [encode_source(base.tokenizer, t, 192, base.is_encoder_decoder) for t in texts]


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], reps=3, batch=8)
    base, name = load(args.tiny)
    prompt = torch.randn(20, base.hidden_size) * 0.05  # (P, d)
    srcs = sources(base, args.batch)
    print(f"model: {name}; batch {args.batch}; source tokens {min(map(len, srcs))}..{max(map(len, srcs))}; "
          f"20 prompt tokens; median of {args.reps}")
    print(f"{'task':20} {'labels':>6} {'shared s':>9} {'per-label s':>12} {'speed-up':>9} {'max |diff|':>11}")
    for task in ("presupposition_nli", "intent"):
        labels = get_task(task).label_words
        timed(score_labels, base, srcs[:2], labels, prompt)  # warm-up
        fast, slow, diff = [], [], 0.0
        for _ in range(args.reps):
            t_fast, a = timed(score_labels, base, srcs, labels, prompt)
            t_slow, b = timed(score_labels_naive, base, srcs, labels, prompt)
            fast.append(t_fast), slow.append(t_slow)
            diff = max(diff, float((a - b).abs().max()))
        f, s = statistics.median(fast), statistics.median(slow)
        print(f"{task:20} {len(labels):>6} {f:>9.3f} {s:>12.3f} {s / f:>8.2f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
