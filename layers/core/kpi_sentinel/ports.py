"""What the use cases need from the outside world. Adapters in ``kpi_sentinel.adapters`` implement these."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


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

        ``index`` (tier, granularity, and ``synced_at``: when the sync committed, in epoch seconds on
        the use case's clock, else the adapter's) is kept beside the state so planners and the
        freshness check can find active integrations without reading state blobs (see
        :class:`ActiveIndex`).
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

    def acknowledge(self, incident_id: str, at: datetime, by: str | None = None) -> dict[str, Any]:
        """Mark the incident acknowledged by ``by`` (idempotent); returns the stored record.

        Raises :class:`IncidentNotFound` for an unknown id.
        """
        ...

    def resolve(self, incident_id: str, at: datetime, by: str | None = None) -> dict[str, Any]:
        """Mark the incident resolved by ``by``, reason ``operator`` (idempotent; a resolved incident is
        never reopened, and who resolved it first stays)."""
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


# --- operator jobs: freshness check and threshold tuning ---------------------------------------------


@dataclass(frozen=True)
class Outage:
    """An integration's missing-data outage that has been announced (see :mod:`kpi_sentinel.operator_jobs`).

    ``last_sync_at`` is the last sync before the silence (epoch seconds): it identifies the outage, so
    the alert ids derived from it are the same on every run. ``alert_ids`` are the alerts published for
    it, the first one first (a warning, or a critical when the outage was first seen that late) and the
    escalation after it; ``severity`` is the highest published. ``version`` is 0 for an outage not yet
    stored; every save bumps it.
    """

    integration_id: str
    last_sync_at: float
    cadence_seconds: int
    alert_ids: tuple[str, ...]
    severity: str
    alerted_at: float
    tier: str = "standard"
    segment: str = "default"
    version: int = 0


class FreshnessState(Protocol):
    """The announced outages, one per integration at most, read all at once every run."""

    def open_outages(self) -> Iterator[Outage]:
        """Every stored outage (few: only announced, unresolved ones are kept)."""
        ...

    def save(self, outage: Outage, expected_version: int) -> None:
        """Store ``outage`` (its ``version`` is ``expected_version + 1``) iff the stored one is still at
        ``expected_version`` (0: none stored); else raise :class:`StateConflict`."""
        ...

    def close(self, integration_id: str, expected_version: int) -> None:
        """Delete the integration's outage iff it is still at ``expected_version``; else StateConflict."""
        ...


@dataclass(frozen=True)
class FreshnessPorts:
    index: ActiveIndex
    control: ControlStore
    state: FreshnessState
    publisher: AlertPublisher
    clock: Clock


@dataclass(frozen=True)
class TunedThreshold:
    """A threshold the tuning job chose for one metric of one integration (``tuned#<metric>``).

    It is stored apart from an operator's override, which always wins over it. ``version`` counts the
    changes (0: never tuned).
    """

    metric: str
    threshold: float
    previous: float | None
    tuned_at: str  # ISO 8601, UTC
    run_id: str
    version: int


@dataclass(frozen=True)
class TuningInputs:
    """What the control table holds about one integration for threshold tuning.

    ``labels``: operators' labels by alert id (``true_positive``, ``false_positive``, ``expected``);
    ``overrides``: the thresholds of operators' ``override#<metric>`` items (metric -> threshold; an
    override of other fields only is not listed); ``tuned``: the
    tuning job's own per-metric thresholds; ``config``: the explicit integration config, if any.
    """

    labels: Mapping[str, str]
    overrides: Mapping[str, float] = field(default_factory=dict)
    tuned: Mapping[str, TunedThreshold] = field(default_factory=dict)
    config: Mapping[str, Any] | None = None


class TuningStore(Protocol):
    """The control table's side of threshold tuning."""

    def labels(self, integration_id: str) -> dict[str, str]:
        """Every label of the integration's alerts, ``alert_id -> label`` (a cheap first look)."""
        ...

    def inputs(self, integration_id: str) -> TuningInputs: ...

    def save_tuned(self, integration_id: str, tuned: TunedThreshold, audit: Mapping[str, Any]) -> None:
        """Store ``tuned`` and its audit entry together, iff the stored tuned threshold of the metric is
        still at version ``tuned.version - 1`` (0: none); else raise :class:`StateConflict`.

        ``audit`` is an entry in the operator API's audit shape (``audit_id`` = ``<ISO time>#<id>``,
        ``kind``, ``subject``, ``who``, ``at``, ``old``, ``new``, ``reason``, plus ``evidence``), stored
        as ``audit#<audit_id>``.
        """
        ...


@dataclass(frozen=True)
class TuningPorts:
    index: ActiveIndex
    store: TuningStore
    objects: ListingStore
    clock: Clock


# --- operator_api -----------------------------------------------------------------------------------


@runtime_checkable
class OverrideSource(Protocol):
    """A control store that also holds operators' per-metric overrides (``override#<metric>`` items).

    The scorer lays them over the integration's config at every sync (:func:`kpi_sentinel.config.
    with_overrides`); a control store without them simply scores without overrides.
    """

    def metric_overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        """``metric -> {field: value}`` with only the overridden fields (threshold, bad_direction, ...)."""
        ...


class OperatorConflict(Exception):
    """A conditional write lost: the item changed since it was read (an override's version moved)."""


class ScopeStore(Protocol):
    """Which integrations a caller of the operator API may read and change."""

    def scope_of(self, principal: str) -> frozenset[str] | None:
        """The integration ids of the principal's ``scope#<principal>`` item (``"*"``: every one).

        None when the principal has no scope item (such a caller is refused everything).
        """
        ...


class OperatorStore(Protocol):
    """Operator-owned settings as the operator API writes them, in the shapes the scorer reads.

    Record contracts (plain dicts): a *snooze* has ``snooze_id``, ``integration_id``, ``metric``,
    ``dimension``, ``dimension_value`` (str or None), ``until`` (epoch seconds), ``reason``, ``who``,
    ``created_at`` (ISO 8601 UTC); a calendar *event* has ``event_id``, ``integration_id`` (``"*"``:
    global), ``kind``, ``name``, ``start``/``end`` (epoch seconds), ``who``, ``created_at``; a *label* has
    ``alert_id``, ``integration_id``, ``label``, ``note``, ``who``, ``at``; an *override* has ``metric``,
    the overridden fields of :data:`kpi_sentinel.config.OVERRIDE_FIELDS` (None when not overridden),
    ``version``, ``updated_by``, ``updated_at``, ``reason``; an *audit* entry has ``audit_id``
    (``<ISO time>#<uuid>``, sorts by time), ``integration_id``, ``kind``, ``subject``, ``who``, ``at``,
    ``old``, ``new`` (dicts or None) and ``reason``.
    """

    def put_snooze(self, snooze: Mapping[str, Any]) -> None: ...

    def snoozes(self, integration_id: str, now: datetime) -> list[dict[str, Any]]:
        """The integration's snoozes whose ``until`` is after ``now`` (expired ones may still be stored)."""
        ...

    def delete_snooze(self, integration_id: str, snooze_id: str) -> dict[str, Any] | None:
        """Delete the snooze; returns what was stored, or None when there was none."""
        ...

    def put_label(self, label: Mapping[str, Any]) -> None: ...

    def label_records(self, integration_id: str, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``alert_id -> label record`` for the given alerts of the integration that carry a label."""
        ...

    def put_event(self, event: Mapping[str, Any]) -> None: ...

    def events(self, owner: str) -> list[dict[str, Any]]:
        """The calendar events of one owner: an integration id, or ``"*"`` for the global ones."""
        ...

    def delete_event(self, owner: str, event_id: str) -> dict[str, Any] | None: ...

    def overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        """``metric -> override record`` (consistent read: an operator sees their own change at once)."""
        ...

    def save_override(
        self,
        integration_id: str,
        metric: str,
        override: Mapping[str, Any] | None,
        expected_version: int,
        audit: Mapping[str, Any],
    ) -> None:
        """Write (or, with None, delete) the metric's override and its audit entry, all or nothing.

        Only if the stored override's version is still ``expected_version`` (0: there is none), else
        :class:`OperatorConflict`. A written override's ``version`` is ``expected_version + 1``.
        """
        ...

    def audit(self, integration_id: str, limit: int, before: str | None = None) -> list[dict[str, Any]]:
        """The integration's audit entries, newest first, those with ``audit_id < before`` if given."""
        ...


@dataclass(frozen=True)
class OperatorPorts:
    """What the operator API reads and changes.

    ``incidents`` may be None when the deployment has no incidents table: the incident routes then
    answer 503. Recorded alerts are read from ``data_bucket`` (``alerts/date=<day>/``).
    """

    store: OperatorStore
    scopes: ScopeStore
    incidents: IncidentStore | None
    objects: ListingStore
    data_bucket: str
    clock: Clock
