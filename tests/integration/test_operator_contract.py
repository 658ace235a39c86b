"""Property-based contract tests of the operator API, generated from its committed OpenAPI document.

schemathesis reads ``kpi_sentinel/operator/openapi.json`` (the document the drift test holds equal to
the code) and, for every operation, sends requests the document allows (positive) and requests it
forbids (negative: bad bodies, bad path and query values) to the API served on 127.0.0.1 by the local
moto stack, as a principal scoped to two integrations. Each answer must:

* not be a server error (no 5xx, for any request);
* carry a status code the operation documents, with a documented content type, and a body that
  conforms to the documented schema of that status;
* refuse what must be refused: a request the document forbids gets a 4xx, and a valid request on an
  integration outside the caller's scope gets 403 (422 when the use case itself finds a value
  invalid before reading anything), while one inside the scope is never refused with 403.

Generation is bounded and reproducible (:data:`CONTRACT`: a fixed number of examples per operation,
derandomized, no example database), so CI sees the same requests on every run;
``KPI_SENTINEL_CONTRACT_EXAMPLES=500`` searches deeper locally.

**Regressions.** What these tests found in the API when they were written, now fixed, is kept as
explicit cases (:data:`FOUND`): numbers DynamoDB cannot store answered 500 (the audited write
failed), and JSON booleans and numeric strings were taken for numbers (pydantic's lax mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from kpi_sentinel.adapters.aws import DynamoScopes
from kpi_sentinel.local.stack import LocalStack
from kpi_sentinel.operator.openapi import COMMITTED
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

OPERATOR = "arn:aws:iam::123456789012:user/contract-operator"
SCOPE = ("contract-acme", "contract-initech")
OUTSIDE = "contract-globex"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
CONTRACT = settings(
    max_examples=int(os.environ.get("KPI_SENTINEL_CONTRACT_EXAMPLES", "30")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)

schema = schemathesis.openapi.from_path(COMMITTED)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def api_url(stack: LocalStack) -> Iterator[str]:
    DynamoScopes(stack.physical["ControlTable"]).put_scope(OPERATOR, list(SCOPE))
    with stack.serve_api(principal=OPERATOR) as served:
        yield served.url


def _aim(case: Case, integration: str) -> str | None:
    """Point the case at ``integration`` where it names one and that value was generated valid.

    Random (valid) integration ids would almost never be in scope; drawing from the scope and one
    outside it exercises both the use cases and the refusal. Returns the integration the case names.
    """
    meta = case.meta
    for location, values in (
        (ParameterLocation.PATH, case.path_parameters),
        (ParameterLocation.QUERY, case.query),
    ):
        if values and "integration_id" in values:
            if meta is None or not meta.is_negative_at(location):
                values["integration_id"] = integration
            named = values["integration_id"]
            return named if isinstance(named, str) else None
    return None


def _body(case: Case) -> dict[str, Any]:
    return case.body if isinstance(case.body, dict) else {}


@schema.parametrize()
@schema.given(integration=st.sampled_from([*SCOPE, OUTSIDE]))
@CONTRACT
def test_every_operation_answers_as_documented(case: Case, integration: str, api_url: str) -> None:
    named = _aim(case, integration)
    response = case.call_and_validate(base_url=api_url, checks=CHECKS, timeout=30)
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if named is None or negative:
        return
    if named in SCOPE:
        assert response.status_code != 403, f"refused inside the scope: {response.text}"
    elif case.operation.path.startswith("/v1/integrations/"):
        assert response.status_code in (403, 422), f"{named} is outside the scope: {response.text}"


FOUND = [
    pytest.param(method, path, body, id=label)
    for method, path, body, label in [
        ("PUT", "overrides/ngr", {"min_volume": 1e200}, "floor-beyond-dynamodb"),
        ("PUT", "overrides/ngr", {"min_abs_change": 5e-324}, "floor-below-dynamodb"),
        ("PUT", "overrides/ngr", {"threshold": 1e-200}, "threshold-below-dynamodb"),
        ("PUT", "overrides/ngr", {"min_volume": True}, "boolean-for-number"),
        ("PUT", "overrides/ngr", {"threshold": "5"}, "string-for-number"),
        ("PUT", "overrides/ngr", {"expected_version": False}, "boolean-for-integer"),
        ("POST", "snoozes", {"duration_minutes": True}, "boolean-for-minutes"),
        ("POST", "snoozes", {"duration_minutes": "90"}, "string-for-minutes"),
    ]
]


@pytest.mark.parametrize(("method", "path", "body"), FOUND)
def test_what_the_contract_tests_found_is_refused_with_422(
    api_url: str, method: str, path: str, body: dict[str, Any]
) -> None:
    url = f"{api_url}/v1/integrations/{SCOPE[0]}/{path}"
    response = requests.request(method, url, json={**body, "reason": "contract"}, timeout=30)
    assert response.status_code == 422, f"{response.status_code} {response.text}"
    field = next(iter(body))
    assert field in response.text
