"""The kpi_report handler: which event builds which report, what it refuses, what it imports."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from kpi_sentinel.handlers import report as handler
from kpi_sentinel.handlers.report import BadReportRequest, ReportRequest

from tests.unit.report_fixture import AS_OF, DATA, fixture_day

EVENTS = Path(__file__).resolve().parents[2] / "events"
FILES = ("alerts.csv", "index.html", "summary.json")


def _event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def test_given_the_daily_schedule_when_it_fires_then_the_previous_utc_day_is_reported() -> None:
    # Given events/report-daily-schedule.json, fired at 2026-11-25T00:15Z
    fixture = fixture_day()

    # When the handler runs
    outcome = handler.handle(_event("report-daily-schedule.json"), None, fixture.ports)

    # Then the report of 2026-11-24 is in the data bucket
    assert outcome["report"] == "2026-11-24"
    assert fixture.objects.keys(DATA, "reports/") == [f"reports/2026-11-24/{n}" for n in FILES]
    assert (outcome["alerts"], outcome["integrations"], outcome["problems"]) == (6, 3, 0)
    summary = json.loads(fixture.objects.get(DATA, "reports/2026-11-24/summary.json"))
    assert summary["incidents"]["sla"]["adherence"] == 0.25


def test_given_a_build_report_request_when_handled_then_that_range_is_reported() -> None:
    fixture = fixture_day()
    outcome = handler.handle(
        {"action": "build_report", "start": "2026-11-23", "end": "2026-11-24", "integrations": ["quiet-one"]},
        None,
        fixture.ports,
    )
    assert outcome["prefix"] == "reports/2026-11-23_2026-11-24/"
    assert outcome["integrations"] == 4  # the three of the data and the one asked for
    prefix = f"s3://{DATA}/reports/2026-11-23_2026-11-24/"
    assert outcome["written"] == [prefix + n for n in ("index.html", "alerts.csv", "summary.json")]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"action": "build_report"}, ReportRequest(date(2026, 11, 24), date(2026, 11, 24))),
        (
            {"action": "build_report", "start": "2026-11-01"},
            ReportRequest(date(2026, 11, 1), date(2026, 11, 1)),
        ),
        (
            {"action": "build_report", "start": "2026-11-01", "end": "2026-11-30", "integrations": ["a-1"]},
            ReportRequest(date(2026, 11, 1), date(2026, 11, 30), ("a-1",)),
        ),
        (
            {"detail-type": "Scheduled Event", "source": "aws.events", "time": "2026-03-01T00:10:00Z"},
            ReportRequest(date(2026, 2, 28), date(2026, 2, 28)),
        ),
    ],
)
def test_given_an_invocation_when_read_then_it_asks_for_the_expected_range(
    event: dict[str, Any], expected: ReportRequest
) -> None:
    assert ReportRequest.from_event(event, AS_OF) == expected


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ({"hello": 1}, "not an SQS batch ('Records'), a Scheduled Event"),
        ({"action": "build_report", "start": "24/11/2026"}, "field 'start' must be a date YYYY-MM-DD"),
        (
            {"action": "build_report", "start": "2026-11-24", "end": "2026-11-01"},
            "field 'end' 2026-11-01 is before",
        ),
        ({"action": "build_report", "start": "2026-01-01", "end": "2026-03-01"}, "longer than 31 days"),
        (
            {"action": "build_report", "integrations": ["../etc"]},
            "field 'integrations' must be a list of integration",
        ),
        ({"detail-type": "Scheduled Event", "time": "soon"}, "field 'time' is not an ISO 8601 time"),
        (
            {"detail-type": "Scheduled Event", "time": "2026-11-25T00:15:00"},
            "field 'time' needs a UTC offset",
        ),
    ],
)
def test_given_a_bad_invocation_when_read_then_the_error_names_what_is_wrong(
    event: dict[str, Any], words: str
) -> None:
    with pytest.raises(BadReportRequest) as raised:
        ReportRequest.from_event(event, datetime(2026, 11, 25, 6, tzinfo=UTC))
    assert words in str(raised.value)


def test_given_no_environment_when_the_aws_ports_are_built_then_the_missing_variables_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DATA_BUCKET", "CONTROL_TABLE", "INCIDENTS_TABLE"):
        monkeypatch.delenv(name, raising=False)
    handler._aws_ports.cache_clear()
    try:
        with pytest.raises(
            RuntimeError, match="missing environment variable\\(s\\): DATA_BUCKET, CONTROL_TABLE"
        ):
            handler._aws_ports()
    finally:
        handler._aws_ports.cache_clear()


def test_given_the_function_module_when_imported_then_it_serves_the_report_handler() -> None:
    from functions.kpi_report import app

    assert app.lambda_handler is handler.lambda_handler


def test_given_the_handler_when_imported_then_neither_numpy_nor_matplotlib_is_loaded() -> None:
    # Recording alerts (the function's most frequent work) must not pay for the plotting stack.
    code = "import json, sys; import kpi_sentinel.handlers.report; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert not loaded & {"numpy", "matplotlib", "pandas", "sklearn", "boto3", "PIL"}, sorted(
        loaded & {"numpy", "matplotlib", "pandas", "sklearn", "boto3", "PIL"}
    )
