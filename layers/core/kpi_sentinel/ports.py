"""What the use cases need from the outside world. Adapters in ``kpi_sentinel.adapters`` implement these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class StateConflict(Exception):
    """Another sync of the same integration committed first; reload and try again."""


@dataclass
class StoredState:
    blob: bytes | None
    version: int
    outbox: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sync id -> unpublished alerts


class ObjectStore(Protocol):
    def get(self, bucket: str, key: str) -> bytes: ...

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None: ...

    def copy(self, bucket: str, source_key: str, target_key: str) -> None: ...


class StateStore(Protocol):
    def load(self, integration_id: str) -> StoredState: ...

    def commit(
        self,
        integration_id: str,
        expected_version: int,
        blob: bytes,
        sync_id: str,
        outbox: Sequence[Mapping[str, Any]],
    ) -> None:
        """Write the state iff its version is still ``expected_version``; else raise StateConflict."""
        ...

    def clear_outbox(self, integration_id: str, sync_id: str) -> None: ...


class ControlStore(Protocol):
    def integration_config(self, integration_id: str) -> Mapping[str, Any] | None: ...

    def active_snoozes(self, integration_id: str, now: datetime) -> list[Mapping[str, Any]]: ...

    def known_events(self, integration_id: str) -> list[Mapping[str, Any]]:
        """Calendar entries of the integration and global ones (see :mod:`kpi_sentinel.calendar`)."""
        ...


class AlertPublisher(Protocol):
    def publish(self, alerts: Sequence[Mapping[str, Any]]) -> None: ...


class Clock(Protocol):
    def __call__(self) -> datetime: ...


@dataclass(frozen=True)
class ScorerPorts:
    objects: ObjectStore
    state: StateStore
    control: ControlStore
    publisher: AlertPublisher
    clock: Clock
