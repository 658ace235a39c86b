"""Incidents: alerts of one integration and one root cause become one incident, repeats update it.

**Grouping.** An alert joins an unresolved incident of its integration when

* it is of the same metric *family* (:meth:`RoutingRules.family_of`: ``ngr``, ``deposits`` and ``ftds``
  are one revenue family; an isolation-forest alert is ``multivariate``), and
* their slices overlap: one of them is about a total (``dimension`` null: a total covers all its slices),
  or they share a ``dimension=value`` among the alert's own slice and its contributors, and
* the alert's period lies within ``window`` (6 h by default) of the periods the incident has seen:
  its start is at most ``window`` after the incident's ``last_period_end`` (and its end at most
  ``window`` before ``first_period_start``, for late data).

The window is measured on the alerts' own periods, not on when they arrived, so a replay, a backfill or
a burst of late syncs groups exactly as the live stream would. Among several incidents that fit, the
one that saw the latest period wins. A resolved incident is never reopened: a later alert opens a new
one. Each alert is claimed by exactly one incident: the same ``alert_id`` twice is a no-op.

**Record** (a plain dict; ``schemas/incident-v1.json`` documents every field): ``incident_id`` is
``"inc-"`` and 24 hex digits of a SHA-256 over integration, family and the first alert's id. All
timestamps are ISO 8601 UTC strings (``2026-10-15T12:00:00+00:00``) of the triage clock:
``opened_at``/``last_seen_at`` say when the first/latest alert was triaged, ``due_at`` is ``opened_at``
plus the SLA (minutes to acknowledge) and moves when the incident escalates. ``version`` increases by
one with every saved change (optimistic concurrency).

**Priority and escalation.** An incident's priority is the most urgent priority among its alerts'
routes; its team is the team of the alert that opened it. A repeat that raises the priority or the
severity (warning -> critical) is an *escalation*: recorded in ``escalations`` and announced. A repeat
that changes nothing important is saved but announces nothing. The SLA check escalates open incidents
past due (:mod:`kpi_sentinel.triage.sla`).

**Acknowledgement and resolution.** ``acknowledged_by``/``resolved_by`` say who acknowledged or
resolved the incident (the operator API's caller, or ``freshness-check``), ``resolution_reason`` why
it was resolved: ``operator`` (through the operator API) or ``data_resumed`` (see below). They are
None until then; records stored before these fields existed load with None (:func:`with_defaults`).

**Missing-data resolutions.** Info alerts are for the report and change no incident, except the
freshness check's resolution of a ``missing_data`` outage: an ``info`` alert with ``resolves`` (the
outage's first alert id) and ``resolved_alert_ids`` (all of its alerts). Every incident that claimed
one of those alerts and is not resolved yet is resolved (by ``freshness-check``, reason
``data_resumed``) and its team gets a ``resolved`` message, saved with the record in one write and
then sent like any other. A redelivered resolution finds the incidents resolved: it changes nothing
and only re-sends what their outboxes still hold. A resolution of alerts no incident claimed (a snooze
or maintenance suppressed the warning, or the claims expired) is ignored with the reason. An incident
an operator resolved earlier stays as it is.

**Delivery.** The messages an update produces are saved on the incident (its outbox) in the same
transaction as the incident and the alert's claim, then sent, then cleared. A redelivered alert that
is already claimed re-sends whatever its incident's outbox still holds; the SLA check sweeps outboxes
left behind by crashed runs. Consumers deduplicate on ``dedup_key``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import (
    Clock,
    IncidentConflict,
    IncidentNotFound,
    IncidentStore,
    StoredIncident,
    TeamOutbox,
)
from kpi_sentinel.triage.messages import ADDED_FIELDS, DATA_RESUMED, OPENED_REASON, build_message
from kpi_sentinel.triage.routing import (
    DETECTORS,
    PRIORITIES,
    SEVERITIES,
    TIERS,
    Route,
    RoutingRules,
    more_urgent,
    priority_rank,
)

log = logging.getLogger(__name__)

DEFAULT_WINDOW: Final = timedelta(hours=6)
ALERT_IDS_KEPT: Final = 50  # the latest alert ids on the record; ``count`` has the total
DIMENSIONS_KEPT: Final = 200  # beyond this, ``dimensions_truncated`` is set (a DynamoDB item is ≤ 400 KB)
TOTAL: Final = "total"
STATUSES: Final = ("open", "acknowledged", "resolved")
TRIAGED_SEVERITIES: Final = ("warning", "critical")  # info alerts are for reports (resolutions aside)
RESOLUTION_REASONS: Final = ("operator", DATA_RESUMED)
OPERATOR_RESOLUTION: Final = "operator"
# Info alerts whose ``resolves``/``resolved_alert_ids`` close incidents: detector -> resolution reason.
RESOLVING_DETECTORS: Final = {"missing_data": DATA_RESUMED}
FRESHNESS_CHECK: Final = "freshness-check"  # who resolves incidents when data resumes
DUE_SHARDS: Final = 4  # the Due index spreads open incidents over due#0 .. due#3
OUTBOX_SHARD: Final = "outbox"  # ... and lists incidents with unsent messages under this key
ALERT_ID: Final = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{32}")
_REQUIRED_STRINGS: Final = ("alert_id", "integration_id", "detector", "metric", "severity", "summary")


class BadAlert(ValueError):
    """A message that is not a usable schema-v1 alert; ``field`` names what is wrong."""

    def __init__(self, field_name: str, problem: str, alert_id: str | None = None) -> None:
        super().__init__(f"alert {alert_id or '(no id)'}: field {field_name!r}: {problem}")
        self.field = field_name
        self.alert_id = alert_id


def iso(at: datetime) -> str:
    """ISO 8601 in UTC to the second; the one format every incident timestamp uses (sorts as text).

    >>> iso(datetime(2026, 10, 15, 14, 30, 5, 123, tzinfo=UTC))
    '2026-10-15T14:30:05+00:00'
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"timestamp {at!r} has no timezone")
    return at.astimezone(UTC).isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def epoch(text: str) -> int:
    return int(parse_iso(text).timestamp())


# --- alerts --------------------------------------------------------------------------------------------


def _timestamp(alert: Mapping[str, Any], name: str, alert_id: str | None) -> datetime:
    value = alert.get(name)
    if not isinstance(value, str):
        raise BadAlert(name, f"must be an ISO 8601 date-time string, got {value!r}", alert_id)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadAlert(name, f"{value!r} is not an ISO 8601 date-time", alert_id) from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadAlert(name, f"{value!r} has no UTC offset", alert_id)
    return parsed


def validate_alert(raw: Any) -> dict[str, Any]:
    """The alert, checked for every field triage relies on (schema v1); raises :class:`BadAlert`."""
    if not isinstance(raw, dict):
        raise BadAlert("(message)", f"must be a JSON object (a schema-v1 alert), got {type(raw).__name__}")
    alert: dict[str, Any] = raw
    given = alert.get("alert_id")
    alert_id = given if isinstance(given, str) else None
    if alert.get("schema_version") != "1":
        raise BadAlert("schema_version", f'must be "1", got {alert.get("schema_version")!r}', alert_id)
    for name in _REQUIRED_STRINGS:
        if not isinstance(alert.get(name), str) or not alert[name]:
            raise BadAlert(name, f"must be a non-empty string, got {alert.get(name)!r}", alert_id)
    if not ALERT_ID.fullmatch(alert["alert_id"]):
        raise BadAlert(
            "alert_id", f"{alert['alert_id']!r} is not an alert id (<detector>-<32 hex>)", alert_id
        )
    if not INTEGRATION_ID.fullmatch(alert["integration_id"]):
        raise BadAlert(
            "integration_id",
            f"{alert['integration_id']!r} is not an integration id ([A-Za-z0-9][A-Za-z0-9_-]{{0,63}})",
            alert_id,
        )
    if alert["detector"] not in DETECTORS:
        raise BadAlert(
            "detector", f"unknown detector {alert['detector']!r} (one of {', '.join(DETECTORS)})", alert_id
        )
    if alert["severity"] not in SEVERITIES:
        raise BadAlert(
            "severity", f"unknown severity {alert['severity']!r} (one of {', '.join(SEVERITIES)})", alert_id
        )
    if alert.get("tier") not in TIERS:
        raise BadAlert("tier", f"must be one of {', '.join(TIERS)}, got {alert.get('tier')!r}", alert_id)
    if not isinstance(alert.get("segment"), str):
        raise BadAlert("segment", f"must be a string, got {alert.get('segment')!r}", alert_id)
    for name in ("dimension", "dimension_value"):
        if name not in alert:
            raise BadAlert(name, "is required (null when the alert is about a metric's total)", alert_id)
    dimension, value = alert["dimension"], alert["dimension_value"]
    for name, item in (("dimension", dimension), ("dimension_value", value)):
        if item is not None and not (isinstance(item, str) and item):
            raise BadAlert(name, f"must be a non-empty string or null, got {item!r}", alert_id)
    if (dimension is None) != (value is None):
        raise BadAlert(
            "dimension_value", "dimension and dimension_value must both be set or both be null", alert_id
        )
    start = _timestamp(alert, "period_start", alert_id)
    end = _timestamp(alert, "period_end", alert_id)
    if end < start:
        raise BadAlert("period_end", f"{alert['period_end']} is before period_start", alert_id)
    contributors = alert.get("contributors")
    if not isinstance(contributors, list):
        raise BadAlert("contributors", f"must be a list, got {type(contributors).__name__}", alert_id)
    for n, contributor in enumerate(contributors):
        if not isinstance(contributor, dict):
            raise BadAlert(f"contributors[{n}]", "must be an object", alert_id)
        for name in ("dimension", "value"):
            if not isinstance(contributor.get(name), str) or not contributor[name]:
                raise BadAlert(f"contributors[{n}].{name}", "must be a non-empty string", alert_id)
    return alert


def resolved_alert_ids(alert: Mapping[str, Any]) -> list[str]:
    """The alert ids a resolution alert closes (``resolves`` first, then ``resolved_alert_ids``), each
    once; empty for an alert that resolves nothing. Raises :class:`BadAlert` for malformed fields."""
    alert_id = alert.get("alert_id")
    found: list[str] = []
    first = alert.get("resolves")
    if first is not None:
        if not isinstance(first, str) or not ALERT_ID.fullmatch(first):
            raise BadAlert(
                "resolves", f"must be an alert id (<detector>-<32 hex>), got {first!r:.80}", alert_id
            )
        found.append(first)
    others = alert.get("resolved_alert_ids")
    if others is not None:
        if not isinstance(others, list):
            raise BadAlert(
                "resolved_alert_ids", f"must be a list of alert ids, got {type(others).__name__}", alert_id
            )
        for n, item in enumerate(others):
            if not isinstance(item, str) or not ALERT_ID.fullmatch(item):
                raise BadAlert(f"resolved_alert_ids[{n}]", f"must be an alert id, got {item!r:.80}", alert_id)
            if item not in found:
                found.append(item)
    return found


def alert_dimensions(alert: Mapping[str, Any]) -> list[str]:
    """``total`` or the alert's ``dimension=value``, plus its contributors' slices, ``total`` first.

    An isolation-forest alert's contributors are features, not slices: they are left out.
    """
    found: set[str] = set()
    if alert["dimension"] is None:
        found.add(TOTAL)
    else:
        found.add(f"{alert['dimension']}={alert['dimension_value']}")
    if alert["detector"] != "isolation_forest":
        found.update(f"{c['dimension']}={c['value']}" for c in alert["contributors"])
    return _ordered(found)


def _ordered(dimensions: Iterable[str]) -> list[str]:
    return sorted(set(dimensions), key=lambda d: (d != TOTAL, d))


def overlaps(a: Iterable[str], b: Iterable[str]) -> bool:
    """Whether two sets of slices can be one incident: either covers a total, or they share a slice.

    >>> overlaps(["source=email"], ["total"]), overlaps(["source=a"], ["source=b"])
    (True, False)
    """
    left, right = set(a), set(b)
    return TOTAL in left or TOTAL in right or bool(left & right)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def incident_id(integration_id: str, family: str, first_alert_id: str) -> str:
    """Deterministic: the incident an alert opens always has the same id.

    >>> incident_id("acme-ads", "revenue", "ewma-62b9241ce6e02396835c0e2529ff34d5")
    'inc-16763a5457967f4f8f908f8f'
    """
    text = "\x1f".join((integration_id, family, first_alert_id))
    return f"inc-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


# --- the record ----------------------------------------------------------------------------------------


def with_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """The stored record with the fields added since version 1 first shipped set to None when missing
    (``acknowledged_by``, ``resolved_by``, ``resolution_reason``): old records load as new ones."""
    for name in ADDED_FIELDS:
        record.setdefault(name, None)
    return record


def in_due_index(record: Mapping[str, Any]) -> bool:
    """Open, unacknowledged and its P1 SLA breach not yet announced: the SLA check watches it."""
    return record["status"] == "open" and not any(
        e["reason"] == "sla_breached" for e in record["escalations"]
    )


def due_entry(record: Mapping[str, Any], has_outbox: bool) -> tuple[str, int] | None:
    """The incident's key in the Due index: ``(due_shard, due_at_epoch)``, or None when not listed.

    An incident with unsent messages is listed under ``outbox`` at its ``updated_at`` (the SLA check
    re-sends them); otherwise an incident the SLA check watches is listed under ``due#<n>`` at its
    ``due_at``.
    """
    if has_outbox:
        return OUTBOX_SHARD, epoch(record["updated_at"])
    if in_due_index(record):
        shard = int(hashlib.sha256(record["incident_id"].encode()).hexdigest()[:8], 16) % DUE_SHARDS
        return f"due#{shard}", epoch(record["due_at"])
    return None


def new_incident(
    alert: Mapping[str, Any], route: Route, family: str, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The incident ``alert`` opens, and its ``opened`` message."""
    at = iso(now)
    dimensions = alert_dimensions(alert)
    record: dict[str, Any] = {
        "incident_id": incident_id(alert["integration_id"], family, alert["alert_id"]),
        "integration_id": alert["integration_id"],
        "family": family,
        "team": route.team,
        "priority": route.priority,
        "sla_minutes": route.sla_minutes,
        "status": "open",
        "opened_at": at,
        "last_seen_at": at,
        "updated_at": at,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolution_reason": None,
        "due_at": iso(now + timedelta(minutes=route.sla_minutes)),
        "severity": alert["severity"],
        "count": 1,
        "alert_ids": [alert["alert_id"]],
        "dimensions": dimensions[:DIMENSIONS_KEPT],
        "dimensions_truncated": len(dimensions) > DIMENSIONS_KEPT,
        "metrics": [alert["metric"]],
        "summary": alert["summary"],
        "first_summary": alert["summary"],
        "escalations": [],
        "first_period_start": iso(parse_iso(alert["period_start"])),
        "last_period_end": iso(parse_iso(alert["period_end"])),
        "tier": alert["tier"],
        "segment": alert["segment"],
        "routed_by": {"team": route.team_rule, "priority": route.priority_rule},
        "version": 1,
    }
    return record, build_message(record, "opened", OPENED_REASON, at, alert)


def fits(record: Mapping[str, Any], alert: Mapping[str, Any], window: timedelta) -> bool:
    """Whether ``alert`` joins the incident (same family is the caller's business): see the module doc."""
    if record["status"] == "resolved" or not overlaps(record["dimensions"], alert_dimensions(alert)):
        return False
    start, end = parse_iso(alert["period_start"]), parse_iso(alert["period_end"])
    return (
        start <= parse_iso(record["last_period_end"]) + window
        and end >= parse_iso(record["first_period_start"]) - window
    )


def pick(
    incidents: Sequence[StoredIncident], alert: Mapping[str, Any], window: timedelta
) -> StoredIncident | None:
    """The incident the alert joins: among those that fit, the one that saw the latest period."""
    fitting = [s for s in incidents if fits(s.record, alert, window)]
    return max(
        fitting,
        key=lambda s: (s.record["last_period_end"], s.record["opened_at"], s.record["incident_id"]),
        default=None,
    )


def absorb(
    record: Mapping[str, Any], alert: Mapping[str, Any], route: Route, now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The incident after ``alert`` joined it, and the messages that change calls for (maybe none)."""
    at = iso(now)
    updated = copy.deepcopy(dict(record))
    updated["count"] += 1
    updated["last_seen_at"] = at
    updated["updated_at"] = at
    updated["alert_ids"] = [*updated["alert_ids"], alert["alert_id"]][-ALERT_IDS_KEPT:]
    existing = list(updated["dimensions"])
    newcomers = [d for d in alert_dimensions(alert) if d not in existing]  # ``total`` first
    room = DIMENSIONS_KEPT - len(existing)
    if len(newcomers) > room:
        updated["dimensions_truncated"] = True
        kept = newcomers[: max(room, 0)]
        if TOTAL in newcomers and TOTAL not in kept:  # a total covers every slice: it always stays
            existing, kept = existing[:-1], [TOTAL]
        newcomers = kept
    updated["dimensions"] = _ordered([*existing, *newcomers])
    updated["metrics"] = sorted({*updated["metrics"], alert["metric"]})
    start, end = parse_iso(alert["period_start"]), parse_iso(alert["period_end"])
    if end >= parse_iso(updated["last_period_end"]):  # the latest period speaks for the incident
        updated["summary"] = alert["summary"]
        updated["last_period_end"] = iso(end)
    updated["first_period_start"] = iso(min(start, parse_iso(updated["first_period_start"])))
    before = updated["priority"]
    severity_raised = severity_rank(alert["severity"]) > severity_rank(updated["severity"])
    if severity_raised:
        updated["severity"] = alert["severity"]
    priority = more_urgent(before, route.priority)
    if priority != before:
        updated["priority"] = priority
        updated["sla_minutes"] = route.sla_minutes
        sooner = now + timedelta(minutes=route.sla_minutes)
        updated["due_at"] = iso(min(parse_iso(updated["due_at"]), sooner))
    updated["version"] += 1
    reason = "priority" if priority != before else "severity" if severity_raised else None
    if reason is None:
        return updated, []
    updated["escalations"] = [
        *updated["escalations"],
        {"level": updated["priority"], "from": before, "at": at, "reason": reason},
    ]
    return updated, [build_message(updated, "escalated", reason, at, alert)]


def escalate_for_sla(
    record: Mapping[str, Any], rules: RoutingRules, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The incident escalated because nobody acknowledged it in time, and the message; None if not due.

    Below P1 the priority rises one level and ``due_at`` becomes now plus the new level's SLA, so a
    rerun at the same time does nothing more. At P1 the breach is announced once (reason
    ``sla_breached``) and the incident leaves the Due index.
    """
    if not in_due_index(record) or parse_iso(record["due_at"]) > now:
        return None
    at = iso(now)
    updated = copy.deepcopy(dict(record))
    before = updated["priority"]
    if priority_rank(before) > 0:
        level = PRIORITIES[priority_rank(before) - 1]
        updated["priority"] = level
        updated["sla_minutes"] = rules.sla_for(level)
        updated["due_at"] = iso(now + timedelta(minutes=rules.sla_for(level)))
        reason = "sla"
    else:
        reason = "sla_breached"
    updated["escalations"] = [
        *updated["escalations"],
        {"level": updated["priority"], "from": before, "at": at, "reason": reason},
    ]
    updated["updated_at"] = at
    updated["version"] += 1
    return updated, build_message(updated, "escalated", reason, at, None)


def acknowledged(record: Mapping[str, Any], at: datetime, by: str | None = None) -> dict[str, Any] | None:
    """The incident acknowledged at ``at`` by ``by`` (it leaves the SLA check); None if it is not open."""
    if record["status"] != "open":
        return None
    updated = with_defaults(copy.deepcopy(dict(record)))
    updated.update(status="acknowledged", acknowledged_at=iso(at), acknowledged_by=by, updated_at=iso(at))
    updated["version"] += 1
    return updated


def resolved(
    record: Mapping[str, Any], at: datetime, by: str | None = None, reason: str = OPERATOR_RESOLUTION
) -> dict[str, Any] | None:
    """The incident resolved at ``at`` by ``by`` for ``reason`` (``operator`` or ``data_resumed``), for
    good: later alerts open a new one. None if it is resolved already (who resolved it first stays)."""
    if reason not in RESOLUTION_REASONS:
        raise ValueError(f"unknown resolution reason {reason!r} (one of {', '.join(RESOLUTION_REASONS)})")
    if record["status"] == "resolved":
        return None
    updated = with_defaults(copy.deepcopy(dict(record)))
    updated.update(
        status="resolved", resolved_at=iso(at), resolved_by=by, resolution_reason=reason, updated_at=iso(at)
    )
    updated["version"] += 1
    return updated


def transition(
    store: IncidentStore,
    incident_id_: str,
    change: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    attempts: int = 8,
) -> dict[str, Any]:
    """Apply ``change`` to the stored incident with optimistic concurrency; returns the stored record.

    The incident's outbox is carried over untouched. Raises :class:`IncidentNotFound`.
    """
    for _ in range(attempts):
        stored = store.get(incident_id_)
        if stored is None:
            raise IncidentNotFound(incident_id_)
        updated = change(stored.record)
        if updated is None:
            return stored.record
        try:
            store.save(updated, stored.version, list(stored.outbox))
        except IncidentConflict:
            continue
        return updated
    raise IncidentConflict(f"incident {incident_id_} kept changing; gave up after {attempts} attempts")


# --- the use case --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriagePorts:
    incidents: IncidentStore
    outbox: TeamOutbox
    clock: Clock


@dataclass(frozen=True)
class TriageSettings:
    window: timedelta = DEFAULT_WINDOW
    max_attempts: int = 8
    backoff_seconds: float = 0.05
    outbox_grace: timedelta = timedelta(minutes=1)  # the SLA sweep leaves younger outboxes to their writer

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TriageSettings:
        raw = env.get("INCIDENT_WINDOW_MINUTES", "360")
        try:
            minutes = int(raw)
        except ValueError:
            minutes = 0
        if minutes <= 0:
            raise ValueError(
                f"INCIDENT_WINDOW_MINUTES must be a positive whole number of minutes, got {raw!r}"
            )
        return cls(window=timedelta(minutes=minutes))


@dataclass
class TriageOutcome:
    alert_id: str
    status: str  # opened | updated | duplicate | ignored | resolved
    incident_id: str | None = None
    team: str | None = None
    priority: str | None = None
    severity: str | None = None
    escalation: str | None = None  # the reason, when the alert escalated its incident
    messages_sent: int = 0
    attempts: int = 0
    reason: str | None = None
    resolved_incidents: list[str] = field(default_factory=list)  # by this alert (a resolution)


def deliver(ports: TriagePorts, record: Mapping[str, Any], outbox: Sequence[Mapping[str, Any]]) -> int:
    """Send the incident's saved outbox, then clear it; returns how many messages were sent."""
    if not outbox:
        return 0
    ports.outbox.send(outbox)
    ports.incidents.clear_outbox(record)
    return len(outbox)


def triage_alert(
    raw: Any, rules: RoutingRules, ports: TriagePorts, settings: TriageSettings
) -> TriageOutcome:
    """Route one alert, fold it into its incident (or open one) and announce what needs announcing.

    Raises :class:`BadAlert` for a message that is not a usable alert, and :class:`IncidentConflict`
    when the incident kept changing under it (the message is retried).
    """
    alert = validate_alert(raw)
    alert_id = alert["alert_id"]
    if alert["severity"] not in TRIAGED_SEVERITIES:
        closes = resolved_alert_ids(alert)
        if closes and alert["detector"] in RESOLVING_DETECTORS:
            return resolve_for_alert(alert, closes, ports, settings)
        log.info("info alert skipped", extra={"alert_id": alert_id})
        reason = (
            f"only resolutions of {', '.join(RESOLVING_DETECTORS)} alerts close incidents"
            if closes
            else "info alerts are for reports only"
        )
        return TriageOutcome(alert_id, "ignored", severity=alert["severity"], reason=reason)
    route = rules.route(alert)
    family = rules.family_of(alert)
    for attempt in range(1, settings.max_attempts + 1):
        owner = ports.incidents.claimed_by(alert_id)
        if owner is not None:
            return _duplicate(alert_id, owner, ports, attempt)
        now = ports.clock()
        group = ports.incidents.candidates(alert["integration_id"], family)
        target = pick(group.incidents, alert, settings.window)
        pending: tuple[dict[str, Any], ...] = ()
        if target is None:
            record, opened = new_incident(alert, route, family, now)
            messages, expected, status = [opened], 0, "opened"
        else:
            record, messages = absorb(target.record, alert, route, now)
            expected, pending, status = target.version, target.outbox, "updated"
        outbox = [*pending, *messages]
        try:
            ports.incidents.save(
                record, expected, outbox, claim_alert_id=alert_id, group_version=group.version
            )
        except IncidentConflict:
            log.info("incident conflict, retrying", extra={"alert_id": alert_id, "attempt": attempt})
            time.sleep(min(settings.backoff_seconds * attempt, 0.5))
            continue
        sent = deliver(ports, record, outbox)
        escalation = messages[0]["reason"] if status == "updated" and messages else None
        return _outcome_of(alert_id, status, record, sent, attempt, escalation=escalation)
    raise IncidentConflict(
        f"alert {alert_id}: incidents of {alert['integration_id']}/{family} kept changing; gave up after "
        f"{settings.max_attempts} attempts (the message will be retried)"
    )


def _outcome_of(
    alert_id: str, status: str, record: Mapping[str, Any], sent: int, attempts: int, **more: Any
) -> TriageOutcome:
    """The outcome of an alert that touched ``record`` (its incident as it now stands)."""
    return TriageOutcome(
        alert_id=alert_id,
        status=status,
        incident_id=record["incident_id"],
        team=record["team"],
        priority=record["priority"],
        severity=record["severity"],
        messages_sent=sent,
        attempts=attempts,
        **more,
    )


def _duplicate(alert_id: str, owner: str, ports: TriagePorts, attempt: int) -> TriageOutcome:
    """A redelivered alert changes nothing; it only sends what its incident's outbox still holds."""
    stored = ports.incidents.get(owner)
    sent = deliver(ports, stored.record, list(stored.outbox)) if stored is not None else 0
    if stored is None:
        log.warning(
            "claimed alert's incident is gone (expired)", extra={"alert_id": alert_id, "incident_id": owner}
        )
    return TriageOutcome(
        alert_id=alert_id,
        status="duplicate",
        incident_id=owner,
        team=stored.record["team"] if stored else None,
        priority=stored.record["priority"] if stored else None,
        severity=stored.record["severity"] if stored else None,
        messages_sent=sent,
        attempts=attempt,
    )


# --- resolutions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Closed:
    """What one resolution did to one incident."""

    incident_id: str
    result: str  # resolved | already | gone | foreign
    record: dict[str, Any] | None = None
    sent: int = 0
    attempts: int = 1


def _close(
    incident_id_: str,
    alert: Mapping[str, Any],
    reason: str,
    ports: TriagePorts,
    settings: TriageSettings,
) -> _Closed:
    """Resolve one incident for ``alert`` and queue its ``resolved`` message (optimistic concurrency)."""
    for attempt in range(1, settings.max_attempts + 1):
        stored = ports.incidents.get(incident_id_)
        if stored is None:
            return _Closed(incident_id_, "gone", attempts=attempt)
        if stored.record["integration_id"] != alert["integration_id"]:
            return _Closed(incident_id_, "foreign", stored.record, attempts=attempt)
        now = ports.clock()
        updated = resolved(stored.record, now, by=FRESHNESS_CHECK, reason=reason)
        if updated is None:  # resolved already (by this alert's first delivery, or an operator)
            sent = deliver(ports, stored.record, list(stored.outbox))
            return _Closed(incident_id_, "already", stored.record, sent, attempt)
        outbox = [*stored.outbox, build_message(updated, "resolved", reason, iso(now), alert)]
        try:
            ports.incidents.save(updated, stored.version, outbox)
        except IncidentConflict:
            log.info("incident conflict, retrying", extra={"incident_id": incident_id_, "attempt": attempt})
            time.sleep(min(settings.backoff_seconds * attempt, 0.5))
            continue
        return _Closed(incident_id_, "resolved", updated, deliver(ports, updated, outbox), attempt)
    raise IncidentConflict(
        f"alert {alert['alert_id']}: incident {incident_id_} kept changing; gave up after "
        f"{settings.max_attempts} attempts (the message will be retried)"
    )


def resolve_for_alert(
    alert: Mapping[str, Any], closes: Sequence[str], ports: TriagePorts, settings: TriageSettings
) -> TriageOutcome:
    """Resolve the incidents that claimed the alerts ``alert`` (an info resolution) closes.

    Status ``resolved`` when it resolved at least one incident; ``duplicate`` when every incident it
    names was resolved already by a resolution like it (a redelivery: nothing changes, only what their
    outboxes still hold is sent); ``ignored`` (with the reason) when no incident claimed those alerts
    or they were resolved otherwise (an operator).
    """
    alert_id = alert["alert_id"]
    reason = RESOLVING_DETECTORS[alert["detector"]]
    owners: list[str] = []
    for closed_id in closes:
        owner = ports.incidents.claimed_by(closed_id)
        if owner is not None and owner not in owners:
            owners.append(owner)
    if not owners:
        log.info("resolution of unclaimed alerts", extra={"alert_id": alert_id, "resolves": list(closes)})
        return TriageOutcome(
            alert_id,
            "ignored",
            severity=alert["severity"],
            reason=(
                f"no incident claimed the alert(s) it resolves ({', '.join(closes)}): nothing to close "
                "(a snooze or maintenance suppressed them, or their claims expired)"
            ),
        )
    done = [_close(owner, alert, reason, ports, settings) for owner in owners]
    for item in done:
        if item.result in ("gone", "foreign"):
            log.warning(
                "resolution skipped an incident",
                extra={"alert_id": alert_id, "incident_id": item.incident_id, "why": item.result},
            )
    closed = [d for d in done if d.result == "resolved"]
    sent = sum(d.sent for d in done)
    attempts = max(d.attempts for d in done)
    if closed:
        first = closed[0].record
        assert first is not None
        log.info(
            "incidents resolved: data resumed",
            extra={"alert_id": alert_id, "incident_ids": [d.incident_id for d in closed]},
        )
        return _outcome_of(
            alert_id,
            "resolved",
            first,
            sent,
            attempts,
            reason=reason,
            resolved_incidents=[d.incident_id for d in closed],
        )
    already = [d for d in done if d.result == "already" and d.record is not None]
    if any(d.record.get("resolution_reason") == reason for d in already if d.record is not None):
        first = already[0].record
        assert first is not None
        return _outcome_of(alert_id, "duplicate", first, sent, attempts)
    why = "; ".join(
        f"incident {d.incident_id} "
        + (
            f"was resolved already (by {d.record.get('resolved_by') or 'unknown'})"
            if d.result == "already" and d.record is not None
            else "is gone (expired)"
            if d.result == "gone"
            else "belongs to another integration"
        )
        for d in done
    )
    return TriageOutcome(
        alert_id, "ignored", severity=alert["severity"], messages_sent=sent, attempts=attempts, reason=why
    )
