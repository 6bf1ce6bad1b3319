"""The pipeline's train step on N local processes, data-parallel (`ptune train --nproc N`, the Prefect train
task's `nproc`): every rank loads the frozen base and trains on its share of each batch
(ptune.training.distributed); rank 0 runs `stages.train` itself, so it alone writes the checkpoints, the
prompt artifact, the curve and the MLflow run, exactly as one process would.

    trained = train_on_ranks(run, 2, track=True)   # a stages.Trained, as stages.train returns
"""

from __future__ import annotations

import logging
import secrets

import torch

from ptune.pipeline import stages
from ptune.registry import run_status, tracking
from ptune.training.distributed import check_nproc, joined, launch, relay
from ptune.training.train import train_prompt

log = logging.getLogger(__name__)
LAUNCH_TAG = "ptune.launch"  # names the launch that started a run, so a failed launch can end its run


def train_on_ranks(run: stages.TaskRun, nproc: int, *, callback: stages.Callback | None = None,
                   track: bool = False, run_name: str | None = None,
                   tags: dict[str, str] | None = None) -> stages.Trained:
    """`stages.train` on `nproc` ranks started from this process (which loads no model); returns rank 0's
    Trained. `callback` gets rank 0's steps here, in this thread's context. The MLflow run carries this
    process's host and pid: it outlives the ranks and closes the run afterwards (`register`), so a later
    `end_stale_runs` must not take the run for a dead one. A failed rank raises DistributedError, and the
    run it left open (rank 0 killed) is ended here."""
    cuda = uses_cuda(run)
    check_nproc(nproc, cuda)
    launch_id = secrets.token_hex(8)
    tags = {**run_status.process_tags(), LAUNCH_TAG: launch_id, **(tags or {})}
    try:
        with relay(callback) as steps:
            return launch(nproc, rank_main, run, cuda, track, run_name, tags, steps)
    except BaseException as exc:
        if track:
            end_launched_runs(run.name, launch_id, exc)
        raise


def end_launched_runs(task: str, launch_id: str, exc: BaseException) -> None:
    """End the runs of `task` still RUNNING that launch `launch_id` started (FAILED, or KILLED for a signal).
    Best effort: an unreachable store leaves them to the next training's `end_stale_runs`."""
    query = f"attributes.status = 'RUNNING' and tags.`{LAUNCH_TAG}` = '{launch_id}'"
    try:
        found = tracking.client().search_runs([tracking.ensure_experiment(task)], query)
    except Exception as error:  # noqa: BLE001 - never hide the launch's own error
        log.warning("could not look for the MLflow run the failed launch left open: %s", error)
        return
    for mlflow_run in found:
        run_status.end_failed(mlflow_run.info.run_id, exc)


def uses_cuda(run: stages.TaskRun) -> bool:
    """NCCL on GPUs unless train.device is cpu or there is no GPU; else gloo on the CPU."""
    return run.params.train.device != "cpu" and torch.cuda.is_available()


def rank_main(run: stages.TaskRun, cuda: bool, track: bool, run_name: str | None, tags: dict[str, str],
              steps: object) -> stages.Trained | None:
    """One rank (started by `launch`): load the base, train; rank 0 through `stages.train`, the others through
    `train_prompt` alone. SIGTERM from the agent (another rank failed) ends an open MLflow run KILLED."""
    with joined(cuda) as sync, run_status.stop_on_signals():
        base = stages.load_base(run)
        if sync.main:
            return stages.train(run, base, callback=getattr(steps, "put", None), track=track,
                                run_name=run_name, tags=tags)
        train_prompt(base, run.spec, run.examples("train"), run.examples("validation"), run.params.train,
                     run.paths.root, checkpoint=run.checkpoint)
        return None
