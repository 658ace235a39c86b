"""Shared builders for the support-triage tests: schema-v1 alerts, a controllable clock, memory ports."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
from kpi_sentinel.adapters.memory import MemoryIncidents, MemoryTeamOutbox
from kpi_sentinel.alerts import alert_id
from kpi_sentinel.triage.incidents import TriagePorts, TriageSettings

SCHEMAS = Path(__file__).resolve().parents[2] / "layers" / "core" / "kpi_sentinel" / "schemas"
ALERT_SCHEMA = json.loads((SCHEMAS / "alert-v1.json").read_text())
INCIDENT_SCHEMA = json.loads((SCHEMAS / "incident-v1.json").read_text())
_ALERTS = jsonschema.Draft202012Validator(ALERT_SCHEMA, format_checker=jsonschema.FormatChecker())
_MESSAGES = jsonschema.Draft202012Validator(INCIDENT_SCHEMA, format_checker=jsonschema.FormatChecker())

T0 = datetime(2026, 10, 15, 12, tzinfo=UTC)  # the alerts' first period (data time)
NOW = datetime(2026, 10, 15, 13, 5, tzinfo=UTC)  # when triage runs (the triage clock)
SETTINGS = TriageSettings(backoff_seconds=0.0)
TEAMS = ("revenue", "acquisition", "support-ops", "integrations")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_alert(
    metric: str = "ngr",
    dimension: str | None = None,
    value: str | None = None,
    *,
    severity: str = "warning",
    integration: str = "acme-ads",
    detector: str = "ewma",
    period: datetime = T0,
    hours: float = 1,
    contributors: Iterable[tuple[str, str]] = (),
    tier: str = "standard",
    segment: str = "default",
    summary: str | None = None,
) -> dict[str, Any]:
    """A schema-v1 alert (checked against alert-v1.json) with a deterministic id."""
    start = period
    end = start + timedelta(hours=hours)
    found = [
        {"dimension": d, "value": v, "share": 0.5, "delta": -10.0, "observed": 10.0, "expected": 20.0}
        for d, v in contributors
    ]
    alert = {
        "schema_version": "1",
        "alert_id": alert_id(integration, detector, metric, dimension or "", value or "", start.isoformat()),
        "integration_id": integration,
        "detector": detector,
        "metric": metric,
        "features": ["clicks", "ngr"] if detector == "isolation_forest" else None,
        "dimension": dimension,
        "dimension_value": value,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "granularity_seconds": int(hours * 3600),
        "observed": 60.0,
        "expected": 100.0,
        "expected_lower": 80.0,
        "expected_upper": 120.0,
        "deviation": {"absolute": -40.0, "percent": -40.0},
        "score": -7.5,
        "sustained_score": None,
        "threshold": 3.5,
        "direction": "down",
        "bad_direction": "down",
        "severity": severity,
        "contributors": found,
        "summary": summary
        or f"{metric} {f'{dimension}={value}' if dimension else 'total'} dropped at {start:%H:%M}",
        "baseline": "7-day baseline",
        "tier": tier,
        "segment": segment,
        "source_key": f"syncs/{integration}/x.csv",
    }
    _ALERTS.validate(alert)
    return alert


def memory_ports(clock: Clock | None = None) -> tuple[TriagePorts, MemoryIncidents, MemoryTeamOutbox]:
    store, outbox = MemoryIncidents(), MemoryTeamOutbox()
    return TriagePorts(incidents=store, outbox=outbox, clock=clock or Clock()), store, outbox


def check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Every message validates against incident-v1.json and agrees with its incident."""
    for message in messages:
        _MESSAGES.validate(message)
        incident = message["incident"]
        assert message["team"] == incident["team"]
        assert message["priority"] == incident["priority"]
        assert message["severity"] == incident["severity"]
        assert message["dedup_key"].startswith(incident["incident_id"] + ":")


class FlakyOutbox(MemoryTeamOutbox):
    """Fails the next ``failures`` sends, as SQS being unreachable (or the Lambda dying) would."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("SQS unreachable")
        super().send(messages)


def sqs_event(*bodies: str) -> dict[str, Any]:
    """An SQS event for the support-triage handler, one record per body (message ids are UUIDs of n)."""
    return {
        "Records": [
            {
                "messageId": str(uuid.UUID(int=n)),
                "receiptHandle": f"r{n}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:support-triage",
                "awsRegion": "eu-west-1",
            }
            for n, body in enumerate(bodies)
        ]
    }
