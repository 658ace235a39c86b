"""The committed OpenAPI document is the one the code generates, and the API keeps to it.

Contract checks without a server: sample requests go through the handler and each answer's status
must be documented for its operation and its body must validate against the documented schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from kpi_sentinel.operator.api import app
from kpi_sentinel.operator.openapi import COMMITTED, document, main

from tests.unit.operator_helpers import ACME_OPS, ADMIN, GLOBEX_OPS, NOBODY, Answer, World, world

DOC = json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_given_the_code_when_the_document_is_generated_then_it_equals_the_committed_openapi_json() -> None:
    assert document() == COMMITTED.read_text(encoding="utf-8"), (
        "the operator API changed: regenerate with `python -m kpi_sentinel.operator.openapi --write` and commit"
    )


def test_given_the_cli_entry_when_run_then_it_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == DOC


def test_given_the_document_then_every_route_is_in_it_with_its_errors_and_security() -> None:
    documented = {(m.upper(), p) for p, ops in DOC["paths"].items() for m in ops}
    routes = {
        (r.method, re.sub(r"<(\w+)>", r"{\1}", r.path)) for r in app._static_routes + app._dynamic_routes
    }
    assert documented == routes
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            assert {"401", "403", "422"} <= set(op["responses"]), (method, path)
            assert any(code in op["responses"] for code in ("200", "201")), (method, path)
    assert DOC["security"] == [{"sigv4": []}, {"jwt": []}]
    jsonschema.Draft202012Validator.check_schema({"$defs": DOC["components"]["schemas"]})


def _operation(method: str, path: str) -> dict[str, Any]:
    """The documented operation that serves ``method path`` (templated segments match one segment)."""
    for template, ops in DOC["paths"].items():
        pattern = "^" + re.sub(r"\{\w+\}", r"[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            found: dict[str, Any] = ops[method.lower()]
            return found
    raise AssertionError(f"{method} {path} is not documented")


def conforms(method: str, target: str, answer: Answer) -> None:
    """The answer's status is documented for the operation and its body matches the documented schema."""
    operation = _operation(method, target.split("?")[0])
    documented = operation["responses"].get(str(answer.status))
    assert documented is not None, f"{method} {target} answered undocumented {answer.status}: {answer.body}"
    schema = documented.get("content", {}).get("application/json", {}).get("schema")
    if schema:
        jsonschema.Draft202012Validator({**schema, "components": DOC["components"]}).validate(answer.body)


@pytest.fixture
def w() -> World:
    return world()


def test_given_sample_requests_when_answered_then_every_answer_keeps_to_the_document(w: World) -> None:
    acme = "/v1/integrations/acme-ads"
    snooze = w.call("POST", f"{acme}/snoozes", {"duration_minutes": 30, "reason": "deploy"}).body
    event = w.call(
        "POST",
        f"{acme}/calendar",
        {"kind": "holiday", "name": "x", "start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"},
    ).body
    w.call("PUT", f"{acme}/overrides/ngr", {"threshold": 5})
    requests: list[tuple[str, str, Any, str | None]] = [
        ("GET", "/v1/whoami", None, ACME_OPS),
        ("GET", "/v1/whoami", None, None),
        ("GET", f"{acme}/snoozes", None, ACME_OPS),
        ("GET", f"{acme}/snoozes", None, GLOBEX_OPS),
        ("GET", f"{acme}/snoozes", None, NOBODY),
        ("POST", f"{acme}/snoozes", {"duration_minutes": 5, "reason": "r"}, ACME_OPS),
        ("POST", f"{acme}/snoozes", {"reason": "r"}, ACME_OPS),
        ("POST", f"{acme}/snoozes", {"until": 3, "reason": ""}, ACME_OPS),
        ("DELETE", f"{acme}/snoozes/{snooze['snooze_id']}", None, ACME_OPS),
        ("DELETE", f"{acme}/snoozes/{snooze['snooze_id']}", None, ACME_OPS),
        ("PUT", f"{acme}/alerts/ewma-{'1' * 32}/label", {"label": "expected"}, ACME_OPS),
        ("GET", f"{acme}/alerts?date=2026-10-15", None, ACME_OPS),
        ("GET", f"{acme}/calendar", None, ACME_OPS),
        ("DELETE", f"{acme}/calendar/{event['event_id']}", None, ACME_OPS),
        ("DELETE", f"{acme}/calendar/{event['event_id']}", None, ACME_OPS),
        ("GET", "/v1/calendar", None, ACME_OPS),
        (
            "POST",
            "/v1/calendar",
            {"kind": "holiday", "name": "y", "start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"},
            ADMIN,
        ),
        ("GET", f"{acme}/overrides", None, ACME_OPS),
        ("PUT", f"{acme}/overrides/ngr", {"threshold": 6, "expected_version": 0}, ACME_OPS),
        ("PUT", f"{acme}/overrides/clicks", {"min_volume": 100}, ACME_OPS),
        ("DELETE", f"{acme}/overrides/clicks", None, ACME_OPS),
        ("DELETE", f"{acme}/overrides/clicks", None, ACME_OPS),
        ("GET", f"{acme}/audit?limit=1", None, ACME_OPS),
        ("GET", "/v1/incidents?status=open", None, ACME_OPS),
        ("GET", f"/v1/incidents/inc-{'a' * 24}", None, ACME_OPS),
        ("POST", f"/v1/incidents/inc-{'a' * 24}/acknowledge", None, ACME_OPS),
        ("POST", f"/v1/incidents/inc-{'a' * 24}/resolve", None, ACME_OPS),
    ]
    statuses = set()
    for method, target, body, who in requests:
        answer = w.call(method, target, body, who=who)
        conforms(method, target, answer)
        statuses.add(answer.status)
    assert statuses == {200, 201, 401, 403, 404, 409, 422}
