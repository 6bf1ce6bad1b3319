"""The registry watcher retries a version it refused once the alias has moved away and back (the artifact may
have been repaired), and says per task which version it serves next to the one the alias points at."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ptune.data.catalog import get_task
from ptune.errors import ArtifactError
from ptune.serving import registry_source
from ptune.serving.registry_source import RegistryWatcher


@dataclass
class Served:
    version: str


class FakeModel:
    def __init__(self) -> None:
        self.tasks = {"intent": Served("1")}

    def snapshot(self) -> dict[str, Served]:
        return dict(self.tasks)


@pytest.fixture
def registry(monkeypatch):
    """alias -> version (the test moves it); versions whose artifact is broken; every load attempted."""
    state = {"alias": "1", "broken": {"2"}, "loads": []}

    def load(model, spec, version):
        state["loads"].append(version)
        if version in state["broken"]:
            raise ArtifactError(f"version {version}: prompt.safetensors does not match its recorded sha256")
        model.tasks[spec.name] = Served(version)

    monkeypatch.setattr(registry_source, "alias_version", lambda task, alias: state["alias"])
    monkeypatch.setattr(registry_source, "load_version", load)
    return state


def test_a_refused_version_is_retried_after_the_alias_moves_away_and_back(registry):
    model, events = FakeModel(), []
    watcher = RegistryWatcher(model, [get_task("intent")], "champion", 0,
                              on_event=lambda task, outcome: events.append(outcome))
    assert watcher.state("intent", "1") == ("1", "ok", None)
    registry["alias"] = "2"
    assert watcher.poll() == [] and watcher.poll() == []  # refused once, not retried while the alias stays
    assert registry["loads"] == ["2"] and events == ["failed"]
    aliased, status, problem = watcher.state("intent", "1")
    assert (aliased, status) == ("2", "degraded") and "version 2 refused" in problem and "sha256" in problem
    registry["broken"].clear()  # the artifact was repaired
    registry["alias"] = "1"
    watcher.poll()
    assert watcher.state("intent", "1") == ("1", "ok", None)
    registry["alias"] = "2"
    assert watcher.poll() == ["intent"] and model.tasks["intent"].version == "2"
    assert registry["loads"] == ["2", "2"] and watcher.state("intent", "2") == ("2", "ok", None)
