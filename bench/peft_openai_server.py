"""The one-at-a-time reference server of `bench_serve.py --openai`: what a user would write without ptune.

The frozen base model wrapped in ONE PeftModel with a PromptTuning adapter per task (the bench's own prompts,
`bench_openai.bench_tasks`), behind a small FastAPI app speaking enough of the OpenAI API for the `openai`
client: GET /v1/models, POST /v1/completions (streamed or not, with usage), GET /health. One request at a time
(a lock): `set_adapter(task)`, then for a generation task greedy `generate` (streamed through transformers'
TextIteratorStreamer, generate on a thread; it hands text over a whole word at a time), for a classification
task one forward pass whose last position scores each single-token label word. Inputs go through the task's
template and are tokenized as ptune tokenizes them, so both servers read the same tokens. No key check, no
limits: a reference, not a product.
Usage (bench_openai.py starts it): python bench/peft_openai_server.py --port N [--threads N] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel as Body
from pydantic import ConfigDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_openai import PROMPT, bench_tasks  # noqa: E402
from bench_rank import load  # noqa: E402

from ptune.data.spec import TaskSpec, format_input  # noqa: E402
from ptune.model.base import BaseModel  # noqa: E402


class Completion(Body):
    model_config = ConfigDict(extra="ignore")
    model: str
    prompt: str
    max_tokens: int = 16
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with usage


@dataclass(frozen=True)
class Usage:
    prompt: int
    new: int
    finish: str


def adapters(base: BaseModel, tasks: list[tuple[TaskSpec, torch.Tensor]]):
    """One PeftModel over the base with each task's prompt (P, d) as a PromptTuning adapter named after it."""
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PROMPT, prompt_tuning_init="RANDOM")
    peft = get_peft_model(base.model, config, adapter_name=tasks[0][0].name)
    for spec, _ in tasks[1:]:
        peft.add_adapter(spec.name, config)
    with torch.no_grad():
        for spec, weight in tasks:
            peft.prompt_encoder[spec.name].embedding.weight.copy_(weight)
    return peft.eval()


class Reference:
    """The model and the one lock every request takes."""

    def __init__(self, base: BaseModel, tasks: list[tuple[TaskSpec, torch.Tensor]]) -> None:
        self.tok, self.specs = base.tokenizer, {spec.name: spec for spec, _ in tasks}
        self.model, self.lock = adapters(base, tasks), threading.Lock()
        self.labels = {spec.name: [self.tok(" " + w, add_special_tokens=False)["input_ids"]
                                   for w in spec.label_words]
                       for spec, _ in tasks if spec.kind == "classification"}  # single-token words

    def encode(self, spec: TaskSpec, text: str) -> torch.Tensor:
        ids = self.tok(format_input(spec, text), return_tensors="pt")["input_ids"]  # (1, T)
        return ids[:, -spec.max_source_tokens:]

    def answer(self, task: str, text: str, max_tokens: int) -> Iterator[str | Usage]:
        """The answer's text in pieces, then its Usage; the lock is held from the first piece to the Usage."""
        spec = self.specs[task]
        with self.lock:
            self.model.set_adapter(task)
            ids = self.encode(spec, text)
            if spec.kind == "classification":
                yield self.classify(task, ids)
                yield Usage(ids.shape[1], 0, "stop")
            else:
                yield from self.generate(ids, max_tokens)

    def classify(self, task: str, ids: torch.Tensor) -> str:
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]  # (V,)
        scores = torch.log_softmax(logits.float(), -1)
        best = max(range(len(self.labels[task])), key=lambda i: float(scores[self.labels[task][i][0]]))
        return self.specs[task].label_words[best]

    def generate(self, ids: torch.Tensor, max_tokens: int) -> Iterator[str | Usage]:
        from transformers import TextIteratorStreamer

        streamer, out = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True), {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    out["ids"] = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                     max_new_tokens=max_tokens, do_sample=False,
                                                     streamer=streamer)  # (1, T + new)
            finally:
                streamer.end()

        thread = threading.Thread(target=run)
        thread.start()
        try:
            yield from (piece for piece in streamer if piece)
        finally:
            thread.join()  # also when the client went away: never two generations at once
        new = out["ids"][0, ids.shape[1]:].tolist()
        eos = bool(new) and new[-1] == self.tok.eos_token_id
        yield Usage(ids.shape[1], len(new) - eos, "stop" if eos else "length")


def reply(cid: str, model: str, text: str, finish: str | None) -> dict:
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


def usage(found: Usage) -> dict:
    return {"prompt_tokens": found.prompt, "completion_tokens": found.new,
            "total_tokens": found.prompt + found.new}


def events(parts: Iterator[str | Usage], model: str, include_usage: bool) -> Iterator[str]:
    """Server-sent events: a chunk per piece, the finish chunk, the usage chunk if asked for, [DONE]."""
    cid = f"cmpl-{uuid.uuid4().hex}"
    for part in parts:
        if isinstance(part, str):
            yield f"data: {json.dumps(reply(cid, model, part, None))}\n\n"
            continue
        yield f"data: {json.dumps(reply(cid, model, '', part.finish))}\n\n"
        if include_usage:
            last = {**reply(cid, model, "", None), "choices": [], "usage": usage(part)}
            yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


def create_app(ref: Reference, base_model: str) -> FastAPI:
    app = FastAPI(title="PEFT one-at-a-time reference")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "base_model": base_model}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "peft"}
                                           for name in ref.specs]}

    @app.post("/v1/completions")
    def completions(body: Completion):
        if body.model not in ref.specs:
            error = {"message": f"model {body.model!r} not served", "type": "invalid_request_error",
                     "param": "model", "code": "model_not_found"}
            return JSONResponse({"error": error}, status_code=404)
        parts = ref.answer(body.model, body.prompt, body.max_tokens)
        if body.stream:
            include = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(events(parts, body.model, include), media_type="text/event-stream")
        found = list(parts)
        text, done = "".join(p for p in found if isinstance(p, str)), found[-1]
        return {**reply(f"cmpl-{uuid.uuid4().hex}", body.model, text, done.finish), "usage": usage(done)}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: bench_rank.load's)")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    base, _ = load(args.tiny)
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(create_app(Reference(base, bench_tasks(base)), base.spec), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
