"""Response bodies of the OpenAI-compatible routes: completions, chat completions, and their server-sent event
streams (`data: {chunk}` lines ending with `data: [DONE]`), in the shapes OpenAI's clients parse.

A classification answer is its best label; with logprobs asked for, `top_logprobs` holds every label's
log-likelihood (the scores /v1/predict returns) and `token_logprobs` the chosen label's. A stream sends each
piece of text as the decoder settles it (`ptune.serving.decode`); whatever the final text holds beyond the
pieces sent (a classification label, all at once) follows, so the pieces always add up to the answer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from ptune.serving.multi_prompt import Prediction
from ptune.serving.openai_errors import error_object


def usage(preds: list[Prediction]) -> dict:
    prompt, new = sum(p.tokens[0] for p in preds), sum(p.tokens[1] for p in preds)
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: -kv[1])


def completion_logprobs(pred: Prediction) -> dict:
    """Completions' logprobs of a classification answer: one "token", the label; every label in top_logprobs."""
    return {"tokens": [pred.label], "token_logprobs": [pred.scores[pred.label]], "text_offset": [0],
            "top_logprobs": [dict(ranked(pred.scores))]}


def chat_logprobs(pred: Prediction) -> dict:
    def entry(label: str, value: float) -> dict:
        return {"token": label, "logprob": value, "bytes": list(label.encode())}

    top = [entry(label, value) for label, value in ranked(pred.scores)]
    return {"content": [{**entry(pred.label, pred.scores[pred.label]), "top_logprobs": top}], "refusal": None}


def completion_body(preds: list[Prediction], model: str, logprobs: bool) -> dict:
    choices = [{"index": i, "text": p.label, "finish_reason": p.finish,
                "logprobs": completion_logprobs(p) if logprobs and p.scores else None} for i, p in enumerate(preds)]
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage(preds)}


def chat_body(pred: Prediction, model: str, logprobs: bool) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": pred.label}, "finish_reason": pred.finish,
              "logprobs": chat_logprobs(pred) if logprobs and pred.scores else None}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": usage([pred])}


@dataclass
class Chunks:
    """The chunks of one streamed answer (chat: `chat.completion.chunk` with deltas; else `text_completion`)."""

    model: str
    chat: bool
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, text: str | None, finish: str | None, role: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"id": f"chatcmpl-{self.id}", "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {"id": f"cmpl-{self.id}", "object": "text_completion", "created": self.created,
                "model": self.model, "choices": [choice]}

    def usage(self, pred: Prediction) -> dict:
        return {**self.chunk(None, None), "choices": [], "usage": usage([pred])}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def events(future: Future, pieces: asyncio.Queue, chunks: Chunks, include_usage: bool) -> AsyncIterator[str]:
    """The stream of one answer: pieces as the model hands them over (None once it is done), the rest of the
    final text, the chunk with finish_reason, usage if asked for, [DONE]. A failure mid-stream is an error event."""
    if chunks.chat:
        yield sse(chunks.chunk(None, None, role=True))
    sent = ""
    while (piece := await pieces.get()) is not None:
        sent += piece
        yield sse(chunks.chunk(piece, None))
    try:
        pred = future.result()[0]
    except Exception as exc:  # noqa: BLE001 - the status line is gone; the client reads an error event
        yield sse(error_object(500, f"generation failed: {exc}", code="server_error"))
        return
    if pred.label.startswith(sent) and len(pred.label) > len(sent):
        yield sse(chunks.chunk(pred.label[len(sent):], None))
    yield sse(chunks.chunk(None, pred.finish))
    if include_usage:
        yield sse(chunks.usage(pred))
    yield sse("[DONE]")
