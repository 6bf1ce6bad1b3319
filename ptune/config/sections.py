"""The sections of params.yaml (`data`, `train`, `evaluate`, `promote`, `timeouts`): one frozen dataclass each, checked in
`__post_init__`, raising one `ConfigError` that lists every bad field with its value and what is allowed.
`ptune.config` puts them together into `Params`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from ptune.config.checks import choice, error, floatify, number, storage_url, unknown
from ptune.errors import ConfigError


class PromptInit(StrEnum):
    """How the soft prompt starts (Lester et al. 2021, section 2.2 / 3.2)."""

    RANDOM = "random"  # uniform in [-0.5, 0.5]
    VOCAB = "vocab"  # embeddings of sampled frequent tokens
    LABELS = "labels"  # mean embedding of each label word, rest from vocab (the paper's best)
    TEXT = "text"  # embeddings of an init sentence, cycled/truncated to n_tokens
    FILE = "file"  # an existing prompt artifact (transfer), same base model and shape


INITS = tuple(mode.value for mode in PromptInit)
OPTIMIZERS = ("adafactor", "adamw")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")  # ptune.model.precision
SCHEDULES = ("constant", "linear", "cosine")  # lr after warmup (transformers.get_scheduler)
REPARAMS = ("none", "residual")  # ptune.model.reparam
SECTIONS = ("data", "train", "evaluate", "promote", "timeouts")


class Section:
    """Shared behaviour: raise the collected problems once; build from a mapping, rejecting unknown keys."""

    section: ClassVar[str] = ""

    def _raise_if(self, problems: list[str]) -> None:
        if problems:
            raise error(problems)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str | None = None):
        """Build the section from a params.yaml mapping; unknown keys and bad values in one ConfigError."""
        where = where or cls.section
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise error([f"{where}: must be a mapping of settings, got {raw!r}"])
        names = [f.name for f in dataclasses.fields(cls)]
        problems = [unknown(f"{where}.{key}", str(key), names) for key in raw if key not in names]
        obj = None
        try:
            obj = cls(**{k: v for k, v in raw.items() if k in names})
        except ConfigError as exc:
            problems += [p.replace(f"{cls.section}.", f"{where}.", 1) for p in getattr(exc, "problems", [str(exc)])]
        if problems:
            raise error(problems)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (for logging to MLflow, prompt.json, checkpoints)."""
        raw = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: v.value if isinstance(v, StrEnum) else v for k, v in raw.items()}


@dataclass(frozen=True)
class DataConfig(Section):
    """How prepared splits are cut from the raw data."""

    section: ClassVar[str] = "data"
    seed: int = 0                  # shuffling seed for the split
    max_train: int = 2000          # cap per split after dedup (0 = no cap)
    max_validation: int = 200      # cap on the validation split (0 = no cap)
    max_test: int = 400            # cap on the test split (0 = no cap)
    min_class_share: float = 0.05  # GX: every label must hold at least this share of a split, in [0, 1]
    max_dropped_share: float = 0.5  # prepare fails when more than this share of raw rows is dropped, in [0, 1]

    def __post_init__(self) -> None:
        floatify(self, "min_class_share")
        floatify(self, "max_dropped_share")
        problems: list[str] = []
        number(problems, "data.seed", self.seed, 0, integer=True)
        for name in ("max_train", "max_validation", "max_test"):
            number(problems, f"data.{name}", getattr(self, name), 0, integer=True)
        number(problems, "data.min_class_share", self.min_class_share, 0, 1)
        number(problems, "data.max_dropped_share", self.max_dropped_share, 0, 1)
        self._raise_if(problems)


@dataclass(frozen=True)
class TrainConfig(Section):
    """Soft-prompt training (Lester et al. 2021 defaults: Adafactor, constant lr 0.3, 20-100 tokens)."""

    section: ClassVar[str] = "train"
    # (low, high) bounds of the numeric fields (high None = unbounded; low excluded for OPEN_LOW) and the
    # choices of the others: validation below and the Prefect form (flows/params.py) are both built from these
    LIMITS: ClassVar[dict[str, tuple[float, float | None]]] = {
        "n_tokens": (1, 1000), "batch_size": (1, None), "max_steps": (1, None), "eval_every": (0, None),
        "patience": (0, None), "checkpoint_every": (0, None), "seed": (0, None), "warmup_steps": (0, None),
        "lr": (0, None), "weight_decay": (0, None), "grad_clip": (0, None), "spike_factor": (0, None),
        "max_token_rms": (0, None), "reparam_bottleneck": (1, 100_000),
    }
    OPEN_LOW: ClassVar[tuple[str, ...]] = ("lr",)
    CHOICES: ClassVar[dict[str, tuple]] = {"init": INITS, "optimizer": OPTIMIZERS, "device": DEVICES,
                                         "precision": PRECISIONS, "schedule": SCHEDULES, "reparam": REPARAMS}
    n_tokens: int = 20             # virtual tokens in the prompt, 1..1000
    init: PromptInit = PromptInit.LABELS  # random | vocab | labels | text | file (see ptune.model.soft_prompt)
    init_text: str | None = None   # sentence whose embeddings start the prompt (init: text)
    init_path: str | None = None   # prompt artifact dir to start from (init: file; or train_prompt(init_path=))
    optimizer: str = "adafactor"   # adafactor | adamw
    lr: float = 0.3                # learning rate, > 0 (0.3 with Adafactor as in the paper)
    adafactor_scale: bool = True   # Adafactor scale_parameter: step relative to the prompt's RMS (docs/training.md)
    weight_decay: float = 1e-5     # decoupled weight decay on the prompt, >= 0
    batch_size: int = 8            # examples per step, >= 1
    max_steps: int = 150           # optimizer steps, >= 1
    eval_every: int = 50           # validate every N steps and at the last step (0 = never validate)
    patience: int = 3              # evaluations without improvement before stopping (0 = never stop early)
    checkpoint_every: int = 50     # write out_dir/checkpoint every N steps (0 = never)
    checkpoint_uri: str | None = None  # None: <run>/checkpoint; a dir or fsspec URL: <uri>/<task>/...
    seed: int = 0                  # prompt init, batch order (a function of (seed, epoch))
    grad_clip: float = 1.0         # max global grad norm of the prompt (0 = no clipping)
    warmup_steps: int = 0          # linear lr warmup steps (0 = none, the paper's default)
    schedule: str = "constant"     # lr after warmup: constant (the paper's) | linear | cosine (decay to 0 at max_steps)
    spike_factor: float = 0.0      # skip a step whose loss > this x median of the last 20 losses (0 = off; else > 1)
    max_token_rms: float = 0.0     # after each update, scale raw prompt tokens back to <= this x the vocabulary's RMS (0 = off)
    reparam: str = "none"          # none | residual: prompt through a residual bottleneck MLP, folded at save
    reparam_bottleneck: int = 400  # hidden width of that MLP (reparam: residual)
    device: str = "auto"           # auto (the base model's device) | cpu | cuda
    precision: str = "auto"        # auto (bf16 autocast where the hardware has bf16 units) | fp32 | bf16
    gradient_checkpointing: bool = False  # keep each decoder layer's input only, recompute the layer in the backward
    threads: int | None = None     # torch.set_num_threads (None = leave as the base-model loader set it)

    def __post_init__(self) -> None:
        floatify(self, "lr", "weight_decay", "grad_clip", "spike_factor", "max_token_rms")
        problems: list[str] = []
        for name, (low, high) in self.LIMITS.items():
            integer = isinstance(getattr(TrainConfig, name), int)
            number(problems, f"train.{name}", getattr(self, name), low, high, integer=integer,
                    lo_open=name in self.OPEN_LOW)
        for name, allowed in self.CHOICES.items():
            choice(problems, f"train.{name}", getattr(self, name), allowed)
        if self.init in INITS and not isinstance(self.init, PromptInit):
            object.__setattr__(self, "init", PromptInit(self.init))
        for name in ("adafactor_scale", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"train.{name} = {getattr(self, name)!r}: allowed values: true, false")
        if isinstance(self.spike_factor, float) and 0 < self.spike_factor <= 1:
            problems.append(f"train.spike_factor = {self.spike_factor!r}: must be 0 (off) or > 1")
        if self.threads is not None:
            number(problems, "train.threads", self.threads, 1, integer=True)
        if self.checkpoint_uri is not None:
            storage_url(problems, "train.checkpoint_uri", self.checkpoint_uri)
        if self.init == "text" and not (isinstance(self.init_text, str) and self.init_text.strip()):
            problems.append(f"train.init_text = {self.init_text!r}: init 'text' needs a non-empty init_text")
        self._raise_if(problems)


@dataclass(frozen=True)
class EvalConfig(Section):
    """Evaluation of tuned prompts and hard-prompt baselines."""

    section: ClassVar[str] = "evaluate"
    batch_size: int = 16           # examples per forward pass, >= 1
    max_examples: int = 400        # per split (0 = all)
    k_shot: int | None = None      # examples in the k-shot baseline, >= 0 (None = the task spec's own k_shot)
    precision: str = "auto"        # auto (bf16 autocast where the hardware has bf16 units) | fp32 | bf16
    kshot_draws: int = 3           # k-shot baselines, one per demonstration draw (seeds data.seed, +1, ...), >= 1
    calibrate: bool = True         # add contextually calibrated twins of the rank-mode baselines (Zhao et al. 2021)
    degenerate_share: float | None = 0.95  # most frequent answer on >= this share of rows: degenerate (None: no check)
    bootstrap_resamples: int = 1000  # paired bootstrap resamples for the 95% intervals, >= 100
    # task -> the baselines' hand-written instruction, replacing the task's own (TaskSpec.instruction); here, not
    # under `tasks`, because it is an evaluation setting: dvc.yaml's train stage does not depend on `evaluate`
    instructions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.degenerate_share is not None:
            floatify(self, "degenerate_share")
        problems: list[str] = []
        choice(problems, "evaluate.precision", self.precision, PRECISIONS)
        number(problems, "evaluate.batch_size", self.batch_size, 1, integer=True)
        number(problems, "evaluate.max_examples", self.max_examples, 0, integer=True)
        number(problems, "evaluate.kshot_draws", self.kshot_draws, 1, 20, integer=True)
        if self.degenerate_share is not None:
            number(problems, "evaluate.degenerate_share", self.degenerate_share, 0, 1, lo_open=True)
        number(problems, "evaluate.bootstrap_resamples", self.bootstrap_resamples, 100, 100_000, integer=True)
        if not isinstance(self.calibrate, bool):
            problems.append(f"evaluate.calibrate = {self.calibrate!r}: allowed values: true, false")
        if self.k_shot is not None:
            number(problems, "evaluate.k_shot", self.k_shot, 0, integer=True)
        if not isinstance(self.instructions, Mapping):
            problems.append(f"evaluate.instructions = {self.instructions!r}: must map task names to instructions")
        else:
            problems += [f"evaluate.instructions.{task} = {text!r}: must be a string" for task, text in
                         self.instructions.items() if not isinstance(text, str)]
        self._raise_if(problems)


@dataclass(frozen=True)
class PromoteConfig(Section):
    """When the registry alias @champion moves (see ARCHITECTURE.md, promotion rule)."""

    section: ClassVar[str] = "promote"
    min_gain: float = 0.0          # candidate must beat the best hard-prompt baseline by this much
    require_significant: bool = True  # the 95% interval's LOWER bound of (candidate - best baseline) must exceed min_gain
    min_examples: int = 100        # never promote on fewer test examples than this, >= 0

    def __post_init__(self) -> None:
        floatify(self, "min_gain")
        problems: list[str] = []
        number(problems, "promote.min_gain", self.min_gain)
        number(problems, "promote.min_examples", self.min_examples, 0, integer=True)
        if not isinstance(self.require_significant, bool):
            problems.append(f"promote.require_significant = {self.require_significant!r}: allowed values: true, false")
        self._raise_if(problems)


@dataclass(frozen=True)
class TimeoutConfig(Section):
    """Time budgets of the pipeline steps (Prefect `timeout_seconds`), derived from each step's work:
    train = max_steps x step_seconds x batch_size/8 + its validations; evaluation = examples x example_seconds;
    each x margin, never under min_seconds. Defaults: SmolLM2-135M on 2 CPU cores (docs/prefect.md)."""

    section: ClassVar[str] = "timeouts"
    step_seconds: float = 3.0      # one training step at batch size 8 (measured ~1.0-1.3 s; scaled by batch_size/8)
    example_seconds: float = 1.0   # one evaluated example (rank ~0.04 s; xsum generation ~1.8 s)
    margin: float = 3.0            # budget = estimate x margin (slow machines, first-time model conversion)
    min_seconds: float = 120.0     # floor of every budget
    io_seconds: float = 600.0      # fetch, prepare, validate, report, register (file and registry I/O)
    load_seconds: float = 900.0    # load the base model (first load converts a GGUF: ~15 s on 2 cores)

    def __post_init__(self) -> None:
        floatify(self, *self.FIELDS)
        problems: list[str] = []
        for name in self.FIELDS:
            number(problems, f"timeouts.{name}", getattr(self, name), 0, lo_open=True)
        self._raise_if(problems)

    FIELDS: ClassVar[tuple[str, ...]] = ("step_seconds", "example_seconds", "margin", "min_seconds", "io_seconds",
                                         "load_seconds")
