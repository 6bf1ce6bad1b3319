"""The GPU concurrency limit: created when missing (never changed when present), and one holder at a time."""

from __future__ import annotations

import threading
import time

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from flows.prefect_setup import ensure_gpu_limit, gpu_slot


def test_ensure_creates_a_missing_limit_once_and_keeps_an_existing_one(prefect_harness):
    assert ensure_gpu_limit("ptune-gpu-new") is True
    assert ensure_gpu_limit("ptune-gpu-new") is False
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="ptune-gpu-raised", limit=3))
        assert ensure_gpu_limit("ptune-gpu-raised") is False
        assert client.read_global_concurrency_limit_by_name("ptune-gpu-raised").limit == 3
        assert client.read_global_concurrency_limit_by_name("ptune-gpu-new").limit == 1


def test_gpu_slot_lets_one_holder_in_at_a_time(prefect_harness):
    spans: list[tuple[float, float]] = []

    def hold() -> None:
        with gpu_slot("ptune-gpu-serial"):
            start = time.monotonic()
            time.sleep(1.0)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    (_, first_end), (second_start, _) = sorted(spans)
    assert len(spans) == 2 and second_start >= first_end - 0.01  # no overlap
