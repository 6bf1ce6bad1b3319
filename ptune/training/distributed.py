"""Data-parallel training of one prompt on N processes ("ranks"): torch.distributed, NCCL on CUDA (one GPU a
rank), gloo on CPU.

Every rank holds the frozen base and the same prompt (same seed). At each step every rank builds the same
global batch (`BatchOrder`, a pure function of seed and step) and keeps its share of the rows, strided as
torch's DistributedSampler strides a dataset (`Sync.shard`). The loss is a mean per target token, so a rank's
gradient is weighted by its share of the global batch's target tokens before the gradients are averaged
(`Sync.global_loss`, `Sync.average_gradients`): N ranks at batch B/N take the step one process takes at batch
B. Rank 0 alone validates (the metrics are broadcast, so best-prompt and early-stopping decisions agree),
writes checkpoints and calls the caller's callback; every rank resumes from the same checkpoint.

`launch` starts the ranks with torch elastic's agent (what `torchrun --standalone` runs), in-process: a rank
that dies (an exception, kill -9) stops every rank and fails the job with one line naming it.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import datetime
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from queue import Empty
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ptune.errors import ConfigError, PtuneError
from ptune.model.base import BaseModel, available_cores

log = logging.getLogger(__name__)
T = TypeVar("T")
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)  # the other ranks wait this long for rank 0's validation
TORCH_LOGGERS = ("torch.distributed.elastic", "torch.multiprocessing")  # tracebacks `launch` says in a line
ELASTIC_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # the agent's handlers


class DistributedError(PtuneError):
    """A rank of a data-parallel training failed and the others were stopped, or the ranks disagree."""


@dataclass(frozen=True)
class Sync:
    """This process's place among the ranks of one training, and the collectives a step needs. With one
    process (world 1, the default) every method is the single-process computation, unchanged."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # NCCL: this rank's GPU

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, writes checkpoints and reports."""
        return self.rank == 0

    @classmethod
    def current(cls) -> Sync:
        """The process group this process joined (`joined`), or one process."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        nccl = dist.get_backend() == "nccl"
        return cls(dist.get_rank(), dist.get_world_size(),
                   torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"))

    def shard(self, rows: Sequence[int]) -> list[int]:
        """This rank's rows of a global batch: every world-th, from its rank on (DistributedSampler's way)."""
        return list(rows[self.rank::self.world])

    def global_loss(self, loss: torch.Tensor | None, labels: torch.Tensor | None) -> tuple[float, float]:
        """(mean loss per target token over the global batch, this rank's gradient weight). `loss` is this
        rank's mean over its target tokens (`labels` != -100, as the loss counts them); None for no rows."""
        if self.world == 1:
            return float(loss.item()), 1.0
        tokens = float((labels != -100).sum()) if labels is not None else 0.0
        local = float(loss.item()) * tokens if loss is not None else 0.0
        sums = torch.tensor([tokens, local], dtype=torch.float64, device=self.device)
        dist.all_reduce(sums)
        total = max(float(sums[0]), 1.0)
        return float(sums[1]) / total, self.world * tokens / total

    def backward(self, loss: torch.Tensor, weight: float) -> None:
        """Backward of this rank's weighted loss: after `average_gradients`, the global batch's gradient."""
        (loss if self.world == 1 else loss * weight).backward()

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """All-reduce (mean over ranks) the gradients of `params`, in one collective; a rank that had no rows
        contributes zeros."""
        if self.world == 1:
            return
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            p.grad, offset = flat[offset:offset + p.numel()].view_as(p), offset + p.numel()

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` run on rank 0 only, its result given to every rank (validation metrics)."""
        if self.world == 1:
            return compute()
        box = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def in_turn(self, act: Callable[[], T], what: str) -> T:
        """`act()` on rank 0 first, then on the others; every rank must get the same result (`what` names it
        in the error). Resuming: rank 0 alone may set a corrupt checkpoint aside before the others read."""
        if self.world == 1:
            return act()
        result = act() if self.main else None
        dist.barrier()
        if not self.main:
            result = act()
        seen: list[Any] = [None] * self.world
        dist.all_gather_object(seen, result)
        if any(value != seen[0] for value in seen):
            raise DistributedError(f"the ranks disagree on {what}: {seen} (rank by rank); every rank must "
                                   "see the same checkpoint location")
        return result


SINGLE = Sync()


def target_labels(base: BaseModel, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The labels `target_loss` averages over (a causal LM's first position predicts none); None: no rows."""
    if not batch:
        return None
    return batch["labels"] if base.is_encoder_decoder else batch["labels"][:, 1:]


def check_nproc(nproc: int, cuda: bool) -> None:
    """Refuse (ConfigError: a retry would fail again) a rank count this machine cannot run: below 1, or more
    ranks than GPUs under NCCL."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give 1 or more processes")
    if cuda and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s) here, one "
                               "per rank; lower --nproc or set train.device: cpu (gloo)")


@contextlib.contextmanager
def joined(cuda: bool) -> Iterator[Sync]:
    """Join the job `launch` started (its environment names rank, world and rendezvous) for the block: NCCL
    on GPU `LOCAL_RANK`, else gloo, where the ranks share the cores (PTUNE_THREADS unless set). Each rank logs
    its pid, then only rank 0 prints INFO lines. A rank dies with the process that launched it (Linux)."""
    from tqdm import tqdm

    world, local = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    die_with_parent()
    tqdm.set_lock(threading.RLock())  # not tqdm's semaphore, which a killed rank leaves to the tracker
    if cuda:
        torch.cuda.set_device(local)
    else:
        os.environ.setdefault("PTUNE_THREADS", str(max(1, available_cores() // world)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                            device_id=torch.device("cuda", local) if cuda else None)
    sync = Sync.current()
    rank_logs(sync)
    log.info("rank %d of %d: pid %d, %s", sync.rank, sync.world, os.getpid(), "nccl" if cuda else "gloo")
    logging.getLogger("ptune").setLevel(logging.INFO if sync.main else logging.WARNING)
    try:
        yield sync
    finally:
        dist.destroy_process_group()


def rank_logs(sync: Sync) -> None:
    """ptune's log lines on stderr, prefixed with the rank (a spawned rank starts with no logging set up)."""
    logger = logging.getLogger("ptune")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {sync.rank}] %(levelname)s %(name)s: "
                                               "%(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the launching one dies, so a killed launcher leaves no rank behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def launch(nproc: int, entrypoint: Callable[..., T], *args: Any) -> T:
    """`entrypoint(*args)` on `nproc` local ranks started by torch elastic's agent (spawned; the rendezvous on
    127.0.0.1 at a port the store picks itself); returns rank 0's value. No restarts: a failed rank stops
    them all and raises DistributedError naming it; SIGTERM/SIGINT here stop them and exit 128 + signal."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, max_restarts=0,
                          run_id=f"ptune-{secrets.token_hex(6)}", rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", monitor_interval=0.1,
                          start_method="spawn")
    with quiet_torch_logs(), kept_signal_handlers():
        try:
            return elastic_launch(config, entrypoint)(*args)[0]
        except ChildFailedError as exc:
            failed = failure_line(exc.failures, nproc)
        except SignalException as exc:
            failed = 128 + int(exc.sigval)
    # raised out here, with no reference left to the agent (its queues' semaphores are then released, not
    # reported as leaked at exit)
    raise SystemExit(failed) if isinstance(failed, int) else DistributedError(failed)


def failure_line(failures: dict[int, Any], nproc: int) -> str:
    """One line for a failed job, naming its root cause: a rank killed by a signal, else the first to fail
    (the others then fail only because a peer is gone)."""
    rank, failure = min(failures.items(), key=lambda kv: (kv[1].exitcode >= 0, kv[1].timestamp, kv[0]))
    if failure.exitcode < 0:
        cause = f"was killed by {failure.signal_name()}"
    else:
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
        cause = f"failed: {' '.join(str(message).split())[:500] or f'exit code {failure.exitcode}'}"
    return (f"data-parallel training on {nproc} processes stopped: rank {rank} (pid {failure.pid}) {cause}; "
            "every other rank was stopped; run it again to resume from the last checkpoint")


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """torch elastic logs a failed rank as a many-line traceback; `launch` says it in one line instead."""
    loggers = [logging.getLogger(name) for name in TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def kept_signal_handlers() -> Iterator[None]:
    """The agent installs signal handlers (main thread only) and leaves them: put the caller's back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in ELASTIC_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def relay(callback: Callable[[Any], None] | None) -> Iterator[Any]:
    """A queue rank 0 puts its StepInfos on, and a thread here handing each to `callback` (in this thread's
    context, e.g. a Prefect run's). The first exception `callback` raised is raised when the block ends."""
    if callback is None:
        yield None
        return
    import torch.multiprocessing as mp

    queue, done, errors = mp.get_context("spawn").Queue(), threading.Event(), []

    def drain() -> None:
        while not (done.is_set() and queue.empty()):
            try:
                item = queue.get(timeout=0.1)
            except Empty:
                continue
            try:
                callback(item)
            except Exception as exc:  # noqa: BLE001 - kept, raised when training is over
                errors.append(exc)
    thread = threading.Thread(target=contextvars.copy_context().run, args=(drain,), daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        done.set()
        thread.join(timeout=30)
    if errors:
        raise errors[0]
