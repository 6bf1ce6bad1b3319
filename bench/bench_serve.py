"""Serving: a mixed-task batch vs PEFT adapter switching, and `ptune serve` under loopback load.

1. Same base model, 8 prompts (20 tokens, `vocab` init) x 4 rows each (equal-length random token rows, so
   PEFT's lack of position ids under padding does not matter), rank classification over 2 single-token
   label words. ptune: one mixed batch of 32 rows with per-row cached prompt prefixes
   (`ptune.serving.mixed.score_mixed`). PEFT: one PeftModel holding 8 PromptTuning adapters,
   `set_adapter` + one forward of 4 rows per task (the label scores are the next-token log-probs; the LM
   head runs at the last position only on both sides, `logits_to_keep=1`).
   Interleaved repetitions, medians of wall and of process CPU time (with one thread, CPU time is the
   work done, which other processes on a crowded machine do not inflate); the label scores must agree. Headline ratio:
   `mixed_over_switching` = PEFT seconds / mixed seconds (goal >= 2x). Also ptune's own per-task loop
   (`ptune_switching_over_mixed`), which separates batching from the scorer.
2. `ptune serve` in a subprocess (8 synthetic tasks, no registry) on 127.0.0.1; 16 client threads post
   one-input /v1/predict requests for --seconds (20 by default, --seconds 60 for the issue's run), with
   dynamic batching on, then off. Requests/s, p50/p99 latency, errors (must be 0).
3. Precision: `MultiPromptModel.predict` on 32 review-like rows of the 8 tasks, the model computing in fp32
   vs in bf16 (what `ptune serve` does under `evaluate.precision: auto` on a CPU with bf16 units: every frozen
   weight held in bf16, autocast), two models side by side in one process, interleaved; medians of wall and CPU
   time, and how many predicted labels agree. Key `serve_bf16_speedup` (fp32 seconds / bf16 seconds).
   Parts 1 and 2 stay in fp32 on both sides (PEFT has no bf16 serving path to compare with).
Writes bench/results/serve.json. Asserts nothing. `--precision_only 1` runs part 3 alone (and writes only its keys
into the existing serve.json).
On a crowded machine pass --threads 1: two OpenMP threads stall when other processes hold the cores.
Usage: python bench/bench_serve.py [--reps 5] [--seconds 20] [--clients 16] [--threads N] [--tiny] [--precision_only 1]
`--openai` runs the OpenAI-API load bench instead (bench/bench_openai.py, its docstring has the options).
`--device cuda|cpu [--reps 5] [--out PATH]` runs part 1 alone on that device (the GPU check, bench/gpu_check.sh),
with bench_gpu.py's random-weight model in SmolLM2's shape (a tiny shape on the CPU): the converted SmolLM2 does
not travel to a GPU machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_rank import load  # noqa: E402

from bench.common import bench_args  # noqa: E402
from ptune.data.catalog import get_task  # noqa: E402
from ptune.model.artifacts import PromptMeta  # noqa: E402
from ptune.model.base import BaseModel  # noqa: E402
from ptune.model.batching import encode_target  # noqa: E402
from ptune.model.soft_prompt import init_prompt  # noqa: E402
from ptune.serving.mixed import MixedRow, score_mixed  # noqa: E402
from ptune.serving.multi_prompt import MultiPromptModel, Row  # noqa: E402

RESULT = ROOT / "bench" / "results" / "serve.json"
N_TASKS, ROWS, PROMPT, TOKENS = 8, 4, 20, 48
SHAPES = ((20, 16), (20, 48), (100, 48))  # (prompt tokens P, row tokens T) of the secondary table
GOALS = {"mixed_over_switching": 2.0}


def single_token_labels(base: BaseModel) -> tuple[str, str]:
    """Two label words that are one target token each for this tokenizer (PEFT's side scores one token)."""
    tok = base.tokenizer
    words = ["positive", "negative", "good", "bad", "yes", "no"] + [tok.decode([i]).strip() for i in range(4, len(tok))]
    found = [w for w in dict.fromkeys(words) if w.isalpha()
             and len(encode_target(tok, w, base.is_encoder_decoder, add_eos=False)) == 1]
    return found[0], found[1]


def synthetic_model(base: BaseModel, prompt: int = PROMPT, bf16: bool = False) -> MultiPromptModel:
    """8 tasks task0..task7 (rotten_tomatoes' template, two single-token labels), each its own 20-token prompt;
    computing in fp32, or in bf16 as `ptune serve` does on a CPU with bf16 units."""
    model = MultiPromptModel(base, precision=torch.bfloat16 if bf16 else None)
    spec = dataclasses.replace(get_task("rotten_tomatoes"), label_words=single_token_labels(base))
    for i in range(N_TASKS):
        weight = init_prompt(base, prompt, "vocab", seed=i).weight.detach()  # (P, d)
        meta = PromptMeta(task=f"task{i}", base_spec=base.spec, base_fingerprint=base.fingerprint)
        model.add(dataclasses.replace(spec, name=f"task{i}"), weight, meta, version="1")
    return model


def peft_model(base: BaseModel, model: MultiPromptModel, prompt: int = PROMPT):
    """One PeftModel over the same base module with the 8 prompts as PromptTuning adapters."""
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=prompt, prompt_tuning_init="RANDOM")
    peft = get_peft_model(base.model, config, adapter_name="task0")
    for name in model.tasks[1:]:
        peft.add_adapter(name, config)
    with torch.no_grad():
        for name, task in model.snapshot().items():
            peft.prompt_encoder[name].embedding.weight.copy_(task.prompt)
    return peft.eval()


def rows_per_task(base: BaseModel, tokens: int = TOKENS) -> dict[str, list[list[int]]]:
    gen = torch.Generator().manual_seed(0)
    vocab = min(len(base.tokenizer), 5000)
    return {f"task{i}": torch.randint(4, vocab, (ROWS, tokens), generator=gen).tolist() for i in range(N_TASKS)}


def shapes(base: BaseModel, reps: int) -> dict[str, dict]:
    """The same comparison at other prompt lengths P and row lengths T (process CPU time, fewer repetitions):
    caching the prompt removes P/(P+T) of PEFT's work, so where the CPU is compute-bound the ratio tracks
    (P+T)/T; batching adds what the hardware gains from bigger batches (little on a CPU core)."""
    found = {}
    for prompt, tokens in SHAPES:
        model = synthetic_model(base, prompt)
        peft = peft_model(base, model, prompt)
        found[f"P{prompt}_T{tokens}"] = compare(base, model, peft, rows_per_task(base, tokens), reps)
    return found


def run_mixed(base, model, rows) -> torch.Tensor:
    tasks = model.snapshot()
    mixed = [MixedRow(ids, tasks[t].prompt, tasks[t].prefix, [list(x) for x in tasks[t].label_ids])
             for t, batch in rows.items() for ids in batch]
    return torch.stack(score_mixed(base, mixed))  # (32, 2)


def run_ptune_switching(base, model, rows) -> torch.Tensor:
    tasks, out = model.snapshot(), []
    for t, batch in rows.items():
        mixed = [MixedRow(ids, tasks[t].prompt, tasks[t].prefix, [list(x) for x in tasks[t].label_ids])
                 for ids in batch]
        out += score_mixed(base, mixed)
    return torch.stack(out)


def run_peft(peft, model, rows) -> torch.Tensor:
    first = [x[0] for x in next(iter(model.snapshot().values())).label_ids]  # single-token labels
    out = []
    for t, batch in rows.items():
        peft.set_adapter(t)
        ids = torch.tensor(batch, device=model.base.device)
        logits = peft(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits[:, -1]  # (4, V)
        out.append(torch.log_softmax(logits.float(), -1)[:, first])
    return torch.cat(out)


def compare(base, model, peft, rows, reps: int) -> dict:
    fns = {"mixed": lambda: run_mixed(base, model, rows), "ptune_switching": lambda: run_ptune_switching(base, model, rows),
           "peft_switching": lambda: run_peft(peft, model, rows)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}  # process CPU seconds: the work, not the waiting
    scores = {}
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up
        for rep in range(reps):
            for name in (list(fns) if rep % 2 else list(fns)[::-1]):
                start, start_cpu = time.perf_counter(), time.process_time()
                scores[name] = fns[name]()
                if base.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    diff = max(float((scores[k].cpu() - scores["mixed"].cpu()).abs().max()) for k in scores)
    return {"median_s": med, "times_s": times, "median_cpu_s": med_cpu, "cpu_s": cpu, "rows": N_TASKS * ROWS,
            "max_score_diff": diff, "mixed_over_switching": med["peft_switching"] / med["mixed"],
            "ptune_switching_over_mixed": med["ptune_switching"] / med["mixed"],
            "mixed_over_switching_cpu": med_cpu["peft_switching"] / med_cpu["mixed"]}


def precision_compare(base: BaseModel, reps: int) -> dict:
    """Part 3: the same 32 rows through an fp32 model and a bf16 one (a second load of the same base)."""
    from ptune.model.base import load_base_model

    bf16 = synthetic_model(load_base_model(base.path or base.spec, threads=torch.get_num_threads()), bf16=True)
    models = {"fp32": synthetic_model(base), "bf16": bf16}
    rng, words = random.Random(0), "the film was good and the actor was witty but the plot was dull".split()
    rows = [Row(f"task{i % N_TASKS}", " ".join(rng.choices(words, k=rng.randint(5, 30)))) for i in range(N_TASKS * ROWS)]
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    preds = {name: model.predict(rows) for name, model in models.items()}  # warm-up
    for rep in range(reps):
        for name in (list(models) if rep % 2 else list(models)[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            preds[name] = models[name].predict(rows)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    agree = sum(a.label == b.label for a, b in zip(preds["fp32"], preds["bf16"], strict=True)) / len(rows)
    diff = max(abs(a.scores[w] - b.scores[w]) for a, b in zip(preds["fp32"], preds["bf16"], strict=True) for w in a.scores)
    return {"median_s": med, "median_cpu_s": med_cpu, "times_s": times, "rows": len(rows), "label_agreement": agree,
            "max_score_diff": diff, "serve_bf16_speedup": med["fp32"] / med["bf16"],
            "serve_bf16_speedup_cpu": med_cpu["fp32"] / med_cpu["bf16"]}


def serve_only(tiny: bool, port: int, batching: bool, threads: int) -> None:
    """The server side of part 2 (run in a subprocess): 8 synthetic tasks behind `ptune serve`'s app."""
    import uvicorn

    from ptune.serving.app import Service, create_app
    from ptune.serving.settings import ServeSettings

    base, _ = load(tiny)
    torch.set_num_threads(threads)
    settings = ServeSettings(port=port, batching=batching, max_batch_size=32, max_wait_ms=5, poll_seconds=0)
    uvicorn.run(create_app(Service(synthetic_model(base), settings)), host="127.0.0.1", port=port,
                log_level="warning")


def load_run(tiny: bool, batching: bool, clients: int, seconds: float, threads: int) -> dict:
    """Start the server subprocess, drive it with `clients` threads for `seconds`, stop it (by PID)."""
    import httpx

    from tests.support import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--serve-only", str(port), "--batching" if batching else "--no-batching",
           "--threads", str(threads)]
    proc = subprocess.Popen(cmd + (["--tiny"] if tiny else []), env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc)
        return _drive(url, clients, seconds, httpx)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"server at {url} did not start (exit code {proc.poll()})")


def _drive(url: str, clients: int, seconds: float, httpx) -> dict:
    latencies, errors, stop = [], [], threading.Event()
    words = "the film was good and the actor was witty but the plot was dull".split()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                body = {"task": f"task{rng.randrange(N_TASKS)}", "inputs": [" ".join(rng.choices(words, k=rng.randint(5, 30)))]}
                start = time.perf_counter()
                try:
                    ok = http.post(f"{url}/v1/predict", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                (latencies if ok else errors).append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]
    return {"requests": len(latencies), "errors": len(errors), "seconds": wall, "req_per_s": len(latencies) / wall,
            "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def device_main() -> None:
    """Part 1 alone on --device, fp32 as on the CPU, with the random-weight model of bench_gpu.py; writes --out."""
    import argparse

    from bench_gpu import SMALL, SMOLLM2, build

    parser = argparse.ArgumentParser(description="serving part 1 (mixed batch vs PEFT set_adapter) on one device")
    parser.add_argument("--device", required=True, choices=("cuda", "cpu"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_serve.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    base = build(SMOLLM2 if device.type == "cuda" else SMALL, device)
    model = synthetic_model(base)
    batch = compare(base, model, peft_model(base, model), rows_per_task(base), args.reps)
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "model": base.spec,
           "precision": "fp32", "tasks": N_TASKS, "rows": N_TASKS * ROWS, "tokens": TOKENS, "prompt_tokens": PROMPT,
           "reps": args.reps, "mixed_over_switching": batch["mixed_over_switching"],
           "ptune_switching_over_mixed": batch["ptune_switching_over_mixed"],
           "max_score_diff": batch["max_score_diff"], "median_s": batch["median_s"], "goals": GOALS}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def main() -> None:
    if "--openai" in sys.argv:  # the OpenAI-API load bench: its own module, its own options
        from bench_openai import main as openai_main

        openai_main()
        return
    if "--device" in sys.argv:  # the GPU check's part: the mixed-batch ratio on one device
        device_main()
        return
    if "--serve-only" in sys.argv:
        argv = sys.argv
        serve_only("--tiny" in argv, int(argv[argv.index("--serve-only") + 1]), "--batching" in argv,
                   int(argv[argv.index("--threads") + 1]))
        return
    args = bench_args(__doc__.splitlines()[0], reps=5, seconds=20, clients=16, threads=0, precision_only=0)
    os.environ.setdefault("PTUNE_PROJECT_DIR", tempfile.mkdtemp(prefix="bench-serve-"))
    base, label = load(args.tiny)
    args.threads = args.threads or torch.get_num_threads()  # 0: what `load` chose (SmolLM2 2, tiny 1)
    torch.set_num_threads(args.threads)
    label = f"{label.split(' (')[0]} ({args.threads} thread{'s' * (args.threads > 1)})"
    precision = precision_compare(base, args.reps)
    print(f"model: {label}; precision: {precision['rows']} rows of {N_TASKS} tasks through MultiPromptModel.predict, "
          f"median of {args.reps}")
    for name, seconds in precision["median_s"].items():
        print(f"  {name:16} {seconds * 1000:8.1f} ms wall, {precision['median_cpu_s'][name] * 1000:8.1f} ms CPU")
    print(f"  serve_bf16_speedup (fp32 / bf16) {precision['serve_bf16_speedup']:.2f}x wall, "
          f"{precision['serve_bf16_speedup_cpu']:.2f}x CPU; labels agree on {precision['label_agreement']:.1%}, "
          f"max score difference {precision['max_score_diff']:.3f}")
    extra = {"serve_bf16_speedup": precision["serve_bf16_speedup"], "precision": precision,
             "precision_date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "precision_model": label}
    if args.precision_only:
        old = json.loads(RESULT.read_text()) if RESULT.exists() else {}
        RESULT.write_text(json.dumps({**old, **extra}, indent=2) + "\n")
        print(f"wrote part 3 into {RESULT.relative_to(ROOT)}")
        return
    model = synthetic_model(base)
    batch = compare(base, model, peft_model(base, model), rows_per_task(base), args.reps)
    print(f"model: {label}; {N_TASKS} prompts x {ROWS} rows, {TOKENS} tokens, prompt {PROMPT}; median of {args.reps}")
    for name, seconds in batch["median_s"].items():
        print(f"  {name:16} {seconds * 1000:8.1f} ms wall, {batch['median_cpu_s'][name] * 1000:8.1f} ms CPU")
    print(f"  mixed_over_switching (PEFT set_adapter / mixed) {batch['mixed_over_switching']:.2f}x "
          f"(goal >= {GOALS['mixed_over_switching']}); ptune per-task / mixed {batch['ptune_switching_over_mixed']:.2f}x; "
          f"in CPU time {batch['mixed_over_switching_cpu']:.2f}x; max score difference {batch['max_score_diff']:.2e}")
    table = shapes(base, max(2, args.reps // 2))
    print("  by shape (CPU time; PEFT set_adapter / mixed):")
    for key, found in table.items():
        prompt, tokens = (int(x[1:]) for x in key.split("_"))
        print(f"    P={prompt:3} T={tokens:3}: {found['mixed_over_switching_cpu']:.2f}x "
              f"(token ratio (P+T)/T = {(prompt + tokens) / tokens:.2f})")
    del model, base
    loads = {}
    for batching in (True, False):
        key = "batching_on" if batching else "batching_off"
        loads[key] = load_run(args.tiny, batching, args.clients, args.seconds, args.threads)
        r = loads[key]
        print(f"  load {key:13} {r['req_per_s']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
              f"errors {r['errors']} ({r['requests']} ok, {args.clients} clients, {r['seconds']:.0f} s)")
    out = {"model": label, "mixed_over_switching": batch["mixed_over_switching"], "batch": batch, "load": loads,
           "by_shape_cpu": {k: v["mixed_over_switching_cpu"] for k, v in table.items()}, "by_shape": table,
           "load_speedup_batching": loads["batching_on"]["req_per_s"] / max(loads["batching_off"]["req_per_s"], 1e-9),
           "clients": args.clients, "goals": GOALS, "loadavg": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv), **extra}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
