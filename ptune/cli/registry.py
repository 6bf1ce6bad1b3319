"""Registry commands: `ptune register`, `promote`, `pull`, and PEFT `export` / `import-peft`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptune.cli.options import BaseOpt, ParamsOpt, build_run


def register_cmd(
    prompt_dir: Annotated[Path, typer.Argument(help="A ptune prompt artifact directory left on disk.")],
    task: Annotated[str | None, typer.Option("--task", help="Task name (must match prompt.json).")] = None,
    params: ParamsOpt = None,
    without_report: Annotated[bool, typer.Option(help="Register though no report of this prompt is found.")] = False,
) -> None:
    """Register a prompt directory as a new version of ptune-<task> with the metrics of the report that scored it."""
    from ptune.model.artifacts import load_prompt
    from ptune.pipeline import stages

    reg = stages.register_dir(build_run(task or load_prompt(prompt_dir)[1].task, params), prompt_dir, not without_report)
    typer.echo(f"registered {reg.name} version {reg.version} (run {reg.run_id}) {reg.note}; promote with "
               f"`ptune promote {task or reg.name.removeprefix('ptune-')} --version {reg.version}`")


def promote_cmd(
    task: Annotated[str, typer.Argument(help="Task name; the registered model is ptune-<task>.")],
    version: Annotated[str, typer.Option("--version", help="Registered model version to consider.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision, write nothing.")] = False,
    params: ParamsOpt = None,
) -> None:
    """Move @champion to VERSION if it beats the best baseline by promote.min_gain and the current
    champion re-evaluated on the current test split; otherwise tag it @challenger. Always tags the reason."""
    from ptune.pipeline import stages

    typer.echo(f"re-scoring ptune-{task} version {version}, and the champion if it is another version, on the "
               "current test split before deciding (one pass each)", err=True)
    decision = stages.promote(build_run(task, params), version, dry_run=dry_run, reevaluate_candidate=True)
    prefix = "[dry run] would set" if dry_run else "set"
    typer.echo(f"{prefix} ptune-{task}@{decision.alias} -> version {decision.version}: {decision.reason}")


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


COMMANDS = {"register": register_cmd, "promote": promote_cmd, "pull": pull_cmd, "export": export_cmd, "import-peft": import_peft_cmd}
