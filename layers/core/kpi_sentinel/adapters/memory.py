"""In-memory adapters: unit tests and the backtest use these instead of AWS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.ports import (
    ActiveIntegration,
    IncidentConflict,
    IncidentGroup,
    StateConflict,
    StoredIncident,
    StoredState,
)
from kpi_sentinel.triage.incidents import OUTBOX_SHARD, acknowledged, due_entry, iso, resolved, transition


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
                self.clock(),
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

    def integration_config(self, integration_id: str) -> Mapping[str, Any] | None:
        return self.configs.get(integration_id)

    def active_snoozes(self, integration_id: str, now: datetime) -> list[Mapping[str, Any]]:
        stamp = now.timestamp()
        return [
            s for s in self.snoozes if s["integration_id"] == integration_id and float(s["until"]) > stamp
        ]

    def known_events(self, integration_id: str) -> list[Mapping[str, Any]]:
        return [e for e in self.calendar if e.get("integration_id") in (integration_id, None, GLOBAL)]


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
        return StoredIncident(json.loads(self.records[incident_id]), tuple(outbox))

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
            records = [json.loads(text) for text in self.records.values()]
        found = [r for r in records if low <= r["opened_at"] < high]
        yield from sorted(found, key=lambda r: (r["opened_at"], r["incident_id"]))

    def acknowledge(self, incident_id: str, at: datetime) -> dict[str, Any]:
        return transition(self, incident_id, lambda r: acknowledged(r, at))

    def resolve(self, incident_id: str, at: datetime) -> dict[str, Any]:
        return transition(self, incident_id, lambda r: resolved(r, at))


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
