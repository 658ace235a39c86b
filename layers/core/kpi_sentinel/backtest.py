"""``kpi-sentinel backtest``: replay a CSV through the scorer's detector code, without AWS.

Input: a timestamp column and one or more metric columns (optionally dimension columns), any regular
granularity. Output: one CSV row per period and series with observed, expected, band, deviation,
score and whether it would have alerted (and at which severity). The rows go through the same
parsing, aggregation, detector and alert rules as a sync in the ``ewma_scorer``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from kpi_sentinel.alerts import build_alerts, percent_change, series_key
from kpi_sentinel.config import DIRECTIONS, Direction, IntegrationConfig, MetricSpec, infer_config
from kpi_sentinel.parsing import UnreadableSync, infer_granularity, parse_sync_key, read_table, validate_rows
from kpi_sentinel.scoring import IntegrationState, aggregate, period_start

OUTPUT_COLUMNS = (
    "period_start", "metric", "dimension", "dimension_value", "observed", "expected", "expected_lower",
    "expected_upper", "deviation", "deviation_percent", "score", "ready", "alert", "severity",
)  # fmt: skip


@dataclass(frozen=True)
class BacktestOptions:
    threshold: float | None = None
    alpha: float | None = None
    season_length: int | None = None
    granularity_seconds: int | None = None
    warmup: int | None = None
    direction: str | None = None
    min_abs_change: float | None = None
    min_volume: float | None = None
    metrics: Sequence[str] = ()
    dimensions: Sequence[str] | None = None
    slices: bool = True


@dataclass
class BacktestResult:
    rows_in: int
    rows_rejected: int
    points: int
    alerts: int
    granularity_seconds: int
    season_length: int
    rejections: list[str]


def _configure(config: IntegrationConfig, options: BacktestOptions) -> IntegrationConfig:
    metrics = config.metrics
    if options.metrics:
        unknown = sorted(set(options.metrics) - {m.name for m in metrics})
        if unknown:
            raise UnreadableSync(
                f"--metric {unknown}: not numeric columns of the file ({[m.name for m in metrics]})"
            )
        metrics = tuple(m for m in metrics if m.name in options.metrics)
    if options.direction is not None:
        if options.direction not in DIRECTIONS:
            raise UnreadableSync(f"--direction must be one of {DIRECTIONS}, got {options.direction!r}")
        direction: Direction = options.direction  # type: ignore[assignment]
        metrics = tuple(replace(m, bad_direction=direction) for m in metrics)
    metrics = tuple(
        MetricSpec(
            m.name,
            m.bad_direction,
            m.min_abs_change if options.min_abs_change is None else options.min_abs_change,
            m.min_volume if options.min_volume is None else options.min_volume,
        )
        for m in metrics
    )
    names = {m.name for m in metrics}
    ratios = tuple(r for r in config.ratios if {r.numerator, r.denominator} <= names)
    dimensions = config.dimensions if options.dimensions is None else tuple(options.dimensions)
    return replace(
        config,
        metrics=metrics,
        ratios=ratios,
        dimensions=dimensions if options.slices else (),
        threshold=options.threshold or config.threshold,
        alpha=options.alpha or config.alpha,
        season_length=options.season_length or config.season_length,
        granularity_seconds=options.granularity_seconds or config.granularity_seconds,
        warmup=options.warmup if options.warmup is not None else config.warmup,
    )


def run_backtest(source: Path, target: TextIO, options: BacktestOptions) -> BacktestResult:
    suffix = "".join(source.suffixes[-2:]) if source.name.endswith(".gz") else source.suffix
    sync = parse_sync_key(f"syncs/backtest/file{suffix}")
    table = read_table(source.read_bytes(), sync, max_bytes=2**31)
    config = _configure(infer_config("backtest", table.columns, table.sample()), options)
    valid, rejected = validate_rows(table, config, str(source))
    if not valid:
        raise UnreadableSync(f"no valid rows ({len(rejected)} rejected)")
    granularity = config.granularity_seconds or infer_granularity([r.timestamp for r in valid])
    config = replace(config, granularity_seconds=granularity)
    state = IntegrationState(config, granularity)
    result = state.score(aggregate(valid, config, granularity, state.known_values()))
    alerts = {
        (series_key(a), a["period_start"]): a for a in build_alerts(config, granularity, result.points, "")
    }
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    for point in result.points:
        start = period_start(point.period, granularity).isoformat()
        alert = alerts.get((point.series, start))
        change = percent_change(point.observed, point.expected) if point.expected == point.expected else None
        row: list[Any] = [
            start, *point.series, _fmt(point.observed), _fmt(point.expected), _fmt(point.lower), _fmt(point.upper),
            _fmt(point.observed - point.expected), _fmt(change), _fmt(point.score), int(point.ready),
            int(alert is not None and alert["severity"] != "info"), alert["severity"] if alert else "",
        ]  # fmt: skip
        writer.writerow(row)
    return BacktestResult(
        rows_in=table.rows_in,
        rows_rejected=len(rejected),
        points=len(result.points),
        alerts=sum(1 for a in alerts.values() if a["severity"] != "info"),
        granularity_seconds=granularity,
        season_length=config.season,
        rejections=[f"row {r.row}, field {r.field}: {r.reason}" for r in rejected[:20]],
    )


def _fmt(value: float | None) -> str:
    if value is None or value != value:
        return ""
    return f"{value:.6g}"


def open_output(path: str | None) -> TextIO:
    import sys

    if path in (None, "-"):
        return sys.stdout
    return Path(path).open("w", encoding="utf-8", newline="")
