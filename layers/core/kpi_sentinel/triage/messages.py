"""Outbound incident messages (``schemas/incident-v1.json``) and the team -> queue mapping.

A message goes to the owning team's queue when an incident opens (event ``opened``, reason ``new``),
when it escalates (``escalated``: priority raised by a later alert or by the SLA check, severity
raised, or the SLA breached at P1) and when the freshness check's resolution closes it because its
integration's data resumed (``resolved``, reason ``data_resumed``; the ``alert`` is then the ``info``
resolution alert). Repeats that change nothing important send nothing, and neither does a resolution
through the operator API (the operator knows). Every message carries a ``dedup_key`` that is the same
each time the same event is sent again (a redelivered alert re-sends what its first delivery could
not), so consumers deduplicate on it::

    <incident_id>:<event>:<reason>:<priority>:<severity>

Priorities only rise, severity only goes from warning to critical and an incident is resolved once,
so one incident never has two different events with one key.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from kpi_sentinel.triage.routing import RoutingRules

SCHEMA_VERSION: Final = "1"
EVENTS: Final = ("opened", "escalated", "resolved")
OPENED_REASON: Final = "new"
ESCALATION_REASONS: Final = ("priority", "severity", "sla", "sla_breached")
DATA_RESUMED: Final = "data_resumed"  # the integration synced again after a missing_data outage
RESOLVED_REASONS: Final = (DATA_RESUMED,)
REASONS: Final = {"opened": (OPENED_REASON,), "escalated": ESCALATION_REASONS, "resolved": RESOLVED_REASONS}
INCIDENT_FIELDS: Final = (
    "incident_id", "integration_id", "family", "team", "priority", "sla_minutes", "status", "opened_at",
    "last_seen_at", "updated_at", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by",
    "resolution_reason", "due_at", "severity", "count", "alert_ids", "dimensions", "dimensions_truncated",
    "metrics", "summary", "first_summary", "escalations", "first_period_start", "last_period_end", "tier",
    "segment", "routed_by", "version",
)  # fmt: skip
# Added after version 1 first shipped: records stored before may lack them (read as null).
ADDED_FIELDS: Final = ("acknowledged_by", "resolved_by", "resolution_reason")
ALERT_FIELDS: Final = (
    "alert_id", "detector", "metric", "dimension", "dimension_value", "severity", "summary", "period_start",
    "period_end",
)  # fmt: skip


class TeamQueuesError(ValueError):
    """``TEAM_QUEUES`` is unusable; the message names the team or the problem."""


def dedup_key(incident_id: str, event: str, reason: str, priority: str, severity: str) -> str:
    """The same event of the same incident always gives the same key.

    >>> dedup_key("inc-0123456789abcdef01234567", "escalated", "sla", "P2", "warning")
    'inc-0123456789abcdef01234567:escalated:sla:P2:warning'
    """
    return f"{incident_id}:{event}:{reason}:{priority}:{severity}"


def alert_brief(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The triggering alert's identifying fields (the full alert is on the alerts topic)."""
    return {name: alert.get(name) for name in ALERT_FIELDS}


def build_message(
    record: Mapping[str, Any], event: str, reason: str, at: str, alert: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The message for ``event`` of the incident as ``record`` stands after the change.

    ``alert`` is the alert that triggered it (None for the SLA check's escalations). A field the record
    lacks (one stored before the field existed) is sent as null.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown incident event {event!r}")
    if reason not in REASONS[event]:
        raise ValueError(f"reason {reason!r} does not go with event {event!r}")
    return {
        "schema_version": SCHEMA_VERSION,
        "event": event,
        "reason": reason,
        "dedup_key": dedup_key(record["incident_id"], event, reason, record["priority"], record["severity"]),
        "at": at,
        "team": record["team"],
        "priority": record["priority"],
        "severity": record["severity"],
        "incident": {
            name: copy.deepcopy(record.get(name) if name in ADDED_FIELDS else record[name])
            for name in INCIDENT_FIELDS
        },
        "alert": alert_brief(alert) if alert is not None else None,
    }


def parse_team_queues(text: str | None, teams: Sequence[str] = ()) -> dict[str, str]:
    """``TEAM_QUEUES`` (a JSON object team -> queue URL), checked to have a queue for every team."""
    if not text:
        raise TeamQueuesError(
            "TEAM_QUEUES is not set: it must be a JSON object mapping each team to a queue URL"
        )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TeamQueuesError(f"TEAM_QUEUES is not valid JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise TeamQueuesError(
            f"TEAM_QUEUES must be a JSON object team -> queue URL, got {type(raw).__name__}"
        )
    for team, url in raw.items():
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise TeamQueuesError(f"TEAM_QUEUES: team {team!r} has no queue URL (got {url!r})")
    queues: dict[str, str] = raw
    check_team_queues(queues, teams)
    return queues


def check_team_queues(queues: Mapping[str, str], teams: Sequence[str]) -> None:
    """Every team the rules can route to needs an outbound queue."""
    missing = [team for team in teams if team not in queues]
    if missing:
        raise TeamQueuesError(
            f"TEAM_QUEUES has no queue for team(s) {', '.join(repr(t) for t in missing)} "
            f"(it has: {', '.join(sorted(queues)) or 'none'})"
        )


def queues_checker(queues: Mapping[str, str]) -> Callable[[RoutingRules], None]:
    """A :class:`~kpi_sentinel.triage.routing.RulesCache` check: reloaded rules must fit the queues."""

    def check(rules: RoutingRules) -> None:
        check_team_queues(queues, rules.teams)

    return check
