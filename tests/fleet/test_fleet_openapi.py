"""schemathesis over /openapi.json: whatever the input, the API never answers 5xx."""

from __future__ import annotations

import os

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .conftest import ADMIN_TOKEN

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_no_server_errors(client: TestClient) -> None:
    """Every operation, fuzzed with an admin token (so requests get past auth into the code)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=int(os.environ.get("FLEET_FUZZ_EXAMPLES", "12")), deadline=None,
                  derandomize="FLEET_FUZZ_EXAMPLES" not in os.environ, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=HEADERS,
                                   checks=[not_a_server_error, response_schema_conformance])

        fuzz()


def test_openapi_lists_the_resources(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for resource in ("devices", "gateways", "sites", "readings", "events", "alerts", "audit"):
        assert f"/api/v1/{resource}" in paths
    assert "/healthz" in paths
