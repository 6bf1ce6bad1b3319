"""Flow parameters as pydantic models: Prefect turns them into the validated form of the UI's "Run" page.

Every field left empty (None) falls back to the task's own value (params.yaml with its task_overrides), so the
form only carries what a run changes: no field is pre-filled, since a pre-filled value would be submitted. The
training fields take their types, bounds and choices from `ptune.config.TrainConfig`: one source of truth.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from ptune.config import TrainConfig, project_params

TASK_NAME = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"  # catalog and user-task names: lowercase, digits, '_', '.', '-'
TaskName = Annotated[str, Field(pattern=TASK_NAME)]


def _params_value(section: str | None, name: str) -> Any:
    """The value params.yaml (in $PTUNE_PROJECT_DIR) gives a setting now, or None if the file cannot be read."""
    try:
        params = project_params()
        value = getattr(getattr(params, section) if section else params, name)
    except Exception:  # noqa: BLE001 - a form without defaults beats no form
        return None
    return getattr(value, "value", value)


def from_params(section: str | None, name: str) -> Any:
    """json_schema_extra: the field stays empty (no JSON-schema default, so the UI pre-fills nothing) and its
    description says what empty means. A pre-filled global value would be submitted by the form and override the
    task's own recipe (task_overrides), so only the description names params.yaml's global value, as read when
    the schema is made (`prefect deploy`)."""
    def extra(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        value = _params_value(section, name)
        shown = f"; params.yaml's global value: {value}" if value is not None else ""
        schema["description"] = (f"{schema.get('description', '')} Empty = the task's own value "
                                 f"(its task_overrides, else params.yaml{shown}).").strip()
    return extra


def task_choices(schema: dict[str, Any]) -> None:
    """json_schema_extra of `task`: a dropdown of the catalog's tasks plus params.yaml's user tasks (as known
    when the schema is made); the description names those that need internet (Hugging Face hub data, refused
    by the flow while HF_HUB_OFFLINE is set). Python callers may pass any well-formed name; the server
    enforces the list."""
    try:
        from ptune.data.catalog import all_tasks

        tasks = all_tasks(project_params())
    except Exception:  # noqa: BLE001 - unreadable params.yaml: a free-text field with its pattern
        return
    schema["enum"] = sorted(tasks)
    hub = sorted(name for name, spec in tasks.items() if not spec.source.offline)
    if hub:
        schema["description"] = (f"{schema.get('description', '')} NEEDS INTERNET (Hugging Face hub data, "
                                 f"refused while HF_HUB_OFFLINE is set): {', '.join(hub)}.").strip()


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in an API call fails loudly instead of being ignored

    params_file: str = Field("params.yaml", description="params.yaml to read, relative to the project directory.")
    model: str | None = Field(
        None, description="Base model override: built-in name, local directory or hub id.",
        json_schema_extra=from_params(None, "model"))


# The form's training fields: description here; type, bounds and choices from ptune.config.TrainConfig.
TRAIN_FIELDS = {
    "max_steps": "Training steps (upper bound; early stopping may end sooner).",
    "n_tokens": "Soft-prompt length in virtual tokens.",
    "lr": "Learning rate.",
    "init": "Soft-prompt initialisation.",
    "optimizer": "Optimizer.",
    "batch_size": "Training batch size.",
    "eval_every": "Validate every N steps (0 = never).",
    "seed": "Random seed.",
    "schedule": "Learning-rate schedule after warmup (constant, linear or cosine decay).",
    "warmup_steps": "Linear learning-rate warmup steps (0 = none).",
    "spike_factor": "Skip a step whose loss exceeds this multiple of the recent median (0 = off).",
    "max_token_rms": "Cap each prompt token's RMS at this multiple of the vocabulary's after every update (0 = off).",
    "reparam": "Residual reparameterization of the prompt (folded into a plain prompt at save).",
}


def _train_field(name: str, description: str) -> tuple[Any, Any]:
    """(annotation, Field) of one optional override, typed and bounded as TrainConfig validates it."""
    if name in TrainConfig.CHOICES:
        return Literal[tuple(TrainConfig.CHOICES[name])] | None, Field(
            None, description=description, json_schema_extra=from_params("train", name))
    low, high = TrainConfig.LIMITS[name]
    kind = type(getattr(TrainConfig, name))
    lower = {"gt": kind(low)} if name in TrainConfig.OPEN_LOW else {"ge": kind(low)}
    upper = {"le": kind(high)} if high is not None else {}
    return kind | None, Field(None, description=description, json_schema_extra=from_params("train", name),
                              **lower, **upper)


class _Overrides(BaseModel):
    """Overrides of params.yaml `train:` for this run only; empty fields keep the file's values."""

    model_config = ConfigDict(extra="forbid")

    def as_dict(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


TrainOverrides = create_model("TrainOverrides", __base__=_Overrides, __doc__=_Overrides.__doc__, __module__=__name__,
                              **{name: _train_field(name, doc) for name, doc in TRAIN_FIELDS.items()})


class TrainFlowParams(_Form):
    """One task: validate -> train -> evaluate -> baselines -> register -> promote."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name: a built-in task or a user task from params.yaml.",
                      json_schema_extra=task_choices)
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="Training overrides for this run.")
    max_eval_examples: int | None = Field(
        None, ge=0, le=1_000_000, description="Cap on evaluated examples per split (0 = all).",
        json_schema_extra=from_params("evaluate", "max_examples"))
    promote: bool = Field(True, description="Run the promotion step (alias @champion moves only if the candidate wins).")
    # A launch setting, not a recipe value: 1 is today's single process, and N ranks train the same prompt.
    nproc: int = Field(1, ge=1, le=64, description="Training processes on the worker, data-parallel (one GPU "
                       "each with NCCL, gloo on CPU); train.batch_size stays the global batch, so the prompt "
                       "is the one a single process trains.")
    refresh_data: bool = Field(False, description="Re-run fetch and prepare even if a cached result matches.")
    keep_unchanged_champion: bool = Field(
        False, description="Stop after the data check when @champion was trained on this very data version "
                           "(\"data unchanged, champion kept\"). The nightly sets it unless retrain_unchanged.")


class NightlyParams(_Form):
    """Every task of params.yaml `run_tasks` (or the subset given), one after another."""

    tasks: list[TaskName] | None = Field(
        None, description="Subset of tasks to run, in order. Empty: params.yaml `run_tasks`.", max_length=100
    )
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="Training overrides for every task.")
    max_eval_examples: int | None = Field(None, ge=0, le=1_000_000, description="Cap on evaluated examples per split.")
    promote: bool = Field(True, description="Run the promotion step for each task.")
    retrain_unchanged: bool = Field(
        False, description="Retrain a task even when @champion was trained on the same data version.")
    fan_out: bool = Field(False, description="Run each task as its own `train-task/train` deployment run, so "
                          "every worker of the pool (on any machine) can take one.")


class ValidateParams(_Form):
    """Fetch, prepare and validate one task's data; nothing is trained."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name.", json_schema_extra=task_choices)
    refresh_data: bool = Field(False, description="Re-run fetch and prepare even if a cached result matches.")
    emit_events: bool = Field(True, description="Emit `ptune.data.changed` when the data version is new "
                              "(the `train` deployment's trigger then retrains the task).")


class PromoteParams(_Form):
    """Re-decide the @champion alias for one registered version."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name (registered model `ptune-<task>`).",
                      json_schema_extra=task_choices)
    version: int | None = Field(None, ge=1, description="Model version to consider. Empty: the latest version.")


class SweepParams(_Form):
    """Search one task's training settings on its validation split (Optuna); writes sweeps/<task>.yaml."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name (its data must be prepared: run `validate`).")
    budget_minutes: float = Field(30.0, ge=0, le=7 * 24 * 60, description="Stop starting trials after this long.")
    trials: int | None = Field(None, ge=1, le=10_000, description="At most this many trials in this run. Empty: no cap.")
    seed: int = Field(0, ge=0, description="Sampler seed.")


class ReferenceParams(_Form):
    """Train a reference model (LoRA, full or multi-task fine-tuning) on one task: the ceiling its prompt is
    measured against. Never registered; writes outputs/<task>/reference/<method>.json."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name (its data must be prepared: run `validate`).",
                      json_schema_extra=task_choices)
    method: Literal["lora", "full", "multitask"] = Field(
        ..., description="lora: LoRA r 8 on the attention q/v projections; full: every weight; multitask: every "
                            "weight, on a mixture of this task and `mix`.")
    # No params.yaml default shown here: an empty field takes the task's own budget (task_overrides included),
    # the one its prompt was trained with; a pre-filled global value would silently replace it.
    steps: int | None = Field(None, ge=1, description="Steps at most. Empty: the task's train.max_steps, as its "
                                                      "prompt was trained.")
    batch_size: int | None = Field(None, ge=1, description="Rows per step. Empty: the task's train.batch_size.")
    lr: float | None = Field(None, gt=0, le=10, description="AdamW learning rate. Empty: 1e-3 for lora, "
                                                           "1e-5 for full and multitask.")
    mix: list[TaskName] | None = Field(
        None, max_length=100, description="multitask only: tasks mixed with this one (each must be prepared). "
                                          "Empty: params.yaml `run_tasks`.")

    @model_validator(mode="after")
    def _mix_only_for_multitask(self) -> ReferenceParams:
        if self.mix and self.method != "multitask":
            raise ValueError(f"mix {self.mix} is for method 'multitask', not {self.method!r}; empty it or pick "
                             "multitask")
        return self
