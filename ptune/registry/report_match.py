"""Which report belongs to a prompt left on disk, so `ptune register` records that report's numbers.

`ptune report` writes `scored_prompt.json` next to its report (the report directory): the sha256 of the
prompt it scored (tensor and prompt.json, as `integrity.prompt_sha256`) and of the metrics JSON it wrote.
`ptune register D/prompt` takes the test and baseline metrics of the report whose record matches the prompt's
hash (looking in D/report/ and the task's report directory), never a report of another prompt that happens to
be newer. With no such report it refuses and says where it looked, unless prompt.json itself carries test
metrics (a prompt whose run could not reach the tracking server) or the caller registers it without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ptune.errors import RegistryError
from ptune.fileio import atomic_write_bytes, sha256_of
from ptune.model import artifacts
from ptune.registry.integrity import prompt_sha256

SCORED = "scored_prompt.json"


@dataclass(frozen=True)
class Found:
    """The numbers to register with a prompt and a sentence saying where they came from."""

    metrics: dict[str, float]
    source: str


def record(report_dir: str | Path, prompt_dir: str | Path, metrics_file: str | Path) -> Path:
    """Write <report_dir>/scored_prompt.json: the prompt this report scored and the metrics file it wrote."""
    metrics = Path(metrics_file).resolve()
    info = {"prompt_dir": str(Path(prompt_dir).resolve()), "prompt_sha256": prompt_sha256(prompt_dir),
            "metrics_file": str(metrics), "metrics_sha256": sha256_of(metrics)}
    path = Path(report_dir) / SCORED
    atomic_write_bytes(path, (json.dumps(info, indent=2) + "\n").encode())
    return path


def numbers(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _matching(record_path: Path, digest: str) -> Path | None:
    """The metrics file a report record names when it scored the prompt with `digest` and is unchanged since."""
    if not record_path.is_file():
        return None
    try:
        info = json.loads(record_path.read_text(encoding="utf-8"))
        metrics = Path(info["metrics_file"])
    except (ValueError, KeyError, TypeError):
        return None
    same = info.get("prompt_sha256") == digest and metrics.is_file()
    return metrics if same and sha256_of(metrics) == info.get("metrics_sha256") else None


def find_report(task: str, prompt_dir: str | Path, report_dirs: Iterable[str | Path], *,
                required: bool = True) -> Found:
    """The metrics of the report that scored this prompt; else prompt.json's own test metrics; else
    RegistryError naming where it looked (or, not `required`, no metrics and a sentence saying so)."""
    digest, looked = prompt_sha256(prompt_dir), []
    for directory in dict.fromkeys(Path(d).resolve() for d in report_dirs):
        looked.append(str(directory / SCORED))
        metrics = _matching(directory / SCORED, digest)
        if metrics is not None:
            return Found(numbers(metrics), f"with the test and baseline metrics of its report {metrics}")
    own = _test_metrics(artifacts.load_prompt(prompt_dir)[1].metrics)
    if own:
        return Found({}, f"with the {len(own)} test metrics recorded in {Path(prompt_dir) / 'prompt.json'}")
    where = f"no report of this prompt (sha256 {digest[:12]}) in {', '.join(looked)}"
    if not required:
        return Found({}, f"WITHOUT test or baseline metrics ({where}); promotion cannot apply its rule to it")
    raise RegistryError(f"not registering {prompt_dir}: {where}, and its prompt.json records no test metrics; "
                        f"run `ptune report {task} --prompt {prompt_dir}` first, or pass --without-report to "
                        "register it without test and baseline metrics")


def _test_metrics(metrics: Mapping[str, float]) -> list[str]:
    return [k for k in metrics if k.startswith("test/")]
