"""Use case: one isolation-forest job for one integration (nightly retrain, or scoring only).

``retrain``: read the history of the ``training_days`` before the last day → features → skip with a
recorded reason when too little is usable → fit → store signed (``<version>.joblib`` and
``<version>.json``, then the ``latest.json`` pointer, which moves only after both are written) →
delete versions older than ``retention_days`` → score the last day → publish.

``score`` (business tier, every 30 minutes): load the latest model — verified, cached across warm
invocations by version — and score the periods of the last ``score_lookback_minutes``.

Both paths suppress alerts in known events and under snoozes, and publish only alert ids the ledger
has not seen: a redelivered or rerun job publishes nothing twice. Every job leaves a run record under
``models/<integration>/iforest/runs/`` saying what it did and why.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from kpi_sentinel.alert_ids import snooze_matches
from kpi_sentinel.calendar import calendar_periods, parse_events
from kpi_sentinel.config import DEFAULT_FOREST_PERCENTILE, IntegrationConfig
from kpi_sentinel.forest.explain import flagged_alerts
from kpi_sentinel.forest.features import (
    FeatureFrame,
    daily_body,
    feature_frame,
    history_dates,
    read_daily,
    read_history,
    usable_days,
)
from kpi_sentinel.forest.model import ForestModel, ModelRefused, load_verified, serialise, train
from kpi_sentinel.forest.planner import MODES
from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import ForestPorts
from kpi_sentinel.scoring import IntegrationState
from kpi_sentinel.sync import write_suppressed

log = logging.getLogger(__name__)

MIN_TRAINING_ROWS = 48
READ_THREADS = 16
CACHED_MODELS = 32


class BadJob(ValueError):
    """A job message that cannot be run; the message names the field."""


@dataclass(frozen=True)
class ForestSettings:
    data_bucket: str
    training_days: int = 90
    min_training_days: int = 14
    percentile: float | None = None  # None: the granularity's (DEFAULT_FOREST_PERCENTILE)
    retention_days: int = 30
    score_lookback_minutes: int = 60
    trees: int = 100

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ForestSettings:
        if not env.get("DATA_BUCKET"):
            raise RuntimeError("iforest_retrainer is missing environment variable DATA_BUCKET")
        return cls(
            data_bucket=env["DATA_BUCKET"],
            training_days=int(env.get("TRAINING_DAYS", "90")),
            min_training_days=int(env.get("MIN_TRAINING_DAYS", "14")),
            percentile=float(env.get("SCORE_THRESHOLD_PERCENTILE", "0")) or None,
            retention_days=int(env.get("MODEL_RETENTION_DAYS", "30")),
            score_lookback_minutes=int(env.get("SCORE_LOOKBACK_MINUTES", "60")),
        )

    def percentile_for(self, granularity: int) -> float:
        """The threshold percentile for an integration of ``granularity`` seconds: the deployment's
        (``SCORE_THRESHOLD_PERCENTILE``, 0 or unset for none), else the granularity's default."""
        if self.percentile is not None:
            return self.percentile
        return DEFAULT_FOREST_PERCENTILE.get(granularity, 1.0)


@dataclass(frozen=True)
class Job:
    integration_id: str
    mode: str
    run_id: str
    as_of: datetime

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Job:
        iid = raw.get("integration_id")
        if not isinstance(iid, str) or not INTEGRATION_ID.fullmatch(iid):
            raise BadJob(f"job field 'integration_id' is not a valid integration id: {iid!r}")
        mode = raw.get("mode", "retrain")
        if mode not in MODES:
            raise BadJob(f"job field 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
        run_id = raw.get("run_id")
        if not isinstance(run_id, str) or not run_id.replace("-", "").replace("T", "").rstrip("Z").isalnum():
            raise BadJob(f"job field 'run_id' must be a run id like 20261125T0200Z, got {run_id!r}")
        try:
            as_of = datetime.fromisoformat(str(raw["as_of"]))
        except (KeyError, ValueError) as exc:
            raise BadJob(f"job field 'as_of' must be an ISO 8601 time: {exc}") from exc
        if as_of.tzinfo is None:
            raise BadJob("job field 'as_of' needs a UTC offset")
        return cls(iid, mode, run_id, as_of.astimezone(UTC))


@dataclass
class JobOutcome:
    integration_id: str
    mode: str
    run_id: str
    status: str  # trained | skipped | scored | no_model | refused
    reason: str | None = None
    model_version: str | None = None
    features: list[str] = field(default_factory=list)
    training_rows: int = 0
    training_days: int = 0
    rows_scored: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alerts_published: int = 0
    alerts_suppressed: int = 0
    alerts_already_published: int = 0
    history_objects: int = 0
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        record["alert_ids"] = [a["alert_id"] for a in self.alerts]
        del record["alerts"]
        return record


def model_prefix(integration_id: str) -> str:
    return f"models/{integration_id}/iforest/"


# Verified models by (integration, version, digest): a warm container scores without reloading.
_MODELS: OrderedDict[tuple[str, str, str], ForestModel] = OrderedDict()


def run_job(job: Job, ports: ForestPorts, settings: ForestSettings) -> JobOutcome:
    started = time.perf_counter()
    outcome = _retrain(job, ports, settings) if job.mode == "retrain" else _score(job, ports, settings)
    outcome.seconds = round(time.perf_counter() - started, 3)
    ports.objects.put(
        settings.data_bucket,
        f"{model_prefix(job.integration_id)}runs/{job.run_id}-{job.mode}.json",
        json.dumps(outcome.record(), indent=1, default=str).encode(),
        "application/json",
    )
    return outcome


def _context(job: Job, ports: ForestPorts) -> tuple[IntegrationConfig | None, int | None]:
    """The integration's config (explicit, else the scorer's remembered one) and granularity."""
    stored = ports.state.load(job.integration_id)
    state = IntegrationState.from_bytes(stored.blob) if stored.blob else None
    explicit = ports.control.integration_config(job.integration_id)
    if explicit is not None:
        config = IntegrationConfig.from_dict(explicit, job.integration_id)
        granularity = state.granularity if state else config.granularity_seconds
        return config, granularity
    return (state.config, state.granularity) if state else (None, None)


def daily_prefix(integration_id: str) -> str:
    return f"models/{integration_id}/daily/"


def read_window(
    ports: ForestPorts, settings: ForestSettings, integration_id: str, start: datetime, end: datetime
) -> tuple[pd.DataFrame, int]:
    """History rows of ``[start, end)`` (whole date partitions; the caller trims) and the objects read.

    The scorer writes one history object per sync and date: 90 days of hourly data are 2,160 objects,
    of 5-minute data 25,920. So the first job that reads a *closed* date (one the scorer has moved
    past: a later date has history, and any row that still arrives for it is late and never a feature)
    compacts its metric totals into one object under ``models/<id>/daily/``; later jobs read that
    instead. A nightly retrain then reads about one object per day plus the last day's raw objects.
    Compacted days older than any training window ending at ``end`` are deleted (not those older than
    this read's window: a score job reads only its last hours and must not drop the retrain's days).
    """
    dates = history_dates(start, end)
    oldest_kept = history_dates(end - timedelta(days=settings.training_days + 1), end)[0]
    bucket = settings.data_bucket
    compact_prefix = daily_prefix(integration_id)
    compacted: dict[str, str] = {}
    stale: list[str] = []
    for key in ports.objects.list(bucket, compact_prefix):
        date = key[len(compact_prefix) :].removeprefix("date=").removesuffix(".csv.gz")
        if date in dates:
            compacted[date] = key
        elif date < oldest_kept:
            stale.append(key)
    pending = [d for d in dates if d not in compacted]
    raw: dict[str, list[str]] = {d: [] for d in pending}
    later_exists = False  # history beyond the window's last date
    if pending:
        prefix = f"history/integration={integration_id}/"
        for key in ports.objects.list(bucket, prefix, start_after=f"{prefix}date={pending[0]}"):
            date = key[len(prefix) :].split("/", 1)[0].removeprefix("date=")
            if date > dates[-1]:
                later_exists = True
                break
            if date in raw:
                raw[date].append(key)
    keys = [*compacted.values(), *(k for d in pending for k in raw[d])]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        bodies = dict(zip(keys, pool.map(lambda k: ports.objects.get(bucket, k), keys), strict=True))
    frames = [read_daily(key, bodies[key]) for key in compacted.values()]
    last_with_data = max((d for d in pending if raw[d]), default="")
    for date in pending:
        rows = read_history((k, bodies[k]) for k in raw[date])
        frames.append(rows)
        closed = later_exists or date < last_with_data or any(c > date for c in compacted)
        if closed:
            key = f"{compact_prefix}date={date}.csv.gz"
            ports.objects.put(bucket, key, daily_body(rows), "application/gzip")
    if stale:
        ports.objects.delete(bucket, stale)
    frames = [f for f in frames if not f.empty]
    history = pd.concat(frames, ignore_index=True) if frames else read_history([])
    return history, len(keys)


def _retrain(job: Job, ports: ForestPorts, settings: ForestSettings) -> JobOutcome:
    outcome = JobOutcome(job.integration_id, job.mode, job.run_id, "skipped")
    config, granularity = _context(job, ports)
    if granularity is None:
        outcome.reason = "no scorer state: the integration has never synced"
        return outcome
    score_start = job.as_of - timedelta(days=1)
    train_start = score_start - timedelta(days=settings.training_days)
    history, outcome.history_objects = read_window(
        ports, settings, job.integration_id, train_start, job.as_of
    )
    frame = feature_frame(history, config)
    training, recent = frame.between(train_start, score_start), frame.between(score_start, job.as_of)
    outcome.features, outcome.training_days = training.names, usable_days(training)
    usable_rows = int((~training.calendar).sum())
    if outcome.training_days < settings.min_training_days or usable_rows < MIN_TRAINING_ROWS:
        outcome.reason = (
            f"too little history: {outcome.training_days} usable day(s) and {usable_rows} period(s) in the "
            f"{settings.training_days} days before {score_start:%Y-%m-%d %H:%M} UTC; needs "
            f"{settings.min_training_days} days and {MIN_TRAINING_ROWS} periods"
        )
        return outcome
    model = train(training, job.integration_id, settings.percentile_for(granularity), settings.trees)
    version = job.run_id
    identity = {
        "integration_id": job.integration_id,
        "version": version,
        "granularity_seconds": granularity,
        "window_start": train_start.isoformat(),
        "window_end": score_start.isoformat(),
        "training_days": outcome.training_days,
        "trained_at": ports.clock().isoformat(),
    }
    body, metadata = serialise(model, ports.signing_key(), identity)
    model.metadata = metadata
    prefix = model_prefix(job.integration_id)
    bucket = settings.data_bucket
    ports.objects.put(bucket, f"{prefix}{version}.joblib", body, "application/octet-stream")
    ports.objects.put(
        bucket, f"{prefix}{version}.json", json.dumps(metadata, indent=1).encode(), "application/json"
    )
    pointer = {"version": version, "sha256": metadata["sha256"], "written_at": ports.clock().isoformat()}
    ports.objects.put(bucket, f"{prefix}latest.json", json.dumps(pointer).encode(), "application/json")
    _cache(job.integration_id, version, metadata["sha256"], model)
    _prune(ports, settings, job.integration_id, version)
    outcome.status, outcome.model_version, outcome.training_rows = "trained", version, model.training_rows
    _alert(job, ports, model, recent, config, granularity, settings, outcome)
    return outcome


def _prune(ports: ForestPorts, settings: ForestSettings, integration_id: str, keep: str) -> None:
    """Delete model versions (and run records) older than ``retention_days``, never the latest."""
    cutoff = (ports.clock() - timedelta(days=settings.retention_days)).strftime("%Y%m%dT%H%M")
    prefix = model_prefix(integration_id)
    old = []
    for key in ports.objects.list(settings.data_bucket, prefix):
        name = key[len(prefix) :].removeprefix("runs/")
        version = name.split(".", 1)[0].removesuffix("-retrain").removesuffix("-score")
        if name.startswith("latest") or version == keep:
            continue
        if version[:13] < cutoff:
            old.append(key)
    if old:
        ports.objects.delete(settings.data_bucket, old)
        log.info("old model versions deleted", extra={"integration": integration_id, "objects": len(old)})


def _cache(integration_id: str, version: str, digest: str, model: ForestModel) -> None:
    _MODELS[(integration_id, version, digest)] = model
    _MODELS.move_to_end((integration_id, version, digest))
    while len(_MODELS) > CACHED_MODELS:
        _MODELS.popitem(last=False)


def load_latest(ports: ForestPorts, settings: ForestSettings, integration_id: str) -> ForestModel | None:
    """The latest model, verified (raises :class:`ModelRefused`); None when none was ever stored."""
    prefix, bucket = model_prefix(integration_id), settings.data_bucket
    try:
        pointer = json.loads(ports.objects.get(bucket, f"{prefix}latest.json"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ModelRefused(f"latest pointer of {integration_id} is not JSON: {exc}") from exc
    try:
        version, digest = str(pointer["version"]), str(pointer["sha256"])
    except (KeyError, TypeError) as exc:
        raise ModelRefused(f"latest pointer of {integration_id} is not a version pointer: {exc}") from exc
    cached = _MODELS.get((integration_id, version, digest))
    if cached is not None:
        _MODELS.move_to_end((integration_id, version, digest))
        return cached
    try:
        metadata = json.loads(ports.objects.get(bucket, f"{prefix}{version}.json"))
    except FileNotFoundError as exc:
        raise ModelRefused(f"latest pointer names version {version}, whose metadata is missing") from exc
    except json.JSONDecodeError as exc:
        raise ModelRefused(f"metadata of version {version} is not JSON: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("sha256") != digest:
        raise ModelRefused(f"latest pointer and metadata of {version} disagree on the model digest")
    try:
        body = ports.objects.get(bucket, f"{prefix}{version}.joblib")
    except FileNotFoundError as exc:
        raise ModelRefused(f"latest pointer names version {version}, whose model file is missing") from exc
    model = load_verified(body, metadata, ports.signing_key())
    _cache(integration_id, version, digest, model)
    return model


def _score(job: Job, ports: ForestPorts, settings: ForestSettings) -> JobOutcome:
    outcome = JobOutcome(job.integration_id, job.mode, job.run_id, "no_model")
    try:
        model = load_latest(ports, settings, job.integration_id)
    except ModelRefused as exc:
        outcome.status, outcome.reason = "refused", str(exc)
        log.error("model refused, EWMA alone for this integration", extra={"reason": str(exc)})
        return outcome
    if model is None:
        outcome.reason = "no model stored yet (the nightly retrain has not trained one)"
        return outcome
    config, granularity = _context(job, ports)
    granularity = granularity or int(model.metadata.get("granularity_seconds", 3600))
    start = job.as_of - timedelta(minutes=settings.score_lookback_minutes)
    history, outcome.history_objects = read_window(ports, settings, job.integration_id, start, job.as_of)
    recent = feature_frame(history, config).between(start, job.as_of)
    outcome.status, outcome.model_version = "scored", str(model.metadata.get("version"))
    outcome.features = model.features
    _alert(job, ports, model, recent, config, granularity, settings, outcome)
    return outcome


def _alert(
    job: Job,
    ports: ForestPorts,
    model: ForestModel,
    frame: FeatureFrame,
    config: IntegrationConfig | None,
    granularity: int,
    settings: ForestSettings,
    outcome: JobOutcome,
) -> None:
    outcome.rows_scored = len(frame)
    version = str(model.metadata.get("version", ""))
    model_key = f"{model_prefix(job.integration_id)}{version}.joblib"
    flagged = flagged_alerts(
        model, frame, config, job.integration_id, granularity, model_key, settings.training_days
    )
    snoozes = ports.control.active_snoozes(job.integration_id, ports.clock())
    try:
        events = parse_events(ports.control.known_events(job.integration_id))
    except ValueError as exc:
        log.error("calendar unusable, scoring without it", extra={"reason": str(exc)})
        events = []
    known = {
        datetime.fromtimestamp(p * granularity, tz=UTC).isoformat()
        for p in calendar_periods(
            [int(t.timestamp()) // granularity for t in frame.periods], granularity, events
        )
    }
    publishable = []
    suppressed: list[tuple[dict[str, Any], str]] = []
    for item in flagged:
        alert = item.alert
        snooze = next((s for s in snoozes if snooze_matches(s, alert)), None)
        if item.calendar or alert["period_start"] in known:
            suppressed.append((alert, "calendar"))
        elif snooze is not None:
            suppressed.append((alert, f"snooze {snooze.get('snooze_id', '')}".strip()))
        else:
            publishable.append(alert)
    for alert, why in suppressed:
        log.info("alert suppressed", extra={"alert_id": alert["alert_id"], "by": why})
    outcome.alerts_suppressed = len(suppressed)
    write_suppressed(
        ports.objects, settings.data_bucket, job.integration_id, f"{job.run_id}-{job.mode}", suppressed
    )
    outcome.alerts = publishable
    fresh = set(ports.ledger.unpublished(job.integration_id, [a["alert_id"] for a in publishable]))
    new = [a for a in publishable if a["alert_id"] in fresh]
    outcome.alerts_already_published = len(publishable) - len(new)
    if new:
        ports.publisher.publish(new)
        ports.ledger.mark_published(job.integration_id, [a["alert_id"] for a in new])
    outcome.alerts_published = len(new)
