"""Validated configuration mirroring params.yaml: `Params` over the sections of ptune.config.sections.

Every section checks itself in `__post_init__` and raises one `ConfigError` listing every bad field with
its value and what is allowed; `load_params` gathers the problems of all sections (unknown keys
included, with close-match suggestions) into a single error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ptune.config.checks import error, unknown
from ptune.config.sections import (
    SECTIONS,
    DataConfig,
    EvalConfig,
    PromoteConfig,
    Section,
    TimeoutConfig,
    TrainConfig,
)
from ptune.errors import ConfigError
from ptune.paths import project_dir

_SECTION_TYPES: dict[str, type[Section]] = {
    "data": DataConfig, "train": TrainConfig, "evaluate": EvalConfig, "promote": PromoteConfig,
    "timeouts": TimeoutConfig,
}


@dataclass(frozen=True)
class Params:
    """The whole params.yaml. `for_task(name)` gives the settings one task runs with."""

    model: str = "smollm2-135m"                  # built-in name, local directory or hub id
    model_dtype: str = "auto"                    # auto | fp32 | bf16: dtype the frozen weights are held in (docs/training.md)
    model_quantize: str = "none"                 # none | int8 | nf4: linear weights held quantized (bitsandbytes)
    model_device_map: str | Mapping[str, Any] = "none"  # none | auto | balanced | ... | {module: device} (accelerate)
    run_tasks: tuple[str, ...] = ()              # tasks the nightly flow and dvc repro run, in order
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    task_overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    tasks: Mapping[str, Any] = field(default_factory=dict)  # user tasks, parsed by ptune.data.catalog
    base_dir: Path | None = field(default=None, compare=False)  # where relative task paths start (params file dir)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.model, str) or not self.model.strip():
            problems.append(f"model = {self.model!r}: must be a non-empty model name, directory or hub id")
        if self.model_dtype not in MODEL_DTYPES:
            problems.append(f"model_dtype = {self.model_dtype!r}: allowed values are {', '.join(MODEL_DTYPES)}")
        elif self.model_dtype == "bf16":
            problems += [f"{sec}.precision = 'fp32' with model_dtype = 'bf16': weights held in bf16 compute in "
                         f"bf16; set {sec}.precision to auto or bf16, or model_dtype to fp32"
                         for sec in ("train", "evaluate") if getattr(self, sec).precision == "fp32"]
        problems += _placement_problems(self.model_quantize, self.model_device_map)
        if isinstance(self.run_tasks, str) or not all(isinstance(t, str) for t in self.run_tasks):
            problems.append(f"run_tasks = {self.run_tasks!r}: must be a list of task names")
        else:
            object.__setattr__(self, "run_tasks", tuple(self.run_tasks))
        if not isinstance(self.tasks, Mapping):
            problems.append(f"tasks = {self.tasks!r}: must be a mapping (name -> entry, or {{file: path}})")
        problems += _override_problems(self)
        if problems:
            raise error(problems)

    def for_task(self, name: str) -> Params:
        """The settings task `name` runs with: `task_overrides[name]` merged into each section, and
        `task_overrides` emptied, so the overrides are applied exactly once (a second call is a no-op)."""
        overrides = self.task_overrides.get(name) or {}
        changes = {sec: _SECTION_TYPES[sec].from_dict({**getattr(self, sec).to_dict(), **dict(overrides[sec])},
                                                      f"task_overrides.{name}.{sec}")
                   for sec in overrides}
        return dataclasses.replace(self, **changes, task_overrides={})

    def with_overrides(self, where: str, *, model: str | None = None, **sections: Mapping[str, Any]) -> Params:
        """These params with some settings replaced (e.g. a Prefect form, `--steps`), each section validated;
        `where` names the source of the values in error messages ("form", "--steps")."""
        changes: dict[str, Any] = {"model": model} if model else {}
        for sec, values in sections.items():
            if values:
                changes[sec] = _SECTION_TYPES[sec].from_dict({**getattr(self, sec).to_dict(), **dict(values)},
                                                             f"{where}.{sec}")
        return dataclasses.replace(self, **changes)


def _override_problems(params: Params) -> list[str]:
    """Every problem in task_overrides: bad shape, unknown sections, unknown keys, bad values."""
    if not isinstance(params.task_overrides, Mapping):
        return [f"task_overrides = {params.task_overrides!r}: must be a mapping task -> sections"]
    problems = []
    for task, sections in params.task_overrides.items():
        if not isinstance(sections, Mapping):
            problems.append(f"task_overrides.{task} = {sections!r}: must be a mapping section -> settings")
            continue
        for sec, values in sections.items():
            where = f"task_overrides.{task}.{sec}"
            if sec not in _SECTION_TYPES:
                problems.append(unknown(where, str(sec), SECTIONS))
                continue
            if not isinstance(values, Mapping):
                problems.append(f"{where} = {values!r}: must be a mapping of settings")
                continue
            try:
                _SECTION_TYPES[sec].from_dict({**getattr(params, sec).to_dict(), **values}, where)
            except ConfigError as exc:
                problems += getattr(exc, "problems", [str(exc)])
    return problems


def _placement_problems(quantize: Any, device_map: Any) -> list[str]:
    """`model_quantize` and `model_device_map` values (whether they can run here is checked at load time)."""
    problems = []
    if quantize not in MODEL_QUANTIZE:
        problems.append(f"model_quantize = {quantize!r}: allowed values are {', '.join(MODEL_QUANTIZE)}")
    if isinstance(device_map, Mapping):
        bad = {k: v for k, v in device_map.items() if not isinstance(k, str) or not isinstance(v, str | int)}
        if not device_map or bad:
            problems.append(f"model_device_map = {dict(device_map)!r}: a mapping must name modules (\"\" for all) "
                            f"and their devices (cpu, cuda:N, N, disk)")
    elif device_map not in MODEL_DEVICE_MAPS:
        problems.append(f"model_device_map = {device_map!r}: allowed values are {', '.join(MODEL_DEVICE_MAPS)} "
                        f"or a mapping {{module: device}}")
    return problems


MODEL_QUANTIZE = ("none", "int8", "nf4")  # ptune.model.quantize.QUANTIZE_MODES
MODEL_DEVICE_MAPS = ("none", "auto", "balanced", "balanced_low_0", "sequential")  # ptune.model.quantize.DEVICE_MAPS
MODEL_DTYPES = ("auto", "fp32", "bf16")
_TORCH_DTYPES = {"auto": "float32", "fp32": "float32", "bf16": "bfloat16"}  # auto loads fp32 (ptune.pipeline.stages.load_base)


def torch_dtype_name(model_dtype: str) -> str:
    """params.yaml `model_dtype` -> the torch dtype name `load_base_model` takes (ConfigError for another value)."""
    if model_dtype not in _TORCH_DTYPES:
        raise ConfigError(f"model_dtype {model_dtype!r}: expected one of {', '.join(MODEL_DTYPES)}")
    return _TORCH_DTYPES[model_dtype]


_TOP_KEYS = ("model", "model_dtype", "model_quantize", "model_device_map", "run_tasks", "data", "train", "evaluate", "promote", "timeouts", "task_overrides", "tasks")


def params_from_dict(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Build `Params` from a parsed params.yaml; every problem of every section in one ConfigError."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    problems = [unknown(str(key), str(key), _TOP_KEYS) for key in raw if key not in _TOP_KEYS]
    sections: dict[str, Any] = {}
    for sec, cls in _SECTION_TYPES.items():
        try:
            sections[sec] = cls.from_dict(raw.get(sec))
        except ConfigError as exc:
            problems += getattr(exc, "problems", [str(exc)])
    top = {k: raw[k] for k in ("model", "model_dtype", "model_quantize", "model_device_map", "run_tasks", "task_overrides",
                               "tasks") if raw.get(k) is not None}
    try:  # sections that failed fall back to defaults here, so top-level problems are listed too
        params = Params(**top, **sections)
    except ConfigError as exc:
        problems += getattr(exc, "problems", [str(exc)])
    if problems:
        raise error(problems, source)
    return params


DEFAULT_PARAMS = "params.yaml"


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml (all problems reported at once, prefixed by the file name)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    raw = include_override_files(raw, path.resolve().parent, str(path))
    return dataclasses.replace(params_from_dict(raw, str(path)), base_dir=path.resolve().parent)


INCLUDE_KEY = "file"  # task_overrides.<task>.file: a YAML file of sections (e.g. sweeps/<task>.yaml)
_INCLUDE_INFO = "sweep"  # a key such files may carry for the reader (what wrote it, when); not a setting


def include_override_files(raw: Any, base_dir: Path, source: str) -> Any:
    """`task_overrides: {T: {file: sweeps/T.yaml, train: {...}}}` -> T's sections from the file (relative to
    `base_dir`), with the inline sections' keys on top. One ConfigError lists every unreadable file."""
    overrides = raw.get("task_overrides") if isinstance(raw, Mapping) else None
    if not isinstance(overrides, Mapping):
        return raw
    merged, problems = {}, []
    for task, sections in overrides.items():
        if not (isinstance(sections, Mapping) and INCLUDE_KEY in sections):
            merged[task] = sections
            continue
        where = f"task_overrides.{task}.{INCLUDE_KEY}"
        included = _override_file(base_dir, sections[INCLUDE_KEY], where, problems)
        inline = {k: v for k, v in sections.items() if k != INCLUDE_KEY}
        merged[task] = {sec: {**included.get(sec, {}), **inline[sec]} if isinstance(inline.get(sec), Mapping)
                        else inline.get(sec, included.get(sec)) for sec in {**included, **inline}}
    if problems:
        raise error(problems, source)
    return {**raw, "task_overrides": merged}


def _override_file(base_dir: Path, name: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """The sections of one included file ({} with a problem recorded when it cannot be used)."""
    full = base_dir / str(name)
    if not isinstance(name, str) or not full.is_file():
        problems.append(f"{where} = {name!r}: file not found (looked for {full})")
        return {}
    try:
        doc = yaml.safe_load(full.read_text()) or {}
    except yaml.YAMLError as exc:
        problems.append(f"{where} = {name!r}: not valid YAML: {exc}")
        return {}
    if not isinstance(doc, Mapping):
        problems.append(f"{where} = {name!r}: expected a mapping of sections, got {type(doc).__name__}")
        return {}
    problems += [unknown(f"{full}: {key}", str(key), SECTIONS) for key in doc
                 if key not in SECTIONS and key != _INCLUDE_INFO]
    problems += [f"{full}: {k} = {v!r}: must be a mapping of settings" for k, v in doc.items()
                 if k in SECTIONS and not isinstance(v, Mapping)]
    return {k: dict(v) for k, v in doc.items() if k in SECTIONS and isinstance(v, Mapping)}


def project_params(path: str | Path | None = None, *, must_exist: bool = False) -> Params:
    """The project's params, relative paths from the project directory; the one place a params file is found
    implicitly. The default `params.yaml` is optional (missing: defaults) unless `must_exist` (the user named
    it, e.g. `--params params.yaml`); any other named file must exist."""
    named = must_exist or (path is not None and Path(path) != Path(DEFAULT_PARAMS))
    full = project_dir() / Path(path or DEFAULT_PARAMS)
    if full.is_file() or named:
        return load_params(full)
    return Params(base_dir=project_dir())
