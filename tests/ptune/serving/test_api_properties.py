"""Property-based run against the served OpenAPI schema (Schemathesis + Hypothesis): whatever the
generated request, valid (positive mode) or not (negative mode), the server answers without a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

EXAMPLES = 25  # per operation: enough to hit the limits and malformed bodies, quick on tiny models


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_5xx(served, mode):
    _, url, _, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/batch", "/v1/tasks", "/health", "/metrics"}
    statuses: list[int] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # GETs without parameters have no invalid form
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            response = case.call(base_url=url, timeout=30)
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"

        no_server_error()
    assert any(400 <= s < 500 for s in statuses)  # invalid or unknown-task requests were generated
    if mode is GenerationMode.POSITIVE:
        assert 200 in statuses
