"""Use case: score one sync file dropped in the ingest bucket.

read → validate (bad rows rejected with reasons, unreadable files quarantined) → aggregate → score
with the integration's EWMA state → write history → commit state with optimistic concurrency (the
alerts ride along in an outbox) → publish → clear the outbox.

Exactly-once effect under at-least-once delivery: the state remembers the ids of the syncs it has
folded in; a redelivered sync changes nothing and only republishes alerts whose publication had not
completed (its outbox entry is still there).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kpi_sentinel.alert_ids import snooze_matches
from kpi_sentinel.alerts import build_alerts, series_key
from kpi_sentinel.calendar import KnownEventSpan, calendar_periods, parse_events
from kpi_sentinel.config import ConfigError, IntegrationConfig, infer_config, with_overrides
from kpi_sentinel.history import HISTORY_COLUMNS
from kpi_sentinel.parsing import (
    KeyContractError,
    RawTable,
    Rejection,
    SyncKey,
    UnreadableSync,
    infer_granularity,
    parse_sync_key,
    read_table,
    validate_rows,
)
from kpi_sentinel.ports import ObjectStore, OverrideSource, ScorerPorts, StateConflict
from kpi_sentinel.scoring import (
    DetectorFactory,
    IntegrationState,
    ScoreResult,
    aggregate,
    period_start,
    seasonal_ewma,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerSettings:
    ingest_bucket: str
    data_bucket: str
    max_sync_bytes: int = 50 * 1024 * 1024
    max_commit_attempts: int = 8


@dataclass(frozen=True)
class SyncRef:
    """One object-created notification: which object, and what makes this upload unique."""

    bucket: str
    key: str
    size: int | None = None
    version: str = ""  # S3 sequencer or version id: differs for every upload of the same key

    @property
    def sync_id(self) -> str:
        return f"{self.key}#{self.version}"


@dataclass
class SyncOutcome:
    key: str
    status: str  # scored | duplicate | quarantined | rejected_key
    integration_id: str | None = None
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    periods_scored: int = 0
    late_periods: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alerts_published: int = 0
    alerts_suppressed: int = 0
    commit_attempts: int = 0
    reason: str | None = None
    report_key: str | None = None
    seconds: float = 0.0


def process_sync(ref: SyncRef, ports: ScorerPorts, settings: ScorerSettings) -> SyncOutcome:
    started = time.perf_counter()
    outcome = _process(ref, ports, settings)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _process(ref: SyncRef, ports: ScorerPorts, settings: ScorerSettings) -> SyncOutcome:
    try:
        sync = parse_sync_key(ref.key)
    except KeyContractError as exc:
        return _reject_key(ref, ports, settings, str(exc))
    if ref.size is not None and ref.size > settings.max_sync_bytes:
        return _quarantine(ref, sync, ports, settings, UnreadableSync(_too_large(ref.size, settings)))
    body = ports.objects.get(ref.bucket, ref.key)
    if len(body) > settings.max_sync_bytes:
        return _quarantine(ref, sync, ports, settings, UnreadableSync(_too_large(len(body), settings)))
    try:
        table = read_table(body, sync, settings.max_sync_bytes)
    except UnreadableSync as exc:
        return _quarantine(ref, sync, ports, settings, exc)

    explicit = ports.control.integration_config(sync.integration_id)
    overrides = (
        ports.control.metric_overrides(sync.integration_id)
        if isinstance(ports.control, OverrideSource)
        else {}
    )
    snoozes = ports.control.active_snoozes(sync.integration_id, ports.clock())
    try:
        events = parse_events(ports.control.known_events(sync.integration_id))
    except ValueError as exc:  # a broken calendar entry must not stop scoring; it is reported
        log.error("calendar unusable, scoring without it", extra={"reason": str(exc)})
        events = []
    for attempt in range(1, settings.max_commit_attempts + 1):
        stored = ports.state.load(sync.integration_id)
        state = IntegrationState.from_bytes(stored.blob) if stored.blob else None
        if state and ref.sync_id in state.processed:
            return _duplicate(ref, sync, ports, stored.outbox.get(ref.sync_id, []))
        try:
            scored = score_table(
                table, ref.key, sync.integration_id, state, explicit, snoozes, events, overrides=overrides
            )
        except UnreadableSync as exc:
            return _quarantine(ref, sync, ports, settings, exc)
        except ConfigError as exc:
            return _quarantine(ref, sync, ports, settings, UnreadableSync(str(exc)))
        state, result, rejected, known = scored.state, scored.result, scored.rejected, scored.known
        alerts, publishable, suppressed = scored.alerts, scored.publishable, scored.suppressed
        state.remember(ref.sync_id)
        outcome = SyncOutcome(
            key=ref.key,
            status="scored",
            integration_id=sync.integration_id,
            rows_in=table.rows_in,
            rows_scored=result.scored_rows,
            rows_rejected=len(rejected),
            periods_scored=len({p.period for p in result.points}),
            late_periods=len(result.late_periods),
            alerts=publishable,
            alerts_suppressed=len(suppressed),
            commit_attempts=attempt,
        )
        if outcome.rows_in != outcome.rows_scored + outcome.rows_rejected:
            raise AssertionError(f"{ref.key}: rows do not reconcile: {outcome}")
        _write_history(ref, sync, ports, settings, state, result, alerts, known)
        if rejected:
            outcome.report_key = _write_rejections(ref, sync, ports, settings, table, rejected, outcome)
        for alert, why in suppressed:
            log.info("alert suppressed", extra={"alert_id": alert["alert_id"], "by": why})
        write_suppressed(ports.objects, settings.data_bucket, sync.integration_id, ref.sync_id, suppressed)
        try:
            ports.state.commit(
                sync.integration_id,
                stored.version,
                state.to_bytes(),
                ref.sync_id,
                publishable,
                {
                    "tier": state.config.tier,
                    "granularity": state.granularity,
                    "synced_at": ports.clock().timestamp(),
                },
            )
        except StateConflict:
            log.info(
                "state conflict, retrying", extra={"attempt": attempt, "integration": sync.integration_id}
            )
            time.sleep(min(0.05 * attempt, 0.5))
            continue
        if publishable:
            ports.publisher.publish(publishable)
            ports.state.clear_outbox(sync.integration_id, ref.sync_id)
        outcome.alerts_published = len(publishable)
        return outcome
    raise StateConflict(
        f"{ref.key}: state of {sync.integration_id} kept changing; gave up after "
        f"{settings.max_commit_attempts} attempts (the message will be retried)"
    )


@dataclass
class Scored:
    """What scoring one readable table against an integration's state produced."""

    state: IntegrationState
    result: ScoreResult
    rejected: list[Rejection]
    known: dict[int, KnownEventSpan]
    alerts: list[dict[str, Any]]  # every alert built, suppressed ones included
    publishable: list[dict[str, Any]]
    suppressed: list[tuple[dict[str, Any], str]]  # (alert, what suppressed it)


def score_table(
    table: RawTable,
    key: str,
    integration_id: str,
    state: IntegrationState | None,
    explicit: Mapping[str, Any] | None,
    snoozes: Sequence[Mapping[str, Any]],
    events: Sequence[KnownEventSpan],
    detector_factory: DetectorFactory = seasonal_ewma,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Scored:
    """The scorer's pure core: validate, aggregate, score (calendar periods not learned), alert.

    ``overrides`` (operators' per-metric threshold, bad direction and floors) are laid over the config
    each time, so the state remembers the config with the overrides of its latest sync and a removed
    override is gone at the next one. Unusable overrides are logged and ignored, never a reason to
    quarantine data. ``state`` is updated in place (a new one is created for the first sync). Raises
    :class:`UnreadableSync` or :class:`ConfigError` for a file that cannot be scored at all.
    """
    config = _config(integration_id, explicit, state, table)
    if explicit is None:  # a remembered inference must not keep the overrides of an earlier sync
        config = replace(config, overrides={})
    if overrides:
        try:
            config = with_overrides(config, overrides)
        except ConfigError as exc:
            log.error("metric overrides unusable, scoring without them", extra={"reason": str(exc)})
    valid, rejected = validate_rows(table, config, key)
    if state is None:
        granularity = config.granularity_seconds or (
            3600 if config.shape == "events" else infer_granularity([r.timestamp for r in valid])
        )
        state = IntegrationState(
            replace(config, granularity_seconds=granularity), granularity, detector_factory
        )
    elif config != state.config:
        state.reconfigure(replace(config, granularity_seconds=state.granularity))
    scored_until = state.last_period
    agg = aggregate(valid, state.config, state.granularity, state.known_values())
    known = calendar_periods(agg.periods, state.granularity, events)
    result = state.score(agg, known)
    rejected = rejected + _late_rejections(result, state, scored_until)
    alerts = build_alerts(state.config, state.granularity, result.points, key)
    publishable, suppressed = _apply_snoozes(alerts, snoozes, known, state.granularity)
    if state.rollup is not None and result.rollup_points:
        hourly = state.rollup
        hours = calendar_periods({p.period for p in result.rollup_points}, hourly.granularity, events)
        rolled = build_alerts(hourly.config, hourly.granularity, result.rollup_points, key, rollup=True)
        more, held = _apply_snoozes(rolled, snoozes, hours, hourly.granularity)
        alerts, publishable, suppressed = alerts + rolled, publishable + more, suppressed + held
    return Scored(state, result, rejected, known, alerts, publishable, suppressed)


def _too_large(size: int, settings: ScorerSettings) -> str:
    return (
        f"file is {size:,} bytes, above the {settings.max_sync_bytes:,}-byte limit per sync "
        "(split it into smaller syncs)"
    )


def _config(
    integration_id: str,
    explicit: Mapping[str, Any] | None,
    state: IntegrationState | None,
    table: RawTable,
) -> IntegrationConfig:
    if explicit is not None:
        config = IntegrationConfig.from_dict(explicit, integration_id)
        if state is not None:
            config = replace(config, granularity_seconds=config.granularity_seconds or state.granularity)
        return config
    inferred = infer_config(integration_id, table.columns, table.sample())
    if state is None:
        return inferred
    remembered = state.config
    if not remembered.inferred:
        return inferred
    # Columns that first appear in a later file extend the remembered inference; none is forgotten.
    known_metrics = {m.name for m in remembered.metrics}
    known_ratios = {r.name for r in remembered.ratios}
    return replace(
        remembered,
        dimensions=(
            *remembered.dimensions,
            *(d for d in inferred.dimensions if d not in remembered.dimensions),
        ),
        metrics=(*remembered.metrics, *(m for m in inferred.metrics if m.name not in known_metrics)),
        ratios=(*remembered.ratios, *(r for r in inferred.ratios if r.name not in known_ratios)),
    )


def _late_rejections(result: ScoreResult, state: IntegrationState, scored_until: int) -> list[Rejection]:
    """Rows of periods at or before ``scored_until``, the last period scored before this sync."""
    last = period_start(scored_until, state.granularity).isoformat()
    return [
        Rejection(
            row,
            state.config.timestamp_field,
            f"late_period: period {period_start(period, state.granularity).isoformat()} is at or before "
            f"the last scored period {last}; kept in history as late, not scored",
        )
        for period, rows in sorted(result.late_periods.items())
        for row in rows
    ]


def _apply_snoozes(
    alerts: list[dict[str, Any]],
    snoozes: Sequence[Mapping[str, Any]],
    known: Mapping[int, KnownEventSpan],
    granularity: int,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Split alerts into publishable and suppressed (with what suppressed them: snooze or calendar)."""
    publishable: list[dict[str, Any]] = []
    suppressed: list[tuple[dict[str, Any], str]] = []
    events = {period_start(p, granularity).isoformat(): e for p, e in known.items()}
    for alert in alerts:
        event = events.get(alert["period_start"])
        snooze = next((s for s in snoozes if snooze_matches(s, alert)), None)
        if event is not None:
            suppressed.append((alert, f"calendar {event.kind} {event.name!r}"))
        elif snooze is not None:
            suppressed.append((alert, f"snooze {snooze.get('snooze_id', '')}".strip()))
        else:
            publishable.append(alert)
    return publishable, suppressed


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_history(
    ref: SyncRef,
    sync: SyncKey,
    ports: ScorerPorts,
    settings: ScorerSettings,
    state: IntegrationState,
    result: ScoreResult,
    alerts: list[dict[str, Any]],
    known: Mapping[int, KnownEventSpan],
) -> None:
    """One gzip CSV per date touched, keyed by the sync: a retry rewrites the same objects.

    Status: ``scored``, ``warmup``, ``calendar`` (a known event: scored, not learned) or ``late``.
    The history holds the integration's own periods: the hourly roll-up's points and alerts stay out.
    """
    own = (a for a in alerts if a["granularity_seconds"] == state.granularity)
    severity = {(series_key(a), a["period_start"]): a["severity"] for a in own}
    by_date: dict[str, list[list[Any]]] = defaultdict(list)
    starts: dict[int, str] = {}
    iid, key = sync.integration_id, ref.key
    for point in result.points:
        start = starts.get(point.period)
        if start is None:
            start = starts[point.period] = period_start(point.period, state.granularity).isoformat()
        metric, dimension, value = point.series
        by_date[start[:10]].append(
            [
                start, iid, metric, dimension, value, _num(point.observed), _num(point.expected),
                _num(point.lower), _num(point.upper), _num(point.score), _status(point.ready, point.period in known),
                severity.get((point.series, start), ""), key, _num(point.sustained),
            ]
        )  # fmt: skip
    for period, values in result.late_values.items():
        start = period_start(period, state.granularity).isoformat()
        for (metric, dimension, value), observed in sorted(values.items()):
            by_date[start[:10]].append(
                [start, iid, metric, dimension, value, _num(observed), "", "", "", "", "late", "", key, ""]
            )
    name = _digest(ref.sync_id)
    for date, rows in by_date.items():
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS)
        writer.writerows(rows)
        key = f"history/integration={sync.integration_id}/date={date}/{name}.csv.gz"
        body = gzip.compress(text.getvalue().encode(), compresslevel=1, mtime=0)
        ports.objects.put(settings.data_bucket, key, body, "application/gzip")


def suppressed_key(integration_id: str, date: str, source: str) -> str:
    return f"suppressed/date={date}/integration={integration_id}/{_digest(source)}.jsonl.gz"


def write_suppressed(
    objects: ObjectStore,
    bucket: str,
    integration_id: str,
    source: str,
    suppressed: Sequence[tuple[Mapping[str, Any], str]],
) -> None:
    """Keep what snoozes and the calendar suppressed, for the report: one gzip JSON-lines object per date.

    Each line is ``{"alert": <alert>, "by": "snooze <id>" | "calendar <kind> '<name>'"}``. The key
    depends on ``source`` (the sync, or the forest job's run), so a retry rewrites the same objects.
    """
    by_date: dict[str, list[str]] = defaultdict(list)
    for alert, why in suppressed:
        line = json.dumps({"alert": alert, "by": why}, sort_keys=True, default=str)
        by_date[str(alert["period_start"])[:10]].append(line)
    for date, lines in sorted(by_date.items()):
        body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1, mtime=0)
        objects.put(bucket, suppressed_key(integration_id, date, source), body, "application/gzip")


def _status(ready: bool, calendar: bool) -> str:
    return "calendar" if calendar else "scored" if ready else "warmup"


def _num(value: float) -> str:
    return "" if value != value else f"{value:.10g}"  # NaN -> empty cell


def _write_rejections(
    ref: SyncRef,
    sync: SyncKey,
    ports: ScorerPorts,
    settings: ScorerSettings,
    table: RawTable,
    rejected: list[Rejection],
    outcome: SyncOutcome,
) -> str:
    key = f"quarantine/{sync.integration_id}/{sync.name}.rejected-rows.json"
    reasons = Counter(r.reason.split(":")[0] for r in rejected)
    report = {
        "file": ref.key,
        "status": "partially_scored",
        "rows_in": outcome.rows_in,
        "rows_scored": outcome.rows_scored,
        "rows_rejected": outcome.rows_rejected,
        "reasons": dict(reasons.most_common()),
        "rejected": [r.to_dict() for r in rejected],
        "columns": table.columns,
    }
    ports.objects.put(settings.ingest_bucket, key, json.dumps(report, indent=1).encode(), "application/json")
    return key


def _quarantine(
    ref: SyncRef, sync: SyncKey, ports: ScorerPorts, settings: ScorerSettings, problem: UnreadableSync
) -> SyncOutcome:
    """Copy the file under quarantine/ with a report; the message then succeeds (no endless retries)."""
    target = f"quarantine/{sync.integration_id}/{sync.name}"
    ports.objects.copy(settings.ingest_bucket, ref.key, target)
    report = {
        "file": ref.key,
        "quarantined_copy": target,
        "status": "quarantined",
        "row": problem.row,
        "field": problem.field,
        "reason": problem.reason,
        "at": ports.clock().isoformat(),
    }
    report_key = f"{target}.report.json"
    ports.objects.put(
        settings.ingest_bucket, report_key, json.dumps(report, indent=1).encode(), "application/json"
    )
    log.warning("sync quarantined", extra={"reason": problem.reason, "report": report_key})
    return SyncOutcome(
        key=ref.key,
        status="quarantined",
        integration_id=sync.integration_id,
        reason=problem.reason,
        report_key=report_key,
    )


def _reject_key(ref: SyncRef, ports: ScorerPorts, settings: ScorerSettings, reason: str) -> SyncOutcome:
    """A key outside the contract: recorded by its digest, never used as a path."""
    report_key = f"quarantine/_invalid-keys/{_digest(ref.key)}.json"
    report = {"key": ref.key, "status": "rejected_key", "reason": reason, "at": ports.clock().isoformat()}
    ports.objects.put(
        settings.ingest_bucket, report_key, json.dumps(report, indent=1).encode(), "application/json"
    )
    log.error("sync key rejected", extra={"reason": reason, "report": report_key})
    return SyncOutcome(key=ref.key, status="rejected_key", reason=reason, report_key=report_key)


def _duplicate(ref: SyncRef, sync: SyncKey, ports: ScorerPorts, pending: list[dict[str, Any]]) -> SyncOutcome:
    if pending:  # the earlier delivery committed but did not finish publishing
        ports.publisher.publish(pending)
        ports.state.clear_outbox(sync.integration_id, ref.sync_id)
    return SyncOutcome(
        key=ref.key,
        status="duplicate",
        integration_id=sync.integration_id,
        alerts=pending,
        alerts_published=len(pending),
    )
