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


# --- kpi_report -------------------------------------------------------------------------------------


class IncidentReader(Protocol):
    """Incidents as support triage stores them (see :mod:`kpi_sentinel.report` for the dict contract)."""

    def incidents_opened(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Incidents whose ``opened_at`` is in ``[start, end)``, in any order."""
        ...


class FeedbackReader(Protocol):
    """Operators' labels on alerts: ``true_positive``, ``false_positive`` or ``expected``."""

    def labels(self, integration_id: str, alert_ids: Sequence[str]) -> dict[str, str]:
        """``alert_id -> label`` for the given alerts of one integration that carry a label."""
        ...


@dataclass(frozen=True)
class ReportPorts:
    """What the KPI report reads: the data bucket (alerts, history, suppressed), incidents and labels.

    ``incidents`` or ``feedback`` may be None when the deployment has no such store: the report then
    says the figure is unavailable instead of showing zero.
    """

    objects: ListingStore
    data_bucket: str
    incidents: IncidentReader | None
    feedback: FeedbackReader | None
    clock: Clock


# --- support_triage ---------------------------------------------------------------------------------


class IncidentConflict(Exception):
    """The incident (or the alert's claim) changed since it was read; reload and try again."""


class IncidentNotFound(KeyError):
    """No incident has this id."""


@dataclass(frozen=True)
class StoredIncident:
    """An incident record (the dict contract of :mod:`kpi_sentinel.triage.incidents`) as stored.

    ``outbox`` holds the outbound messages saved with this version of the incident and not yet sent
    (see :class:`TeamOutbox`); its version is ``record["version"]``.
    """

    record: dict[str, Any]
    outbox: tuple[dict[str, Any], ...] = ()

    @property
    def version(self) -> int:
        return int(self.record["version"])


@dataclass(frozen=True)
class IncidentGroup:
    """The unresolved incidents of one integration and metric family, and the group's version.

    Every save that opens or updates an incident of the group bumps the version, so two alerts of one
    family arriving at once can never both open an incident where there should be one.
    """

    version: int  # 0 before the group's first incident
    incidents: tuple[StoredIncident, ...] = ()


class IncidentStore(Protocol):
    """Where support triage keeps its incidents and which alert belongs to which incident."""

    def claimed_by(self, alert_id: str) -> str | None:
        """The id of the incident that took in ``alert_id``, or None when no incident has it yet."""
        ...

    def get(self, incident_id: str) -> StoredIncident | None: ...

    def candidates(self, integration_id: str, family: str) -> IncidentGroup:
        """The integration's incidents of ``family`` that are not resolved (an alert may join one)."""
        ...

    def save(
        self,
        record: Mapping[str, Any],
        expected_version: int,
        outbox: Sequence[Mapping[str, Any]],
        claim_alert_id: str | None = None,
        group_version: int | None = None,
    ) -> None:
        """Write ``record`` (whose ``version`` is ``expected_version + 1``) and its ``outbox`` at once.

        All or nothing, and only if: the stored incident's version is still ``expected_version`` (0: it
        must not exist yet); with ``claim_alert_id``, no incident has claimed that alert (it is claimed
        for this one); with ``group_version``, the incident's group (integration and family) is still at
        that version (it is bumped). Otherwise raises :class:`IncidentConflict`. So an alert is never
        claimed without its incident saved, and its messages are never lost between the two.
        """
        ...

    def clear_outbox(self, record: Mapping[str, Any]) -> None:
        """Drop the outbox of the incident once sent, if the stored version is still ``record["version"]``.

        When a newer version was saved meanwhile, its writer read this outbox and sends it again.
        """
        ...

    def pending_outboxes(self, before: datetime) -> Iterator[StoredIncident]:
        """Incidents whose outbox is not empty and that were last updated at or before ``before``."""
        ...

    def due(self, now: datetime) -> Iterator[StoredIncident]:
        """Open, unacknowledged incidents whose ``due_at`` is at or before ``now`` (SLA check).

        An incident whose SLA breach at P1 was already announced is no longer due; neither is one
        with an unsent outbox (it is due again once :meth:`pending_outboxes` has been flushed).
        """
        ...

    def incidents_opened(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Incident records whose ``opened_at`` is in ``[start, end)``, oldest first."""
        ...

    def acknowledge(self, incident_id: str, at: datetime) -> dict[str, Any]:
        """Mark the incident acknowledged (idempotent); returns the stored record.

        Raises :class:`IncidentNotFound` for an unknown id.
        """
        ...

    def resolve(self, incident_id: str, at: datetime) -> dict[str, Any]:
        """Mark the incident resolved (idempotent; a resolved incident is never reopened)."""
        ...


class TeamOutbox(Protocol):
    """Per-team outbound queues: each message carries its ``team`` and ``dedup_key``."""

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Deliver every message (at least once) or raise; consumers deduplicate on ``dedup_key``."""
        ...


class RulesSource(Protocol):
    """Reads a routing rules document from a deployment-specific location."""

    def read(self, location: str) -> str:
        """The text at ``location``: ``s3://<bucket>/<key>`` or ``ssm:/<parameter name>``."""
        ...
