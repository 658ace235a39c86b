"""What the use cases need from the outside world. Adapters in ``kpi_sentinel.adapters`` implement these."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
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
        index: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the state iff its version is still ``expected_version``; else raise StateConflict.

        ``index`` (tier, granularity) is kept beside the state so planners can find active
        integrations without reading state blobs (see :class:`ActiveIndex`).
        """
        ...

    def clear_outbox(self, integration_id: str, sync_id: str) -> None: ...


class ControlStore(Protocol):
    def integration_config(self, integration_id: str) -> Mapping[str, Any] | None: ...

    def active_snoozes(self, integration_id: str, now: datetime) -> list[Mapping[str, Any]]: ...

    def known_events(self, integration_id: str) -> list[Mapping[str, Any]]:
        """Calendar entries of the integration and global ones (see :mod:`kpi_sentinel.calendar`)."""
        ...


class ListingStore(ObjectStore, Protocol):
    """An object store that can also list keys (in key order) and delete them."""

    def list(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]: ...

    def delete(self, bucket: str, keys: Sequence[str]) -> None: ...


class AlertLedger(Protocol):
    """Which alert ids have been published: a rerun of a scheduled job publishes nothing twice."""

    def unpublished(self, integration_id: str, alert_ids: Sequence[str]) -> list[str]: ...

    def mark_published(self, integration_id: str, alert_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class ActiveIntegration:
    integration_id: str
    tier: str
    granularity: int
    last_sync_at: float  # epoch seconds of the last committed sync


class ActiveIndex(Protocol):
    def active(self, since: float, tier: str | None = None) -> Iterator[ActiveIntegration]:
        """Integrations with a sync committed at or after ``since`` (epoch seconds), of ``tier`` if given."""
        ...


class JobQueue(Protocol):
    def send(self, jobs: Sequence[Mapping[str, Any]]) -> None: ...


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


@dataclass(frozen=True)
class ForestPorts:
    objects: ListingStore
    state: StateStore
    control: ControlStore
    ledger: AlertLedger
    publisher: AlertPublisher
    clock: Clock
    signing_key: Callable[[], bytes]


@dataclass(frozen=True)
class PlannerPorts:
    index: ActiveIndex
    queue: JobQueue
    clock: Clock
