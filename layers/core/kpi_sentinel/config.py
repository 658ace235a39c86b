"""Integration config: what a sync file holds and how each of its series is judged.

An operator may store an explicit config (JSON, see :func:`IntegrationConfig.from_dict`); without
one, :func:`infer_config` derives sensible defaults from the first file's columns and values, and the
scorer remembers that inference so later syncs are read the same way.

Per-metric **overrides** (``threshold``, ``bad_direction``, ``min_abs_change``, ``min_volume``) sit on
top of either: :func:`with_overrides` lays the operators' overrides (the control table's
``override#<metric>`` items) over the config at every sync, and :meth:`IntegrationConfig.metric` answers
with the overridden spec. They are kept apart from the specs so that removing an override restores the
configured or inferred value instead of leaving the old override behind in a remembered inference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Direction = Literal["down", "up", "both"]
Shape = Literal["metrics", "events"]
DIRECTIONS: tuple[Direction, ...] = ("down", "up", "both")
# What an operator may override per metric (see with_overrides).
OVERRIDE_FIELDS = ("threshold", "bad_direction", "min_abs_change", "min_volume")

GRANULARITIES = {"5min": 300, "hour": 3600, "day": 86400}
# A week for every granularity: business KPIs repeat weekly (weekday/weekend × hour of day).
# 5-minute data uses one day (288 periods): a week would be 2,016 slots per series.
DEFAULT_SEASON = {300: 288, 3600: 168, 86400: 7}
# Consecutive periods beyond the threshold before a point alerts (unless it is past twice the
# threshold): sub-daily series are tested many times a week, and a real break lasts more than one
# period; a day is long enough to stand alone.
DEFAULT_CONFIRM = {300: 2, 3600: 2, 86400: 1}
# A period alerts through the detector's slow chart when the chart is past the threshold and the period
# itself is at least this many standard deviations out on the same side (see kpi_sentinel.alerts).
SUSTAINED_MIN_SCORE = 1.0
# A slice alerts on its own only when its change is at least this share of its metric's total (for a
# ratio, weighted by the slice's volume against the total's): a source worth 0.3 % of NGR going from
# 27 EUR to 0 is noise to the people who read the alert, however many deviations it is. In the quality
# benchmark this removed 6 false bursts (daily 19 -> 13) and no caught window.
SLICE_MIN_SHARE = 0.01
# Alert threshold in standard deviations when the config sets none: 5-minute series are tested 288
# times a day, so they need a higher bar for the same false alarms per week (the quality benchmark's
# F2 is best there at 4; hourly and daily at 3.5).
DEFAULT_THRESHOLD = {300: 4.0, 3600: 3.5, 86400: 3.5}
# The seasonal EWMA's phase window (see kpi_sentinel.detectors.ewma): the expectation averages the
# baselines of this many phases either side. A daily profile is smooth within half an hour, and one
# 5-minute phase learned from a few days of small counts is mostly noise: in the quality benchmark,
# 5-minute false bursts fell from 35 to 12 with 2 (2 of 26 windows lost; 3 lost a third). Hourly and
# daily phases keep their own: averaging neighbouring hours cut hourly false bursts from 48 to 29 but
# lost a drift, and it biases the expectation at the daily profile's peaks and troughs, which the
# nightly forest's residual features inherit (it flagged 1 period of the demo's funnel break, not 5).
DEFAULT_PHASE_WINDOW = {300: 2, 3600: 0, 86400: 0}
# The slow chart's EWMA weight (chart_lambda): 5-minute data averages about 20 periods (100 minutes)
# before a sustained break alerts, the others about 7; at 0.25 the 5-minute chart alerted on noise in
# slices (the benchmark: 11 of 12 5-minute false bursts gone at 0.1, no window lost; 0.15 kept 5),
# while hourly data needs the short chart to catch drifts and craters (0.1 there lost 6 of 26 windows).
DEFAULT_CHART_LAMBDA = {300: 0.1, 3600: 0.25, 86400: 0.25}
# How fast the slow chart's spread may grow per period (chart_spread_growth; absent = unbounded). The spread
# learns at 2% a period, which at 5 minutes is about 4 hours, and a 2-hour FTD crater taught it its own size
# as it went (on one benchmark crater it grew 0.19 -> 0.68 and the chart peaked at -3.3 against 4). Capped
# at 3% a period (the variance doubles in about 2 hours at most), the benchmark caught 3 more 5-minute
# windows (2 conversion craters, 1 bot-traffic burst) for 8 more false bursts; 2% and 4% caught the same
# windows, 5% lost 2 of them. Hourly and daily charts keep an unbounded spread: there a cap cost false
# bursts (hourly 36 -> 104 at 3%) and caught nothing more, because their normal swings come in steps.
DEFAULT_CHART_SPREAD_GROWTH = {300: 0.03}
# The nightly forest's alert threshold: the percentile of its training periods' scores below which a
# period is anomalous, per granularity when the deployment sets none. A percentile is a share of periods,
# so 1% flags about 20 five-minute periods a week on normal data, 1.7 hourly ones and one day in 100. In
# the quality benchmark the forest's 5-minute alerts were nearly all false (precision .04); at 0.1% the
# union of both detectors kept every window it caught (72 of 77) and its precision rose from .20 to .35
# (0.08% lost a window, 0.2% kept them at precision .30 for 5-minute data alone). Daily 0.3% (from 1%):
# the union lost no window and the forest's daily false bursts fell 13 -> 6 (a daily model learns from at
# most 90 days, so 0.3% is about its rarest training day). Hourly data keeps 1%: at 0.5% the benchmark
# lost nothing, but the forest no longer flagged the demo's hourly funnel break (clicks flat, FTDs
# cratering), the kind of break it is there for.
DEFAULT_FOREST_PERCENTILE = {300: 0.1, 3600: 1.0, 86400: 0.3}

TIMESTAMP_FIELDS = ("timestamp", "period", "period_start", "ts", "time", "date", "datetime")
EVENT_TIMESTAMP_FIELDS = ("created_at", "event_time", "occurred_at", "event_timestamp")

# Bad directions for well-known KPI names; anything else is judged in both directions (recall first).
_DOWN_IS_BAD = {
    "ngr",
    "ggr",
    "revenue",
    "deposits",
    "deposit_amount",
    "ftds",
    "ftd",
    "signups",
    "registrations",
    "conversions",
    "installs",
    "orders",
    "purchases",
    "sales",
    "conversion",
    "signup_rate",
    "ftd_rate",
}
_UP_IS_BAD = {
    "tickets",
    "errors",
    "chargebacks",
    "complaints",
    "refunds",
    "churn",
    "failures",
    "declines",
    "high_priority_rate",
    "error_rate",
    "bounce_rate",
}
_BOTH_ARE_BAD = {"clicks", "impressions", "visits", "sessions", "traffic", "views", "installs_organic"}
KNOWN_METRICS = _DOWN_IS_BAD | _UP_IS_BAD | _BOTH_ARE_BAD
# Ratios inferred when both columns exist: name -> (numerator, denominator).
_KNOWN_RATIOS = {
    "signup_rate": ("signups", "clicks"),
    "conversion": ("ftds", "clicks"),
}
_HIGH_PRIORITY = ("high", "urgent", "critical", "p1", "p2")
_ID_LIKE = re.compile(r"(^id$|_id$|^uuid$|_uuid$)", re.IGNORECASE)
MAX_SLICES_PER_DIMENSION = 50
OTHER_SLICE = "(other)"


class ConfigError(ValueError):
    """An integration config that cannot be used; the message names the field."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    bad_direction: Direction = "both"
    min_abs_change: float = 0.0
    min_volume: float = 0.0
    threshold: float | None = None  # this metric's alert threshold; None: the integration's


@dataclass(frozen=True)
class RatioSpec:
    """A derived ratio such as ``conversion = ftds / clicks``; ``min_volume`` applies to the denominator."""

    name: str
    numerator: str
    denominator: str
    bad_direction: Direction = "down"
    min_abs_change: float = 0.0
    min_volume: float = 0.0
    threshold: float | None = None


@dataclass(frozen=True)
class RateSpec:
    """Events shape: share of events whose ``field`` is one of ``values`` (e.g. the high-priority rate)."""

    name: str
    field: str
    values: tuple[str, ...]
    bad_direction: Direction = "up"
    min_abs_change: float = 0.0
    min_volume: float = 0.0
    threshold: float | None = None


@dataclass(frozen=True)
class IntegrationConfig:
    integration_id: str
    shape: Shape = "metrics"
    timestamp_field: str = "timestamp"
    granularity_seconds: int | None = None
    season_length: int | None = None
    dimensions: tuple[str, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()
    ratios: tuple[RatioSpec, ...] = ()
    # events shape
    count_metric: str = "events"
    tags_field: str | None = None
    tags_separator: str = "|"
    rates: tuple[RateSpec, ...] = ()
    # detector
    threshold: float | None = None
    alpha: float = 0.1
    warmup: int | None = None
    confirm_periods: int | None = None
    # routing context
    tier: Literal["standard", "business"] = "standard"
    segment: str = "default"
    timezone: str = "UTC"
    inferred: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    # metric -> {field: value} over the specs (OVERRIDE_FIELDS only); see with_overrides
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def season(self) -> int:
        if self.season_length:
            return self.season_length
        return DEFAULT_SEASON.get(self.granularity_seconds or 3600, 168)

    @property
    def alert_threshold(self) -> float:
        """The threshold in standard deviations: the configured one, else the granularity's default."""
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_THRESHOLD.get(self.granularity_seconds or 3600, 3.5)

    @property
    def confirm(self) -> int:
        if self.confirm_periods is not None:
            return self.confirm_periods
        return DEFAULT_CONFIRM.get(self.granularity_seconds or 3600, 1)

    def specs(self) -> tuple[MetricSpec | RatioSpec | RateSpec, ...]:
        return (*self.metrics, *self.ratios, *self.rates)

    def metric(self, name: str) -> MetricSpec | RatioSpec | RateSpec | None:
        """The spec that judges ``name``, with the operators' overrides of that metric applied."""
        found: MetricSpec | RatioSpec | RateSpec | None = None
        for spec in self.specs():
            if spec.name == name:
                found = spec
                break
        else:
            if self.shape == "events" and name == self.count_metric:
                found = MetricSpec(name, default_direction(name, "up"), 5.0, 5.0)
        override = self.overrides.get(name)
        if found is not None and override:
            found = replace(found, **{k: v for k, v in override.items() if v is not None})
        return found

    def threshold_for(self, metric: str) -> float:
        """The alert threshold of ``metric``: its own (override or spec), else :attr:`alert_threshold`."""
        spec = self.metric(metric)
        if spec is not None and spec.threshold is not None:
            return float(spec.threshold)
        return self.alert_threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], integration_id: str | None = None) -> IntegrationConfig:
        """Build from stored JSON, naming the field that is wrong."""
        data = dict(raw)
        iid = integration_id or data.get("integration_id")
        if not isinstance(iid, str) or not iid:
            raise ConfigError("integration config: field 'integration_id' is required")
        data["integration_id"] = iid
        try:
            data["metrics"] = tuple(_spec(MetricSpec, m, "metrics") for m in data.get("metrics", ()))
            data["ratios"] = tuple(_spec(RatioSpec, r, "ratios") for r in data.get("ratios", ()))
            rates = []
            for r in data.get("rates", ()):
                r = dict(r)
                r["values"] = tuple(r.get("values", ()))
                rates.append(_spec(RateSpec, r, "rates"))
            data["rates"] = tuple(rates)
            data["dimensions"] = tuple(data.get("dimensions", ()))
            overrides = data.get("overrides", {})
            if not isinstance(overrides, Mapping) or not all(
                isinstance(v, Mapping) for v in overrides.values()
            ):
                raise ConfigError(f"integration {iid}: field 'overrides' must map metric names to objects")
            data["overrides"] = {str(k): dict(v) for k, v in overrides.items()}
            if "granularity" in data:
                gran = data.pop("granularity")
                if gran not in GRANULARITIES:
                    raise ConfigError(
                        f"integration {iid}: field 'granularity' must be one of {sorted(GRANULARITIES)}, "
                        f"got {gran!r}"
                    )
                data["granularity_seconds"] = GRANULARITIES[gran]
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"integration {iid}: unknown config field(s) {unknown}")
            config = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"integration {iid}: {exc}") from exc
        return config.validated()

    def validated(self) -> IntegrationConfig:
        iid = self.integration_id
        if self.shape not in ("metrics", "events"):
            raise ConfigError(f"integration {iid}: field 'shape' must be 'metrics' or 'events'")
        if self.granularity_seconds is not None and self.granularity_seconds not in DEFAULT_SEASON:
            raise ConfigError(f"integration {iid}: field 'granularity_seconds' must be 300, 3600 or 86400")
        if self.season_length is not None and not 1 <= self.season_length <= 2016:
            raise ConfigError(f"integration {iid}: field 'season_length' must be between 1 and 2016")
        if self.threshold is not None and self.threshold <= 0:
            raise ConfigError(f"integration {iid}: field 'threshold' must be positive")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"integration {iid}: field 'alpha' must be in (0, 1]")
        if self.confirm_periods is not None and not 1 <= self.confirm_periods <= 48:
            raise ConfigError(f"integration {iid}: field 'confirm_periods' must be between 1 and 48")
        for spec in self.specs():
            if spec.bad_direction not in DIRECTIONS:
                raise ConfigError(
                    f"integration {iid}: metric {spec.name!r} field 'bad_direction' must be one of "
                    f"{DIRECTIONS}, got {spec.bad_direction!r}"
                )
            if spec.threshold is not None and not _positive(spec.threshold):
                raise ConfigError(
                    f"integration {iid}: metric {spec.name!r} field 'threshold' must be a positive number"
                )
        for metric, fields in self.overrides.items():
            try:
                check_override(fields, f"overrides.{metric}")
            except ConfigError as exc:
                raise ConfigError(f"integration {iid}: {exc}") from None
        names = [s.name for s in self.metrics]
        for ratio in self.ratios:
            for part in (ratio.numerator, ratio.denominator):
                if part not in names:
                    raise ConfigError(
                        f"integration {iid}: ratio {ratio.name!r} uses {part!r}, which is not a metric"
                    )
        return self


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _non_negative(value: Any) -> bool:
    return _number(value) and value >= 0


def check_override(fields: Mapping[str, Any], path: str = "override") -> None:
    """Raise :class:`ConfigError` naming the field unless ``fields`` is a usable metric override.

    ``path`` is how the message names the override (``overrides.ngr`` gives ``field
    'overrides.ngr.threshold'``). None values mean "not overridden" and are allowed.

    >>> check_override({"threshold": 0})
    Traceback (most recent call last):
    ...
    kpi_sentinel.config.ConfigError: field 'override.threshold' must be a positive number, got 0
    """
    unknown = sorted(set(fields) - set(OVERRIDE_FIELDS))
    if unknown:
        raise ConfigError(f"field '{path}': unknown field(s) {unknown} (allowed: {list(OVERRIDE_FIELDS)})")
    threshold, direction = fields.get("threshold"), fields.get("bad_direction")
    if threshold is not None and not _positive(threshold):
        raise ConfigError(f"field '{path}.threshold' must be a positive number, got {threshold!r}")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"field '{path}.bad_direction' must be one of {DIRECTIONS}, got {direction!r}")
    for name in ("min_abs_change", "min_volume"):
        value = fields.get(name)
        if value is not None and not _non_negative(value):
            raise ConfigError(f"field '{path}.{name}' must be a number >= 0, got {value!r}")


def with_overrides(
    config: IntegrationConfig, overrides: Mapping[str, Mapping[str, Any]]
) -> IntegrationConfig:
    """``config`` with the operators' per-metric ``overrides`` laid over its own, field by field.

    A field set in ``overrides`` wins over the same field in ``config.overrides`` (an explicit config
    may carry some); None leaves the field as it was. An override of a metric the config does not know
    (yet) is kept and applies once the metric appears. Raises :class:`ConfigError` naming the field.

    >>> base = IntegrationConfig("shop", metrics=(MetricSpec("orders", "down", 5.0, 10.0),))
    >>> tuned = with_overrides(base, {"orders": {"threshold": 5.0, "min_volume": None}})
    >>> tuned.threshold_for("orders"), tuned.metric("orders").min_volume, base.threshold_for("orders")
    (5.0, 10.0, 3.5)
    """
    merged = {metric: dict(fields) for metric, fields in config.overrides.items()}
    for metric, fields in overrides.items():
        merged.setdefault(metric, {}).update({k: v for k, v in fields.items() if v is not None})
    return replace(config, overrides={m: f for m, f in merged.items() if f}).validated()


def _spec(kind: type[Any], raw: Any, where: str) -> Any:
    if isinstance(raw, str):
        return kind(name=raw)
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"field '{where}': each entry needs a 'name', got {raw!r}")
    return kind(**raw)


def default_direction(name: str, fallback: Direction = "both") -> Direction:
    lowered = name.lower()
    if lowered in _DOWN_IS_BAD:
        return "down"
    if lowered in _UP_IS_BAD:
        return "up"
    return fallback


def _looks_numeric(text: Any) -> bool:
    if isinstance(text, bool):
        return False
    if isinstance(text, int | float):
        return True
    if not isinstance(text, str) or not text.strip():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def find_timestamp_field(columns: Iterable[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in (*TIMESTAMP_FIELDS, *EVENT_TIMESTAMP_FIELDS):
        if name in lowered:
            return lowered[name]
    return None


def infer_config(
    integration_id: str, columns: Sequence[str], sample: Sequence[Mapping[str, Any]]
) -> IntegrationConfig:
    """Defaults from a file's columns and a sample of its rows (granularity comes from timestamps).

    A column is a metric when its name is a well-known KPI or nearly all its non-empty sample values
    are numbers, an id when its name says so, otherwise a dimension. A file whose timestamp column is an event time (``created_at``)
    or that has no metric column is the *events* shape.
    """
    timestamp = find_timestamp_field(columns)
    if timestamp is None:
        raise ConfigError(
            f"no timestamp column: expected one of {(*TIMESTAMP_FIELDS, *EVENT_TIMESTAMP_FIELDS)}, "
            f"found {list(columns)}"
        )
    numeric: list[str] = []
    text: list[str] = []
    for column in columns:
        if column == timestamp or _ID_LIKE.search(column):
            continue
        values = [row.get(column) for row in sample if row.get(column) not in (None, "")]
        if column.lower() in KNOWN_METRICS or (
            values and sum(_looks_numeric(v) for v in values) >= 0.9 * len(values)
        ):
            numeric.append(column)
        else:
            text.append(column)
    events = timestamp.lower() in EVENT_TIMESTAMP_FIELDS or not numeric
    if events:
        tags = next((c for c in text if c.lower() in ("tags", "labels")), None)
        dimensions = tuple(c for c in text if c != tags)
        looks_like_tickets = any("ticket" in c.lower() for c in columns) or "queue" in dimensions
        rates: tuple[RateSpec, ...] = ()
        priority = next((c for c in dimensions if c.lower() == "priority"), None)
        if priority:
            rates = (RateSpec("high_priority_rate", priority, _HIGH_PRIORITY, "up", 0.05, 10.0),)
        return IntegrationConfig(
            integration_id=integration_id,
            shape="events",
            timestamp_field=timestamp,
            dimensions=dimensions,
            count_metric="tickets" if looks_like_tickets else "events",
            tags_field=tags,
            rates=rates,
            inferred=True,
        )
    # Floors keep tiny segments quiet: a change must be ≥ 5 units on a series of volume ≥ 10.
    metrics = tuple(MetricSpec(name, default_direction(name), 5.0, 10.0) for name in numeric)
    lowered = {m.lower(): m for m in numeric}
    ratios = tuple(
        RatioSpec(name, lowered[num], lowered[den], "down", 0.0, 50.0)
        for name, (num, den) in _KNOWN_RATIOS.items()
        if num in lowered and den in lowered
    )
    return IntegrationConfig(
        integration_id=integration_id,
        shape="metrics",
        timestamp_field=timestamp,
        dimensions=tuple(text),
        metrics=metrics,
        ratios=ratios,
        inferred=True,
    )


def with_granularity(config: IntegrationConfig, granularity_seconds: int) -> IntegrationConfig:
    return replace(config, granularity_seconds=granularity_seconds)
