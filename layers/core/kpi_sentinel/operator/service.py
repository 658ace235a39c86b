"""The operator API's use cases, on :class:`kpi_sentinel.ports.OperatorPorts`.

Each takes the identified :class:`~kpi_sentinel.operator.callers.Caller`, checks its scope before
reading or changing anything, and returns plain records (the dict contracts of
:class:`kpi_sentinel.ports.OperatorStore` and of incidents). Every change is logged with who made it.

What the scorer does with them:

* a **snooze** is a ``snooze#<id>`` item the scorer reads (:meth:`DynamoControl.active_snoozes`) and
  applies with :func:`kpi_sentinel.alerts.snooze_matches`; it stops applying at ``until`` and DynamoDB's
  TTL deletes it later (``expires_at`` = ``until``);
* a **calendar** event is a ``calendar#<id>`` item (global ones under ``integration#*``): periods it
  overlaps are scored, not learned, and their alerts suppressed (:mod:`kpi_sentinel.calendar`);
* an **override** is an ``override#<metric>`` item the scorer lays over the integration's config
  (explicit or inferred) at its next sync (:func:`kpi_sentinel.config.with_overrides`); each change is
  written together with its ``audit#<time>#<uuid>`` entry (who, when, old, new), all or nothing;
* a **label** is a ``feedback#<alert id>`` item the report (precision) and threshold tuning read.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.config import OVERRIDE_FIELDS, ConfigError, check_override
from kpi_sentinel.operator.callers import Caller, Conflict, InvalidRequest, NotFound, Unavailable
from kpi_sentinel.operator.models import (
    CalendarRequest,
    LabelRequest,
    OverrideRequest,
    SnoozeRequest,
)
from kpi_sentinel.ports import (
    IncidentConflict,
    IncidentNotFound,
    IncidentStore,
    OperatorConflict,
    OperatorPorts,
)
from kpi_sentinel.report.data import read_recorded_alerts
from kpi_sentinel.triage.incidents import iso

log = logging.getLogger(__name__)

MAX_SNOOZE = timedelta(days=90)
MAX_EVENT = timedelta(days=366)
OVERRIDE_ATTEMPTS = 3
INCIDENT_DAYS_MAX = 90  # incidents expire 90 days after their last change


def _audit_id(at: datetime) -> str:
    """``<ISO time to the microsecond>#<uuid>``: sorts by time (the sort key is ``audit#<audit_id>``)."""
    return f"{at.astimezone(UTC).isoformat(timespec='microseconds')}#{uuid.uuid4().hex}"


def _changed(action: str, caller: Caller, **details: Any) -> None:
    log.info("operator change", extra={"action": action, "who": caller.who, **details})


# --- snoozes --------------------------------------------------------------------------------------------


def create_snooze(
    ports: OperatorPorts, caller: Caller, integration_id: str, request: SnoozeRequest
) -> dict[str, Any]:
    """Store a snooze; it suppresses matching alerts from the scorer's next sync until ``until``."""
    caller.require(integration_id)
    now = ports.clock()
    if (request.until is None) == (request.duration_minutes is None):
        raise InvalidRequest("until", "or 'duration_minutes': give exactly one of them")
    if request.until is not None:
        until = request.until.astimezone(UTC)
        if until <= now:
            raise InvalidRequest("until", f"must be in the future (now is {iso(now)})")
        if until > now + MAX_SNOOZE:
            raise InvalidRequest("until", f"must be at most {MAX_SNOOZE.days} days ahead")
    else:
        until = now + timedelta(minutes=request.duration_minutes or 0)
    snooze = {
        "snooze_id": uuid.uuid4().hex,
        "integration_id": integration_id,
        "metric": request.metric,
        "dimension": request.dimension,
        "dimension_value": request.dimension_value,
        "until": float(int(until.timestamp())),
        "reason": request.reason,
        "who": caller.who,
        "created_at": iso(now),
    }
    ports.store.put_snooze(snooze)
    _changed(
        "snooze.create",
        caller,
        integration_id=integration_id,
        snooze_id=snooze["snooze_id"],
        until=iso(until),
        metric=request.metric,
        dimension=request.dimension,
        dimension_value=request.dimension_value,
        reason=request.reason,
    )
    return snooze


def list_snoozes(ports: OperatorPorts, caller: Caller, integration_id: str) -> list[dict[str, Any]]:
    """The integration's snoozes still in force, soonest to end first."""
    caller.require(integration_id)
    found = ports.store.snoozes(integration_id, ports.clock())
    return sorted(found, key=lambda s: (s["until"], s["snooze_id"]))


def delete_snooze(
    ports: OperatorPorts, caller: Caller, integration_id: str, snooze_id: str
) -> dict[str, Any]:
    """End a snooze now; 404 when there is no such snooze in force."""
    caller.require(integration_id)
    old = ports.store.delete_snooze(integration_id, snooze_id)
    if old is None or float(old["until"]) <= ports.clock().timestamp():
        raise NotFound(f"integration {integration_id!r} has no snooze {snooze_id!r} in force")
    _changed("snooze.delete", caller, integration_id=integration_id, snooze_id=snooze_id)
    return old


# --- feedback -------------------------------------------------------------------------------------------


def label_alert(
    ports: OperatorPorts, caller: Caller, integration_id: str, alert_id: str, request: LabelRequest
) -> dict[str, Any]:
    """Label an alert of the integration (a later label replaces an earlier one)."""
    caller.require(integration_id)
    label = {
        "alert_id": alert_id,
        "integration_id": integration_id,
        "label": request.label,
        "note": request.note,
        "who": caller.who,
        "at": iso(ports.clock()),
    }
    ports.store.put_label(label)
    _changed("label.put", caller, integration_id=integration_id, alert_id=alert_id, label=request.label)
    return label


def list_alerts(
    ports: OperatorPorts, caller: Caller, integration_id: str, day: date
) -> tuple[list[dict[str, Any]], int]:
    """The integration's alerts recorded for ``day`` (their period's UTC date) with their labels.

    Returns the alerts (each with ``label``: the label record or None), in period then id order, and
    how many recorded objects or lines could not be read (they are logged).
    """
    caller.require(integration_id)
    recorded, problems = read_recorded_alerts(ports.objects, ports.data_bucket, [day])
    for problem in problems:
        log.warning("recorded alert unreadable", extra={"source": problem.source, "reason": problem.reason})
    alerts = sorted(
        (a for a in recorded if a["integration_id"] == integration_id),
        key=lambda a: (a["period_start"], a["alert_id"]),
    )
    labels = ports.store.label_records(integration_id, [a["alert_id"] for a in alerts])
    return [{**a, "label": labels.get(a["alert_id"])} for a in alerts], len(problems)


# --- calendar -------------------------------------------------------------------------------------------


def create_event(
    ports: OperatorPorts, caller: Caller, owner: str, request: CalendarRequest
) -> dict[str, Any]:
    """Store a known event of an integration, or a global one (``owner`` ``*``, scope ``*`` only)."""
    if owner == GLOBAL:
        caller.require_global()
    else:
        caller.require(owner)
    if request.end <= request.start:
        raise InvalidRequest("end", "must be after 'start'")
    if request.end - request.start > MAX_EVENT:
        raise InvalidRequest("end", f"must be at most {MAX_EVENT.days} days after 'start'")
    event = {
        "event_id": uuid.uuid4().hex,
        "integration_id": owner,
        "kind": request.kind,
        "name": request.name,
        "start": request.start.timestamp(),
        "end": request.end.timestamp(),
        "who": caller.who,
        "created_at": iso(ports.clock()),
    }
    ports.store.put_event(event)
    _changed(
        "calendar.create",
        caller,
        integration_id=owner,
        event_id=event["event_id"],
        kind=request.kind,
        event_name=request.name,
        start=iso(request.start),
        end=iso(request.end),
    )
    return event


def list_events(
    ports: OperatorPorts, caller: Caller, owner: str, include_global: bool
) -> list[dict[str, Any]]:
    """An integration's events (and the global ones with ``include_global``), or the global ones."""
    if owner != GLOBAL:
        caller.require(owner)
    found = ports.store.events(owner)
    if owner != GLOBAL and include_global:
        found += ports.store.events(GLOBAL)
    return sorted(found, key=lambda e: (e["start"], e["event_id"]))


def delete_event(ports: OperatorPorts, caller: Caller, owner: str, event_id: str) -> dict[str, Any]:
    if owner == GLOBAL:
        caller.require_global()
    else:
        caller.require(owner)
    old = ports.store.delete_event(owner, event_id)
    if old is None:
        where = "the global calendar" if owner == GLOBAL else f"integration {owner!r}"
        raise NotFound(f"{where} has no calendar event {event_id!r}")
    _changed("calendar.delete", caller, integration_id=owner, event_id=event_id)
    return old


# --- overrides ------------------------------------------------------------------------------------------


def _fields(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {name: record.get(name) for name in OVERRIDE_FIELDS}


def put_override(
    ports: OperatorPorts, caller: Caller, integration_id: str, metric: str, request: OverrideRequest
) -> dict[str, Any]:
    """Set the metric's override to exactly the fields given, with an audit entry (who, when, old, new).

    Unchanged fields write nothing and audit nothing. Without ``expected_version`` a concurrent change
    is retried on the new version; with it, any other version is a 409.
    """
    caller.require(integration_id)
    new_fields = {name: getattr(request, name) for name in OVERRIDE_FIELDS}
    if all(v is None for v in new_fields.values()):
        raise InvalidRequest(
            "threshold", "(or 'bad_direction', 'min_abs_change', 'min_volume'): set at least one field"
        )
    try:
        check_override(new_fields)
    except ConfigError as exc:  # the model checks the same; this keeps the store's contract in one place
        raise InvalidRequest("threshold", str(exc)) from exc
    for _ in range(OVERRIDE_ATTEMPTS):
        current = ports.store.overrides(integration_id).get(metric)
        version = int(current["version"]) if current else 0
        if request.expected_version is not None and request.expected_version != version:
            raise Conflict(
                f"override of {integration_id}/{metric} is at version {version}, "
                f"not {request.expected_version}"
            )
        if current is not None and _fields(current) == new_fields:
            return current
        now = ports.clock()
        record = {
            "metric": metric,
            **new_fields,
            "updated_by": caller.who,
            "updated_at": iso(now),
            "reason": request.reason,
        }
        audit = {
            "audit_id": _audit_id(now),
            "integration_id": integration_id,
            "kind": "override",
            "subject": metric,
            "who": caller.who,
            "at": iso(now),
            "old": _fields(current),
            "new": new_fields,
            "reason": request.reason,
        }
        try:
            ports.store.save_override(integration_id, metric, record, version, audit)
        except OperatorConflict:
            if request.expected_version is not None:
                raise Conflict(f"override of {integration_id}/{metric} changed meanwhile") from None
            continue
        _changed(
            "override.put",
            caller,
            integration_id=integration_id,
            metric=metric,
            old=audit["old"],
            new=new_fields,
        )
        return {**record, "version": version + 1}
    raise Conflict(f"override of {integration_id}/{metric} kept changing; try again")


def delete_override(ports: OperatorPorts, caller: Caller, integration_id: str, metric: str) -> dict[str, Any]:
    """Remove the metric's override (the config's values apply again), with an audit entry."""
    caller.require(integration_id)
    for _ in range(OVERRIDE_ATTEMPTS):
        current = ports.store.overrides(integration_id).get(metric)
        if current is None:
            raise NotFound(f"integration {integration_id!r} has no override of metric {metric!r}")
        now = ports.clock()
        audit = {
            "audit_id": _audit_id(now),
            "integration_id": integration_id,
            "kind": "override",
            "subject": metric,
            "who": caller.who,
            "at": iso(now),
            "old": _fields(current),
            "new": None,
            "reason": "removed",
        }
        try:
            ports.store.save_override(integration_id, metric, None, int(current["version"]), audit)
        except OperatorConflict:
            continue
        _changed("override.delete", caller, integration_id=integration_id, metric=metric, old=audit["old"])
        return current
    raise Conflict(f"override of {integration_id}/{metric} kept changing; try again")


def list_overrides(ports: OperatorPorts, caller: Caller, integration_id: str) -> list[dict[str, Any]]:
    caller.require(integration_id)
    return [r for _, r in sorted(ports.store.overrides(integration_id).items())]


def list_audit(
    ports: OperatorPorts, caller: Caller, integration_id: str, limit: int, before: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The integration's audit entries, newest first, and the ``before`` of the next page (or None)."""
    caller.require(integration_id)
    entries = ports.store.audit(integration_id, limit + 1, before)
    more = len(entries) > limit
    entries = entries[:limit]
    return entries, (entries[-1]["audit_id"] if more and entries else None)


# --- incidents ------------------------------------------------------------------------------------------


def _incidents(ports: OperatorPorts) -> IncidentStore:
    if ports.incidents is None:
        raise Unavailable("this deployment has no incidents table (INCIDENTS_TABLE is not set)")
    return ports.incidents


def list_incidents(
    ports: OperatorPorts,
    caller: Caller,
    *,
    status: str | None,
    team: str | None,
    integration_id: str | None,
    days: int,
    limit: int,
) -> list[dict[str, Any]]:
    """Incidents opened in the last ``days`` days within the caller's scope, newest first.

    Read through the incidents table's ``ByDay`` index (one query per day), filtered by ``status``,
    ``team`` and ``integration_id`` when given. An incident opened earlier than the window is not
    listed even if still open: widen ``days`` (at most 90, when incidents expire).
    """
    store = _incidents(ports)
    if integration_id is not None:
        caller.require(integration_id)
    now = ports.clock()
    found = [
        r
        for r in store.incidents_opened(now - timedelta(days=days), now + timedelta(seconds=1))
        if caller.may(r["integration_id"])
        and (status is None or r["status"] == status)
        and (team is None or r["team"] == team)
        and (integration_id is None or r["integration_id"] == integration_id)
    ]
    found.sort(key=lambda r: (r["opened_at"], r["incident_id"]), reverse=True)
    return found[:limit]


def get_incident(ports: OperatorPorts, caller: Caller, incident_id: str) -> dict[str, Any]:
    """The incident; 404 when unknown, 403 when its integration is outside the caller's scope."""
    stored = _incidents(ports).get(incident_id)
    if stored is None:
        raise NotFound(f"no incident {incident_id!r}")
    caller.require(stored.record["integration_id"])
    return stored.record


def acknowledge_incident(ports: OperatorPorts, caller: Caller, incident_id: str) -> dict[str, Any]:
    """Acknowledge an open incident (it leaves the SLA check), recording the caller as
    ``acknowledged_by``; idempotent (who acknowledged first stays); 409 once it is resolved."""
    record = get_incident(ports, caller, incident_id)
    if record["status"] == "resolved":
        raise Conflict(f"incident {incident_id} is resolved; it can no longer be acknowledged")
    if record["status"] == "acknowledged":
        return record
    updated = _transition(ports, caller, incident_id, "acknowledge")
    if updated["status"] == "resolved":
        raise Conflict(f"incident {incident_id} was resolved meanwhile; it can no longer be acknowledged")
    _changed("incident.acknowledge", caller, incident_id=incident_id, integration_id=record["integration_id"])
    return updated


def resolve_incident(ports: OperatorPorts, caller: Caller, incident_id: str) -> dict[str, Any]:
    """Resolve an incident for good (later alerts open a new one), recording the caller as
    ``resolved_by`` and ``resolution_reason`` ``operator``; idempotent (who resolved first stays)."""
    record = get_incident(ports, caller, incident_id)
    if record["status"] == "resolved":
        return record
    updated = _transition(ports, caller, incident_id, "resolve")
    _changed("incident.resolve", caller, incident_id=incident_id, integration_id=record["integration_id"])
    return updated


def _transition(ports: OperatorPorts, caller: Caller, incident_id: str, action: str) -> dict[str, Any]:
    store = _incidents(ports)
    now = ports.clock()
    try:
        if action == "acknowledge":
            return store.acknowledge(incident_id, now, by=caller.who)
        return store.resolve(incident_id, now, by=caller.who)
    except IncidentNotFound:
        raise NotFound(f"no incident {incident_id!r}") from None
    except IncidentConflict as exc:
        raise Conflict(str(exc)) from None
