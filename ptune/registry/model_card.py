"""Model cards: one markdown page per registered version of `ptune-<task>`, logged as the run's artifact
`model_card/model_card.md` and set as the registry version's description (what the MLflow UI shows on
the version page). Built from prompt.json (base model, data version, train config, metrics) plus what the
registration knows: the report's metrics (its JSON, or the numbers matched to the prompt by
`ptune.registry.report_match`; intervals when it has them), the split sizes (given, else the prepared data's
`data_version.json` when it is the data version the prompt was trained on) and the nearest-token
interpretation written beside the prompt (`ptune.evaluation.interpret`). So the card shows the numbers the
version's tags hold, never "no test metrics" beside a tag that has them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ptune.data.catalog import get_task
from ptune.data.spec import input_template as spec_template
from ptune.errors import ConfigError, RegistryError
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.paths import prepared_dir
from ptune.registry.tracking import client, guard

log = logging.getLogger(__name__)

CARD_FILE = "model_card.md"
DESCRIPTION_LIMIT = 4900  # the SQLite registry keeps at most 5,000 characters of a version description
_INTERVAL_HINTS = ("ci", "low", "high", "interval", "stderr", "std")
_NOT_METRICS = ("/seconds", "/n", "/invalid_rate", "/majority_share", "/degenerate")  # report bookkeeping, no column


def _results(meta: PromptMeta, report: Mapping[str, float]) -> list[str]:
    """Table rows: tuned prompt and each baseline on the test split, with interval keys when present."""
    values = {**meta.metrics, **report}
    names = sorted({k.split("/")[1] for k in values if k.startswith("baseline/") and k.count("/") >= 3} - {"best"})
    tests = [k for k in values if k.startswith("test/") and k.count("/") == 1 and not k.endswith(_NOT_METRICS)]
    if not tests:
        return ["No test metrics were recorded for this version."]
    rows = ["| approach | " + " | ".join(tests) + " |", "|---|" + "---|" * len(tests)]
    for label, head in [("tuned prompt", ""), *[(f"baseline: {n}", f"baseline/{n}/") for n in names]]:
        cells = [_cell(values, head + key) for key in tests]
        if any(c != "-" for c in cells):
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def _cell(values: Mapping[str, float], key: str) -> str:
    """`0.7500` or `0.7500 (ci_low 0.70, ci_high 0.80)` when the report holds interval keys for `key`."""
    if key not in values:
        return "-"
    extra = {k[len(key):].lstrip("/_"): v for k, v in values.items()
             if k.startswith(key) and k != key and any(h in k[len(key):].lower() for h in _INTERVAL_HINTS)}
    shown = ", ".join(f"{name} {float(v):.4f}" for name, v in sorted(extra.items()))
    return f"{float(values[key]):.4f}" + (f" ({shown})" if shown else "")


def _interpretation(directory: Path | None) -> list[str]:
    """The scores and the first rows of interpretation.md, or a line saying there is none."""
    file = directory / "interpretation.md" if directory else None
    if file is None or not file.is_file():
        return ["No interpretation was written for this prompt (`ptune interpret PROMPT_DIR` makes one)."]
    lines = [ln for ln in file.read_text(encoding="utf-8").splitlines()[1:] if not ln.startswith("![")]
    table = [ln for ln in lines if ln.startswith("|")]
    return [ln for ln in lines if ln.startswith("- ")] + ["", *table[:12]] + (
        [f"| ... {len(table) - 12} more rows in interpretation/interpretation.md |"] if len(table) > 12 else [])


def _limits(meta: PromptMeta, report: Mapping[str, float]) -> list[str]:
    gain = report.get(next((k for k in report if k.startswith("gain/test/")), ""), None)
    out = [f"- Works only on the base model it was trained on (fingerprint `{meta.base_fingerprint}`); "
           "ptune refuses to load it on any other.",
           "- A soft prompt is not text: the nearest tokens above are a rough view of it, not its meaning.",
           "- Scores come from the prepared (possibly capped) splits of this data version only; other data "
           "may differ."]
    if meta.label_words:
        out.append(f"- Answers are one of the label words {list(meta.label_words)} (rank classification).")
    if gain is not None and float(gain) <= 0:
        out.append(f"- It does **not** beat the best hard-prompt baseline on test (gain {float(gain):+.4f}).")
    return out


def _template_lines(template: str) -> list[str]:
    """The input template as a text block ({field} marks where a field goes); nothing when unknown."""
    if not template:
        return [""]
    return ["Input template (`{field}` marks where a field's value goes):", "", "```text", template, "```", ""]


def input_template(task: str, meta: PromptMeta) -> str:
    """The task's input template (`ptune.data.spec.input_template`) when ptune knows the task, else what
    prompt.json recorded (a user task's template; older prompts recorded the task's description there)."""
    try:
        return spec_template(get_task(task)) or meta.template
    except ConfigError:
        return meta.template


def card_markdown(meta: PromptMeta, *, name: str, version: str, split_counts: Mapping[str, int] | None = None,
                  report: Mapping[str, float] | None = None, interpretation_dir: Path | None = None,
                  template: str | None = None) -> str:
    """The card, as markdown (`template`: the input template; default prompt.json's)."""
    report, cfg = dict(report or {}), meta.train_config
    sizes = ", ".join(f"{k} {v}" for k, v in (split_counts or {}).items()) or "unknown"
    what = (f"classifies into {list(meta.label_words)}" if meta.label_words else "generates text")
    lines = [f"# {name} version {version}", "", "## What it does",
             f"A soft prompt of {meta.n_tokens} virtual tokens x {meta.hidden} dimensions, prepended to a frozen "
             f"base model, that {what} for task `{meta.task}`.", "",
             *([f"This version is an **ensemble of {int(meta.metrics['ensemble/k'])} prompts** (different seeds) "
                "scored together; its files hold every member and ensemble.json.", ""]
               if meta.metrics.get("ensemble/k") else []),
             *_template_lines(template if template is not None else meta.template),
             f"Use: `mlflow.pyfunc.load_model('models:/{name}/{version}')` or `ptune pull {meta.task} --out DIR`.",
             "", "## Base model", f"- spec: `{meta.base_spec}`", f"- fingerprint: `{meta.base_fingerprint}`", "",
             "## Data", f"- data version: `{meta.data_version or 'unknown'}`", f"- prepared split sizes: {sizes}",
             "", "## Training",
             f"- init `{meta.init}`, {cfg.get('optimizer', '?')} lr {cfg.get('lr', '?')}, batch "
             f"{cfg.get('batch_size', '?')}, max steps {cfg.get('max_steps', '?')}, seed {cfg.get('seed', '?')}",
             "", "## Tuned prompt vs hard-prompt baselines (test split)", *_results(meta, report), "",
             "## Nearest-token interpretation", *_interpretation(interpretation_dir), "",
             "## Known limits", *_limits(meta, report)]
    return "\n".join(lines) + "\n"


def prepared_counts(task: str, data_version: str) -> dict[str, int] | None:
    """Rows per split of the prepared data (its data_version.json) when that is `data_version`, else None."""
    try:
        info = json.loads((prepared_dir(task) / "data_version.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = isinstance(info, dict) and data_version and info.get("version") == data_version
    return {str(k): int(v) for k, v in info.get("counts", {}).items()} if same else None


def publish(task: str, version: str, run_id: str, prompt_dir: str | Path, *, split_counts: Mapping[str, int] | None = None,
            metrics_file: str | Path | None = None, interpretation_dir: str | Path | None = None,
            report: Mapping[str, float] | None = None) -> str:
    """Write the card for `ptune-<task>` `version`, log it (and the interpretation dir) on `run_id`, and set
    it as the version's description (cut to DESCRIPTION_LIMIT, pointing at the full artifact). Returns it.
    `report`: the results registered with the version, under the numbers of `metrics_file`."""
    _, meta = artifacts.load_prompt(prompt_dir)
    interp = Path(interpretation_dir) if interpretation_dir else Path(prompt_dir).parent / "interpretation"
    found = json.loads(Path(metrics_file).read_text(encoding="utf-8")) if metrics_file and Path(metrics_file).is_file() else {}
    report, name = {**(report or {}), **found}, f"ptune-{task}"
    split_counts = split_counts or prepared_counts(task, meta.data_version)
    card = card_markdown(meta, name=name, version=version, split_counts=split_counts, report=report,
                         interpretation_dir=interp if interp.is_dir() else None, template=input_template(task, meta))
    description = card if len(card) <= DESCRIPTION_LIMIT else (
        card[:DESCRIPTION_LIMIT] + f"\n\n... (cut; full card: run {run_id} artifact model_card/{CARD_FILE})\n")
    mlc = client()
    with guard(f"model card of {name} version {version}"), tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CARD_FILE).write_text(card, encoding="utf-8")
        mlc.log_artifact(run_id, str(Path(tmp) / CARD_FILE), "model_card")
        if interp.is_dir():
            mlc.log_artifacts(run_id, str(interp), "interpretation")
        mlc.update_model_version(name, str(version), description=description)
    return card


def publish_after_registration(task: str, version: str, run_id: str, prompt_dir: str | Path, **extra) -> str | None:
    """`publish`, for a version that is already registered: a failure is logged, not raised, because the
    version is usable without its card and a retried registration step would register it twice."""
    try:
        return publish(task, version, run_id, prompt_dir, **extra)
    except RegistryError as exc:
        log.warning("ptune-%s version %s is registered but has no model card: %s", task, version, exc)
        return None
