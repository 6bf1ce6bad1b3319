"""Shared by the data tests: a project directory in tmp (test_validation.py overrides it with params)."""

from __future__ import annotations

import pytest


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    return tmp_path
