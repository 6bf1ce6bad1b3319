"""The HTTP API's request and response bodies (pydantic), with the request limits in the schema itself,
so the OpenAPI document states them and malformed or oversize input is answered 422 before any work."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ptune.serving.settings import ServeSettings

TaskName = Annotated[str, Field(min_length=1, max_length=200, description="A served task (GET /v1/tasks).")]


def request_models(settings: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """(PredictRequest, BatchRequest) with this server's limits: inputs per request, characters per input."""
    text = Annotated[str, Field(min_length=1, max_length=settings.max_input_chars,
                                description="The task's first input column, or the formatted source if raw.")]
    many = {"min_length": 1, "max_length": settings.max_inputs}

    class PredictRequest(BaseModel):
        """Inputs of one task."""
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"task": "rotten_tomatoes",
                                                                                   "inputs": ["a witty film"]}]})
        task: TaskName
        inputs: list[text] = Field(**many)  # type: ignore[valid-type]
        raw: bool = Field(False, description="Inputs are already formatted sources (end with the task's cue).")

    class BatchItem(BaseModel):
        model_config = ConfigDict(extra="forbid")
        task: TaskName
        text: text  # type: ignore[valid-type]
        raw: bool = False

    class BatchRequest(BaseModel):
        """Inputs of any tasks, answered in one mixed batch."""
        model_config = ConfigDict(extra="forbid")
        inputs: list[BatchItem] = Field(**many)

    return PredictRequest, BatchRequest


class PredictionOut(BaseModel):
    task: str
    label: str = Field(description="Best label word (classification) or generated text (generation).")
    scores: dict[str, float] = Field(description="Label word -> summed log-likelihood (an ensemble: its members' mean label "
                                                    "log-probability); {} for generation.")
    version: str = Field(description="Registry version of the task's prompt that answered.")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    latency_ms: float


class TaskInfo(BaseModel):
    task: str
    kind: str
    version: str
    labels: list[str]
    prompt_tokens: int
    ensemble: int = Field(1, description="Prompts behind the version: 1, or K for an ensemble (`--ensemble K`).")
    method: str = Field("single", description="'single', or how the ensemble combines its members: mean | vote.")
    metrics: dict[str, float]
    base_model: str
    base_fingerprint: str
    alias_version: str | None = Field(None, description="The version the served alias points at (last poll).")
    status: str = Field("ok", description="'ok', or 'degraded' while the served version is not the aliased one.")
    problem: str | None = Field(None, description="Why the aliased version is not served (degraded only).")


class TaskVersions(BaseModel):
    served: str
    aliased: str | None
    status: str
    problem: str | None = None


class Health(BaseModel):
    status: str = Field(description="'ok', or 'degraded' while a task serves another version than its alias.")
    tasks: int
    base_model: str
    precision: str = "fp32"  # what the model computes in: "fp32" or "bf16" (evaluate.precision)
    versions: dict[str, TaskVersions] = Field(default_factory=dict,
                                              description="Per task: version served, version the alias points at.")
