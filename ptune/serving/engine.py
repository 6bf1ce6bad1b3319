"""Continuous batching: generation rows of any task join and leave one running decode batch at every step.

The static batcher (`ptune.serving.batcher`) runs a gathered group of requests until the group's longest row
ends: a one-token classification request that lands beside a 48-token summary waits for the summary, and a
request that arrives a moment later waits for the whole group. Here one worker thread owns the model and loops:
1. take every request that has arrived (waiting for one only when there is nothing to do); each request is
   answered from the served versions at that moment (one snapshot per request, as with the static batcher);
2. score every waiting classification row in mixed batches of up to `max_batch_size` rows (one forward each,
   `ptune.serving.mixed.score_mixed`): classification never waits for a generation to end, only for the
   decode step running when it arrived;
3. start waiting generation rows while the decode batch has free slots (`max_batch_size` rows), first come
   first served, up to `prefill_tokens` source tokens a step (`ptune.serving.decode.DecodeBatch.join`: the new
   rows' prompts in one forward; on a CPU, prefilling a few thousand tokens at once would hold every
   classification request for seconds);
4. one decode step for every running row; a row that ends (EOS, a stop string, max_tokens) leaves and frees
   its slot for a waiting row at the next step, and its request is answered once all its rows are.
Greedy generation rows of /v1/predict decode here too (temperature 0, the task's max tokens and stop
strings: the text `generate()` gives). Each compute holds the model for one pass only, so a hot swap's prefix
pass runs between steps. A failing pass fails the requests whose rows it held, and the loop goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from ptune.errors import DataError
from ptune.serving.batcher import QueueLimit
from ptune.serving.decode import DecodeBatch
from ptune.serving.mixed import MixedRow, score_mixed
from ptune.serving.multi_prompt import LoadedTask, MultiPromptModel, Prediction, Row
from ptune.serving.sampling import Sampling

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    rows: list[Row]
    future: Future = field(default_factory=Future)
    tasks: Mapping[str, LoadedTask] = field(default_factory=dict)  # the served versions when it was taken
    found: list[list] = field(default_factory=list)  # per row, its members' outputs
    sources: list[int] = field(default_factory=list)  # per row, its source tokens
    left: int = 0  # members not answered yet


class ContinuousBatcher:
    """submit(rows) -> Future[list[Prediction]], as `DynamicBatcher`; `on_batch(n_rows, n_requests)` observes
    every classification pass and every decode step."""

    def __init__(self, model: MultiPromptModel, max_batch_size: int = 32, max_queue: int | None = None,
                 on_batch: Callable[[int, int], None] | None = None, prefill_tokens: int = 512) -> None:
        self.model, self.max_batch_size, self.limit = model, max_batch_size, QueueLimit(max_queue)
        self.prefill_tokens = prefill_tokens  # source tokens started per step at most (one row always)
        self.on_batch = on_batch or (lambda rows, requests: None)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._scoring: list[tuple[_Request, int, MixedRow]] = []  # classification members to score
        self._waiting: deque[tuple[_Request, int, MixedRow]] = deque()  # generation rows without a slot yet
        self._decode = DecodeBatch(model.base)
        self._thread = threading.Thread(target=self._loop, name="ptune-continuous", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows queued or running, not answered yet."""
        return self.limit.pending

    def submit(self, rows: Sequence[Row]) -> Future:
        """Queue `rows`; Overloaded when `max_queue` rows are waiting already."""
        request = _Request(list(rows))
        self.limit.take(request.future, len(request.rows))
        self._queue.put(request)
        return request.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            idle = not (self._scoring or self._waiting or self._decode)
            arrived, closed = self._arrivals(block=idle)
            for request in arrived:
                self._admit(request)
            if closed:
                self._fail_all(RuntimeError("the server is shutting down"))
                return
            self._score()
            self._start()
            self._step()

    def _arrivals(self, block: bool) -> tuple[list[_Request], bool]:
        """(every request queued now, after waiting for one if `block`; whether `close` was called)."""
        arrived: list[_Request] = []
        try:
            item = self._queue.get() if block else self._queue.get_nowait()
            while item is not None:
                arrived.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return arrived, False
        return arrived, True

    def _admit(self, request: _Request) -> None:
        """Split a request into classification members and generation rows (DataError for an unknown task)."""
        tasks = request.tasks = self.model.snapshot()
        unknown = [f"row {i}: task {r.task!r}" for i, r in enumerate(request.rows) if r.task not in tasks]
        if unknown:
            request.future.set_exception(DataError(f"unknown task(s): {'; '.join(unknown)}; "
                                                   f"served tasks: {sorted(tasks)}"))
            return
        request.found = [[] for _ in request.rows]
        try:
            members = [(i, m) for i, row in enumerate(request.rows) for m in self.model.mixed_rows(tasks[row.task], row)]
        except Exception as exc:  # noqa: BLE001 - e.g. a template error: handed to the request
            request.future.set_exception(exc)
            return
        request.sources = [0] * len(request.rows)
        for i, member in members:
            request.sources[i] = len(member.source_ids)
            task = tasks[request.rows[i].task]
            if task.spec.kind == "generation":
                option = member.sampling or Sampling(member.max_new_tokens, member.stop_strings)
                self._waiting.append((request, i, replace(member, sampling=option)))
            else:
                self._scoring.append((request, i, member))
        request.left = len(members)

    def _score(self) -> None:
        """Every waiting classification member, in mixed batches (shortest sources together: less padding)."""
        members, self._scoring = sorted(self._scoring, key=lambda u: len(u[2].source_ids)), []
        for start in range(0, len(members), self.max_batch_size):
            part = members[start:start + self.max_batch_size]
            try:
                with self.model.compute():
                    scores = score_mixed(self.model.base, [m for _, _, m in part])
            except Exception as exc:  # noqa: BLE001 - handed to the requests of this batch
                self._fail({request for request, _, _ in part}, exc)
                continue
            self.on_batch(len(part), len({id(request) for request, _, _ in part}))
            for (request, i, _), value in zip(part, scores, strict=True):
                self._answer(request, i, value)

    def _start(self) -> None:
        """Waiting generation rows into the free slots of the decode batch, first come first served."""
        room = self.max_batch_size - len(self._decode)
        if not self._waiting or room <= 0 or not self._decode.can_join():
            return
        starting, tokens = [], 0
        while self._waiting and len(starting) < room:
            request, i, member = self._waiting[0]
            if starting and tokens + len(member.source_ids) > self.prefill_tokens:
                break  # the rest start at the next steps: a long prefill would hold classification back
            self._waiting.popleft()
            if not request.future.done():  # a request failed meanwhile: its other rows are dropped
                starting.append(((request, i), member))
                tokens += len(member.source_ids)
        try:
            with self.model.compute():
                ended = self._decode.join(starting)
        except Exception as exc:  # noqa: BLE001 - handed to the requests of the new rows
            self._fail({request for (request, _), _ in starting}, exc)
            return
        self._settle(ended)

    def _step(self) -> None:
        if not self._decode:
            return
        running = len({id(run.key[0]) for run in self._decode.rows})  # requests with a row in this step
        try:
            with self.model.compute():
                ended = self._decode.step()
        except Exception as exc:  # noqa: BLE001 - handed to every request with a running row
            self._fail({run.key[0] for run in self._decode.rows}, exc)
            self._decode = DecodeBatch(self.model.base)
            return
        self.on_batch(len(self._decode) + len(ended), running)
        self._settle(ended)

    def _settle(self, ended: list) -> None:
        for (request, i), sampled in ended:
            self._answer(request, i, sampled)

    def _answer(self, request: _Request, i: int, value: object) -> None:
        """One member's output; the request's predictions once every member has answered."""
        if request.future.done():
            return
        request.found[i].append(value)
        request.left -= 1
        if request.left == 0:
            preds: list[Prediction] = [
                self.model.prediction(request.tasks[row.task], request.found[j], request.sources[j])
                for j, row in enumerate(request.rows)]
            request.future.set_result(preds)

    def _fail(self, requests: set[_Request], exc: BaseException) -> None:
        log.warning("a model pass failed for %d request(s): %s", len(requests), exc)
        for request in requests:
            if not request.future.done():
                request.future.set_exception(exc)

    def _fail_all(self, exc: BaseException) -> None:
        """On close: every request not answered yet."""
        requests = {r for r, _, _ in [*self._scoring, *self._waiting]} | {run.key[0] for run in self._decode.rows}
        for request in requests:
            if not request.future.done():
                request.future.set_exception(exc)
