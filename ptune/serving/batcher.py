"""Dynamic batching: rows of concurrent requests gathered into one model call.

One worker thread owns the model. A request puts its rows on a queue and waits on a Future; the worker
takes the first waiting request, then keeps taking requests until the batch holds `max_batch_size` rows
or `max_wait_ms` has passed since the first one, runs `predict` once on all their rows (one registry
snapshot, so every row of a call is answered by the same version of its task) and hands each request
its slice. With batching off, each request is one call. A request larger than `max_batch_size` is never
split across calls (its rows stay on one version); `predict` cuts it into model batches itself.
Back-pressure: once `max_queue` rows wait (queued or running), `submit` raises `Overloaded` at once rather
than letting latency grow without bound; the server answers 503 with Retry-After.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ptune.serving.multi_prompt import Prediction, Row


class Overloaded(Exception):
    """`max_queue` rows are already waiting for the model."""


class QueueLimit:
    """Rows taken and not answered yet, refused past `max_queue` (both schedulers' back-pressure)."""

    def __init__(self, max_queue: int | None) -> None:
        self.max_queue, self.pending, self._count = max_queue, 0, threading.Lock()

    def take(self, future: Future, n_rows: int) -> None:
        """Count `n_rows` until `future` is done; Overloaded when `max_queue` rows are waiting already."""
        with self._count:
            if self.max_queue is not None and self.pending >= self.max_queue:
                raise Overloaded(f"{self.pending} rows are waiting for the model (--max-queue {self.max_queue})")
            self.pending += n_rows
        future.add_done_callback(lambda _: self._release(n_rows))

    def _release(self, n_rows: int) -> None:
        with self._count:
            self.pending -= n_rows


@dataclass
class _Pending:
    rows: Sequence[Row]
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    """submit(rows) -> Future[list[Prediction]]; `on_batch(n_rows, n_requests)` observes every call."""

    def __init__(self, predict: Callable[[list[Row]], list[Prediction]], max_batch_size: int = 32,
                 max_wait_ms: float = 5.0, enabled: bool = True,
                 on_batch: Callable[[int, int], None] | None = None, max_queue: int | None = None) -> None:
        self.predict, self.max_batch_size, self.max_wait = predict, max_batch_size, max_wait_ms / 1000
        self.limit = QueueLimit(max_queue)
        self.enabled, self.on_batch = enabled, on_batch or (lambda rows, requests: None)
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._carry: _Pending | None = None  # a request that did not fit: first of the next batch
        self._thread = threading.Thread(target=self._loop, name="ptune-batcher", daemon=True)
        self._thread.start()

    def submit(self, rows: Sequence[Row]) -> Future:
        """Queue `rows`; Overloaded when `max_queue` rows are waiting already (a request is never split)."""
        item = _Pending(list(rows))
        self.limit.take(item.future, len(item.rows))
        self._queue.put(item)
        return item.future

    @property
    def pending(self) -> int:
        """Rows queued or running, not answered yet."""
        return self.limit.pending

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """`first` plus the requests that arrive before the batch is full or the wait is over."""
        items, n_rows = [first], len(first.rows)
        deadline = time.monotonic() + self.max_wait
        while self.enabled and n_rows < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            if n_rows + len(item.rows) > self.max_batch_size:  # does not fit: it opens the next batch
                self._carry = item
                break
            items.append(item)
            n_rows += len(item.rows)
        return items, False

    def _loop(self) -> None:
        while True:
            first, self._carry = (self._carry or self._queue.get()), None
            if first is None:
                return
            items, stop = self._gather(first)
            self._run(items)
            if stop:
                if self._carry is not None:
                    self._run([self._carry])
                return

    def _run(self, items: list[_Pending]) -> None:
        rows = [row for item in items for row in item.rows]
        try:
            preds = self.predict(rows)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which reports it
            for item in items:
                item.future.set_exception(exc)
            return
        self.on_batch(len(rows), len(items))
        start = 0
        for item in items:
            item.future.set_result(preds[start:start + len(item.rows)])
            start += len(item.rows)
