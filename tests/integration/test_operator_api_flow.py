"""The operator API served by the local stack on 127.0.0.1, driven by the `kpi-sentinel` CLI.

An operator scoped to one integration snoozes, overrides a threshold and labels an alert there; what
the API wrote is exactly what the scorer and the report read (DynamoControl, DynamoFeedback); another
integration is refused, and an unscoped caller is refused everything.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kpi_sentinel.adapters.aws import DynamoControl, DynamoFeedback, DynamoScopes
from kpi_sentinel.cli import main
from kpi_sentinel.local.stack import LocalStack

OPERATOR = "arn:aws:iam::123456789012:user/acme-operator"
STRANGER = "arn:aws:iam::123456789012:user/nobody"
MINE, THEIRS = "api-acme", "api-globex"


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Iterator[str]:
    DynamoScopes(stack.physical["ControlTable"]).put_scope(OPERATOR, [MINE])
    with stack.serve_api(principal=OPERATOR) as served:
        yield served.url


def cli(api: str, *args: str, principal: str = OPERATOR) -> tuple[int, Any]:
    """Run the CLI; returns its exit code and its JSON answer (or error text)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--api", api, "--as", principal, "--json"])
    text = out.getvalue().strip()
    return code, json.loads(text) if code == 0 and text else err.getvalue()


def test_a_snooze_created_through_the_api_is_what_the_scorer_honours(stack: LocalStack, api: str) -> None:
    code, made = cli(api, "snooze", "create", MINE, "--metric", "ngr", "--for", "2h", "--reason", "migration")
    assert code == 0, made
    snoozes = DynamoControl(stack.physical["ControlTable"], 0).active_snoozes(MINE, datetime.now(UTC))
    assert [(s["snooze_id"], s["metric"]) for s in snoozes] == [(made["snooze_id"], "ngr")]
    code, listed = cli(api, "snooze", "list", MINE)
    assert code == 0
    assert json.dumps(listed).count(made["snooze_id"]) == 1


def test_an_override_is_audited_and_reaches_the_scorers_config(stack: LocalStack, api: str) -> None:
    code, answer = cli(api, "override", "set", MINE, "ngr", "--threshold", "5.5", "--reason", "noisy source")
    assert code == 0, answer
    control = DynamoControl(stack.physical["ControlTable"], 0)
    assert control.metric_overrides(MINE)["ngr"]["threshold"] == 5.5
    code, audit = cli(api, "override", "audit", MINE)
    assert code == 0
    assert "5.5" in json.dumps(audit)
    assert OPERATOR in json.dumps(audit)


def test_a_label_is_what_the_report_reads(stack: LocalStack, api: str) -> None:
    alert = "ewma-" + "a" * 32
    code, answer = cli(api, "label", "set", MINE, alert, "false_positive", "--note", "promo traffic")
    assert code == 0, answer
    assert DynamoFeedback(stack.physical["ControlTable"]).labels(MINE, [alert]) == {alert: "false_positive"}


def test_another_integration_and_an_unscoped_caller_are_refused(stack: LocalStack, api: str) -> None:
    code, error = cli(api, "snooze", "create", THEIRS, "--for", "1h", "--reason", "not mine")
    assert code == 1
    assert "HTTP 403" in error
    assert DynamoControl(stack.physical["ControlTable"], 0).active_snoozes(THEIRS, datetime.now(UTC)) == []
    code, error = cli(api, "snooze", "list", MINE, principal=STRANGER)
    assert code == 1
    assert "HTTP 403" in error
