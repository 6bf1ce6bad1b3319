"""Task tests that need a Prefect API share the session harness and a toy project (see tests/flows)."""

from __future__ import annotations

import pytest

from tests.flows.project import build_project, project_env


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory, tiny_causal_dir, prefect_harness):
    """A project dir with params.yaml + toy user tasks; ptune paths and MLflow point at it for the module."""
    root = build_project(tmp_path_factory.mktemp("project"), tiny_causal_dir)
    with project_env(root):
        yield root
