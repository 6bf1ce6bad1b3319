"""`ptune promote` says that it re-scores, and what: the candidate and the champion, on the current split."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ptune.cli import app
from ptune.registry.promotion import Decision, promote_if_better
from tests.ptune.registry.helpers import TASK, register, use_store


def scores(version: str, split: str) -> dict[str, float]:
    return {f"{split}/accuracy": 0.8}


def test_promotion_logs_each_version_it_re_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_causal,
                                                  caplog):
    use_store(tmp_path, monkeypatch)
    first = register(tmp_path, tiny_causal, score=0.8, seed=1)
    promote_if_better(TASK, first.version, evaluator=scores)
    second = register(tmp_path, tiny_causal, score=0.8, seed=2)
    caplog.set_level(logging.INFO, logger="ptune.registry.promotion")
    promote_if_better(TASK, second.version, evaluator=scores, reevaluate_candidate=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "ptune.registry.promotion"]
    assert lines == [f"promotion: re-scoring ptune-{TASK} version {second.version} on the current test split",
                     f"promotion: re-scoring the champion, version {first.version}, on the current test split"]


def test_promote_command_says_it_re_scores_before_the_long_pass(monkeypatch: pytest.MonkeyPatch):
    from ptune.cli import registry as cli_registry
    from ptune.pipeline import stages

    said = []

    def promote(run, version, **options):
        said.append("decided")
        return Decision("toy", version, "champion", "wins", "test/accuracy", 0.9, 0.5, None, None)

    monkeypatch.setattr(cli_registry, "build_run", lambda task, params: None)
    monkeypatch.setattr(stages, "promote", promote)
    result = CliRunner().invoke(app, ["promote", "toy", "--version", "2"])
    assert result.exit_code == 0, result.output
    assert "re-scoring ptune-toy version 2, and the champion if it is another version" in result.stderr
    assert result.output.index("re-scoring") < result.output.index("set ptune-toy@champion -> version 2")
