"""The promote task's lock every worker sees: the Prefect global concurrency limit `ptune-promote-<task>`.
Two worker processes with their own HOME and PREFECT_HOME, sharing only the Prefect API and the registry,
promote two versions of one task at once: serialized, one alias move, both decisions recorded (the race is
forced by events: tests/ptune/registry/promotion_race.py; the same race with the host-local file lock is the
control in tests/ptune/registry/test_promotion_lock.py)."""

from __future__ import annotations

from types import SimpleNamespace

from prefect import get_client
from prefect.settings import PREFECT_API_URL

from ptune.registry import locks
from tasks import registry as registry_tasks
from tests.ptune.registry.helpers import TASK, register, use_store
from tests.ptune.registry.promotion_race import assert_serialized, race


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_prefect_limit_serializes_promotions_of_two_machines(prefect_harness, tmp_path, monkeypatch, tiny_causal):
    use_store(tmp_path, monkeypatch)
    monkeypatch.delenv(locks.LOCK_URL_ENV, raising=False)
    versions = {"a": register(tmp_path, tiny_causal, score=0.9, seed=1).version,
                "b": register(tmp_path, tiny_causal, score=0.8, seed=2).version}
    results = race(tmp_path / "race", versions, {versions["a"]: 0.9, versions["b"]: 0.8}, "prefect",
                   env={"PREFECT_API_URL": PREFECT_API_URL.value()})
    assert_serialized(results, versions)
    assert active_slots(registry_tasks.promotion_limit(TASK)) == 0  # both slots given back


def test_promote_task_holds_the_task_limit(prefect_harness, monkeypatch):
    seen = []
    monkeypatch.setattr(registry_tasks.stages, "promote",
                        lambda run, version, base: seen.append(active_slots(registry_tasks.promotion_limit(run.name))))
    registry_tasks.promote_if_better.fn(SimpleNamespace(name="toy-slot"), "1", None)
    assert seen == [1] and active_slots("ptune-promote-toy-slot") == 0
