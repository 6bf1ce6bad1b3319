"""OpenAI-API load: one-at-a-time PEFT vs `ptune serve`'s static and continuous batching, same requests.

Three servers, one after another (never two at once), each in its own subprocess on 127.0.0.1, each holding
the same frozen base model in fp32 (SmolLM2-135M; --tiny: the tests' tiny llama) and the same 4 tasks:
  reference   `peft_openai_server.py`: one PeftModel with a PromptTuning adapter per task, one request at a
              time, `set_adapter` per request (what a user would write without ptune);
  static      `ptune serve`'s app, `scheduler="static"`: whole requests batched until the longest row ends;
  continuous  the same app, `scheduler="continuous"`: rows join and leave the decode batch at every step.
Tasks: cls0, cls1 (rotten_tomatoes' template, two single-token labels) and gen0, gen1 (xsum's template, no
stop string, so every row decodes to EOS or max_tokens), each its own 20-token `vocab` prompt, the same
weights on every server. `--clients` threads (16), each with its own `openai.OpenAI` client (no retries), send
requests for `--seconds` (60): half generation (a pseudo news article of 280-400 words, about 320-480 SmolLM2
tokens; max_tokens 48, temperature 0, streamed with usage), half classification (a short review, unstreamed).
Client i draws its requests from Random(i), so every server sees the same sequence per client. Requests in
flight at the deadline finish and count; the wall time runs until the last one ends. One request per task
warms each server up, uncounted. The servers' API key makes the wrong-key check meaningful.
Per server: generated tokens/s (the streams' usage), requests/s, p50/p99 time to first token (generation: the
first chunk with text; the reference's TextIteratorStreamer hands text over a whole word at a time), p50/p99
latency (all, classification, generation), errors. Goals: continuous >= 2x the reference's tokens/s and
>= 1.2x static's; classification p99 <= 0.5x static's; 0 errors. After its load, the continuous server gets
hostile inputs (each must get its 4xx), then one valid request (200: it kept serving).
Writes bench/results/serve_openai.json (--tiny: serve_openai_tiny.json). Asserts nothing.
Usage: python bench/bench_serve.py --openai [--seconds 60] [--clients 16] [--threads N] [--tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_rank import load  # noqa: E402
from bench_serve import single_token_labels  # noqa: E402
from openai_hostile import hostile_checks  # noqa: E402

from ptune.data.catalog import get_task  # noqa: E402
from ptune.data.spec import TaskSpec  # noqa: E402
from ptune.model.base import BaseModel  # noqa: E402
from ptune.model.soft_prompt import init_prompt  # noqa: E402

RESULT = ROOT / "bench" / "results" / "serve_openai.json"
API_KEY = "bench-openai-key"
PROMPT, MAX_TOKENS, GEN_SHARE = 20, 48, 0.5  # prompt tokens; new tokens per generation request; its share
SERVERS = ("reference", "static", "continuous")
GOALS = {"tokens_over_reference": 2.0, "tokens_over_static": 1.2, "cls_p99_over_static": 0.5}
NEWS = ("the council said on monday that its new plan for the city centre would cost more than expected "
        "after officials warned residents about rising prices while the minister told reporters in london "
        "that the government was ready to support local schools hospitals and transport across the region "
        "this year").split()
REVIEW = "the film was good and the actor was witty but the plot was dull and slow".split()


def bench_tasks(base: BaseModel) -> list[tuple[TaskSpec, torch.Tensor]]:
    """The 4 served tasks and their prompts (P, d), the same on every server. A generation source keeps to
    what the model's positions hold (the tiny model's 256)."""
    cls = dataclasses.replace(get_task("rotten_tomatoes"), label_words=single_token_labels(base))
    xsum = get_task("xsum")
    room = getattr(base.model.config, "max_position_embeddings", 4096) - PROMPT - MAX_TOKENS
    gen = dataclasses.replace(xsum, stop_strings=(), max_source_tokens=min(xsum.max_source_tokens, room))
    specs = [dataclasses.replace(spec, name=name) for spec, name in
             ((cls, "cls0"), (cls, "cls1"), (gen, "gen0"), (gen, "gen1"))]
    return [(spec, init_prompt(base, PROMPT, "vocab", seed=i).weight.detach())  # (P, d)
            for i, spec in enumerate(specs)]


def serve_ptune(tiny: bool, port: int, scheduler: str, threads: int) -> None:
    """Servers (b) and (c), in a subprocess: `ptune serve`'s app over the 4 tasks, no registry, with a key."""
    import uvicorn

    from ptune.model.artifacts import PromptMeta
    from ptune.serving.app import Service, create_app
    from ptune.serving.multi_prompt import MultiPromptModel
    from ptune.serving.settings import ServeSettings

    base, _ = load(tiny)
    torch.set_num_threads(threads)
    model = MultiPromptModel(base)
    for spec, weight in bench_tasks(base):
        meta = PromptMeta(task=spec.name, base_spec=base.spec, base_fingerprint=base.fingerprint)
        model.add(spec, weight, meta, version="1")
    settings = ServeSettings(port=port, scheduler=scheduler, max_batch_size=32, max_wait_ms=5, poll_seconds=0,
                             api_key=API_KEY)
    uvicorn.run(create_app(Service(model, settings)), host="127.0.0.1", port=port, log_level="warning")


@dataclasses.dataclass(frozen=True)
class Request:
    task: str
    text: str

    @property
    def generation(self) -> bool:
        return self.task.startswith("gen")


def article(rng: random.Random) -> str:
    """A pseudo news article of 280-400 words in sentences of 8-20 (xsum-length: a few hundred tokens)."""
    target, sentences, words = rng.randint(280, 400), [], 0
    while words < target:
        sentence = rng.choices(NEWS, k=rng.randint(8, 20))
        sentences.append(" ".join(sentence).capitalize() + ".")
        words += len(sentence)
    return " ".join(sentences)


def requests(client: int) -> Iterator[Request]:
    """Client `client`'s endless request sequence, the same on every server."""
    rng = random.Random(client)
    while True:
        if rng.random() < GEN_SHARE:
            yield Request(f"gen{rng.randrange(2)}", article(rng))
        else:
            yield Request(f"cls{rng.randrange(2)}", " ".join(rng.choices(REVIEW, k=rng.randint(8, 40))))


@dataclasses.dataclass(frozen=True)
class Outcome:
    generation: bool
    latency: float      # seconds from sending to the last byte
    ttft: float         # seconds to the first chunk with text (classification: the latency)
    tokens: int = 0     # generated tokens, from the stream's usage (else its text chunks)
    usage: bool = True  # whether the server sent usage
    error: str = ""     # the exception, for a failed request


def send(client, request: Request) -> Outcome:
    """One request through the openai client: generation streamed (with usage), classification not."""
    from openai import OpenAIError

    start, first, chunks, tokens = time.perf_counter(), None, 0, None
    try:
        if request.generation:
            stream = client.completions.create(model=request.task, prompt=request.text, max_tokens=MAX_TOKENS,
                                               temperature=0, stream=True,
                                               stream_options={"include_usage": True})
            for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    first, chunks = first or time.perf_counter(), chunks + 1
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
        else:
            client.completions.create(model=request.task, prompt=request.text, temperature=0)
    except OpenAIError as exc:
        spent = time.perf_counter() - start
        return Outcome(request.generation, spent, spent, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    end = time.perf_counter()
    tokens, usage = (chunks, not request.generation) if tokens is None else (tokens, True)
    return Outcome(request.generation, end - start, (first or end) - start, tokens, usage)


def drive(url: str, clients: int, seconds: float) -> tuple[list[Outcome], float]:
    """`clients` threads, one openai client each, send their sequences for `seconds`; then the rest finish."""
    from openai import OpenAI

    outcomes: list[Outcome] = []
    stop = threading.Event()

    def run(i: int) -> None:
        with OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=900) as client:
            for request in requests(i):
                if stop.is_set():
                    return
                outcomes.append(send(client, request))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - start


def warm_up(url: str) -> None:
    from openai import OpenAI

    with OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=900) as client:
        rng = random.Random(-1)
        for task in ("cls0", "cls1", "gen0", "gen1"):
            send(client, Request(task, article(rng) if task.startswith("gen") else "a witty film"))


def percentile_ms(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else None


def summary(outcomes: list[Outcome], wall: float) -> dict:
    ok = [o for o in outcomes if not o.error]
    gen, cls = [o for o in ok if o.generation], [o for o in ok if not o.generation]
    tokens = sum(o.tokens for o in gen)
    found = {"requests": len(ok), "errors": len(outcomes) - len(ok), "seconds": wall,
             "generation_requests": len(gen), "classification_requests": len(cls), "generated_tokens": tokens,
             "gen_tokens_per_s": tokens / wall, "req_per_s": len(ok) / wall,
             "usage_missing": sum(not o.usage for o in gen),
             "error_samples": [o.error for o in outcomes if o.error][:5]}
    for name, values in (("ttft", [o.ttft for o in gen]), ("latency", [o.latency for o in ok]),
                         ("cls_latency", [o.latency for o in cls]),
                         ("gen_latency", [o.latency for o in gen])):
        for q in (50, 99):
            found[f"{name}_p{q}_ms"] = percentile_ms(values, q / 100)
    return found


def start_server(server: str, port: int, tiny: bool, threads: int) -> subprocess.Popen:
    script = ROOT / "bench" / ("peft_openai_server.py" if server == "reference" else "bench_openai.py")
    cmd = [sys.executable, str(script), "--port", str(port), "--threads", str(threads)]
    cmd += [] if server == "reference" else ["--serve", server]
    return subprocess.Popen(cmd + (["--tiny"] if tiny else []), env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> dict:
    """The server's /health once it answers 200; RuntimeError if it exits or does not answer in time."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            reply = httpx.get(f"{url}/health", timeout=2)
            if reply.status_code == 200:
                return reply.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server at {url} did not start (exit code {proc.poll()})")


def run_server(server: str, args: argparse.Namespace) -> dict:
    """Start one server, warm it up, load it, (continuous: hostile inputs), stop it by PID."""
    from tests.support import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(server, port, args.tiny, args.threads)
    try:
        health = wait_ready(url, proc)
        warm_up(url)
        found = {"base_model": health.get("base_model"), **summary(*drive(url, args.clients, args.seconds))}
        if server == "continuous":
            found["hostile"] = hostile_checks(url, API_KEY)
        return found
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """Each goal: its value, its line and whether it is met (None when a side has nothing to compare)."""
    ref, static, cont = (results[s] for s in SERVERS)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    values = {"tokens_over_reference": ratio(cont["gen_tokens_per_s"], ref["gen_tokens_per_s"]),
              "tokens_over_static": ratio(cont["gen_tokens_per_s"], static["gen_tokens_per_s"]),
              "cls_p99_over_static": ratio(cont["cls_latency_p99_ms"], static["cls_latency_p99_ms"])}
    found = {k: {"value": v, "goal": (">=" if k.startswith("tokens") else "<=") + f" {GOALS[k]}",
                 "met": None if v is None else (v >= GOALS[k] if k.startswith("tokens") else v <= GOALS[k])}
             for k, v in values.items()}
    errors = sum(results[s]["errors"] for s in SERVERS)
    found["errors"] = {"value": errors, "goal": "== 0", "met": errors == 0}
    return found


def machine() -> dict:
    """CPU model, cores, and whether it has AVX-512 BF16 and AMX units (from /proc/cpuinfo)."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "unknown")
    flags = set(next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), []))
    return {"cpu": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool(flags & {"amx_bf16", "amx_tile"}), "loadavg": os.getloadavg()}


COLUMNS = (("gen tok/s", "gen_tokens_per_s"), ("req/s", "req_per_s"), ("TTFT p50", "ttft_p50_ms"),
           ("TTFT p99", "ttft_p99_ms"), ("lat p50", "latency_p50_ms"), ("lat p99", "latency_p99_ms"),
           ("cls p50", "cls_latency_p50_ms"), ("cls p99", "cls_latency_p99_ms"),
           ("gen p50", "gen_latency_p50_ms"), ("gen p99", "gen_latency_p99_ms"), ("errors", "errors"),
           ("requests", "requests"))


def report(results: dict[str, dict], goals: dict[str, dict]) -> None:
    """The side-by-side table (times in ms), the goals, and the hostile inputs."""
    print(f"{'server':11}" + "".join(f"{title:>10}" for title, _ in COLUMNS))
    for server, found in results.items():
        cells = (found[key] for _, key in COLUMNS)
        print(f"{server:11}" + "".join(f"{'-' if v is None else round(v, 1):>10}" for v in cells))
    for name, goal in goals.items():
        value = goal["value"] if not isinstance(goal["value"], float) else f"{goal['value']:.2f}"
        verdict = {True: "met", False: "MISSED", None: "n/a"}[goal["met"]]
        print(f"  {name:24} {value!s:>8}  (goal {goal['goal']}) {verdict}")
    for name, check in results.get("continuous", {}).get("hostile", {}).items():
        print(f"  hostile {name:17} {check['status']!s:>8}  (expected {check['expected']}) "
              f"{'ok' if check['ok'] else 'WRONG'}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openai", action="store_true", help="this bench, as a mode of bench_serve.py")
    parser.add_argument("--seconds", type=int, default=60, help="load phase per server")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: SmolLM2 2, tiny 1)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of SmolLM2-135M")
    parser.add_argument("--serve", choices=SERVERS[1:], help=argparse.SUPPRESS)  # a server subprocess
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.threads = args.threads or (1 if args.tiny else 2)  # what bench_rank.load chooses
    if args.serve:
        serve_ptune(args.tiny, args.port, args.serve, args.threads)
        return
    os.environ.setdefault("PTUNE_PROJECT_DIR", tempfile.mkdtemp(prefix="bench-openai-"))
    results = {}
    for server in SERVERS:
        print(f"{server}: {args.clients} clients for {args.seconds} s ...", flush=True)
        results[server] = run_server(server, args)
    goals = ratios(results)
    report(results, goals)
    command = " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
           "command": command, "threads": args.threads, "clients": args.clients, "seconds": args.seconds,
           "max_tokens": MAX_TOKENS, "generation_share": GEN_SHARE, "prompt_tokens": PROMPT,
           "precision": "fp32", "goals": goals, "servers": results}
    path = RESULT.with_name("serve_openai_tiny.json") if args.tiny else RESULT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
