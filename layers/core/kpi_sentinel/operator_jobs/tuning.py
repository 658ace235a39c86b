"""Use case: nightly threshold tuning from operators' labels (recall first, under a precision floor).

For every integration of the ActiveIntegrations index that synced within the window (28 days by
default), and every metric whose alerts operators labelled:

1. **Labels** come from the control table (``feedback#<alert id>`` items); only labels of ``ewma``
   alerts (the id says the detector) and of the three known kinds count. An integration with fewer
   than ``min_labels`` of them is skipped before anything else is read.
2. **Scores** come from the history store, ``history/integration=<id>/date=<d>/*.csv.gz`` over the
   window: the rows of each metric's total and of its slices (a slice alert is judged against its
   metric's threshold too), their ``score``, ``status``, ``observed`` and ``expected``. Where several
   objects hold the same series and period, the last in key order wins (as in the report). An alert's
   id is a pure function of its integration, detector, metric, slice and period start
   (:func:`kpi_sentinel.alerts.alert_id`), so each row's id is computed and matched with the labels;
   the recorded alerts under ``alerts/`` (one object per day for every integration) need not be
   read. Labels of periods outside the window are counted as unmatched, and so are labels of a
   5-minute integration's hourly roll-up alerts (the history holds the integration's own periods; a
   tuned threshold of the metric applies to its roll-up too). An unlabelled period counts
   (as an alert a lower threshold would add) only if it clears the metric's floors as far as the
   history can tell: ``min_abs_change`` on ``|observed - expected|``, and for a count or amount
   ``min_volume`` on ``max(|observed|, |expected|)`` (a ratio's volume, its denominator, is not
   recorded, so its unlabelled periods count regardless).
3. **Skips**, each with its reason in the run record: an operator's threshold override for the
   metric (tuning never touches it, and the override would win anyway); fewer than ``min_labels``
   matched labels, or fewer than ``min_true_positives`` / ``min_false_positives``.
4. **The choice** is :func:`kpi_sentinel.operator_jobs.thresholds.choose` from the metric's current
   threshold (its tuned threshold, else the config's ``threshold``, else the granularity's default).
5. **A change** is stored as the metric's tuned threshold (``tuned#<metric>``, apart from operators'
   overrides, which win over it) together with an audit entry (``audit#<time>#<id>``: who
   ``threshold-tuning``, old, new, the reason and the evidence — label counts, precision and recall
   before and after, the window), in one conditional write: a concurrent run changes nothing twice.
   Rerunning on the same evidence changes nothing and audits nothing (the stored threshold is then
   the current one, and the current one is kept when it is among the best).

Every integration with at least one label gets a run record,
``tuning/<integration id>/runs/<run id>.json`` in the data bucket, saying what was decided per metric
and why. The run stops starting integrations when ``should_stop`` says so (the Lambda's time budget),
starting each night at a different place in the list so none is always last.

Which threshold the scorer uses for a metric (see :func:`effective_threshold`): an operator's override,
else the tuned threshold, else the config's ``threshold``, else the granularity's default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kpi_sentinel.alert_ids import alert_id
from kpi_sentinel.config import (
    DEFAULT_THRESHOLD,
    SUSTAINED_MIN_SCORE,
    ConfigError,
    IntegrationConfig,
    MetricSpec,
)
from kpi_sentinel.forest.planner import run_id as run_id_of
from kpi_sentinel.history import history_rows
from kpi_sentinel.operator_jobs.thresholds import Bounds, Choice, Labelled, choose
from kpi_sentinel.ports import ActiveIntegration, StateConflict, TunedThreshold, TuningInputs, TuningPorts

log = logging.getLogger(__name__)

WHO = "threshold-tuning"
AUDIT_KIND = "threshold_tuned"
LABELS = ("true_positive", "false_positive", "expected")
DETECTOR = "ewma"
HISTORY_FIELDS = (
    "period_start",
    "metric",
    "dimension",
    "dimension_value",
    "observed",
    "expected",
    "score",
    "status",
    "sustained",
)
RECORD_PREFIX = "tuning/"


@dataclass(frozen=True)
class TuningSettings:
    data_bucket: str
    window_days: int = 28
    precision_floor: float = 0.5
    min_labels: int = 5
    min_true_positives: int = 1
    min_false_positives: int = 1
    bounds: Bounds = field(default_factory=Bounds)
    read_threads: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TuningSettings:
        """``DATA_BUCKET`` (required); ``TUNING_WINDOW_DAYS``, ``TUNING_PRECISION_FLOOR``,
        ``TUNING_MIN_LABELS``, ``TUNING_MIN_TRUE_POSITIVES``, ``TUNING_MIN_FALSE_POSITIVES``,
        ``TUNING_MIN_THRESHOLD`` and ``TUNING_MAX_THRESHOLD`` (optional). Errors name the variable."""
        if not env.get("DATA_BUCKET"):
            raise ValueError("environment variable DATA_BUCKET is required")

        def number(name: str, default: float, low: float, high: float) -> float:
            text = env.get(name)
            if text is None or text == "":
                return default
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"environment variable {name} must be a number, got {text!r}") from None
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"environment variable {name} must be in [{low:g}, {high:g}], got {text!r}")
            return value

        defaults = cls(data_bucket=env["DATA_BUCKET"])
        lower = number("TUNING_MIN_THRESHOLD", defaults.bounds.lower, 0.5, 50)
        upper = number("TUNING_MAX_THRESHOLD", defaults.bounds.upper, 0.5, 50)
        if lower > upper:
            raise ValueError(f"TUNING_MIN_THRESHOLD {lower:g} is above TUNING_MAX_THRESHOLD {upper:g}")
        return cls(
            data_bucket=env["DATA_BUCKET"],
            window_days=int(number("TUNING_WINDOW_DAYS", defaults.window_days, 1, 90)),
            precision_floor=number("TUNING_PRECISION_FLOOR", defaults.precision_floor, 0, 1),
            min_labels=int(number("TUNING_MIN_LABELS", defaults.min_labels, 1, 10_000)),
            min_true_positives=int(
                number("TUNING_MIN_TRUE_POSITIVES", defaults.min_true_positives, 1, 10_000)
            ),
            min_false_positives=int(
                number("TUNING_MIN_FALSE_POSITIVES", defaults.min_false_positives, 0, 10_000)
            ),
            bounds=Bounds(lower, upper),
        )


def effective_threshold(
    metric: str,
    base: float,
    overrides: Mapping[str, float],
    tuned: Mapping[str, TunedThreshold],
) -> float:
    """The threshold the scorer should use for ``metric``: override, else tuned, else ``base``.

    ``base`` is the integration's own (:attr:`kpi_sentinel.config.IntegrationConfig.alert_threshold`).

    >>> t = {"ngr": TunedThreshold("ngr", 4.8, 3.5, "2026-11-25T02:00:00+00:00", "20261125T0200Z", 1)}
    >>> effective_threshold("ngr", 3.5, {}, t), effective_threshold("ngr", 3.5, {"ngr": 6.0}, t)
    (4.8, 6.0)
    """
    if metric in overrides:
        return overrides[metric]
    if metric in tuned:
        return tuned[metric].threshold
    return base


def base_threshold(config: Mapping[str, Any] | None, granularity: int) -> float:
    """The integration-wide threshold: the config's ``threshold``, else the granularity's default."""
    value = (config or {}).get("threshold")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return DEFAULT_THRESHOLD.get(granularity or 3600, 3.5)


def operator_thresholds(inputs: TuningInputs) -> dict[str, tuple[float, str]]:
    """Per-metric thresholds operators set, ``metric -> (threshold, where)``: an ``override#<metric>``
    item, else the explicit config (a metric's spec ``threshold`` or ``overrides.<metric>.threshold``).

    >>> operator_thresholds(TuningInputs({}, {"ngr": 5.0}, config={"metrics": [{"name": "clicks", "threshold": 4}]}))
    {'clicks': (4.0, 'the integration config'), 'ngr': (5.0, "an operator's override")}
    """
    found: dict[str, tuple[float, str]] = {}
    config = inputs.config or {}
    for group in ("metrics", "ratios", "rates"):
        for spec in config.get(group) or ():
            if isinstance(spec, Mapping) and _positive(spec.get("threshold")):
                found[str(spec.get("name"))] = (float(spec["threshold"]), "the integration config")
    overrides = config.get("overrides")
    if isinstance(overrides, Mapping):
        for metric, fields in overrides.items():
            if isinstance(fields, Mapping) and _positive(fields.get("threshold")):
                found[str(metric)] = (float(fields["threshold"]), "the integration config's overrides")
    for metric, threshold in inputs.overrides.items():
        found[metric] = (float(threshold), "an operator's override")
    return dict(sorted(found.items()))


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def merge_tuned(
    overrides: Mapping[str, Mapping[str, Any]],
    tuned: Mapping[str, float],
    config: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The per-metric overrides the scorer lays over the config, with tuned thresholds filled in.

    ``overrides`` are the operators' (``override#<metric>`` items, ``metric -> {field: value}``),
    ``tuned`` the tuning job's thresholds (``tuned#<metric>``). A tuned threshold applies only where
    no operator set the metric's threshold (in an override or in the explicit ``config``): the
    operator's always wins, and removing it brings the tuned one back.

    >>> merge_tuned({"ngr": {"min_volume": 5.0}, "ftds": {"threshold": 6.0}}, {"ngr": 4.8, "ftds": 3.0})
    {'ngr': {'min_volume': 5.0, 'threshold': 4.8}, 'ftds': {'threshold': 6.0}}
    """
    merged = {metric: dict(fields) for metric, fields in overrides.items()}
    operator = operator_thresholds(TuningInputs({}, config=config))
    for metric, threshold in tuned.items():
        fields = merged.setdefault(metric, {})
        if fields.get("threshold") is None and metric not in operator:
            fields["threshold"] = threshold
    return {metric: fields for metric, fields in merged.items() if fields}


# --- outcomes -------------------------------------------------------------------------------------------


@dataclass
class MetricOutcome:
    metric: str
    status: str  # tuned | unchanged | skipped | conflict
    reason: str
    labels: dict[str, int] = field(default_factory=dict)
    current: float | None = None
    threshold: float | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    unlabelled_periods: int = 0


@dataclass
class IntegrationOutcome:
    integration_id: str
    run_id: str
    as_of: str
    status: str  # tuned | unchanged | skipped
    reason: str = ""
    labels: int = 0
    labels_matched: int = 0
    labels_unmatched: int = 0
    history_objects: int = 0
    history_problems: list[str] = field(default_factory=list)
    metrics: list[MetricOutcome] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class TuningOutcome:
    run_id: str
    as_of: str
    integrations: int = 0
    without_labels: int = 0
    recorded: int = 0  # integrations with labels, each with a run record
    integrations_skipped: int = 0  # with labels, but none usable (too few, or none in the history)
    thresholds_tuned: int = 0
    metrics_skipped: int = 0
    metrics_unchanged: int = 0
    conflicts: int = 0
    unfinished: int = 0  # not reached before the time budget ran out
    changes: list[dict[str, Any]] = field(default_factory=list)


# --- history --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """One period of a metric's total (``dimension == value == ""``) or slice as the history recorded it."""

    metric: str
    period_start: str
    score: float  # NaN when not scored (warm-up, late)
    status: str
    dimension: str = ""
    value: str = ""
    observed: float = math.nan
    expected: float = math.nan
    sustained: float = math.nan  # the slow chart's score; NaN when not recorded

    @property
    def strength(self) -> float:
        """The highest threshold at which the period alerts: its ``|score|``, or the slow chart's
        ``|sustained|`` when that is higher, on the same side, and the period itself at least
        ``SUSTAINED_MIN_SCORE`` out (the scorer's rule, :func:`kpi_sentinel.alerts.classify`).

        >>> Period("ngr", "T", -1.8, "scored", sustained=-3.1).strength
        3.1
        >>> Period("ngr", "T", 0.5, "scored", sustained=3.1).strength  # the period itself is not out
        0.5
        """
        strength = abs(self.score)
        slow = self.sustained
        if math.isfinite(slow) and slow * self.score > 0 and strength >= SUSTAINED_MIN_SCORE:
            return max(strength, abs(slow))
        return strength


def window_dates(as_of: datetime, days: int) -> list[date]:
    """The ``date=`` partitions of the ``days`` before ``as_of`` (UTC), oldest first.

    >>> [d.isoformat() for d in window_dates(datetime(2026, 11, 25, 2, tzinfo=UTC), 2)]
    ['2026-11-23', '2026-11-24', '2026-11-25']
    """
    end = as_of.astimezone(UTC)
    start = end - timedelta(days=days)
    return [start.date() + timedelta(days=n) for n in range((end.date() - start.date()).days + 1)]


def _float(text: str) -> float:
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def read_periods(
    ports: TuningPorts, settings: TuningSettings, integration_id: str, days: Sequence[date]
) -> tuple[list[Period], int, list[str]]:
    """Every series' periods of ``days`` (totals and slices), the objects read, and the objects that
    could not be."""
    bucket = settings.data_bucket
    keys = [
        key
        for day in days
        for key in ports.objects.list(bucket, f"history/integration={integration_id}/date={day.isoformat()}/")
    ]

    def get(key: str) -> bytes | None:
        try:
            return ports.objects.get(bucket, key)
        except FileNotFoundError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(settings.read_threads, len(keys) or 1))) as pool:
        bodies = list(pool.map(get, keys))
    latest: dict[tuple[str, str, str, str], Period] = {}
    problems: list[str] = []
    for key, body in zip(keys, bodies, strict=True):
        if body is None:
            problems.append(f"{key}: deleted between listing and reading")
            continue
        try:
            for _, row in history_rows(body, HISTORY_FIELDS):
                dimension, value = row["dimension"], row["dimension_value"] if row["dimension"] else ""
                latest[(row["metric"], dimension, value, row["period_start"])] = Period(
                    row["metric"],
                    row["period_start"],
                    _float(row["score"]),
                    row["status"],
                    dimension,
                    value,
                    _float(row["observed"]),
                    _float(row["expected"]),
                    _float(row["sustained"]),
                )
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
    return list(latest.values()), len(keys), problems


# --- one integration ------------------------------------------------------------------------------------


def _label_counts(labels: Iterable[str]) -> dict[str, int]:
    counts = Counter(labels)
    return {name: counts.get(name, 0) for name in LABELS}


def _ewma_labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {a: label for a, label in labels.items() if a.startswith(f"{DETECTOR}-") and label in LABELS}


def _audit_id(integration_id: str, metric: str, run: str, old: float, new: float) -> str:
    text = "\x1f".join((integration_id, metric, run, f"{old:g}", f"{new:g}"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tune_integration(
    active: ActiveIntegration,
    labels: Mapping[str, str],
    as_of: datetime,
    ports: TuningPorts,
    settings: TuningSettings,
) -> IntegrationOutcome:
    """Tune the metrics of one integration whose (ewma) ``labels`` were already read."""
    started = time.perf_counter()
    iid, run = active.integration_id, run_id_of(as_of)
    outcome = IntegrationOutcome(iid, run, as_of.isoformat(), "skipped", labels=len(labels))
    if len(labels) < settings.min_labels:
        outcome.reason = (
            f"{len(labels)} labelled alert(s) in the control table, fewer than the {settings.min_labels} "
            "needed to tune any metric"
        )
        return outcome
    inputs = ports.store.inputs(iid)
    days = window_dates(as_of, settings.window_days)
    periods, outcome.history_objects, outcome.history_problems = read_periods(ports, settings, iid, days)
    in_window = [p for p in periods if _within(p, as_of, settings)]
    by_metric: dict[str, list[tuple[Period, str | None]]] = {}
    matched = 0
    for period in in_window:
        label = labels.get(
            alert_id(iid, DETECTOR, period.metric, period.dimension, period.value, period.period_start)
        )
        matched += label is not None
        by_metric.setdefault(period.metric, []).append((period, label))
    outcome.labels_matched, outcome.labels_unmatched = matched, len(labels) - matched
    base = base_threshold(inputs.config, active.granularity)
    for metric, rows in sorted(by_metric.items()):
        if not any(label for _, label in rows):
            continue
        outcome.metrics.append(_tune_metric(iid, metric, rows, base, inputs, as_of, ports, settings))
    statuses = {m.status for m in outcome.metrics}
    if "tuned" in statuses:
        outcome.status = "tuned"
    elif statuses & {"unchanged", "conflict"}:
        outcome.status = "unchanged"
    outcome.reason = (
        "; ".join(f"{m.metric}: {m.reason}" for m in outcome.metrics)
        or f"none of the {len(labels)} labelled alert(s) is a scored period in the last "
        f"{settings.window_days} days of history"
    )
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


def _within(period: Period, as_of: datetime, settings: TuningSettings) -> bool:
    """Whether a period start (any ISO offset) is in ``[as_of - window, as_of)``."""
    try:
        start = datetime.fromisoformat(period.period_start)
    except ValueError:
        return False
    if start.tzinfo is None:
        return False
    return as_of - timedelta(days=settings.window_days) <= start < as_of


def _tune_metric(
    integration_id: str,
    metric: str,
    rows: Sequence[tuple[Period, str | None]],
    base: float,
    inputs: TuningInputs,
    as_of: datetime,
    ports: TuningPorts,
    settings: TuningSettings,
) -> MetricOutcome:
    counts = _label_counts(label for _, label in rows if label)
    outcome = MetricOutcome(metric, "skipped", "", labels=counts)
    operator = operator_thresholds(inputs)
    if metric in operator:
        outcome.current, where = operator[metric]
        outcome.reason = f"{where} sets threshold {outcome.current:g} for {metric}: tuning never changes it"
        return outcome
    total = sum(counts.values())
    needs = []
    if total < settings.min_labels:
        needs.append(f"{total} label(s), needs {settings.min_labels}")
    if counts["true_positive"] < settings.min_true_positives:
        needs.append(f"{counts['true_positive']} true positive(s), needs {settings.min_true_positives}")
    if counts["false_positive"] < settings.min_false_positives:
        needs.append(f"{counts['false_positive']} false positive(s), needs {settings.min_false_positives}")
    tuned = inputs.tuned.get(metric)
    current = tuned.threshold if tuned else base
    outcome.current = current
    if needs:
        outcome.reason = f"too few labels in the last {settings.window_days} days: " + ", ".join(needs)
        return outcome
    labelled = [
        Labelled(p.strength, label == "true_positive")
        for p, label in rows
        if label in ("true_positive", "false_positive") and math.isfinite(p.score)
    ]
    floors = _floors(inputs.config, integration_id, metric)
    unlabelled = [
        p.strength
        for p, label in rows
        if label is None and p.status == "scored" and math.isfinite(p.score) and _clears(p, floors)
    ]
    outcome.unlabelled_periods = len(unlabelled)
    choice = choose(current, labelled, unlabelled, settings.bounds, settings.precision_floor)
    outcome.before, outcome.after = choice.before.to_dict(), choice.after.to_dict()
    outcome.threshold, outcome.reason = choice.threshold, choice.reason
    if not choice.changed:
        outcome.status = "unchanged"
        return outcome
    run = run_id_of(as_of)
    now = ports.clock().astimezone(UTC)
    new = TunedThreshold(
        metric=metric,
        threshold=choice.threshold,
        previous=current,
        tuned_at=now.isoformat(timespec="seconds"),
        run_id=run,
        version=(tuned.version if tuned else 0) + 1,
    )
    audit = _audit(integration_id, metric, choice, counts, len(unlabelled), as_of, now, run, settings)
    try:
        ports.store.save_tuned(integration_id, new, audit)
    except StateConflict:
        outcome.status = "conflict"
        outcome.reason = f"the tuned threshold of {metric} changed while this run decided; left as it is"
        return outcome
    outcome.status = "tuned"
    return outcome


@dataclass(frozen=True)
class Floors:
    min_abs_change: float = 0.0
    min_volume: float = 0.0  # 0 where the history cannot tell the volume (a ratio's denominator)


def _floors(config: Mapping[str, Any] | None, integration_id: str, metric: str) -> Floors:
    """The metric's floors from the explicit config (none without one, or when it does not parse)."""
    if not config:
        return Floors()
    try:
        spec = IntegrationConfig.from_dict(config, integration_id).metric(metric)
    except (ConfigError, TypeError, ValueError):
        return Floors()
    if spec is None:
        return Floors()
    volume = spec.min_volume if isinstance(spec, MetricSpec) else 0.0
    return Floors(float(spec.min_abs_change), float(volume))


def _clears(period: Period, floors: Floors) -> bool:
    """Whether the period could have alerted under the floors, as far as its recorded values tell.

    >>> _clears(Period("ngr", "T", 5.0, "scored", observed=103.0, expected=100.0), Floors(min_abs_change=5))
    False
    >>> _clears(Period("ngr", "T", 5.0, "scored", observed=12.0, expected=3.0), Floors(5, 20))
    False
    >>> _clears(Period("ngr", "T", 5.0, "scored"), Floors(5, 20))  # values not recorded: it counts
    True
    """
    delta = period.observed - period.expected
    if math.isfinite(delta) and abs(delta) < floors.min_abs_change:
        return False
    volume = max(abs(period.observed), abs(period.expected))
    return not (math.isfinite(volume) and volume < floors.min_volume)


def _audit(
    integration_id: str,
    metric: str,
    choice: Choice,
    counts: Mapping[str, int],
    unlabelled: int,
    as_of: datetime,
    now: datetime,
    run: str,
    settings: TuningSettings,
) -> dict[str, Any]:
    """The audit entry of one change, in the operator API's shape (``audit#<audit_id>`` items).

    ``audit_id`` is ``<ISO time>#<16 hex>`` (sorts by time; the hex is a digest of the integration,
    metric, run and change); ``kind`` is ``threshold_tuned``, ``subject`` the metric, ``old``/``new``
    ``{"threshold": ...}``; ``evidence`` holds what the choice rests on.
    """
    at = now.isoformat(timespec="seconds")
    return {
        "audit_id": f"{at}#{_audit_id(integration_id, metric, run, choice.current, choice.threshold)}",
        "kind": AUDIT_KIND,
        "subject": metric,
        "who": WHO,
        "at": at,
        "old": {"threshold": choice.current},
        "new": {"threshold": choice.threshold},
        "reason": choice.reason,
        "integration_id": integration_id,
        "metric": metric,
        "run_id": run,
        "evidence": {
            "window_start": (as_of - timedelta(days=settings.window_days)).isoformat(),
            "window_end": as_of.isoformat(),
            "labels": dict(counts),
            "unlabelled_periods": unlabelled,
            "precision_floor": settings.precision_floor,
            "bounds": [settings.bounds.lower, settings.bounds.upper],
            "before": choice.before.to_dict(),
            "after": choice.after.to_dict(),
        },
    }


# --- the nightly run ------------------------------------------------------------------------------------


def record_key(integration_id: str, run: str) -> str:
    return f"{RECORD_PREFIX}{integration_id}/runs/{run}.json"


def _rotated(items: list[ActiveIntegration], run: str) -> list[ActiveIntegration]:
    """The integrations in id order, starting at a place that depends on the run."""
    items = sorted(items, key=lambda a: a.integration_id)
    if not items:
        return items
    start = zlib.crc32(run.encode()) % len(items)
    return items[start:] + items[:start]


def tune(
    as_of: datetime,
    ports: TuningPorts,
    settings: TuningSettings,
    integrations: Sequence[str] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TuningOutcome:
    """One nightly run at ``as_of`` over the active integrations (or only ``integrations``)."""
    as_of = as_of.astimezone(UTC).replace(second=0, microsecond=0)
    run = run_id_of(as_of)
    outcome = TuningOutcome(run, as_of.isoformat())
    since = (as_of - timedelta(days=settings.window_days)).timestamp()
    active = [
        a for a in ports.index.active(since) if integrations is None or a.integration_id in integrations
    ]
    outcome.integrations = len(active)
    ordered = _rotated(active, run)

    def first_look(item: ActiveIntegration) -> dict[str, str]:
        return _ewma_labels(ports.store.labels(item.integration_id))

    with ThreadPoolExecutor(max_workers=max(1, min(settings.read_threads, len(ordered) or 1))) as pool:
        labels = list(pool.map(first_look, ordered))
    for n, (item, found) in enumerate(zip(ordered, labels, strict=True)):
        if not found:
            outcome.without_labels += 1
            continue
        if should_stop():
            outcome.unfinished = sum(1 for f in labels[n:] if f)
            log.warning("time budget spent", extra={"unfinished": outcome.unfinished})
            break
        result = tune_integration(item, found, as_of, ports, settings)
        ports.objects.put(
            settings.data_bucket,
            record_key(item.integration_id, run),
            json.dumps(asdict(result), indent=1, default=str).encode(),
            "application/json",
        )
        outcome.recorded += 1
        for metric in result.metrics:
            if metric.status == "tuned":
                outcome.thresholds_tuned += 1
                outcome.changes.append(
                    {
                        "integration_id": item.integration_id,
                        "metric": metric.metric,
                        "old": metric.current,
                        "new": metric.threshold,
                    }
                )
            elif metric.status == "skipped":
                outcome.metrics_skipped += 1
            elif metric.status == "conflict":
                outcome.conflicts += 1
            else:
                outcome.metrics_unchanged += 1
        if result.status == "skipped" and not result.metrics:
            outcome.integrations_skipped += 1
        log.info(
            "integration tuned" if result.status == "tuned" else "integration not tuned",
            extra={"integration": item.integration_id, "status": result.status, "reason": result.reason},
        )
    return outcome
