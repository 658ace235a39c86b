"""In-memory adapters: unit tests and the backtest use these instead of AWS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.config import OVERRIDE_FIELDS
from kpi_sentinel.ports import (
    ActiveIntegration,
    IncidentConflict,
    IncidentGroup,
    OperatorConflict,
    Outage,
    StateConflict,
    StoredIncident,
    StoredState,
    TunedThreshold,
    TuningInputs,
)
from kpi_sentinel.triage.incidents import (
    OUTBOX_SHARD,
    acknowledged,
    due_entry,
    iso,
    resolved,
    transition,
    with_defaults,
)


class MemoryObjects:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def get(self, bucket: str, key: str) -> bytes:
        try:
            return self.objects[(bucket, key)]
        except KeyError:
            raise FileNotFoundError(f"s3://{bucket}/{key}") from None

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        self.objects[(bucket, key)] = body

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        self.objects[(bucket, target_key)] = self.objects[(bucket, source_key)]

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def list(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]:
        yield from (k for k in self.keys(bucket, prefix) if k > start_after)

    def delete(self, bucket: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.objects.pop((bucket, key), None)


class MemoryState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, StoredState] = {}
        self.index: dict[str, ActiveIntegration] = {}
        self.clock: Callable[[], float] = time.time

    def load(self, integration_id: str) -> StoredState:
        with self._lock:
            stored = self.items.get(integration_id)
            if stored is None:
                return StoredState(blob=None, version=0)
            return StoredState(stored.blob, stored.version, dict(stored.outbox))

    def commit(
        self,
        integration_id: str,
        expected_version: int,
        blob: bytes,
        sync_id: str,
        outbox: Sequence[Mapping[str, Any]],
        index: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock:
            current = self.items.get(integration_id, StoredState(None, 0))
            if current.version != expected_version:
                raise StateConflict(integration_id)
            pending = dict(current.outbox)
            if outbox:
                pending[sync_id] = [dict(a) for a in outbox]
            self.items[integration_id] = StoredState(blob, expected_version + 1, pending)
            self.index[integration_id] = ActiveIntegration(
                integration_id,
                str((index or {}).get("tier", "standard")),
                int((index or {}).get("granularity", 0)),
                float((index or {}).get("synced_at", self.clock())),
            )

    def active(self, since: float, tier: str | None = None) -> Iterator[ActiveIntegration]:
        """The planner's view of this store (what the ActiveIntegrations index gives in DynamoDB)."""
        with self._lock:
            found = sorted(self.index.values(), key=lambda a: a.integration_id)
        yield from (a for a in found if a.last_sync_at >= since and (tier is None or a.tier == tier))

    def clear_outbox(self, integration_id: str, sync_id: str) -> None:
        with self._lock:
            self.items[integration_id].outbox.pop(sync_id, None)


class MemoryControl:
    def __init__(self) -> None:
        self.configs: dict[str, Mapping[str, Any]] = {}
        self.snoozes: list[Mapping[str, Any]] = []
        self.calendar: list[Mapping[str, Any]] = []
        self.overrides: dict[str, dict[str, dict[str, Any]]] = {}  # integration -> metric -> record

    def integration_config(self, integration_id: str) -> Mapping[str, Any] | None:
        return self.configs.get(integration_id)

    def active_snoozes(self, integration_id: str, now: datetime) -> list[Mapping[str, Any]]:
        stamp = now.timestamp()
        return [
            s for s in self.snoozes if s["integration_id"] == integration_id and float(s["until"]) > stamp
        ]

    def known_events(self, integration_id: str) -> list[Mapping[str, Any]]:
        return [e for e in self.calendar if e.get("integration_id") in (integration_id, None, GLOBAL)]

    def metric_overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        """The overridden fields of each metric (see :class:`kpi_sentinel.ports.OverrideSource`)."""
        found = {
            metric: {k: record[k] for k in OVERRIDE_FIELDS if record.get(k) is not None}
            for metric, record in self.overrides.get(integration_id, {}).items()
        }
        return {metric: fields for metric, fields in found.items() if fields}


class MemoryPublisher:
    def __init__(self) -> None:
        self.published: list[Mapping[str, Any]] = []

    def publish(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        self.published.extend(alerts)


class MemoryLedger:
    def __init__(self) -> None:
        self.published: dict[str, set[str]] = {}

    def unpublished(self, integration_id: str, alert_ids: Sequence[str]) -> list[str]:
        seen = self.published.get(integration_id, set())
        return [a for a in dict.fromkeys(alert_ids) if a not in seen]

    def mark_published(self, integration_id: str, alert_ids: Sequence[str]) -> None:
        self.published.setdefault(integration_id, set()).update(alert_ids)


class MemoryQueue:
    def __init__(self) -> None:
        self.jobs: list[Mapping[str, Any]] = []

    def send(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        self.jobs.extend(jobs)


class MemoryFeedback:
    """Operators' alert labels, keyed by integration and alert id (the control table's ``feedback#``)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], str] = {}

    def put_label(self, integration_id: str, alert_id: str, label: str) -> None:
        self.stored[(integration_id, alert_id)] = label

    def labels(self, integration_id: str, alert_ids: Sequence[str]) -> dict[str, str]:
        return {
            a: self.stored[(integration_id, a)]
            for a in dict.fromkeys(alert_ids)
            if (integration_id, a) in self.stored
        }


class MemoryIncidents:
    """Support triage's incidents in memory, with the DynamoDB adapter's semantics.

    Saves are all-or-nothing under the same conditions (incident version, alert claim, group version);
    records are stored as JSON so callers never share mutable state with the store; ``due`` and
    ``pending_outboxes`` read the same Due-index entries :func:`kpi_sentinel.triage.incidents.due_entry`
    gives the DynamoDB items.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, str] = {}  # incident id -> record JSON
        self.outboxes: dict[str, str] = {}  # incident id -> outbox JSON (absent when empty)
        self.claims: dict[str, str] = {}  # alert id -> incident id
        self.groups: dict[tuple[str, str], int] = {}  # (integration, family) -> group version
        self.saves = 0

    def _stored(self, incident_id: str) -> StoredIncident:
        outbox = json.loads(self.outboxes.get(incident_id, "[]"))
        return StoredIncident(with_defaults(json.loads(self.records[incident_id])), tuple(outbox))

    def claimed_by(self, alert_id: str) -> str | None:
        with self._lock:
            return self.claims.get(alert_id)

    def get(self, incident_id: str) -> StoredIncident | None:
        with self._lock:
            return self._stored(incident_id) if incident_id in self.records else None

    def candidates(self, integration_id: str, family: str) -> IncidentGroup:
        with self._lock:
            found = [
                self._stored(i)
                for i, text in self.records.items()
                if (r := json.loads(text))["integration_id"] == integration_id
                and r["family"] == family
                and r["status"] != "resolved"
            ]
            return IncidentGroup(self.groups.get((integration_id, family), 0), tuple(found))

    def save(
        self,
        record: Mapping[str, Any],
        expected_version: int,
        outbox: Sequence[Mapping[str, Any]],
        claim_alert_id: str | None = None,
        group_version: int | None = None,
    ) -> None:
        if record["version"] != expected_version + 1:
            raise ValueError(f"record version {record['version']} must be expected_version + 1")
        incident = str(record["incident_id"])
        group = (str(record["integration_id"]), str(record["family"]))
        with self._lock:
            current = json.loads(self.records[incident])["version"] if incident in self.records else 0
            if current != expected_version:
                raise IncidentConflict(f"incident {incident} is at version {current}, not {expected_version}")
            if claim_alert_id is not None and claim_alert_id in self.claims:
                raise IncidentConflict(f"alert {claim_alert_id} is already claimed")
            if group_version is not None and self.groups.get(group, 0) != group_version:
                raise IncidentConflict(f"incident group {group} changed")
            self.records[incident] = json.dumps(record)
            if outbox:
                self.outboxes[incident] = json.dumps(list(outbox))
            else:
                self.outboxes.pop(incident, None)
            if claim_alert_id is not None:
                self.claims[claim_alert_id] = incident
            if group_version is not None:
                self.groups[group] = group_version + 1
            self.saves += 1

    def clear_outbox(self, record: Mapping[str, Any]) -> None:
        incident = str(record["incident_id"])
        with self._lock:
            if (
                incident in self.records
                and json.loads(self.records[incident])["version"] == record["version"]
            ):
                self.outboxes.pop(incident, None)

    def _index(self) -> list[tuple[str, int, StoredIncident]]:
        with self._lock:
            listed = []
            for incident in self.records:
                stored = self._stored(incident)
                entry = due_entry(stored.record, bool(stored.outbox))
                if entry is not None:
                    listed.append((entry[0], entry[1], stored))
            return sorted(listed, key=lambda e: (e[1], e[2].record["incident_id"]))

    def pending_outboxes(self, before: datetime) -> Iterator[StoredIncident]:
        stamp = before.timestamp()
        yield from (s for shard, at, s in self._index() if shard == OUTBOX_SHARD and at <= stamp)

    def due(self, now: datetime) -> Iterator[StoredIncident]:
        stamp = now.timestamp()
        yield from (s for shard, at, s in self._index() if shard != OUTBOX_SHARD and at <= stamp)

    def incidents_opened(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        low, high = iso(start), iso(end)
        with self._lock:
            records = [with_defaults(json.loads(text)) for text in self.records.values()]
        found = [r for r in records if low <= r["opened_at"] < high]
        yield from sorted(found, key=lambda r: (r["opened_at"], r["incident_id"]))

    def acknowledge(self, incident_id: str, at: datetime, by: str | None = None) -> dict[str, Any]:
        return transition(self, incident_id, lambda r: acknowledged(r, at, by))

    def resolve(self, incident_id: str, at: datetime, by: str | None = None) -> dict[str, Any]:
        return transition(self, incident_id, lambda r: resolved(r, at, by))


class MemoryTeamOutbox:
    """Messages per team, in the order sent (``sent`` has them all)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        self.sent.extend(json.loads(json.dumps(list(messages))))

    def for_team(self, team: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["team"] == team]


class MemoryRulesSource:
    """Rules documents by location (``s3://...`` or ``ssm:/...``); ``reads`` counts the reads."""

    def __init__(self, documents: Mapping[str, str] | None = None) -> None:
        self.documents: dict[str, str] = dict(documents or {})
        self.reads = 0

    def read(self, location: str) -> str:
        self.reads += 1
        try:
            return self.documents[location]
        except KeyError:
            raise FileNotFoundError(location) from None


class MemoryScopes:
    """Operator API scopes: principal ARN (or ``jwt:<sub>``) -> integration ids (``"*"``: all)."""

    def __init__(self, scopes: Mapping[str, Sequence[str]] | None = None) -> None:
        self.scopes: dict[str, frozenset[str]] = {p: frozenset(i) for p, i in (scopes or {}).items()}

    def put_scope(self, principal: str, integrations: Sequence[str]) -> None:
        self.scopes[principal] = frozenset(integrations)

    def scope_of(self, principal: str) -> frozenset[str] | None:
        return self.scopes.get(principal)


class MemoryOperatorStore:
    """The operator API's writes, into the same in-memory stores the scorer and the report read.

    Snoozes and calendar events land in ``control`` (a :class:`MemoryControl`, whose ``active_snoozes``,
    ``known_events`` and ``metric_overrides`` the scorer reads), labels also in ``feedback`` (what the
    report reads), so a test can drive the API and then the scorer on one world.
    """

    def __init__(self, control: MemoryControl | None = None, feedback: MemoryFeedback | None = None) -> None:
        self._lock = threading.Lock()
        self.control = control if control is not None else MemoryControl()
        self.feedback = feedback if feedback is not None else MemoryFeedback()
        self.labels: dict[tuple[str, str], dict[str, Any]] = {}
        self.audits: dict[str, list[dict[str, Any]]] = {}

    def put_snooze(self, snooze: Mapping[str, Any]) -> None:
        with self._lock:
            kept = [
                s
                for s in self.control.snoozes
                if (s["integration_id"], s.get("snooze_id"))
                != (snooze["integration_id"], snooze["snooze_id"])
            ]
            self.control.snoozes = [*kept, dict(snooze)]

    def snoozes(self, integration_id: str, now: datetime) -> list[dict[str, Any]]:
        return [dict(s) for s in self.control.active_snoozes(integration_id, now)]

    def delete_snooze(self, integration_id: str, snooze_id: str) -> dict[str, Any] | None:
        with self._lock:
            for n, snooze in enumerate(self.control.snoozes):
                if (snooze["integration_id"], snooze.get("snooze_id")) == (integration_id, snooze_id):
                    del self.control.snoozes[n]
                    return dict(snooze)
        return None

    def put_label(self, label: Mapping[str, Any]) -> None:
        key = (str(label["integration_id"]), str(label["alert_id"]))
        self.labels[key] = dict(label)
        self.feedback.put_label(key[0], key[1], str(label["label"]))

    def label_records(self, integration_id: str, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {
            a: dict(self.labels[(integration_id, a)])
            for a in dict.fromkeys(alert_ids)
            if (integration_id, a) in self.labels
        }

    def put_event(self, event: Mapping[str, Any]) -> None:
        owner = event.get("integration_id") or GLOBAL
        with self._lock:
            kept = [
                e
                for e in self.control.calendar
                if ((e.get("integration_id") or GLOBAL), e.get("event_id")) != (owner, event["event_id"])
            ]
            self.control.calendar = [*kept, {**event, "integration_id": owner}]

    def events(self, owner: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.control.calendar if (e.get("integration_id") or GLOBAL) == owner]

    def delete_event(self, owner: str, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            for n, event in enumerate(self.control.calendar):
                if ((event.get("integration_id") or GLOBAL), event.get("event_id")) == (owner, event_id):
                    del self.control.calendar[n]
                    return dict(event)
        return None

    def overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {m: dict(r) for m, r in self.control.overrides.get(integration_id, {}).items()}

    def save_override(
        self,
        integration_id: str,
        metric: str,
        override: Mapping[str, Any] | None,
        expected_version: int,
        audit: Mapping[str, Any],
    ) -> None:
        with self._lock:
            stored = self.control.overrides.setdefault(integration_id, {})
            current = int(stored[metric]["version"]) if metric in stored else 0
            if current != expected_version:
                raise OperatorConflict(
                    f"override of {integration_id}/{metric} is at version {current}, not {expected_version}"
                )
            if override is None:
                stored.pop(metric, None)
            else:
                stored[metric] = {**override, "version": expected_version + 1}
            self.audits.setdefault(integration_id, []).append(json.loads(json.dumps(dict(audit))))

    def audit(self, integration_id: str, limit: int, before: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entries = sorted(self.audits.get(integration_id, []), key=lambda a: a["audit_id"], reverse=True)
        return [dict(a) for a in entries if before is None or a["audit_id"] < before][:limit]


# --- operator jobs ---------------------------------------------------------------------------------------


class MemoryFreshness:
    """Announced outages by integration, with the DynamoDB adapter's version conditions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outages: dict[str, Outage] = {}

    def open_outages(self) -> Iterator[Outage]:
        with self._lock:
            found = sorted(self.outages.values(), key=lambda o: o.integration_id)
        yield from found

    def save(self, outage: Outage, expected_version: int) -> None:
        with self._lock:
            current = self.outages.get(outage.integration_id)
            if (current.version if current else 0) != expected_version:
                raise StateConflict(f"outage of {outage.integration_id} is not at version {expected_version}")
            if outage.version != expected_version + 1:
                raise ValueError(f"outage version {outage.version} must be expected_version + 1")
            self.outages[outage.integration_id] = outage

    def close(self, integration_id: str, expected_version: int) -> None:
        with self._lock:
            current = self.outages.get(integration_id)
            if current is None or current.version != expected_version:
                raise StateConflict(f"outage of {integration_id} is not at version {expected_version}")
            del self.outages[integration_id]


class MemoryTuning:
    """The control table's tuning items in memory: labels, operators' overrides, tuned thresholds, audit.

    ``labels`` maps ``(integration, alert id)`` to a label, ``overrides`` ``(integration, metric)`` to
    an operator's threshold, ``configs`` an integration to its explicit config; ``tuned`` and ``audit``
    are what :meth:`save_tuned` wrote (``audit`` in write order).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.labels_by_alert: dict[tuple[str, str], str] = {}
        self.overrides: dict[tuple[str, str], float] = {}
        self.configs: dict[str, Mapping[str, Any]] = {}
        self.tuned: dict[tuple[str, str], TunedThreshold] = {}
        self.audit: list[tuple[str, dict[str, Any]]] = []

    def put_label(self, integration_id: str, alert_id: str, label: str) -> None:
        self.labels_by_alert[(integration_id, alert_id)] = label

    def labels(self, integration_id: str) -> dict[str, str]:
        with self._lock:
            return {a: label for (i, a), label in self.labels_by_alert.items() if i == integration_id}

    def inputs(self, integration_id: str) -> TuningInputs:
        labels = self.labels(integration_id)
        with self._lock:
            return TuningInputs(
                labels=labels,
                overrides={m: t for (i, m), t in self.overrides.items() if i == integration_id},
                tuned={m: t for (i, m), t in self.tuned.items() if i == integration_id},
                config=self.configs.get(integration_id),
            )

    def save_tuned(self, integration_id: str, tuned: TunedThreshold, audit: Mapping[str, Any]) -> None:
        with self._lock:
            current = self.tuned.get((integration_id, tuned.metric))
            if (current.version if current else 0) != tuned.version - 1:
                raise StateConflict(
                    f"tuned threshold of {integration_id}/{tuned.metric} is not at version {tuned.version - 1}"
                )
            key = f"audit#{audit['audit_id']}"
            if any(i == integration_id and k == key for i, k in ((i, a["sk"]) for i, a in self.audit)):
                raise StateConflict(f"audit entry {key} exists")
            self.tuned[(integration_id, tuned.metric)] = tuned
            self.audit.append((integration_id, {"sk": key, **json.loads(json.dumps(dict(audit)))}))
