"""In-memory adapters: unit tests and the backtest use these instead of AWS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.ports import ActiveIntegration, StateConflict, StoredState


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
