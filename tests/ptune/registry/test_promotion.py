"""The promotion rule, its writes (reason tags, alias last), fault injection and racing promotions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import Params
from ptune.data.catalog import get_task
from ptune.errors import RegistryError
from ptune.evaluation.scoring import evaluate
from ptune.model import artifacts
from ptune.pipeline import stages
from ptune.registry import model_registry
from ptune.registry.promotion import promote_if_better
from tests.ptune.registry.helpers import TASK, examples, register, use_store, write_split


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fresh SQLite tracking/registry store, project dir and PTUNE_HOME under tmp_path."""
    return use_store(tmp_path, monkeypatch)



class FakeEvaluator:
    """Re-evaluation stub: fixed "current split" scores per version; records every call."""

    def __init__(self, scores: dict[str, float], delay: float = 0.0) -> None:
        self.scores, self.delay, self.calls = scores, delay, []
        self._lock = threading.Lock()

    def __call__(self, version: str, split: str) -> dict[str, float]:
        with self._lock:
            self.calls.append((version, split))
        time.sleep(self.delay)
        return {f"{split}/accuracy": self.scores[version]}


def _aliases() -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient().get_registered_model(model_registry.model_name(TASK)).aliases.items()}


def test_worse_candidate_never_becomes_champion(store, tiny_causal, tmp_path):
    champ = register(tmp_path, tiny_causal, score=0.8, seed=1)
    promote_if_better(TASK, champ.version, evaluator=FakeEvaluator({}))
    worse = register(tmp_path, tiny_causal, score=0.7, seed=2)
    evaluator = FakeEvaluator({champ.version: 0.8})
    decision = promote_if_better(TASK, worse.version, evaluator=evaluator)
    assert not decision.promoted and _aliases() == {"champion": champ.version, "challenger": worse.version}
    assert "below champion" in model_registry.version_tags(TASK, worse.version)["promotion_reason"]
    assert evaluator.calls == [(champ.version, "test")]  # champion re-evaluated on the current test split


def test_equal_or_better_candidate_becomes_champion(store, tiny_causal, tmp_path):
    first = register(tmp_path, tiny_causal, score=0.8, seed=1)
    promote_if_better(TASK, first.version, evaluator=FakeEvaluator({}))
    equal = register(tmp_path, tiny_causal, score=0.8, seed=2)
    assert promote_if_better(TASK, equal.version, evaluator=FakeEvaluator({first.version: 0.8})).promoted
    better = register(tmp_path, tiny_causal, score=0.85, seed=3)
    assert promote_if_better(TASK, better.version, evaluator=FakeEvaluator({equal.version: 0.8})).promoted
    assert _aliases()["champion"] == better.version
    assert model_registry.version_tags(TASK, better.version)["promotion_reason"].startswith("test/accuracy=0.8500 beats")


def test_champion_is_judged_on_the_current_split_not_its_logged_score(store, tiny_causal, tmp_path):
    champ = register(tmp_path, tiny_causal, score=0.95, seed=1)
    promote_if_better(TASK, champ.version, evaluator=FakeEvaluator({}))
    candidate = register(tmp_path, tiny_causal, score=0.7, seed=2)
    evaluator = FakeEvaluator({champ.version: 0.6})  # the test split changed: the champion now scores 0.6
    decision = promote_if_better(TASK, candidate.version, evaluator=evaluator)
    assert decision.promoted and decision.champion_score == 0.6 and evaluator.calls == [(champ.version, "test")]
    assert _aliases()["champion"] == candidate.version


@pytest.mark.parametrize("score, baseline, min_gain", [(0.6, 0.65, 0.0), (0.7, 0.65, 0.1)])
def test_candidate_must_beat_the_best_baseline_by_min_gain(store, tiny_causal, tmp_path, score, baseline, min_gain):
    reg = register(tmp_path, tiny_causal, score=score, baseline=baseline)
    decision = promote_if_better(TASK, reg.version, min_gain=min_gain, evaluator=FakeEvaluator({}))
    assert not decision.promoted and _aliases() == {"challenger": reg.version}
    assert "does not beat the best baseline" in model_registry.version_tags(TASK, reg.version)["promotion_reason"]


def test_dry_run_writes_nothing(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.9)
    decision = promote_if_better(TASK, reg.version, evaluator=FakeEvaluator({}), dry_run=True)
    assert decision.promoted and "beats best baseline" in decision.reason
    assert _aliases() == {} and "promotion_reason" not in model_registry.version_tags(TASK, reg.version)


def test_failure_before_alias_move_leaves_aliases_unchanged(store, tiny_causal, tmp_path, monkeypatch):
    champ = register(tmp_path, tiny_causal, score=0.7, seed=1)
    promote_if_better(TASK, champ.version, evaluator=FakeEvaluator({}))
    better = register(tmp_path, tiny_causal, score=0.9, seed=2)

    def broken(*args, **kwargs):
        raise MlflowException("injected failure while tagging")

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", broken)
    with pytest.raises(RegistryError, match="injected failure"):
        promote_if_better(TASK, better.version, evaluator=FakeEvaluator({champ.version: 0.7}))
    assert _aliases() == {"champion": champ.version}


def test_racing_promotions_end_with_the_better_version(store, tiny_causal, tmp_path):
    champ = register(tmp_path, tiny_causal, score=0.7, seed=1)
    promote_if_better(TASK, champ.version, evaluator=FakeEvaluator({}))
    good = register(tmp_path, tiny_causal, score=0.8, seed=2)
    best = register(tmp_path, tiny_causal, score=0.9, seed=3)
    evaluator = FakeEvaluator({champ.version: 0.7, good.version: 0.8, best.version: 0.9}, delay=0.5)
    outcomes: dict[str, object] = {}

    def promote(version: str) -> None:
        try:
            outcomes[version] = promote_if_better(TASK, version, evaluator=evaluator)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below: no error lost
            outcomes[version] = exc

    threads = [threading.Thread(target=promote, args=(v,)) for v in (best.version, good.version)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(not isinstance(o, BaseException) for o in outcomes.values()), outcomes
    assert len(outcomes) == 2 and _aliases()["champion"] == best.version
    tags = model_registry.version_tags(TASK, good.version)
    assert tags["promotion_decision"] in ("champion", "challenger") and tags["promotion_reason"]


def test_default_evaluator_and_cli_promote_use_the_current_test_split(store, tiny_causal, tmp_path):
    """The stages' evaluator: loads the version's prompt + base model and scores the current data/prepared split."""
    write_split("test")
    reg = register(tmp_path, tiny_causal, score=0.0, baseline=0.0)
    metrics = stages.version_evaluator(stages.TaskRun.build(TASK, Params()))(reg.version, "test")
    weight, _ = artifacts.load_prompt(tmp_path / "prompt-0-0.0")
    expected = evaluate(tiny_causal, get_task(TASK), examples(), weight, split="test", progress=False).metrics
    assert metrics == pytest.approx(expected)
    result = CliRunner().invoke(app, ["promote", TASK, "--version", reg.version, "--dry-run"])  # no params.yaml
    assert result.exit_code == 0, result.output  # library defaults: 6 test rows are below promote.min_examples
    assert f"[dry run] would set ptune-{TASK}@challenger -> version {reg.version}" in result.output
    assert "fewer than promote.min_examples 100" in result.output
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("promote: {min_gain: -1.0, require_significant: false, min_examples: 0}\n")
    result = CliRunner().invoke(app, ["promote", TASK, "--version", reg.version, "--dry-run", "--params", str(lenient)])
    assert f"[dry run] would set ptune-{TASK}@champion -> version {reg.version}" in result.output, result.output
    assert f"test/accuracy={expected['test/accuracy']:.4f}" in result.output  # candidate re-evaluated by the CLI


def test_promotion_lock_is_per_registry_not_per_cache(tmp_path, monkeypatch):
    """Two projects sharing $PTUNE_HOME but not a registry get different lock files; one registry, one lock."""
    from ptune.registry.locks import lock_path

    monkeypatch.setenv("PTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a' / 'mlruns.db'}")
    first = lock_path(TASK)
    assert first == lock_path(TASK) and first.parent == tmp_path / "home" / "locks"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'b' / 'mlruns.db'}")
    second = lock_path(TASK)
    assert second != first and second.parent == first.parent and second.name.startswith(f"{TASK}-")
