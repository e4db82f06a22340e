"""/api/v1 against its own OpenAPI document: schemathesis generates requests (valid and
not) for every operation and checks each answer over real HTTP (no server error,
documented status codes, content types and response schemas)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings

from netlet.web import Dashboard
from tests.web.conftest import Kit, dashboard_for, kit

__all__ = ["dashboard_for", "kit"]

schemathesis = pytest.importorskip("schemathesis")


@pytest.mark.timeout(150)
def test_the_api_keeps_to_its_schema(kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    for i in range(3):
        kit.cluster.submit("math:sqrt", float(i)).result(10)
    with pytest.raises(ValueError, match="math domain"):
        kit.cluster.submit("math:sqrt", -1.0).result(10)
    d = dashboard_for()
    schema = schemathesis.openapi.from_url(f"{d.base_url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()
