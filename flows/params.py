"""Flow parameters as pydantic models: Prefect turns them into the validated form of the UI's "Run" page.

Every field left empty (None) falls back to params.yaml, so the form only carries what a run changes. The
training fields take their types, bounds and choices from `ptune.config.TrainConfig`: one source of truth.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ptune.config import TrainConfig

TASK_NAME = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"  # catalog and user-task names: lowercase, digits, '_', '.', '-'
TaskName = Annotated[str, Field(pattern=TASK_NAME)]


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in an API call fails loudly instead of being ignored

    params_file: str = Field("params.yaml", description="params.yaml to read, relative to the project directory.")
    model: str | None = Field(
        None, description="Base model override: built-in name, local directory or hub id. Empty: params.yaml `model`."
    )


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
    "reparam": "Residual reparameterization of the prompt (folded into a plain prompt at save).",
}


def _train_field(name: str, description: str) -> tuple[Any, Any]:
    """(annotation, Field) of one optional override, typed and bounded as TrainConfig validates it."""
    if name in TrainConfig.CHOICES:
        return Literal[tuple(TrainConfig.CHOICES[name])] | None, Field(None, description=description)
    low, high = TrainConfig.LIMITS[name]
    kind = type(getattr(TrainConfig, name))
    lower = {"gt": kind(low)} if name in TrainConfig.OPEN_LOW else {"ge": kind(low)}
    upper = {"le": kind(high)} if high is not None else {}
    return kind | None, Field(None, description=description, **lower, **upper)


class _Overrides(BaseModel):
    """Overrides of params.yaml `train:` for this run only; empty fields keep the file's values."""

    model_config = ConfigDict(extra="forbid")

    def as_dict(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


TrainOverrides = create_model("TrainOverrides", __base__=_Overrides, __doc__=_Overrides.__doc__, __module__=__name__,
                              **{name: _train_field(name, doc) for name, doc in TRAIN_FIELDS.items()})


class TrainFlowParams(_Form):
    """One task: validate -> train -> evaluate -> baselines -> register -> promote."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name: a built-in task or a user task from params.yaml.")
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="Training overrides for this run.")
    max_eval_examples: int | None = Field(
        None, ge=0, le=1_000_000, description="Cap on evaluated examples per split (0 = all). Empty: params.yaml."
    )
    promote: bool = Field(True, description="Run the promotion step (alias @champion moves only if the candidate wins).")
    refresh_data: bool = Field(False, description="Re-run fetch and prepare even if a cached result matches.")


class NightlyParams(_Form):
    """Every task of params.yaml `run_tasks` (or the subset given), one after another."""

    tasks: list[TaskName] | None = Field(
        None, description="Subset of tasks to run, in order. Empty: params.yaml `run_tasks`.", max_length=100
    )
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="Training overrides for every task.")
    max_eval_examples: int | None = Field(None, ge=0, le=1_000_000, description="Cap on evaluated examples per split.")
    promote: bool = Field(True, description="Run the promotion step for each task.")


class ValidateParams(_Form):
    """Fetch, prepare and validate one task's data; nothing is trained."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name.")
    refresh_data: bool = Field(False, description="Re-run fetch and prepare even if a cached result matches.")


class PromoteParams(_Form):
    """Re-decide the @champion alias for one registered version."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name (registered model `ptune-<task>`).")
    version: int | None = Field(None, ge=1, description="Model version to consider. Empty: the latest version.")


class SweepParams(_Form):
    """Search one task's training settings on its validation split (Optuna); writes sweeps/<task>.yaml."""

    task: str = Field(..., pattern=TASK_NAME, description="Task name (its data must be prepared: run `validate`).")
    budget_minutes: float = Field(30.0, ge=0, le=7 * 24 * 60, description="Stop starting trials after this long.")
    trials: int | None = Field(None, ge=1, le=10_000, description="At most this many trials in this run. Empty: no cap.")
    seed: int = Field(0, ge=0, description="Sampler seed.")
