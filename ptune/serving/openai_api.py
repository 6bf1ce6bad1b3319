"""OpenAI-compatible routes of `ptune serve`, beside its own: GET /v1/models, POST /v1/completions, POST
/v1/chat/completions (`stream: true` too). Every served task is a model, named three ways: `rotten_tomatoes`,
`ptune-rotten_tomatoes@champion` (the served alias) and `ptune-rotten_tomatoes/3` (the served version).

The input is the completion's prompt, or the last user message of a chat (system messages and earlier turns
are not read: the soft prompt is the instruction), put through the task's template as /v1/predict does. A task
with several input fields takes a JSON object of them as that text (`{"question": ..., "passage": ...}`).
Classification answers with its best label, by the same rank classification and in the same mixed batches as
/v1/predict; generation decodes under the request's max_tokens, stop, temperature, top_p and seed
(`ptune.serving.decode`). Errors are OpenAI error objects (`ptune.serving.openai_errors`).
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Future

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from ptune.serving.inputs import field_problems
from ptune.serving.multi_prompt import LoadedTask, Row
from ptune.serving.openai_errors import OpenAIError
from ptune.serving.openai_responses import Chunks, chat_body, completion_body, events
from ptune.serving.openai_schemas import ChatRequest, CompletionRequest, Message, refusals
from ptune.serving.sampling import Sampling


def model_ids(task: LoadedTask, alias: str) -> list[str]:
    return [task.name, f"ptune-{task.name}@{alias}", f"ptune-{task.name}/{task.version}"]


def resolve(service, model: str) -> LoadedTask:
    """The served task a model id names; 404 (listing the served ids) for any other, e.g. an unserved version."""
    tasks, alias = service.model.snapshot(), service.settings.alias
    for task in tasks.values():
        if model in model_ids(task, alias):
            return task
    served = [m for t in sorted(tasks) for m in model_ids(tasks[t], alias)]
    raise OpenAIError(404, f"The model {model!r} does not exist or is not served; served models: {served}",
                      "model", "model_not_found")


def task_input(service, task: LoadedTask, text: str, param: str) -> str | dict[str, str]:
    """A prompt (or message) as the task's input: the text itself, or the JSON object of a multi-field task."""
    limit = service.settings.max_input_chars
    columns = list(task.spec.input_columns)
    if len(columns) <= 1:
        if len(text) > limit:
            raise OpenAIError(400, f"{param}: at most {limit} characters (--max-input-chars)", param, "too_long")
        return text
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        example = json.dumps({c: "..." for c in columns})
        raise OpenAIError(400, f"{param}: task {task.name!r} has the input fields {columns}; send a JSON object of "
                               f"them as the text, e.g. {example}", param, "invalid_fields")
    problems = [p["msg"] for p in field_problems(task.spec, fields, False, [param])]
    problems += [f"{param}.{k}: at most {limit} characters (--max-input-chars)" for k, v in fields.items()
                 if len(v) > limit]
    if problems:
        raise OpenAIError(400, "; ".join(problems), param, "invalid_fields")
    return fields


def last_user(messages: list[Message]) -> tuple[str, str]:
    """(text, its place in the body) of the last user message."""
    found = [i for i, m in enumerate(messages) if m.role == "user"]
    if not found:
        raise OpenAIError(400, "messages: no user message; the last user message is the input", "messages")
    param, content = f"messages.{found[-1]}.content", messages[found[-1]].content
    if isinstance(content, list):
        if any(part.type != "text" for part in content):
            raise OpenAIError(400, f"{param}: only text parts are read", param, "invalid_content")
        content = "".join(part.text or "" for part in content)
    if not content:
        raise OpenAIError(400, f"{param}: the last user message is empty", param, "invalid_content")
    return content, param


def sampling(task: LoadedTask, body: CompletionRequest | ChatRequest, max_tokens: int | None,
             sink=None) -> Sampling | None:
    """Decoding options of a generation task's row (None for classification: its answer is the best label)."""
    if task.spec.kind != "generation":
        return None
    asked = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return Sampling(max_tokens or task.spec.max_target_tokens, tuple(task.spec.stop_strings) + tuple(asked),
                    body.temperature or 0.0, body.top_p or 1.0, body.seed, sink)


def check_options(task: LoadedTask, body: CompletionRequest | ChatRequest, logprobs: bool) -> None:
    refused = refusals(body)
    if refused:
        raise OpenAIError(400, f"{refused[0]}: {refused[1]}", refused[0], "unsupported_value")
    if logprobs and task.spec.kind == "generation":
        raise OpenAIError(400, "logprobs: given for classification tasks (each label's log-likelihood), not for "
                               "generation", "logprobs", "unsupported_value")


def stream(service, task: LoadedTask, text: str | dict, body, max_tokens: int | None, chat: bool) -> StreamingResponse:
    """Submit one row whose decoder hands its text over piece by piece; answer with its event stream."""
    loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

    def sink(piece: str | None) -> None:  # on the model's thread
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    future: Future = service.submit([Row(task.name, text, sampling=sampling(task, body, max_tokens, sink))])
    future.add_done_callback(lambda _: sink(None))
    include = bool(body.stream_options and body.stream_options.include_usage)
    chunks = Chunks(f"ptune-{task.name}/{task.version}", chat)
    return StreamingResponse(events(future, pieces, chunks, include), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def add_openai_routes(app: FastAPI, service) -> None:
    """The OpenAI-compatible routes over `service` (`ptune.serving.app.Service`)."""
    created = int(time.time())

    def card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "ptune"}

    @app.get("/v1/models", tags=["openai"])
    async def models() -> dict:
        """Every served task, by task name, by ptune-<task>@<alias> and by ptune-<task>/<version>."""
        tasks = service.model.snapshot()
        return {"object": "list", "data": [card(m) for t in sorted(tasks)
                                           for m in model_ids(tasks[t], service.settings.alias)]}

    @app.get("/v1/models/{model:path}", tags=["openai"])
    async def model(model: str) -> dict:
        resolve(service, model)
        return card(model)

    @app.post("/v1/completions", tags=["openai"], responses={400: {}, 401: {}, 404: {}, 413: {}, 503: {}})
    async def completions(body: CompletionRequest):
        """The label of a classification task (with logprobs: every label's log-likelihood), or generated text."""
        return await complete(service, body)

    @app.post("/v1/chat/completions", tags=["openai"], responses={400: {}, 401: {}, 404: {}, 413: {}, 503: {}})
    async def chat(body: ChatRequest):
        """The last user message through the task's template: its label, or generated text."""
        return await chat_complete(service, body)


async def complete(service, body: CompletionRequest) -> dict | StreamingResponse:
    task = resolve(service, body.model)
    check_options(task, body, body.logprobs is not None)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) > service.settings.max_inputs or (body.stream and len(prompts) > 1):
        raise OpenAIError(400, f"prompt: at most {1 if body.stream else service.settings.max_inputs} prompts "
                               f"per {'stream' if body.stream else 'request'}", "prompt", "too_many")
    texts = [task_input(service, task, p, "prompt" if len(prompts) == 1 else f"prompt.{i}")
             for i, p in enumerate(prompts)]
    if body.stream:
        return stream(service, task, texts[0], body, body.max_tokens, chat=False)
    preds, _ = await service.predict([Row(task.name, t, sampling=sampling(task, body, body.max_tokens)) for t in texts])
    return completion_body(preds, f"ptune-{task.name}/{preds[0].version}", body.logprobs is not None)


async def chat_complete(service, body: ChatRequest) -> dict | StreamingResponse:
    task = resolve(service, body.model)
    check_options(task, body, body.logprobs)
    text, param = last_user(body.messages)
    value, max_tokens = task_input(service, task, text, param), body.max_completion_tokens or body.max_tokens
    if body.stream:
        return stream(service, task, value, body, max_tokens, chat=True)
    [pred], _ = await service.predict([Row(task.name, value, sampling=sampling(task, body, max_tokens))])
    return chat_body(pred, f"ptune-{task.name}/{pred.version}", body.logprobs)
