"""Request bodies of the OpenAI-compatible routes (pydantic). Fields OpenAI defines and ptune serve cannot honour
are either absent (an unknown field is refused with 400 naming it, never ignored) or declared and checked in
`refusals` (n > 1, best_of, echo, suffix, penalties, logit_bias), which says why each is refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TOKENS = 1024  # max_tokens at most (a served task's own limit is its default)
Stop = Annotated[str, Field(min_length=1, max_length=100)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class Options(BaseModel):
    """What completions and chat completions share."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=300, description="A served task, ptune-<task>@<alias> or "
                                                                 "ptune-<task>/<version> (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="Generation: new tokens at most "
                                                                         "(default: the task's own limit).")
    temperature: float | None = Field(None, ge=0, le=2, description="Generation: 0 or absent is greedy decoding "
                                                                   "(as ptune evaluates); above 0 samples.")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63, description="Sampling: the same seed gives the same text.")
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = Field(
        None, description="Generation: stop strings, added to the task's own.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=256, description="Accepted and not used.")


class CompletionRequest(Options):
    prompt: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="The input: its text, or for a task with several input fields a JSON object of them.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Classification: every label's log-likelihood "
                                                                "in top_logprobs (whatever the number).")
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # earlier turns may carry tool calls etc.; only the last user turn is read
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatRequest(Options):
    messages: list[Message] = Field(min_length=1, description="The last user message is the input.")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def refusals(body: CompletionRequest | ChatRequest) -> tuple[str, str] | None:
    """(field, reason) of the first option that cannot be honoured, or None."""
    data: dict[str, Any] = body.model_dump(exclude_unset=True)
    checks = [
        ("n", data.get("n", 1) == 1, "n must be 1: ptune serve returns one choice per prompt; send the request n "
                                     "times (with different seeds when sampling)"),
        ("best_of", data.get("best_of", 1) == 1, "best_of must be 1: one choice is computed per prompt"),
        ("echo", not data.get("echo"), "echo is not supported"),
        ("suffix", data.get("suffix") is None, "suffix (insertion) is not supported"),
        ("presence_penalty", not data.get("presence_penalty"), "penalties are not supported (only 0)"),
        ("frequency_penalty", not data.get("frequency_penalty"), "penalties are not supported (only 0)"),
        ("logit_bias", not data.get("logit_bias"), "logit_bias is not supported"),
    ]
    return next(((name, why) for name, ok, why in checks if not ok), None)
