"""Fixtures shared by the base-model tests (test_base.py, test_gemma3.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture
def keep_threads(monkeypatch):
    """load_base_model sets torch's global thread count: restore it so other tests keep 1 thread."""
    monkeypatch.delenv("PTUNE_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def temp_home(tmp_path, monkeypatch) -> Path:
    """An empty $PTUNE_HOME (model cache, packages) for this test."""
    monkeypatch.setenv("PTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
