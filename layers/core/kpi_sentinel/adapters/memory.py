"""In-memory adapters: unit tests and the backtest use these instead of AWS."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.ports import StateConflict, StoredState


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


class MemoryState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, StoredState] = {}

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
    ) -> None:
        with self._lock:
            current = self.items.get(integration_id, StoredState(None, 0))
            if current.version != expected_version:
                raise StateConflict(integration_id)
            pending = dict(current.outbox)
            if outbox:
                pending[sync_id] = [dict(a) for a in outbox]
            self.items[integration_id] = StoredState(blob, expected_version + 1, pending)

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
