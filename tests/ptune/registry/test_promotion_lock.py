"""The promotion lock across machines: two promotions of one task from two worker processes with their own
HOME (so two "machines" for the host-local file lock) race. With PTUNE_LOCK_URL (a PostgreSQL advisory lock)
they are serialized: one alias move, both decisions recorded, the second judged against the first's result.
The file lock alone lets both decide on the same state (the control: why a team needs the shared lock).
The race is forced by events (tests/ptune/registry/promotion_race.py), never by sleeping."""

from __future__ import annotations

import pytest

from ptune.errors import ConfigError, RegistryError
from ptune.registry import locks
from tests.postgres_support import throwaway_cluster
from tests.ptune.registry.helpers import TASK, register, use_store
from tests.ptune.registry.promotion_race import assert_serialized, race


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    with throwaway_cluster(tmp_path_factory.mktemp("pg") / "cluster") as cluster:
        yield cluster.url("postgres")


@pytest.fixture
def candidates(tmp_path, monkeypatch, tiny_causal) -> dict[str, str]:
    """Two registered versions of TASK, no champion yet: `a` scores 0.9, `b` 0.8 (baseline 0.5)."""
    use_store(tmp_path, monkeypatch)
    monkeypatch.delenv(locks.LOCK_URL_ENV, raising=False)
    return {"a": register(tmp_path, tiny_causal, score=0.9, seed=1).version,
            "b": register(tmp_path, tiny_causal, score=0.8, seed=2).version}


def test_postgres_advisory_lock_serializes_promotions_of_two_machines(candidates, postgres, tmp_path):
    results = race(tmp_path / "race", candidates, {candidates["a"]: 0.9, candidates["b"]: 0.8}, "configured",
                   env={locks.LOCK_URL_ENV: postgres})
    assert_serialized(results, candidates)


def test_host_local_file_lock_does_not_serialize_two_machines(candidates, tmp_path):
    """The control: with its own HOME each worker takes its own lock file, both are inside at once and decide
    on the same empty registry: both "champion", so one move overwrites the other (a lost update), or the two
    alias writes collide in the registry and one promotion fails."""
    results = race(tmp_path / "race", candidates, {candidates["a"]: 0.9, candidates["b"]: 0.8}, "configured")
    assert results["a"]["overlap"] and results["b"]["overlap"]
    decided = [r for r in results.values() if "error" not in r]
    assert all(r["alias"] == "champion" and r["champion_version"] is None for r in decided)  # neither saw the other
    assert len(decided) == 2 or "UNIQUE constraint failed: registered_model_aliases" in str(results)


def test_advisory_lock_excludes_waits_and_frees(postgres):
    with locks.advisory_lock(postgres, "ptune-test"):
        with pytest.raises(RegistryError, match="waited 1 s for lock 'ptune-test'") as err:
            with locks.advisory_lock(postgres, "ptune-test", wait_s=1):
                pass
        assert "***@" in str(err.value) and postgres.split("@")[0].split(":")[-1] not in str(err.value)
        with locks.advisory_lock(postgres, "ptune-other", wait_s=1):  # another name: another lock
            pass
    with locks.advisory_lock(postgres, "ptune-test", wait_s=1):  # released on exit
        pass


def test_configured_lock_follows_ptune_lock_url(monkeypatch, postgres):
    monkeypatch.delenv(locks.LOCK_URL_ENV, raising=False)
    assert locks.configured_lock() is locks.file_task_lock
    monkeypatch.setenv(locks.LOCK_URL_ENV, postgres)
    with locks.configured_lock()(TASK):
        with pytest.raises(RegistryError, match=f"ptune-promote:{TASK}"):
            with locks.advisory_lock(postgres, f"ptune-promote:{TASK}", wait_s=0.5):
                pass
    monkeypatch.setenv(locks.LOCK_URL_ENV, "mysql://user@host/db")
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        locks.configured_lock()


def test_unreachable_lock_database_is_a_registry_error(postgres):
    dead = postgres.rsplit(":", 1)[0] + ":1/postgres"
    with pytest.raises(RegistryError, match="cannot reach the lock database .*\\*\\*\\*@127.0.0.1:1/postgres"):
        with locks.advisory_lock(dead, "x"):
            pass
