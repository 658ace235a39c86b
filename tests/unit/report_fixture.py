"""A small, hand-checkable day for the KPI report tests: 2026-11-24, three integrations.

Numbers the tests assert (worked out by hand from what is written below):

* alerts: acme-ads 4 (1 critical, 2 warning, 1 info; detectors ewma 3, isolation_forest 1),
  globex-traffic 2 (1 critical, 1 warning); initech-support none (only suppressed alerts).
* labels: acme-ads A1 true, A2 false, A3 expected, A4 true -> precision 2/3; globex-traffic G1 false,
  G2 unlabelled -> precision 0/1; overall 2/4 = 0.5 with 1 expected and 1 unlabelled.
* incidents opened on the day (as of 2026-11-25T06:00Z): I1 met (ack after 15 min, SLA 30), I2 missed
  (ack after 90 min, SLA 60), I3 overdue and still open, I4 resolved before due unacknowledged, I5 no
  SLA (ack after 30 min), I6 resolved after due unacknowledged (overdue), I8 not yet due; I7 opened the
  next day and is not in the report. Overall adherence 1 / (1 + 1 + 2) = 0.25, one open overdue,
  median time to acknowledge of 15, 90 and 30 minutes = 30.
* suppressed: acme-ads 2 by snoozes and 1 by the calendar; initech-support 3 by the calendar (one line
  repeated in a second object, counted once).
* history: acme-ads clicks, ngr and signups totals for 24 hours (one period rewritten by a later
  object, one calendar period, warm-up, late and slice rows that are not plotted); globex-traffic
  clicks and ftds.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kpi_sentinel.adapters.memory import MemoryFeedback, MemoryObjects
from kpi_sentinel.alerts import alert_id
from kpi_sentinel.ports import ReportPorts
from kpi_sentinel.report.record import record_alerts
from kpi_sentinel.sync import HISTORY_COLUMNS
from kpi_sentinel.sync import write_suppressed as scorer_write_suppressed

DATA = "data-bucket"
DAY = date(2026, 11, 24)
MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)
AS_OF = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
FORMULA = '=HYPERLINK("http://x")'


def at(hour: float, day_offset: int = 0) -> datetime:
    return MIDNIGHT + timedelta(days=day_offset, hours=hour)


def make_alert(
    integration_id: str,
    metric: str,
    hour: int,
    severity: str,
    *,
    detector: str = "ewma",
    dimension: str | None = None,
    value: str | None = None,
    observed: float = 50.0,
    expected: float = 100.0,
    contributors: Sequence[tuple[str, str, float]] = (),
    summary: str | None = None,
) -> dict[str, Any]:
    """A schema-v1 alert with a real deterministic id."""
    start = at(hour)
    change = (observed - expected) / abs(expected) * 100
    return {
        "schema_version": "1",
        "alert_id": alert_id(
            integration_id, detector, metric, dimension or "", value or "", start.isoformat()
        ),
        "integration_id": integration_id,
        "detector": detector,
        "metric": metric,
        "features": ["clicks", "ngr"] if detector == "isolation_forest" else None,
        "dimension": dimension,
        "dimension_value": value,
        "period_start": start.isoformat(),
        "period_end": (start + timedelta(hours=1)).isoformat(),
        "granularity_seconds": 3600,
        "observed": observed,
        "expected": expected,
        "expected_lower": expected * 0.8,
        "expected_upper": expected * 1.2,
        "deviation": {"absolute": observed - expected, "percent": round(change, 2)},
        "score": -6.0 if observed < expected else 4.0,
        "sustained_score": None,
        "threshold": 3.5,
        "direction": "down" if observed < expected else "up",
        "bad_direction": "down",
        "severity": severity,
        "contributors": [
            {"dimension": d, "value": v, "share": s, "delta": -10.0, "observed": 1.0, "expected": 11.0}
            for d, v, s in contributors
        ],
        "summary": summary or f"{metric} moved at {start.isoformat()}",
        "baseline": "7-day baseline",
        "tier": "standard",
        "segment": "casino",
        "source_key": f"syncs/{integration_id}/x.csv",
    }


A1 = make_alert(
    "acme-ads", "ngr", 10, "critical", observed=600.0, expected=1000.0,
    contributors=[("source", "telegram-push", 0.83), ("source", "google", 0.17)],
    summary="NGR dropped 40% vs the 7-day baseline; source telegram-push accounts for 83% of the drop",
)  # fmt: skip
A2 = make_alert("acme-ads", "signups", 11, "warning", contributors=[("source", "telegram-push", 0.6)])
A3 = make_alert(
    "acme-ads",
    "clicks",
    12,
    "info",
    dimension="source",
    value=SCRIPT,
    observed=150.0,
    expected=100.0,
    summary=IMG,
)
A4 = make_alert(
    "acme-ads", "ngr", 13, "warning", detector="isolation_forest", observed=700.0, expected=1000.0,
    contributors=[("feature", "ngr", 0.7)],
)  # fmt: skip
G1 = make_alert(
    "globex-traffic", "clicks", 9, "warning", dimension="campaign", value=FORMULA, summary=FORMULA
)
G2 = make_alert("globex-traffic", "ftds", 15, "critical", observed=5.0, expected=40.0)
ALERTS = (A1, A2, A3, A4, G1, G2)
LABELS = {
    ("acme-ads", A1["alert_id"]): "true_positive",
    ("acme-ads", A2["alert_id"]): "false_positive",
    ("acme-ads", A3["alert_id"]): "expected",
    ("acme-ads", A4["alert_id"]): "true_positive",
    ("globex-traffic", G1["alert_id"]): "false_positive",
}


def incident(
    incident_id: str,
    integration_id: str,
    opened: datetime,
    sla_minutes: int | None,
    *,
    acknowledged: datetime | None = None,
    resolved: datetime | None = None,
    priority: str = "P2",
    summary: str = "NGR dropped",
) -> dict[str, Any]:
    status = "resolved" if resolved else "acknowledged" if acknowledged else "open"
    due = None if sla_minutes is None else opened + timedelta(minutes=sla_minutes)
    return {
        "incident_id": incident_id,
        "integration_id": integration_id,
        "family": "revenue",
        "team": "payments-support",
        "priority": priority,
        "sla_minutes": sla_minutes,
        "status": status,
        "opened_at": opened.isoformat(),
        "last_seen_at": opened.isoformat(),
        "acknowledged_at": None if acknowledged is None else acknowledged.isoformat(),
        "resolved_at": None if resolved is None else resolved.isoformat(),
        "due_at": None if due is None else due.isoformat(),
        "severity": "critical" if priority == "P1" else "warning",
        "count": 2,
        "alert_ids": [],
        "dimensions": {},
        "metrics": ["ngr"],
        "summary": summary,
        "first_summary": summary,
        "escalations": [],
        "version": 1,
    }


INCIDENTS = (
    incident("I1", "acme-ads", at(10.0 + 5 / 60), 30, acknowledged=at(10.0 + 20 / 60), priority="P1"),
    incident("I2", "acme-ads", at(11.0 + 5 / 60), 60, acknowledged=at(12.0 + 35 / 60)),
    incident("I3", "globex-traffic", at(13), 60, summary=IMG),
    incident("I4", "globex-traffic", at(23), 240, resolved=at(2, day_offset=1), priority="P3"),
    incident("I5", "acme-ads", at(14), None, acknowledged=at(14.5), priority="P4"),
    incident("I6", "globex-traffic", at(22), 15, resolved=at(23), priority="P1"),
    incident("I7", "acme-ads", at(5, day_offset=1), 60),
    incident("I8", "initech-support", at(23.5), 480, priority="P3"),
)


class ListedIncidents:
    """The incident store's read side as support triage provides it (filtered by when it opened).

    Tests may spoil an incident's fields after construction; the store still files it under the time
    it was opened, as a real store indexes it.
    """

    def __init__(self, incidents: Sequence[dict[str, Any]]) -> None:
        self.incidents = [dict(i) for i in incidents]
        self.opened = [datetime.fromisoformat(i["opened_at"]) for i in incidents]
        self.asked: list[tuple[datetime, datetime]] = []

    def incidents_opened(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        self.asked.append((start, end))
        for opened, item in zip(self.opened, self.incidents, strict=True):
            if start <= opened < end:
                yield dict(item)


def history_body(rows: Sequence[Sequence[Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    writer.writerows(rows)
    return gzip.compress(text.getvalue().encode(), mtime=0)


def history_row(
    integration_id: str,
    metric: str,
    hour: int,
    observed: float,
    expected: float,
    status: str = "scored",
    **extra: str,
) -> list[Any]:
    values = {
        "period_start": at(hour).isoformat(),
        "integration_id": integration_id,
        "metric": metric,
        "dimension": "",
        "dimension_value": "",
        "observed": f"{observed:.10g}",
        "expected": f"{expected:.10g}",
        "expected_lower": f"{expected * 0.8:.10g}",
        "expected_upper": f"{expected * 1.2:.10g}",
        "score": "0.5",
        "status": status,
        "alert_severity": "",
        "sync_key": f"syncs/{integration_id}/{hour}.csv",
        "sustained": "",
        **extra,
    }
    return [values[c] for c in HISTORY_COLUMNS]


BASES = {"clicks": 100.0, "ngr": 1000.0, "signups": 100.0, "ftds": 40.0}


def write_history(objects: MemoryObjects) -> None:
    prefix = f"history/integration=acme-ads/date={DAY.isoformat()}/"
    rows = []
    for hour in range(24):
        for metric in ("clicks", "ngr", "signups"):
            status = "calendar" if (metric, hour) == ("clicks", 18) else "scored"
            rows.append(history_row("acme-ads", metric, hour, BASES[metric], BASES[metric], status))
        rows.append(
            history_row("acme-ads", "clicks", hour, 10.0, 10.0, dimension="source", dimension_value="google")
        )
    rows.append(history_row("acme-ads", "deposits", 0, 5.0, 0.0, "warmup"))
    rows.append(history_row("acme-ads", "late_metric", 3, 5.0, 0.0, "late"))
    objects.put(DATA, prefix + "0001.csv.gz", history_body(rows), "application/gzip")
    # A later sync rewrote NGR at 10:00 with the crater: the last object in key order wins.
    rewrite = [history_row("acme-ads", "ngr", 10, 600.0, 1000.0)]
    objects.put(DATA, prefix + "0002.csv.gz", history_body(rewrite), "application/gzip")
    prefix = f"history/integration=globex-traffic/date={DAY.isoformat()}/"
    rows = [
        history_row("globex-traffic", m, h, BASES[m], BASES[m]) for h in range(24) for m in ("clicks", "ftds")
    ]
    objects.put(DATA, prefix + "0001.csv.gz", history_body(rows), "application/gzip")


def suppressed_body(lines: Sequence[tuple[dict[str, Any], str]]) -> bytes:
    text = "".join(json.dumps({"alert": a, "by": by}) + "\n" for a, by in lines)
    return gzip.compress(text.encode(), mtime=0)


def write_suppressed(objects: MemoryObjects) -> None:
    """Through the scorer's own writer, so the report reads exactly what the scorer keeps."""
    acme = [
        (make_alert("acme-ads", "clicks", 3, "warning"), "snooze snz-1"),
        (make_alert("acme-ads", "ngr", 4, "warning"), "snooze"),  # a snooze without an id
        (make_alert("acme-ads", "signups", 18, "warning"), "calendar campaign 'Black Friday'"),
    ]
    scorer_write_suppressed(objects, DATA, "acme-ads", "syncs/acme-ads/a.csv#1", acme)
    initech = [
        (make_alert("initech-support", "tickets", h, "warning"), "calendar holiday 'Thanksgiving'")
        for h in (1, 2, 3)
    ]
    scorer_write_suppressed(objects, DATA, "initech-support", "syncs/initech-support/b.csv#1", initech)
    # A redelivered sync (another version of the same file) suppressed the first alert again.
    scorer_write_suppressed(objects, DATA, "initech-support", "syncs/initech-support/b.csv#2", initech[:1])


@dataclass
class Fixture:
    objects: MemoryObjects
    feedback: MemoryFeedback
    incidents: ListedIncidents
    ports: ReportPorts


def fixture_day(
    alerts: Sequence[dict[str, Any]] = ALERTS, *, incidents: bool = True, feedback: bool = True
) -> Fixture:
    objects = MemoryObjects()
    record_alerts(objects, DATA, alerts[:3])  # two batches, as the queue would deliver them
    record_alerts(objects, DATA, alerts[3:])
    write_history(objects)
    write_suppressed(objects)
    labels = MemoryFeedback()
    for (integration, alert), label in LABELS.items():
        labels.put_label(integration, alert, label)
    store = ListedIncidents(INCIDENTS)
    ports = ReportPorts(
        objects=objects,
        data_bucket=DATA,
        incidents=store if incidents else None,
        feedback=labels if feedback else None,
        clock=lambda: AS_OF,
    )
    return Fixture(objects, labels, store, ports)
