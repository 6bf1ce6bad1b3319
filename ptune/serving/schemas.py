"""The HTTP API's request and response bodies (pydantic), with the request limits in the schema itself,
so the OpenAPI document states them and malformed or oversize input is answered 422 before any work."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ptune.serving.settings import ServeSettings

TaskName = Annotated[str, Field(min_length=1, max_length=200, description="A served task (GET /v1/tasks).")]
FieldName = Annotated[str, Field(min_length=1, max_length=100)]
MAX_FIELDS = 16  # input fields of one object input (the largest built-in task has 4)
TEXT_TAG, FIELDS_TAG = "string", "fields"  # which form an input took (left out of the 422's field names)


def _input_kind(value: object) -> str | None:
    return TEXT_TAG if isinstance(value, str) else FIELDS_TAG if isinstance(value, dict) else None


def request_models(settings: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """(PredictRequest, BatchRequest) with this server's limits: inputs per request, characters per input."""
    chars = {"min_length": 1, "max_length": settings.max_input_chars}
    plain = Annotated[str, Field(**chars, description="The task's first input column, or the formatted source if raw.")]
    fields = Annotated[dict[FieldName, Annotated[str, Field(**chars)]],
                       Field(min_length=1, max_length=MAX_FIELDS,
                             description="Every input field of the task (GET /v1/tasks `inputs`) -> its text.")]
    text = Annotated[Annotated[plain, Tag(TEXT_TAG)] | Annotated[fields, Tag(FIELDS_TAG)],
                     Discriminator(_input_kind, custom_error_type="input_type",
                                   custom_error_message="Input should be a string or an object of the task's fields")]
    many = {"min_length": 1, "max_length": settings.max_inputs}

    class PredictRequest(BaseModel):
        """Inputs of one task."""
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"task": "rotten_tomatoes",
                                                                                   "inputs": ["a witty film"]},
                                                                                  {"task": "boolq_offline", "inputs": [
                                                                                      {"question": "is water wet",
                                                                                       "passage": "Water is a liquid."}]}]})
        task: TaskName
        inputs: list[text] = Field(**many)  # type: ignore[valid-type]
        raw: bool = Field(False, description="String inputs are already formatted sources (end with the task's cue).")

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


class Score(BaseModel):
    metric: str = Field(description="The task's primary metric on the test split, e.g. 'test/accuracy'.")
    value: float | None = Field(description="The served version's value (None: not recorded).")
    baseline: float | None = Field(description="The best hand-written prompt's value (chosen on validation).")


class TaskInfo(BaseModel):
    task: str
    alias: str = Field("champion", description="The registry alias served (`ptune serve --alias`).")
    kind: str
    version: str
    inputs: list[str] = Field(default_factory=list, description="The input fields of an object input, in order.")
    score: Score | None = Field(None, description="The served version's recorded test score vs the best baseline.")
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
