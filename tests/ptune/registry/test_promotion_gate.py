"""The promotion gate that noise cannot win (issue 11): minimum size, degenerate candidates, ties, the
interval of the gain over the best baseline and over the champion; then the 6-step / 24-example regression
end to end on a tiny model (real MLflow store)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ptune.config import load_params
from ptune.config.sections import PromoteConfig
from ptune.evaluation.stats import Interval
from ptune.pipeline import stages
from ptune.registry import model_registry, tracking
from ptune.registry.promotion import Evidence, baseline_refusal, champion_refusal, evidence, promote_if_better
from tests.ptune.registry.helpers import TASK, make_prompt, use_store
from tests.support import build_project, project_env

GATE = PromoteConfig()  # the documented defaults: require_significant, min_examples 100, min_gain 0
M = "test/accuracy"


def _ev(n=400, degenerate=False, baseline=0.70, low=0.02, high=0.08) -> Evidence:
    return Evidence(n, degenerate, baseline, low, high)


def test_defaults_are_strict():
    assert (GATE.require_significant, GATE.min_examples, GATE.min_gain) == (True, 100, 0.0)


def test_refuses_below_the_minimum_number_of_examples():
    reason = baseline_refusal(M, 0.9, _ev(n=24), GATE)
    assert reason and "24 test examples, fewer than promote.min_examples 100" in reason
    assert "unrecorded" in baseline_refusal(M, 0.9, _ev(n=None), GATE)
    assert baseline_refusal(M, 0.9, _ev(n=24), dataclasses.replace(GATE, min_examples=0)) is None


def test_a_tie_never_promotes():
    reason = baseline_refusal(M, 0.7917, _ev(baseline=0.7917, low=-0.05, high=0.05), GATE)
    assert "ties the best baseline 0.7917" in reason
    lenient = PromoteConfig(require_significant=False, min_examples=0)
    assert "ties" in baseline_refusal(M, 0.7917, _ev(baseline=0.7917), lenient)


def test_refuses_a_gain_whose_interval_includes_zero_and_quotes_it():
    reason = baseline_refusal(M, 0.74, _ev(baseline=0.70, low=-0.012, high=0.092), GATE)
    assert "[95% CI -0.0120, +0.0920]" in reason and "require_significant" in reason
    assert baseline_refusal(M, 0.74, _ev(baseline=0.70, low=-0.012), dataclasses.replace(GATE, require_significant=False)) is None
    assert baseline_refusal(M, 0.74, _ev(baseline=0.70, low=0.012), GATE) is None
    assert "lower bound not above min_gain 0.02" in baseline_refusal(M, 0.74, _ev(low=0.012), dataclasses.replace(GATE, min_gain=0.02))


def test_a_degenerate_candidate_is_never_promoted():
    assert "degenerate" in baseline_refusal(M, 0.9, _ev(degenerate=True), dataclasses.replace(GATE, require_significant=False))


def test_champion_must_be_beaten_significantly():
    noisy = Interval(M, 0.01, -0.03, 0.05, 400, 0.80, 0.79)
    clear = Interval(M, 0.06, 0.02, 0.10, 400, 0.85, 0.79)
    assert "not significantly better than champion v1" in champion_refusal(M, 0.80, "1", 0.79, noisy, GATE)
    assert "[95% CI -0.0300, +0.0500], n=400" in champion_refusal(M, 0.80, "1", 0.79, noisy, GATE)
    assert champion_refusal(M, 0.85, "1", 0.79, clear, GATE) is None
    assert champion_refusal(M, 0.85, None, None, None, GATE) is None  # no champion yet


def test_identical_candidate_and_champion_give_zero_interval_and_no_promotion():
    same = Interval(M, 0.0, 0.0, 0.0, 400, 0.8, 0.8)
    assert "not significantly better" in champion_refusal(M, 0.8, "1", 0.8, same, GATE)


def test_evidence_reads_the_report_keys():
    tags = {"test/n": "400", "test/degenerate": "0", "baseline/best/test/accuracy": "0.7",
            "baseline/zero_shot/test/accuracy": "0.75", "gain/test/accuracy/ci_low": "0.01", "gain/test/accuracy/ci_high": "0.09"}
    assert evidence(tags, M) == Evidence(400, False, 0.7, 0.01, 0.09)  # the validation-chosen best, not max on test
    assert evidence({"baseline/zero_shot/test/accuracy": "0.75"}, M) == Evidence(None, False, 0.75, None, None)


def _register(tmp: Path, base, metrics: dict[str, float], seed: int) -> str:
    prompt_dir = make_prompt(tmp / f"prompt-{seed}", base, seed=seed)
    run = tracking.TrainingRun(TASK, tracking.training_params(TASK, base.spec, base.fingerprint, {}, "dv"))
    run.finish(prompt_dir, metrics, {"zero_shot": {M: 0.6}})
    return model_registry.register_prompt(TASK, prompt_dir, run.run_id, primary_metric=M).version


def test_registry_decision_quotes_both_intervals_and_tags_them(tmp_path, monkeypatch, tiny_causal):
    use_store(tmp_path, monkeypatch)
    good = {M: 0.8, "test/n": 400, "test/degenerate": 0, "baseline/best/test/accuracy": 0.6,
            "gain/test/accuracy/ci_low": 0.15, "gain/test/accuracy/ci_high": 0.25}
    first = _register(tmp_path, tiny_causal, good, seed=1)
    assert promote_if_better(TASK, first, evaluator=lambda v, s: {}, gate=GATE).promoted
    second = _register(tmp_path, tiny_causal, {**good, M: 0.82}, seed=2)
    calls = []

    def compare(candidate: str, champion: str, split: str) -> Interval:
        calls.append((candidate, champion, split))
        return Interval(M, 0.02, -0.01, 0.05, 400, 0.82, 0.80)

    decision = promote_if_better(TASK, second, evaluator=lambda v, s: {}, gate=GATE, compare=compare)
    assert not decision.promoted and calls == [(second, first, "test")] and decision.champion_score == 0.80
    tags = model_registry.version_tags(TASK, second)
    assert "[95% CI -0.0100, +0.0500]" in tags["promotion_reason"] and tags["promotion_champion_diff_ci_low"] == "-0.01"
    assert str(model_registry.alias_version(TASK, "champion").version) == first


@pytest.fixture
def small_project(tmp_path, tiny_causal_dir):
    """240 toy rows (24 test rows), the toy params otherwise; ptune and MLflow pointed at it."""
    root = build_project(tmp_path / "project", tiny_causal_dir, n_rows=240)
    with project_env(root):
        yield root


def _train_register(params, base_run_dir: Path, promote: PromoteConfig, steps: int):
    run = stages.TaskRun.build("toy", dataclasses.replace(params, promote=promote), run_dir=base_run_dir,
                               train={"max_steps": steps}, evaluate={"max_examples": 24})
    base = stages.load_base(run)
    trained = stages.train(run, base, track=True)
    reported = stages.report(run, stages.evaluate(run, base, trained.prompt, progress=False),
                             stages.baselines(run, base, progress=False), trained.trainable)
    return run, base, reported, stages.register(run, trained, reported)


def test_six_steps_on_24_examples_never_replace_the_champion(small_project, tmp_path):
    """Issue 11 regression: a 6-step run evaluated on 24 rows was promoted over the champion on a tie."""
    params = load_params(small_project / "params.yaml")
    run = stages.TaskRun.build("toy", params)
    stages.fetch(run), stages.prepare(run)
    lenient = PromoteConfig(min_gain=-1.0, require_significant=False, min_examples=0)
    first_run, base, _, first = _train_register(params, tmp_path / "first", lenient, steps=12)
    assert stages.promote(first_run, first.version, base).promoted  # the champion to defend
    cand_run, base, reported, cand = _train_register(params, tmp_path / "cand", PromoteConfig(), steps=6)
    assert reported.tuned.n == 24 and reported.stats["test/n"] == 24
    decision = stages.promote(cand_run, cand.version, base)
    assert not decision.promoted and "24 test examples, fewer than promote.min_examples 100" in decision.reason
    assert str(model_registry.alias_version("toy", "champion").version) == first.version
    tags = model_registry.version_tags("toy", cand.version)
    assert tags["promotion_decision"] == "challenger" and "gain/test/accuracy/ci_low" in tags
