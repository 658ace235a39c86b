"""Detection quality: alerts (schema v1 dicts) scored against labelled windows and known events.

The rules, as implemented:

* **Counted alerts.** Only alerts with severity ``warning`` or ``critical`` count; ``info`` alerts (the
  metric moved in its harmless direction) are validated and then ignored.
* **Match.** An alert matches a :class:`~kpi_sentinel.quality.labels.Window` when it is of the same
  integration, its period ``[period_start, period_start + granularity_seconds)`` overlaps the window
  (for an alert at the integration's own granularity: ``window.start <= period_start < window.end``;
  an hourly roll-up alert of a 5-minute integration matches a window that touches its hour), its
  metric is one of ``window.metrics`` and either the window names no slice (``value`` None), or the
  alert is on the metric's total (``dimension_value`` None), or it is on the window's slice
  (``dimension == window.dimension`` and ``dimension_value == window.value``). Another slice of the
  right metric does not match.
* **Match, isolation forest.** An alert of ``detector`` ``isolation_forest`` is about the
  integration's metric totals together: it matches a window of the same integration and time when
  the window's metrics include the alert's ``metric`` (the feature furthest out) or one of the
  features that moved (its ``contributors`` with ``dimension`` ``feature`` and ``share`` > 0),
  whatever slice the window names (the forest sees totals only; a slice's crater shows in the total
  when it is large).
* **Caught and delay.** A window is caught when at least one alert matches it. Its detection delay is
  counted from when the earliest matching alert could be raised, the end of its period:
  ``(period_end - window.start) / granularity - 1``, in periods of the integration (0 = caught in the
  first period of the window; an hourly roll-up alert of 5-minute data for an hour that starts with
  the window: 11).
* **False alerts and bursts.** An alert that matches no window (of any kind) is false. False alerts
  are grouped per ``(integration, metric)`` into bursts (an ``isolation_forest`` alert is about all
  the integration's features whichever leads, like its alert id: its group is ``(integration,
  "features")``): sorted by period, a new burst starts when the gap to the previous false alert of
  the group exceeds ``burst_gap`` periods (alerts in the same period, e.g. on several slices, are
  one burst). One burst is one false alarm. Because a burst is a
  chain, one more false alert can *bridge* two bursts into one (the only way adding a false alert can
  lower the count); with ``burst_gap=0`` every extra false alert counts or joins, never merges.
* **Known events.** False alerts inside a known event (same integration, or an event whose
  ``integration_id`` is None; ``start <= period_start < end``) are also counted, per alert, as
  ``known_event_alerts``. They remain false alerts and take part in bursts.
* **Targeted kinds.** Recall and precision only see windows whose kind is in ``targeted_kinds``.
  Windows of other kinds (``missing_data``, ``level_shift`` by default) are still reported per kind,
  and alerts matching them are not false.
* **Metrics.** ``windows`` and ``caught`` in the overall and per-granularity summaries count targeted
  windows only. Recall = caught / windows (None when there are no targeted windows). Precision =
  caught / (caught + false bursts), 1.0 when both are 0. F2 = 5PR / (4P + R), 0 when P + R = 0, None
  when recall is None. False alarms per series-week = false bursts / Σ(series × periods ×
  granularity / 604800) over the :class:`Coverage` entries (None when nothing was scored).
  Median and mean delays are over caught windows (None when there are none).
* **Granularity.** Each integration has exactly one :class:`Coverage`; its windows are reported under
  its granularity, and its alerts must carry that ``granularity_seconds`` or a whole multiple of it
  (a roll-up). Gaps, delays and bursts are counted in periods of the integration's granularity.

* **Operating curve.** :func:`operating_curve` scores, by the same rules, only the alerts at least
  ``k`` times past their threshold (:func:`alert_margin`), for a few ``k`` ≥ 1: what precision would
  cost in recall at a higher threshold, read off the alerts as raised.

Inputs are validated: an alert missing a field, or with a malformed one (e.g. an unparsable or
offset-less ``period_start``), raises ``ValueError`` naming the alert's position and the field.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kpi_sentinel.quality.labels import ANOMALY_KINDS, EWMA_TARGETED, KnownEvent, Window

SECONDS_PER_WEEK = 604800
SEVERITIES = ("info", "warning", "critical")
COUNTED_SEVERITIES = frozenset({"warning", "critical"})
REQUIRED_ALERT_FIELDS = (
    "integration_id",
    "metric",
    "dimension",
    "dimension_value",
    "period_start",
    "granularity_seconds",
    "severity",
)
FOREST_DETECTOR = "isolation_forest"
FOREST_SERIES = "features"  # the forest's alerts are about the integration's features together
_DIGITS = 6  # rounding of floats in ``to_dict``


@dataclass(frozen=True)
class Coverage:
    """What was scored for one integration, the denominator of the false-alarm rate."""

    integration_id: str
    granularity_seconds: int
    series: int  # distinct series scored (metric × slice, totals and ratios included)
    periods: int  # periods scored

    def __post_init__(self) -> None:
        if self.granularity_seconds <= 0:
            raise ValueError(f"coverage {self.integration_id!r}: granularity_seconds must be positive")
        if self.series < 0 or self.periods < 0:
            raise ValueError(f"coverage {self.integration_id!r}: series and periods must not be negative")

    @property
    def series_weeks(self) -> float:
        """Series × weeks scored: ``series × periods × granularity / 604800``."""
        return self.series * self.periods * self.granularity_seconds / SECONDS_PER_WEEK


@dataclass(frozen=True)
class AlertRef:
    """The fields of an alert that scoring reads, validated; ``position`` is its index in the input."""

    position: int
    integration_id: str
    metric: str
    dimension: str | None
    dimension_value: str | None
    period_start: datetime
    granularity_seconds: int
    severity: str
    detector: str | None = None  # None when the alert does not say
    moved: frozenset[str] = frozenset()  # isolation_forest: contributors with share > 0

    @property
    def counted(self) -> bool:
        return self.severity in COUNTED_SEVERITIES

    @property
    def period_end(self) -> datetime:
        return self.period_start + timedelta(seconds=self.granularity_seconds)

    @property
    def is_forest(self) -> bool:
        return self.detector == FOREST_DETECTOR

    @property
    def series(self) -> str:
        """What false alerts are grouped by (with the integration): the metric, or the forest's features."""
        return FOREST_SERIES if self.is_forest else self.metric

    @classmethod
    def parse(cls, alert: Mapping[str, Any], position: int) -> AlertRef:
        """Validate one alert dict; ``ValueError`` names the position and the field that is wrong."""
        where = f"alert {position}"
        missing = [name for name in REQUIRED_ALERT_FIELDS if name not in alert]
        if missing:
            raise ValueError(f"{where}: field {missing[0]!r} is missing")
        for name in ("integration_id", "metric"):
            if not isinstance(alert[name], str) or not alert[name]:
                raise ValueError(f"{where}: field {name!r} must be a non-empty string, got {alert[name]!r}")
        for name in ("dimension", "dimension_value"):
            if alert[name] is not None and not isinstance(alert[name], str):
                raise ValueError(f"{where}: field {name!r} must be a string or null, got {alert[name]!r}")
        raw_start = alert["period_start"]
        if not isinstance(raw_start, str):
            raise ValueError(f"{where}: field 'period_start' must be an ISO-8601 string, got {raw_start!r}")
        try:
            start = datetime.fromisoformat(raw_start)
        except ValueError:
            raise ValueError(f"{where}: field 'period_start' is not ISO-8601: {raw_start!r}") from None
        if start.utcoffset() is None:
            raise ValueError(f"{where}: field 'period_start' has no UTC offset: {raw_start!r}")
        granularity = alert["granularity_seconds"]
        if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity <= 0:
            raise ValueError(
                f"{where}: field 'granularity_seconds' must be a positive integer, got {granularity!r}"
            )
        severity = alert["severity"]
        if severity not in SEVERITIES:
            raise ValueError(f"{where}: field 'severity' must be one of {SEVERITIES}, got {severity!r}")
        detector = alert.get("detector")
        if detector is not None and not isinstance(detector, str):
            raise ValueError(f"{where}: field 'detector' must be a string, got {detector!r}")
        return cls(
            position=position,
            integration_id=alert["integration_id"],
            metric=alert["metric"],
            dimension=alert["dimension"],
            dimension_value=alert["dimension_value"],
            period_start=start,
            granularity_seconds=granularity,
            severity=severity,
            detector=detector,
            moved=_moved_features(alert, where) if detector == FOREST_DETECTOR else frozenset(),
        )


def _moved_features(alert: Mapping[str, Any], where: str) -> frozenset[str]:
    """An isolation_forest alert's features that moved: contributors of dimension ``feature``, share > 0."""
    contributors = alert.get("contributors")
    if not isinstance(contributors, list):
        raise ValueError(f"{where}: field 'contributors' must be a list, got {contributors!r}")
    moved: set[str] = set()
    for n, item in enumerate(contributors):
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: field 'contributors[{n}]' must be an object, got {item!r}")
        if item.get("dimension") != "feature":
            continue
        value, share = item.get("value"), item.get("share")
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"{where}: field 'contributors[{n}].value' must be a non-empty string, got {value!r}"
            )
        if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share):
            raise ValueError(f"{where}: field 'contributors[{n}].share' must be a number, got {share!r}")
        if share > 0:
            moved.add(value)
    return frozenset(moved)


def alert_matches(window: Window, alert: AlertRef) -> bool:
    """The match rule (module docstring): integration, ``[start, end)``, metric, then slice or total.

    An isolation_forest alert matches on its metric or any feature that moved, whatever the slice.
    """
    if alert.integration_id != window.integration_id:
        return False
    if not (alert.period_start < window.end and window.start < alert.period_end):
        return False
    if alert.is_forest:
        return alert.metric in window.metrics or not alert.moved.isdisjoint(window.metrics)
    if alert.metric not in window.metrics:
        return False
    if window.value is None or alert.dimension_value is None:
        return True
    return alert.dimension == window.dimension and alert.dimension_value == window.value


def in_known_event(event: KnownEvent, alert: AlertRef) -> bool:
    """The alert's period starts inside the event, which applies to its integration (or to all)."""
    if event.integration_id is not None and event.integration_id != alert.integration_id:
        return False
    return event.start <= alert.period_start < event.end


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _precision(caught: int, false_bursts: int) -> float:
    return caught / (caught + false_bursts) if caught + false_bursts else 1.0


def _f2(precision: float, recall: float | None) -> float | None:
    if recall is None:
        return None
    if precision + recall == 0:
        return 0.0
    return 5 * precision * recall / (4 * precision + recall)


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _number(value: float | None) -> float | None:
    """JSON-safe: rounded, None for missing or non-finite."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, _DIGITS)


@dataclass(frozen=True)
class WindowResult:
    """One labelled window's outcome."""

    window: Window
    granularity_seconds: int
    targeted: bool
    caught: bool
    delay_periods: float | None  # None when missed
    matching_alerts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.window.to_dict(),
            "granularity_seconds": self.granularity_seconds,
            "targeted": self.targeted,
            "caught": self.caught,
            "delay_periods": _number(self.delay_periods),
            "matching_alerts": self.matching_alerts,
        }


@dataclass(frozen=True)
class FalseBurst:
    """One false alarm: consecutive false alerts of one ``(integration, metric)``, gaps ≤ ``burst_gap``.

    ``metric`` is ``"features"`` for a burst of ``isolation_forest`` alerts (see :attr:`AlertRef.series`).
    """

    integration_id: str
    metric: str
    granularity_seconds: int
    first_period: datetime
    last_period: datetime
    alerts: int
    known_event_alerts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "metric": self.metric,
            "granularity_seconds": self.granularity_seconds,
            "first_period": self.first_period.isoformat(),
            "last_period": self.last_period.isoformat(),
            "alerts": self.alerts,
            "known_event_alerts": self.known_event_alerts,
        }


@dataclass(frozen=True)
class Summary:
    """Scores over a set of integrations (all, or one granularity); windows count targeted kinds only."""

    windows: int
    caught: int
    recall: float | None
    false_alerts: int
    false_bursts: int
    precision: float
    f2: float | None
    median_delay: float | None
    mean_delay: float | None
    series_weeks: float
    false_alarms_per_series_week: float | None
    known_event_alerts: int

    @classmethod
    def build(
        cls,
        results: Iterable[WindowResult],
        bursts: Iterable[FalseBurst],
        coverage: Iterable[Coverage],
    ) -> Summary:
        targeted = [r for r in results if r.targeted]
        caught = [r for r in targeted if r.caught]
        delays = [r.delay_periods for r in caught if r.delay_periods is not None]
        burst_list = list(bursts)
        n_bursts = len(burst_list)
        series_weeks = sum(c.series_weeks for c in coverage)
        recall = _ratio(len(caught), len(targeted))
        precision = _precision(len(caught), n_bursts)
        return cls(
            windows=len(targeted),
            caught=len(caught),
            recall=recall,
            false_alerts=sum(b.alerts for b in burst_list),
            false_bursts=n_bursts,
            precision=precision,
            f2=_f2(precision, recall),
            median_delay=_median(delays),
            mean_delay=_mean(delays),
            series_weeks=series_weeks,
            false_alarms_per_series_week=_ratio(n_bursts, series_weeks),
            known_event_alerts=sum(b.known_event_alerts for b in burst_list),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "caught": self.caught,
            "recall": _number(self.recall),
            "false_alerts": self.false_alerts,
            "false_bursts": self.false_bursts,
            "precision": _number(self.precision),
            "f2": _number(self.f2),
            "median_delay": _number(self.median_delay),
            "mean_delay": _number(self.mean_delay),
            "series_weeks": _number(self.series_weeks),
            "false_alarms_per_series_week": _number(self.false_alarms_per_series_week),
            "known_event_alerts": self.known_event_alerts,
        }


@dataclass(frozen=True)
class KindStats:
    """Recall and delay for one anomaly kind (targeted or not)."""

    kind: str
    targeted: bool
    windows: int
    caught: int
    recall: float | None
    median_delay: float | None
    mean_delay: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "targeted": self.targeted,
            "windows": self.windows,
            "caught": self.caught,
            "recall": _number(self.recall),
            "median_delay": _number(self.median_delay),
            "mean_delay": _number(self.mean_delay),
        }


@dataclass(frozen=True)
class QualityReport:
    """The outcome of :func:`evaluate`; ``to_dict`` is JSON-ready (no NaN, stable key order)."""

    targeted_kinds: tuple[str, ...]
    burst_gap: int
    overall: Summary
    per_granularity: Mapping[int, Summary]  # ascending granularity
    per_kind: Mapping[str, KindStats]  # ANOMALY_KINDS order, then unknown kinds sorted
    windows: tuple[WindowResult, ...]
    false_bursts: tuple[FalseBurst, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "targeted_kinds": list(self.targeted_kinds),
            "burst_gap": self.burst_gap,
            "overall": self.overall.to_dict(),
            "per_granularity": [
                {"granularity_seconds": g, **s.to_dict()} for g, s in self.per_granularity.items()
            ],
            "per_kind": [k.to_dict() for k in self.per_kind.values()],
            "windows": [w.to_dict() for w in self.windows],
            "false_bursts": [b.to_dict() for b in self.false_bursts],
        }


def _check_aware(value: datetime, what: str) -> None:
    if value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")


def _coverage_index(coverage: Iterable[Coverage]) -> dict[str, Coverage]:
    index: dict[str, Coverage] = {}
    for c in coverage:
        if c.integration_id in index:
            raise ValueError(f"coverage: integration {c.integration_id!r} is listed twice")
        index[c.integration_id] = c
    return index


def _kind_order(kinds: Iterable[str]) -> list[str]:
    present = set(kinds)
    return [k for k in ANOMALY_KINDS if k in present] + sorted(present - set(ANOMALY_KINDS))


def _bursts(
    false_alerts: Iterable[AlertRef], known: set[int], burst_gap: int, granularities: Mapping[str, int]
) -> list[FalseBurst]:
    """Chains of false alerts per group. The gap to the next alert is from the end of the chain so far
    to its start, in the integration's periods, plus one: start to start for alerts of one period."""
    groups: dict[tuple[str, str], list[AlertRef]] = defaultdict(list)
    for alert in false_alerts:
        groups[(alert.integration_id, alert.series)].append(alert)
    bursts: list[FalseBurst] = []
    for (integration_id, metric), group in sorted(groups.items()):
        group.sort(key=lambda a: (a.period_start, a.period_end))
        granularity = granularities[integration_id]
        members: list[AlertRef] = []
        reach = group[0].period_end
        for alert in group:
            if members:
                gap = (alert.period_start - reach).total_seconds() / granularity + 1
                if gap > burst_gap:
                    bursts.append(_burst(integration_id, metric, granularity, members, known))
                    members = []
            reach = max(reach, alert.period_end) if members else alert.period_end
            members.append(alert)
        bursts.append(_burst(integration_id, metric, granularity, members, known))
    return bursts


def _burst(
    integration_id: str, metric: str, granularity: int, members: Sequence[AlertRef], known: set[int]
) -> FalseBurst:
    return FalseBurst(
        integration_id=integration_id,
        metric=metric,
        granularity_seconds=granularity,
        first_period=members[0].period_start,
        last_period=members[-1].period_start,
        alerts=len(members),
        known_event_alerts=sum(1 for a in members if a.position in known),
    )


def evaluate(
    windows: Iterable[Window],
    known_events: Iterable[KnownEvent],
    alerts: Iterable[Mapping[str, Any]],
    coverage: Iterable[Coverage],
    targeted_kinds: Iterable[str] = EWMA_TARGETED,
    burst_gap: int = 3,
) -> QualityReport:
    """Score ``alerts`` (schema v1 dicts) against ``windows`` and ``known_events`` (rules: module doc).

    ``coverage`` has one entry per integration; every window's and alert's integration must have one.
    ``burst_gap`` is in periods of the integration's granularity and must be ≥ 0.
    """
    if isinstance(burst_gap, bool) or not isinstance(burst_gap, int) or burst_gap < 0:
        raise ValueError(f"burst_gap must be a non-negative integer, got {burst_gap!r}")
    targeted = tuple(targeted_kinds)
    covered = _coverage_index(coverage)
    window_list = list(windows)
    events = list(known_events)
    for w in window_list:
        what = f"window {w.integration_id}/{w.kind}@{w.start.isoformat()}"
        _check_aware(w.start, f"{what}: field 'start'")
        _check_aware(w.end, f"{what}: field 'end'")
        if w.integration_id not in covered:
            raise ValueError(f"{what}: integration {w.integration_id!r} has no coverage")
    for e in events:
        _check_aware(e.start, f"known event {e.name!r}: field 'start'")
        _check_aware(e.end, f"known event {e.name!r}: field 'end'")

    parsed = [AlertRef.parse(alert, i) for i, alert in enumerate(alerts)]
    for a in parsed:
        c = covered.get(a.integration_id)
        if c is None:
            raise ValueError(f"alert {a.position}: integration {a.integration_id!r} has no coverage")
        if a.granularity_seconds % c.granularity_seconds:
            raise ValueError(
                f"alert {a.position}: field 'granularity_seconds' is {a.granularity_seconds}, "
                f"but integration {a.integration_id!r} was scored at {c.granularity_seconds} "
                "(an alert's period is the integration's or a roll-up of whole periods of it)"
            )
    counted = [a for a in parsed if a.counted]

    by_integration: dict[str, list[int]] = defaultdict(list)
    for i, w in enumerate(window_list):
        by_integration[w.integration_id].append(i)
    first_match: dict[int, datetime] = {}
    match_count: dict[int, int] = defaultdict(int)
    false_alerts: list[AlertRef] = []
    for a in counted:
        matched = False
        for i in by_integration.get(a.integration_id, ()):
            if alert_matches(window_list[i], a):
                matched = True
                match_count[i] += 1
                if i not in first_match or a.period_end < first_match[i]:
                    first_match[i] = a.period_end
        if not matched:
            false_alerts.append(a)
    known = {a.position for a in false_alerts if any(in_known_event(e, a) for e in events)}
    granularities = {iid: c.granularity_seconds for iid, c in covered.items()}
    bursts = _bursts(false_alerts, known, burst_gap, granularities)

    results: list[WindowResult] = []
    for i, w in enumerate(window_list):
        granularity = covered[w.integration_id].granularity_seconds
        first = first_match.get(i)
        delay = None if first is None else (first - w.start).total_seconds() / granularity - 1
        results.append(
            WindowResult(
                window=w,
                granularity_seconds=granularity,
                targeted=w.kind in targeted,
                caught=first is not None,
                delay_periods=delay,
                matching_alerts=match_count.get(i, 0),
            )
        )

    per_kind: dict[str, KindStats] = {}
    for kind in _kind_order(w.kind for w in window_list):
        of_kind = [r for r in results if r.window.kind == kind]
        delays = [r.delay_periods for r in of_kind if r.delay_periods is not None]
        per_kind[kind] = KindStats(
            kind=kind,
            targeted=kind in targeted,
            windows=len(of_kind),
            caught=len(delays),
            recall=_ratio(len(delays), len(of_kind)),
            median_delay=_median(delays),
            mean_delay=_mean(delays),
        )

    per_granularity = {
        g: Summary.build(
            (r for r in results if r.granularity_seconds == g),
            (b for b in bursts if b.granularity_seconds == g),
            (c for c in covered.values() if c.granularity_seconds == g),
        )
        for g in sorted({c.granularity_seconds for c in covered.values()})
    }
    return QualityReport(
        targeted_kinds=targeted,
        burst_gap=burst_gap,
        overall=Summary.build(results, bursts, covered.values()),
        per_granularity=per_granularity,
        per_kind=per_kind,
        windows=tuple(results),
        false_bursts=tuple(bursts),
    )


# --- operating curve -------------------------------------------------------------------------------------

# Margins the curve is read at: 1.0 is what was sent; the others keep only alerts that far past their threshold.
OPERATING_FACTORS = (1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 2.0)


def alert_margin(alert: Mapping[str, Any], position: int) -> float:
    """How far past its threshold an EWMA alert is, in multiples of the threshold.

    The larger of ``|score|`` and ``|sustained_score|`` (the slow chart, when it leans the same way as
    the score: only then can it raise the alert) divided by ``threshold``. ``ValueError`` names the
    alert's position and field when one is missing or unusable, or when the alert is the forest's (its
    score is an anomaly score, not in the EWMA's standard deviations).
    """
    where = f"alert {position}"
    if alert.get("detector") == FOREST_DETECTOR:
        raise ValueError(
            f"{where}: field 'detector' is {FOREST_DETECTOR!r}; margins are read from EWMA alerts"
        )
    values: dict[str, float] = {}
    for name in ("score", "threshold"):
        value = alert.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: field {name!r} must be a finite number, got {value!r}")
        values[name] = float(value)
    if values["threshold"] <= 0:
        raise ValueError(f"{where}: field 'threshold' must be positive, got {values['threshold']!r}")
    score = values["score"]
    slow = alert.get("sustained_score")
    if slow is not None and (
        isinstance(slow, bool) or not isinstance(slow, int | float) or not math.isfinite(slow)
    ):
        raise ValueError(f"{where}: field 'sustained_score' must be a finite number or null, got {slow!r}")
    if slow is not None and slow * score > 0:
        score = max(abs(score), abs(float(slow)))
    return abs(score) / values["threshold"]


@dataclass(frozen=True)
class OperatingPoint:
    """The scores of the alerts at least ``factor`` times past their threshold."""

    factor: float
    alerts: int  # counted alerts kept
    summary: Summary

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "factor": self.factor,
            "alerts": self.alerts,
            "caught": s.caught,
            "windows": s.windows,
            "recall": _number(s.recall),
            "false_bursts": s.false_bursts,
            "precision": _number(s.precision),
            "f2": _number(s.f2),
            "median_delay": _number(s.median_delay),
        }


def operating_curve(
    windows: Iterable[Window],
    known_events: Iterable[KnownEvent],
    alerts: Iterable[Mapping[str, Any]],
    coverage: Iterable[Coverage],
    factors: Iterable[float] = OPERATING_FACTORS,
    targeted_kinds: Iterable[str] = EWMA_TARGETED,
    burst_gap: int = 3,
) -> list[OperatingPoint]:
    """Recall against precision if only alerts at least ``factor`` times past their threshold were sent.

    One point per factor (each ≥ 1), scored by :func:`evaluate` with the same rules. It is read off the
    alerts as raised, so above 1 it estimates a higher threshold rather than replaying one: a replay
    would also change what the detector learns (a period no longer out of band is learned) and which
    periods are confirmed. Use it to see what precision would cost in recall, and where.
    """
    window_list, event_list, coverage_list = list(windows), list(known_events), list(coverage)
    targeted = tuple(targeted_kinds)
    factor_list = list(factors)
    for factor in factor_list:
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1.0:
            raise ValueError(f"operating curve factors must be numbers >= 1, got {factor!r}")
    alert_list = list(alerts)
    # Validated here with their positions in the input: evaluate() below only sees the kept ones.
    refs = [AlertRef.parse(alert, i) for i, alert in enumerate(alert_list)]
    counted = [
        (alert, alert_margin(alert, ref.position))
        for alert, ref in zip(alert_list, refs, strict=True)
        if ref.counted
    ]
    points = []
    for factor in factor_list:
        kept = [alert for alert, margin in counted if margin >= factor]
        report = evaluate(window_list, event_list, kept, coverage_list, targeted, burst_gap)
        points.append(OperatingPoint(float(factor), len(kept), report.overall))
    return points


def format_curve(points: Sequence[OperatingPoint]) -> str:
    """The operating curve as a fixed-width table, one row per factor."""
    header = ["past threshold", "alerts", "caught", "recall", "false bursts", "precision", "F2"]
    rows = [
        [
            f"x{p.factor:g}",
            str(p.alerts),
            f"{p.summary.caught}/{p.summary.windows}",
            _cell(p.summary.recall),
            str(p.summary.false_bursts),
            _cell(p.summary.precision),
            _cell(p.summary.f2),
        ]
        for p in points
    ]
    return "\n".join(_render(header, rows, left=1)) if points else ""


# --- text tables ---------------------------------------------------------------------------------------------


def granularity_label(seconds: int) -> str:
    """``86400`` → ``1d``, ``3600`` → ``1h``, ``300`` → ``5m``, otherwise seconds (``90s``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> list[str]:
    """Fixed-width columns: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_table(reports: Mapping[str, QualityReport]) -> str:
    """Compare detectors: a summary table and a per-kind recall table, fixed-width text.

    Summary rows are detector × granularity, then the detector's overall row (``all``); columns are
    targeted windows, recall, precision, F2, median delay (periods), false alarms per series-week and
    known-event alerts. The second table has one row per anomaly kind and one column per detector,
    ``recall (caught/windows)``; a ``*`` marks a kind that some report does not target. Missing values
    print as ``-``. An empty mapping gives an empty string.
    """
    if not reports:
        return ""
    header = [
        "detector",
        "gran",
        "windows",
        "recall",
        "precision",
        "F2",
        "med delay",
        "FA/series/wk",
        "known-ev",
    ]
    rows: list[list[str]] = []
    for name, report in reports.items():
        labelled = [(granularity_label(g), s) for g, s in report.per_granularity.items()]
        for label, s in [*labelled, ("all", report.overall)]:
            rows.append(
                [
                    name,
                    label,
                    str(s.windows),
                    _cell(s.recall),
                    _cell(s.precision),
                    _cell(s.f2),
                    _cell(s.median_delay, 1),
                    _cell(s.false_alarms_per_series_week, 4),
                    str(s.known_event_alerts),
                ]
            )
    lines = _render(header, rows, left=2)

    kinds = _kind_order(k for report in reports.values() for k in report.per_kind)
    if kinds:
        untargeted = {k for k in kinds for r in reports.values() if k not in r.targeted_kinds}
        kind_rows: list[list[str]] = []
        for kind in kinds:
            cells = [kind + ("*" if kind in untargeted else "")]
            for report in reports.values():
                stats = report.per_kind.get(kind)
                cells.append(
                    "-" if stats is None else f"{_cell(stats.recall)} ({stats.caught}/{stats.windows})"
                )
            kind_rows.append(cells)
        lines += ["", "recall per kind", *_render(["kind", *reports], kind_rows, left=1)]
        if untargeted:
            lines.append("* not targeted: reported, but outside recall and precision")
    return "\n".join(lines) + "\n"
