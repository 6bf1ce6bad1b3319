"""Flow parameters as pydantic models: Prefect turns them into the validated form of the UI's "Run" page.

Every field left empty (None) falls back to params.yaml, so the form only carries what a run changes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TASK_NAME = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"  # catalog and user-task names: lowercase, digits, '_', '.', '-'
TaskName = Annotated[str, Field(pattern=TASK_NAME)]


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in an API call fails loudly instead of being ignored

    params_file: str = Field("params.yaml", description="params.yaml to read, relative to the project directory.")
    model: str | None = Field(
        None, description="Base model override: built-in name, local directory or hub id. Empty: params.yaml `model`."
    )


class TrainOverrides(BaseModel):
    """Overrides of params.yaml `train:` for this run only; empty fields keep the file's values."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(None, ge=1, le=100_000, description="Training steps (upper bound; early stopping may end sooner).")
    n_tokens: int | None = Field(None, ge=1, le=500, description="Soft-prompt length in virtual tokens.")
    lr: float | None = Field(None, gt=0.0, le=10.0, description="Learning rate (constant schedule).")
    init: Literal["random", "vocab", "labels", "text", "file"] | None = Field(
        None, description="Soft-prompt initialisation."
    )
    optimizer: Literal["adafactor", "adamw"] | None = Field(None, description="Optimizer.")
    batch_size: int | None = Field(None, ge=1, le=1024, description="Training batch size.")
    eval_every: int | None = Field(None, ge=1, le=100_000, description="Validate every N steps.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Random seed.")

    def as_dict(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


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
