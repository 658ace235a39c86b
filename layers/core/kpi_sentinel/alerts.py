"""Alerts (schema v1): which scored points become alerts, how they are grouped and explained.

Grouping: when a metric's total alerts in a period, its slices that moved become the alert's
*contributors* instead of alerts of their own; a slice alerts on its own only when the total did not
(a crater in a small source that the total hides) or when it moved the other way (a crater under a
rising total), and only when its change is at least ``SLICE_MIN_SHARE`` of the total (see
:func:`slice_share`).

The threshold is the metric's own when it has one (an operator's override or its spec), else the
integration's (:meth:`IntegrationConfig.threshold_for`).

An hourly roll-up of a 5-minute integration (see :mod:`kpi_sentinel.scoring`) alerts on metric totals
only, its slices being contributors; its alerts say "in the hour", carry ``granularity_seconds``
3600 and the hour as their period, and their id covers the hour (start and end), so it never equals
the id of the 5-minute alert that starts at the same time.

Severity: ``warning`` past the threshold in the metric's bad direction, ``critical`` past twice the
threshold with a change of at least 30%; ``info`` past the threshold in the other direction (the
report shows it, support triage does not receive it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

# Re-exported: the alert contract is known as kpi_sentinel.alerts too.
from kpi_sentinel.alert_ids import SCHEMA_VERSION as SCHEMA_VERSION
from kpi_sentinel.alert_ids import alert_id as alert_id
from kpi_sentinel.alert_ids import snooze_matches as snooze_matches
from kpi_sentinel.config import (
    SLICE_MIN_SHARE,
    SUSTAINED_MIN_SCORE,
    IntegrationConfig,
    MetricSpec,
    RateSpec,
    RatioSpec,
)
from kpi_sentinel.scoring import ScoredPoint, Series, period_start

CRITICAL_CHANGE = 0.30
INSTANT_FACTOR = 2.0  # a metric's total this many thresholds out needs no confirmation
TOP_CONTRIBUTORS = 5
_DISPLAY = {"ngr": "NGR", "ggr": "GGR", "ftds": "FTDs", "ftd": "FTD", "ctr": "CTR"}


def display_name(metric: str) -> str:
    return _DISPLAY.get(metric.lower(), metric.replace("_", " ").capitalize())


def baseline_label(season: int, granularity: int) -> str:
    seconds = season * granularity
    if seconds % 86400 == 0:
        return f"{seconds // 86400}-day baseline"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}-hour baseline"
    return f"{seconds // 60}-minute baseline"


def _is_ratio(spec: MetricSpec | RatioSpec | RateSpec | None) -> bool:
    return isinstance(spec, RatioSpec | RateSpec)


def format_value(value: float, ratio: bool) -> str:
    if ratio:
        return f"{value * 100:.1f}%"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def percent_change(observed: float, expected: float) -> float | None:
    if expected == 0:
        return None
    return (observed - expected) / abs(expected) * 100.0


def classify(
    point: ScoredPoint, spec: MetricSpec | RatioSpec | RateSpec, threshold: float, confirm: int = 1
) -> tuple[str, str] | None:
    """``(severity, direction)`` when the point is an alert, else None (warm-up, floors, threshold).

    Past the threshold a point alerts once it is the ``confirm``-th consecutive period there on the
    same side, or, for a metric's total, at once when it is past ``INSTANT_FACTOR`` times the
    threshold. It also alerts when the detector's slow chart (``sustained``) is past the threshold and
    the point itself is at least ``SUSTAINED_MIN_SCORE`` out on the same side.
    """
    if not point.ready or math.isnan(point.score):
        return None
    z, slow = point.score, point.sustained
    # Only a total may alert on one period alone: a single period of one slice (one of many, and the
    # noisiest) is never enough evidence below daily data.
    instant = abs(z) >= INSTANT_FACTOR * threshold and not point.series[1]
    single = abs(z) >= threshold and (abs(point.streak) >= confirm or instant)
    sustained = (
        not math.isnan(slow) and abs(slow) >= threshold and slow * z > 0 and abs(z) >= SUSTAINED_MIN_SCORE
    )
    if not (single or sustained):
        return None
    delta = point.observed - point.expected
    if abs(delta) < spec.min_abs_change:
        return None
    volume = point.volume if _is_ratio(spec) else max(abs(point.observed), abs(point.expected))
    if volume < spec.min_volume:
        return None
    direction = "up" if point.score > 0 else "down"
    if spec.bad_direction not in (direction, "both"):
        return "info", direction
    change = percent_change(point.observed, point.expected)
    big = change is None or abs(change) >= CRITICAL_CHANGE * 100
    return ("critical" if abs(point.score) >= 2 * threshold and big else "warning"), direction


def slice_share(point: ScoredPoint, total: ScoredPoint | None, ratio: bool) -> float | None:
    """The slice's change as a share of its metric's total (the larger of its observed and expected;
    for a ratio both weighted by their volumes); None when there is no total to compare with.

    >>> total = ScoredPoint(0, ("ngr", "", ""), 9000.0, 10000.0, 0, 0, -3.0, True, 0.0)
    >>> tiny = ScoredPoint(0, ("ngr", "source", "bing"), 0.0, 27.0, 0, 0, -21.0, True, 0.0)
    >>> slice_share(tiny, total, ratio=False)
    0.0027
    """
    if total is None or not math.isfinite(total.expected) or not math.isfinite(total.observed):
        return None
    scale = max(abs(total.observed), abs(total.expected)) * (total.volume if ratio else 1.0)
    if scale <= 0:
        return None
    return abs(point.observed - point.expected) * (point.volume if ratio else 1.0) / scale


def _weight(point: ScoredPoint, ratio: bool) -> float:
    delta = point.observed - point.expected
    return delta * point.volume if ratio else delta


def contributors(total: ScoredPoint, slices: Sequence[ScoredPoint], ratio: bool) -> list[dict[str, Any]]:
    """Slices ranked by their share of the total's change (same-sign deltas within each dimension)."""
    sign = 1.0 if total.observed >= total.expected else -1.0
    by_dimension: dict[str, list[ScoredPoint]] = defaultdict(list)
    for point in slices:
        if point.ready and not math.isnan(point.expected):
            by_dimension[point.series[1]].append(point)
    ranked: list[dict[str, Any]] = []
    for dimension, points in by_dimension.items():
        moving = [p for p in points if _weight(p, ratio) * sign > 0]
        pool = sum(_weight(p, ratio) * sign for p in moving)
        if pool <= 0:
            continue
        for p in moving:
            ranked.append(
                {
                    "dimension": dimension,
                    "value": p.series[2],
                    "share": round(_weight(p, ratio) * sign / pool, 4),
                    "delta": round(p.observed - p.expected, 6),
                    "observed": round(p.observed, 6),
                    "expected": round(p.expected, 6),
                }
            )
    ranked.sort(key=lambda c: (-c["share"], c["dimension"], c["value"]))
    return ranked[:TOP_CONTRIBUTORS]


def summary(
    point: ScoredPoint,
    spec: MetricSpec | RatioSpec | RateSpec,
    label: str,
    contributors_: Sequence[Mapping[str, Any]],
    rollup: bool = False,
) -> str:
    ratio = _is_ratio(spec)
    metric, dimension, value = point.series
    name = display_name(metric)
    subject = f"{name} for {dimension} {value}" if dimension else name
    change = percent_change(point.observed, point.expected)
    verb = "rose" if point.observed > point.expected else "dropped"
    amount = f" {abs(change):.0f}%" if change is not None else ""
    numbers = f"({format_value(point.observed, ratio)} vs {format_value(point.expected, ratio)} expected)"
    during = " in the hour" if rollup else ""
    sentence = f"{subject} {verb}{amount}{during} vs the {label} {numbers}"
    if contributors_:
        top = contributors_[0]
        noun = "rise" if verb == "rose" else "drop"
        sentence += (
            f"; {top['dimension']} {top['value']} accounts for {top['share'] * 100:.0f}% of the {noun}"
        )
    return sentence


def build_alerts(
    config: IntegrationConfig,
    granularity: int,
    points: Iterable[ScoredPoint],
    sync_key: str,
    rollup: bool = False,
) -> list[dict[str, Any]]:
    """Alerts (schema v1 dicts) for one sync's scored points, grouped as described above.

    ``rollup``: the points are hours of a 5-minute integration's roll-up (totals alert, slices explain).
    """
    by_period_metric: dict[tuple[int, str], list[ScoredPoint]] = defaultdict(list)
    for point in points:
        by_period_metric[(point.period, point.series[0])].append(point)
    label = baseline_label(config.season, granularity)
    alerts: list[dict[str, Any]] = []
    for (_period, metric), group in sorted(by_period_metric.items()):
        spec = config.metric(metric)
        if spec is None:
            continue
        threshold = config.threshold_for(metric)
        total = next((p for p in group if not p.series[1]), None)
        slices = [p for p in group if p.series[1]]
        total_verdict = classify(total, spec, threshold, config.confirm) if total else None
        if total and total_verdict:
            found = contributors(total, slices, _is_ratio(spec))
            alerts.append(
                _alert(
                    config, granularity, total, spec, threshold, total_verdict, found, label, sync_key, rollup
                )
            )
        for point in [] if rollup else slices:
            verdict = classify(point, spec, threshold, config.confirm)
            # A slice that moved with an alerting total is one of its contributors; a slice that moved
            # the other way is not explained by it (a crater under a rising total) and alerts on its own.
            if not verdict or (total_verdict and verdict[1] == total_verdict[1]):
                continue
            share = slice_share(point, total, _is_ratio(spec))
            if share is None or share >= SLICE_MIN_SHARE:
                alerts.append(
                    _alert(config, granularity, point, spec, threshold, verdict, [], label, sync_key)
                )
    return alerts


def _alert(
    config: IntegrationConfig,
    granularity: int,
    point: ScoredPoint,
    spec: MetricSpec | RatioSpec | RateSpec,
    threshold: float,
    verdict: tuple[str, str],
    found: list[dict[str, Any]],
    label: str,
    sync_key: str,
    rollup: bool = False,
) -> dict[str, Any]:
    severity, direction = verdict
    metric, dimension, value = point.series
    start = period_start(point.period, granularity)
    end = start + timedelta(seconds=granularity)
    change = percent_change(point.observed, point.expected)
    period = f"{start.isoformat()}/{end.isoformat()}" if rollup else start.isoformat()
    return {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id(config.integration_id, "ewma", metric, dimension, value, period),
        "integration_id": config.integration_id,
        "detector": "ewma",
        "metric": metric,
        "features": None,
        "dimension": dimension or None,
        "dimension_value": value if dimension else None,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "granularity_seconds": granularity,
        "observed": round(point.observed, 6),
        "expected": round(point.expected, 6),
        "expected_lower": round(point.lower, 6),
        "expected_upper": round(point.upper, 6),
        "deviation": {
            "absolute": round(point.observed - point.expected, 6),
            "percent": None if change is None else round(change, 2),
        },
        "score": round(point.score, 4),
        "sustained_score": None if math.isnan(point.sustained) else round(point.sustained, 4),
        "threshold": threshold,
        "direction": direction,
        "bad_direction": spec.bad_direction,
        "severity": severity,
        "contributors": found,
        "summary": summary(point, spec, label, found, rollup),
        "baseline": label,
        "tier": config.tier,
        "segment": config.segment,
        "source_key": sync_key,
    }


def series_key(alert: Mapping[str, Any]) -> Series:
    return (alert["metric"], alert["dimension"] or "", alert["dimension_value"] or "")
