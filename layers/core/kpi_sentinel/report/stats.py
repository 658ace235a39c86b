"""The report's numbers: alert counts, top contributors, SLA adherence, alert precision, suppressions.

SLA adherence (support's reaction time). An incident has an SLA when ``sla_minutes`` is a positive
number; it is due at ``due_at`` (``opened_at + sla_minutes`` when ``due_at`` is absent). Support
triage moves ``due_at`` later when it escalates an incident that nobody acknowledged in time (an
``escalations`` entry with reason ``sla`` or ``sla_breached``): such an incident breached its SLA
whatever its current ``due_at`` says. Its state:

* ``met``: acknowledged at or before its due time and never escalated for its SLA; ``missed``:
  acknowledged after it, or after an SLA escalation;
* ``overdue``: never acknowledged, and its due time passed while it was unacknowledged — still open
  (``open_overdue``), or resolved after the due time without anyone acknowledging it (an incident
  that resolves itself after its due time was not reacted to in time either);
* ``not_due``: unacknowledged, due time not reached yet (as of the report); ``closed_before_due``:
  resolved before its due time without an acknowledgement; neither counts either way.

Adherence is ``met / (met + missed + overdue)``; None when no incident is in those states. The median
time to acknowledge covers every acknowledged incident of the report (with an SLA or not).

Precision from operators' labels: ``true_positive / (true_positive + false_positive)`` over the
labelled alerts; ``expected`` (a real move that was planned or known) is counted apart and in neither
term. None when no alert carries one of the two labels.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kpi_sentinel.report.data import SuppressedAlert

SEVERITY_ORDER = ("critical", "warning", "info")
LABELS = ("true_positive", "false_positive", "expected")
SLA_STATES = ("met", "missed", "overdue", "not_due", "closed_before_due", "no_sla")
SLA_ESCALATIONS = ("sla", "sla_breached")  # escalation reasons that mean "not acknowledged in time"
TOP_CONTRIBUTORS = 10


class BadIncident(ValueError):
    """An incident record that cannot be read; the message names the incident and the field."""


def severity_rank(alert: Mapping[str, Any]) -> int:
    severity = alert.get("severity")
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def alert_order(alert: Mapping[str, Any]) -> tuple[Any, ...]:
    """Most severe first, then by time, integration and series."""
    return (
        severity_rank(alert),
        alert["period_start"],
        alert["integration_id"],
        alert["metric"],
        alert.get("dimension") or "",
        alert.get("dimension_value") or "",
        alert["alert_id"],
    )


def counts_by(alerts: Iterable[Mapping[str, Any]], field: str) -> dict[str, int]:
    """Alert counts per value of ``field``; severities always list all three, most severe first."""
    counts = Counter(str(a.get(field)) for a in alerts)
    if field == "severity":
        return {s: counts.get(s, 0) for s in SEVERITY_ORDER}
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Contributor:
    dimension: str
    value: str
    share: float  # the summed share of the change over the alerts it contributed to
    alerts: int  # how many alerts name it as a contributor

    @property
    def label(self) -> str:
        return f"{self.dimension}={self.value}"


def top_contributors(alerts: Iterable[Mapping[str, Any]], limit: int = TOP_CONTRIBUTORS) -> list[Contributor]:
    """Contributors aggregated across alerts: largest summed share first."""
    share: dict[tuple[str, str], float] = defaultdict(float)
    seen: Counter[tuple[str, str]] = Counter()
    for alert in alerts:
        for item in alert.get("contributors") or []:
            key = (item["dimension"], item["value"])
            share[key] += float(item["share"])
            seen[key] += 1
    ranked = sorted(share, key=lambda k: (-share[k], -seen[k], k))
    return [Contributor(d, v, round(share[(d, v)], 4), seen[(d, v)]) for d, v in ranked[:limit]]


@dataclass(frozen=True)
class SuppressedCounts:
    snooze: int = 0
    calendar: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.snooze + self.calendar + self.other

    @classmethod
    def of(cls, suppressed: Iterable[SuppressedAlert]) -> SuppressedCounts:
        counts = Counter(s.cause for s in suppressed)
        return cls(counts.get("snooze", 0), counts.get("calendar", 0), counts.get("other", 0))


@dataclass(frozen=True)
class PrecisionStats:
    alerts: int
    true_positive: int
    false_positive: int
    expected: int
    other_labels: int  # a label value outside true_positive / false_positive / expected
    unlabelled: int

    @property
    def labelled(self) -> int:
        return self.true_positive + self.false_positive + self.expected + self.other_labels

    @property
    def precision(self) -> float | None:
        judged = self.true_positive + self.false_positive
        return self.true_positive / judged if judged else None

    @classmethod
    def of(cls, alert_ids: Sequence[str], labels: Mapping[str, str]) -> PrecisionStats:
        """
        >>> p = PrecisionStats.of(["a", "b", "c", "d"], {"a": "true_positive", "b": "false_positive", "c": "expected"})
        >>> (p.precision, p.expected, p.unlabelled)
        (0.5, 1, 1)
        """
        found = Counter(labels[a] for a in alert_ids if a in labels)
        return cls(
            alerts=len(alert_ids),
            true_positive=found.get("true_positive", 0),
            false_positive=found.get("false_positive", 0),
            expected=found.get("expected", 0),
            other_labels=sum(n for label, n in found.items() if label not in LABELS),
            unlabelled=len(alert_ids) - sum(found.values()),
        )

    @classmethod
    def combine(cls, parts: Iterable[PrecisionStats]) -> PrecisionStats:
        parts = list(parts)
        return cls(*(sum(getattr(p, name) for p in parts) for name in cls.__dataclass_fields__))

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "labelled": self.labelled,
            "true_positive": self.true_positive,
            "false_positive": self.false_positive,
            "expected": self.expected,
            "other_labels": self.other_labels,
            "unlabelled": self.unlabelled,
            "precision": None if self.precision is None else round(self.precision, 4),
        }


def _time(raw: Mapping[str, Any], name: str, incident: str) -> datetime:
    value = raw.get(name)
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise BadIncident(
            f"incident {incident}: field '{name}' is not an ISO 8601 time: {value!r:.80}"
        ) from None
    if moment.tzinfo is None:
        raise BadIncident(f"incident {incident}: field '{name}' needs a UTC offset: {value!r:.80}")
    return moment.astimezone(UTC)


def _optional_time(raw: Mapping[str, Any], name: str, incident: str) -> datetime | None:
    return None if raw.get(name) is None else _time(raw, name, incident)


@dataclass(frozen=True)
class Incident:
    """One support incident, as far as the report uses it, with its SLA state as of the report."""

    incident_id: str
    integration_id: str
    team: str
    priority: str
    status: str
    severity: str
    sla_minutes: float | None
    opened_at: datetime
    due_at: datetime | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    count: int
    summary: str
    sla_breached_at: datetime | None  # the first escalation for a missed SLA
    sla_state: str
    acknowledged_by: str | None = None  # who acknowledged it (None: nobody yet, or not recorded)

    @property
    def minutes_to_acknowledge(self) -> float | None:
        if self.acknowledged_at is None:
            return None
        return (self.acknowledged_at - self.opened_at).total_seconds() / 60

    @property
    def open_overdue(self) -> bool:
        return self.sla_state == "overdue" and self.resolved_at is None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], as_of: datetime) -> Incident:
        """Read an incident dict of the triage contract; BadIncident names the field that is wrong."""
        incident = str(raw.get("incident_id") or "")
        if not incident:
            raise BadIncident(f"incident without 'incident_id': {str(raw)[:120]}")
        integration = raw.get("integration_id")
        if not isinstance(integration, str) or not integration:
            raise BadIncident(f"incident {incident}: field 'integration_id' is missing")
        opened = _time(raw, "opened_at", incident)
        acknowledged = _optional_time(raw, "acknowledged_at", incident)
        resolved = _optional_time(raw, "resolved_at", incident)
        sla = raw.get("sla_minutes")
        try:  # DynamoDB numbers may arrive as Decimal or text
            if isinstance(sla, bool):
                raise ValueError
            sla_value = None if sla is None else float(sla)
            if sla_value is not None and not math.isfinite(sla_value):
                raise ValueError
        except (TypeError, ValueError):
            raise BadIncident(
                f"incident {incident}: field 'sla_minutes' is not a number: {sla!r:.80}"
            ) from None
        sla_minutes = sla_value if sla_value is not None and sla_value > 0 else None  # 0 or less: no SLA
        due = _optional_time(raw, "due_at", incident)
        if due is None and sla_minutes is not None:
            due = opened + timedelta(minutes=sla_minutes)
        escalations = raw.get("escalations") or []
        if not isinstance(escalations, list) or not all(isinstance(x, dict) for x in escalations):
            raise BadIncident(f"incident {incident}: field 'escalations' must be a list of objects")
        breaches = [
            _time(x, "at", f"{incident} escalation")
            for x in escalations
            if x.get("reason") in SLA_ESCALATIONS
        ]
        breached = min(breaches, default=None)
        try:
            count = int(raw.get("count") or 0)
        except (TypeError, ValueError):
            raise BadIncident(
                f"incident {incident}: field 'count' is not a number: {raw.get('count')!r:.80}"
            ) from None
        return cls(
            incident_id=incident,
            integration_id=integration,
            team=str(raw.get("team") or ""),
            priority=str(raw.get("priority") or ""),
            status=str(raw.get("status") or ""),
            severity=str(raw.get("severity") or ""),
            sla_minutes=sla_minutes,
            opened_at=opened,
            due_at=due if sla_minutes is not None else None,
            acknowledged_at=acknowledged,
            resolved_at=resolved,
            count=count,
            summary=str(raw.get("summary") or ""),
            sla_breached_at=breached,
            sla_state=_sla_state(sla_minutes, due, acknowledged, resolved, breached, as_of),
            acknowledged_by=None if raw.get("acknowledged_by") is None else str(raw["acknowledged_by"]),
        )


def _sla_state(
    sla_minutes: float | None,
    due: datetime | None,
    acknowledged: datetime | None,
    resolved: datetime | None,
    breached: datetime | None,
    as_of: datetime,
) -> str:
    if sla_minutes is None or due is None:
        return "no_sla"
    if breached is not None:
        return "missed" if acknowledged is not None else "overdue"
    if acknowledged is not None:
        return "met" if acknowledged <= due else "missed"
    unacknowledged_until = resolved if resolved is not None else as_of
    if unacknowledged_until > due:
        return "overdue"
    return "closed_before_due" if resolved is not None else "not_due"


@dataclass(frozen=True)
class SlaStats:
    incidents: int
    with_sla: int
    met: int
    missed: int
    overdue: int
    open_overdue: int
    not_due: int
    closed_before_due: int
    median_minutes_to_acknowledge: float | None

    @property
    def adherence(self) -> float | None:
        judged = self.met + self.missed + self.overdue
        return self.met / judged if judged else None

    @classmethod
    def of(cls, incidents: Sequence[Incident]) -> SlaStats:
        states = Counter(i.sla_state for i in incidents)
        waits = [m for m in (i.minutes_to_acknowledge for i in incidents) if m is not None]
        return cls(
            incidents=len(incidents),
            with_sla=len(incidents) - states.get("no_sla", 0),
            met=states.get("met", 0),
            missed=states.get("missed", 0),
            overdue=states.get("overdue", 0),
            open_overdue=sum(1 for i in incidents if i.open_overdue),
            not_due=states.get("not_due", 0),
            closed_before_due=states.get("closed_before_due", 0),
            median_minutes_to_acknowledge=round(statistics.median(waits), 2) if waits else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "incidents": self.incidents,
            "with_sla": self.with_sla,
            "acknowledged_within_sla": self.met,
            "acknowledged_after_sla": self.missed,
            "overdue_unacknowledged": self.overdue,
            "open_overdue": self.open_overdue,
            "not_yet_due": self.not_due,
            "closed_before_due": self.closed_before_due,
            "adherence": None if self.adherence is None else round(self.adherence, 4),
            "median_minutes_to_acknowledge": self.median_minutes_to_acknowledge,
        }
