"""From valid rows to scored points: aggregation per period, the integration's detector state, scoring.

Pure code (numpy only): the use case in :mod:`kpi_sentinel.sync` wires it to storage.

Series are ``(metric, dimension, value)`` triples; a metric's total has ``dimension == value == ""``.

Late and out-of-order data (the documented behaviour):

* periods inside one sync may come in any order; they are scored in time order;
* a period after the integration's last scored period is scored and folded into the baselines, gaps
  are skipped (a missing period never moves a baseline);
* a period at or before the last scored period is *late*: its rows are rejected with reason
  ``late_period`` (listed in the sync's report and kept in the history store with status ``late``),
  and it never moves a baseline, so a resend cannot count twice.

The hourly roll-up of 5-minute integrations: their scored periods are also summed per hour (ratios
as the sum of numerators over the sum of denominators) and the hours scored by a seasonal EWMA of
their own, at hourly granularity with the same season (a day of 5-minute periods is 24 hours). It sees
what 5 minutes cannot: a slow drift that the fine baselines absorb day by day, and a break of a few
events per period (an FTD crater at 1–2 FTDs per 5 minutes) that is plain over the hour. An hour is
scored once it is complete: when its last period has been scored, or a period of a later hour has.
In a *metrics* integration an hour with a missing period is a gap (skipped, never learned); in an
*events* integration a period without rows had no events. Only a metric's total alerts from the
roll-up; its slices are tracked to explain the total (contributors). Roll-up points are not written
to the history (which holds the integration's own periods), only their alerts are published.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from kpi_sentinel.config import (
    DEFAULT_CHART_LAMBDA,
    DEFAULT_CHART_SPREAD_GROWTH,
    DEFAULT_PHASE_WINDOW,
    MAX_SLICES_PER_DIMENSION,
    OTHER_SLICE,
    IntegrationConfig,
    RateSpec,
    RatioSpec,
)
from kpi_sentinel.detectors import Detector
from kpi_sentinel.detectors.ewma import FloatArray, SeasonalEWMA
from kpi_sentinel.parsing import ValidRow

Series = tuple[str, str, str]
TAG_DIMENSION = "tag"
STATE_FORMAT = b"KSS1"
PROCESSED_SYNCS_KEPT = 512
# A series unseen for this many seasons is dropped from the state (it keeps the item small).
PRUNE_AFTER_SEASONS = 4
# 5-minute integrations are also scored as hourly sums (see the module doc).
ROLLUP_FROM, ROLLUP_TO = 300, 3600


def series_label(series: Series) -> str:
    metric, dimension, value = series
    return metric if not dimension else f"{metric}[{dimension}={value}]"


def period_start(period: int, granularity: int) -> datetime:
    return datetime.fromtimestamp(period * granularity, tz=UTC)


@dataclass
class PeriodAggregate:
    values: dict[Series, float] = field(default_factory=dict)
    volumes: dict[Series, float] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)


@dataclass
class Aggregate:
    periods: dict[int, PeriodAggregate]
    zero_fill_metrics: frozenset[str]  # metrics whose absent slices in a covered period read as zero


def aggregate(
    rows: Iterable[ValidRow],
    config: IntegrationConfig,
    granularity: int,
    known_values: Mapping[str, set[str]],
) -> Aggregate:
    """Sum rows into per-period series (totals, one slice per dimension value, ratios, rates).

    ``known_values`` (dimension -> values already tracked) bounds slices: past
    ``MAX_SLICES_PER_DIMENSION`` values a new one is counted under ``(other)``. It is updated in place.
    """
    periods: dict[int, PeriodAggregate] = defaultdict(PeriodAggregate)
    admitted: dict[str, set[str]] = {d: set(v) for d, v in known_values.items()}

    def slice_of(dimension: str, value: str) -> str:
        seen = admitted.setdefault(dimension, set())
        if value in seen:
            return value
        if len(seen) >= MAX_SLICES_PER_DIMENSION:
            return OTHER_SLICE
        seen.add(value)
        return value

    counts: dict[int, dict[Series, float]] = defaultdict(lambda: defaultdict(float))
    matches: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rate_values = {rate.name: {v.lower() for v in rate.values} for rate in config.rates}
    for row in rows:
        index = int(row.timestamp.timestamp()) // granularity
        periods[index].rows.append(row.row)
        sums = counts[index]
        slices = [(d, slice_of(d, v)) for d, v in row.dimensions.items()]
        if config.shape == "metrics":
            for metric, value in row.values.items():
                sums[(metric, "", "")] += value
                for dimension, slice_value in slices:
                    sums[(metric, dimension, slice_value)] += value
        else:
            metric = config.count_metric
            sums[(metric, "", "")] += 1.0
            for dimension, slice_value in slices:
                sums[(metric, dimension, slice_value)] += 1.0
            for tag in row.tags:
                sums[(metric, TAG_DIMENSION, slice_of(TAG_DIMENSION, tag))] += 1.0
            for rate in config.rates:
                if row.dimensions.get(rate.field, "").lower() in rate_values[rate.name]:
                    matches[index][rate.name] += 1.0

    for index, sums in counts.items():
        target = periods[index]
        for series, value in sums.items():
            target.values[series] = value
            target.volumes[series] = abs(value)
        for ratio in config.ratios:
            for (metric, dimension, slice_value), denominator in sums.items():
                if metric != ratio.denominator or denominator <= 0:
                    continue
                numerator = sums.get((ratio.numerator, dimension, slice_value))
                if numerator is None:
                    continue
                target.values[(ratio.name, dimension, slice_value)] = numerator / denominator
                target.volumes[(ratio.name, dimension, slice_value)] = denominator
        total = sums.get((config.count_metric, "", ""), 0.0)
        for rate in config.rates:
            if config.shape == "events" and total > 0:
                target.values[(rate.name, "", "")] = matches[index][rate.name] / total
                target.volumes[(rate.name, "", "")] = total

    for dimension, values in admitted.items():
        known_values.setdefault(dimension, set()).update(values)  # type: ignore[attr-defined]
    if config.shape == "metrics":
        zero_fill = frozenset(m.name for m in config.metrics)
    else:
        zero_fill = frozenset({config.count_metric})
    return Aggregate(periods=dict(periods), zero_fill_metrics=zero_fill)


@dataclass(frozen=True)
class ScoredPoint:
    period: int
    series: Series
    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    ready: bool
    volume: float
    streak: int = 1  # consecutive periods beyond the threshold on this side, this one included (signed)
    sustained: float = math.nan  # the detector's slow-chart score, NaN when it has none


@dataclass
class ScoreResult:
    points: list[ScoredPoint]
    late_periods: dict[int, list[int]]  # period -> row numbers
    late_values: dict[int, dict[Series, float]]
    scored_rows: int
    rollup_points: list[ScoredPoint] = field(default_factory=list)  # hours completed by this sync


DetectorFactory = Callable[[IntegrationConfig], Detector]


def seasonal_ewma(config: IntegrationConfig) -> SeasonalEWMA:
    """The production detector, configured from the integration's config.

    Its phase window, slow-chart weight and chart-spread growth cap are the granularity's defaults
    (``DEFAULT_PHASE_WINDOW``, ``DEFAULT_CHART_LAMBDA``, ``DEFAULT_CHART_SPREAD_GROWTH`` in
    :mod:`kpi_sentinel.config`): hyperparameters, not state, so a stored state loads with them whatever
    they were when it was written.
    """
    granularity = config.granularity_seconds or 3600
    return SeasonalEWMA(
        season_length=config.season,
        alpha=config.alpha,
        threshold=config.alert_threshold,
        warmup=config.warmup,
        phase_window=DEFAULT_PHASE_WINDOW.get(granularity, 0),
        chart_lambda=DEFAULT_CHART_LAMBDA.get(granularity, 0.25),
        chart_spread_growth=DEFAULT_CHART_SPREAD_GROWTH.get(granularity),
    )


def rollup_config(config: IntegrationConfig) -> IntegrationConfig | None:
    """The config the hourly roll-up of a 5-minute integration is scored with; None if it has none.

    Hourly granularity and the same season in hours (so the season must be whole hours); one period
    past the threshold alerts (an hour is already twelve periods); the integration's own threshold
    when it sets one, else the hourly default; per-metric thresholds, directions and floors as set.
    The hours may alert once they have learned for two seasons after the first, which only seeds the
    baselines: one season of 24 hourly updates is too few to know their spread, which learns at 2% an
    update (in the quality benchmark, the second season cut 3 false bursts and lost no catch). An
    explicit ``warmup`` (in 5-minute updates) is converted to hours.
    """
    factor = ROLLUP_TO // ROLLUP_FROM
    if config.granularity_seconds != ROLLUP_FROM or config.season % factor or config.season < 2 * factor:
        return None
    hours = config.season // factor
    return replace(
        config,
        granularity_seconds=ROLLUP_TO,
        season_length=hours,
        confirm_periods=1,
        warmup=2 * hours if config.warmup is None else max(1, config.warmup // factor),
    )


@dataclass
class PendingHour:
    """The roll-up's open hour: per series the sum of values (ratios: of value x volume) and volumes."""

    hour: int = -1
    covered: int = 0  # periods of the hour scored so far
    calendar: bool = False  # one of them was in a known event (the hour is scored, not learned)
    sums: dict[Series, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hour": self.hour,
            "covered": self.covered,
            "calendar": self.calendar,
            "sums": [[*s, v, w] for s, (v, w) in self.sums.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingHour:
        sums = {(str(m), str(d), str(v)): [float(a), float(b)] for m, d, v, a, b in data["sums"]}
        return cls(int(data["hour"]), int(data["covered"]), bool(data["calendar"]), sums)


class IntegrationState:
    """An integration's detector state: its config as used, series index and the detector arrays.

    ``detector_factory`` builds the detector (the seasonal EWMA unless told otherwise: the quality
    benchmark runs baselines through the same code); only the EWMA's state can be serialised. A
    5-minute integration scored by the seasonal EWMA also keeps its hourly roll-up (``rollup``, an
    hourly state of its own, and ``pending``, the open hour; see the module doc).
    """

    def __init__(
        self, config: IntegrationConfig, granularity: int, detector_factory: DetectorFactory = seasonal_ewma
    ) -> None:
        self.config = config
        self.granularity = granularity
        self.series: list[Series] = []
        self.index: dict[Series, int] = {}
        self.last_period = -1
        self.processed: list[str] = []
        self.detector_factory = detector_factory
        self.detector: Detector = self._new_detector()
        self.streak = np.zeros(0, dtype=np.int64)
        self.rollup: IntegrationState | None = None
        self.pending = PendingHour()
        self._start_rollup()

    def _start_rollup(self) -> None:
        hourly = rollup_config(replace(self.config, granularity_seconds=self.granularity))
        if hourly is None or self.detector_factory is not seasonal_ewma:
            self.rollup, self.pending = None, PendingHour()
        elif self.rollup is None:
            self.rollup = IntegrationState(hourly, ROLLUP_TO)
        else:
            self.rollup.reconfigure(hourly)

    def _new_detector(self) -> Detector:
        return self.detector_factory(self.config)

    def reconfigure(self, config: IntegrationConfig) -> bool:
        """Adopt a changed config; a new season length restarts the baselines. True if it did."""
        restart = config.season != self.config.season
        self.config = config
        if restart:
            transforms = ["identity" if self.is_ratio(s[0]) else "ssqrt" for s in self.series]
            self.detector = self._new_detector().resize(len(self.series), transforms)
        else:
            self.detector.alpha = config.alpha
            self.detector.threshold = config.alert_threshold
            self.detector.warmup = config.warmup
        self._start_rollup()
        return restart

    def known_values(self) -> dict[str, set[str]]:
        known: dict[str, set[str]] = defaultdict(set)
        for _, dimension, value in self.series:
            if dimension:
                known[dimension].add(value)
        return known

    def is_ratio(self, metric: str) -> bool:
        return isinstance(self.config.metric(metric), RatioSpec | RateSpec)

    def _ensure(self, series: Iterable[Series]) -> None:
        new = [s for s in series if s not in self.index]
        if not new:
            return
        for s in new:
            self.index[s] = len(self.series)
            self.series.append(s)
        transforms = ["identity" if self.is_ratio(s[0]) else "ssqrt" for s in new]
        self.detector.resize(len(self.series), transforms)
        self.streak = np.concatenate([self.streak, np.zeros(len(new), dtype=np.int64)])

    def score(self, agg: Aggregate, calendar: Collection[int] = ()) -> ScoreResult:
        """Score the aggregate's periods in time order; ``calendar`` periods are scored, not learned."""
        points: list[ScoredPoint] = []
        late: dict[int, list[int]] = {}
        late_values: dict[int, dict[Series, float]] = {}
        scored_rows = 0
        hourly: list[ScoredPoint] = []
        for period in sorted(agg.periods):
            bucket = agg.periods[period]
            if period <= self.last_period:
                late[period] = bucket.rows
                late_values[period] = bucket.values
                continue
            if self.rollup is not None:
                hourly.extend(self._roll(period, bucket, period in calendar, agg.zero_fill_metrics))
            self._ensure(sorted(bucket.values))
            values = np.full(len(self.series), np.nan)
            volumes = np.zeros(len(self.series))
            for s, position in self.index.items():
                if s in bucket.values:
                    values[position] = bucket.values[s]
                    volumes[position] = bucket.volumes.get(s, abs(bucket.values[s]))
                elif s[1] and s[0] in agg.zero_fill_metrics:
                    values[position] = 0.0  # a tracked slice with no rows in a covered period is zero
            learn = np.zeros(len(self.series), dtype=np.bool_) if period in calendar else None
            result = self.detector.step(period, values, self._ratio_noise(values, volumes), learn)
            self._count_streaks(result.score, result.ready)
            sustained = result.sustained if result.sustained is not None else np.full(len(values), np.nan)
            present = np.flatnonzero(~np.isnan(values))
            columns = zip(
                present.tolist(), values[present].tolist(), result.expected[present].tolist(),
                result.lower[present].tolist(), result.upper[present].tolist(), result.score[present].tolist(),
                result.ready[present].tolist(), volumes[present].tolist(), self.streak[present].tolist(),
                sustained[present].tolist(), strict=True,
            )  # fmt: skip
            series = self.series
            points.extend(
                ScoredPoint(period, series[i], obs, exp, low, up, score, ready, vol, streak, slow)
                for i, obs, exp, low, up, score, ready, vol, streak, slow in columns
            )
            self.last_period = period
            scored_rows += len(bucket.rows)
        self._prune()
        return ScoreResult(points, late, late_values, scored_rows, hourly)

    def _roll(
        self, period: int, bucket: PeriodAggregate, in_calendar: bool, zero_fill: frozenset[str]
    ) -> list[ScoredPoint]:
        """Add a period about to be scored to the roll-up's open hour; score the hours it completes."""
        assert self.rollup is not None
        factor = ROLLUP_TO // self.granularity
        hour = period // factor
        points: list[ScoredPoint] = []
        pending = self.pending
        if pending.hour != hour:
            points = self._close_hour(zero_fill)
            pending = self.pending = PendingHour(hour)
        ratio: dict[str, bool] = {}  # metric -> is a ratio, looked up once per period
        for s, value in bucket.values.items():
            if s[0] not in ratio:
                ratio[s[0]] = self.is_ratio(s[0])
            volume = bucket.volumes.get(s, abs(value))
            total = pending.sums.setdefault(s, [0.0, 0.0])
            total[0] += value * volume if ratio[s[0]] else value
            total[1] += volume
        pending.covered += 1
        pending.calendar = pending.calendar or in_calendar
        if pending.covered == factor:  # the hour's last period: complete now
            points.extend(self._close_hour(zero_fill))
            self.pending = PendingHour()
        return points

    def _close_hour(self, zero_fill: frozenset[str]) -> list[ScoredPoint]:
        """Score the open hour if it is complete enough (see the module doc); it is closed either way."""
        pending, rollup = self.pending, self.rollup
        assert rollup is not None
        if pending.hour < 0 or pending.hour <= rollup.last_period:
            return []
        factor = ROLLUP_TO // self.granularity
        if self.config.shape == "metrics" and pending.covered < factor:
            return []  # a period is missing: a gap, not a drop
        bucket = PeriodAggregate()
        for s, (total, volume) in pending.sums.items():
            if self.is_ratio(s[0]):
                if volume <= 0:
                    continue
                bucket.values[s] = total / volume
            else:
                bucket.values[s] = total
            bucket.volumes[s] = volume
        calendar = (pending.hour,) if pending.calendar else ()
        return rollup.score(Aggregate({pending.hour: bucket}, zero_fill), calendar).points

    def _count_streaks(self, score: FloatArray, ready: npt.NDArray[np.bool_]) -> None:
        """Consecutive scored periods beyond the threshold on one side; a gap or a normal period resets."""
        threshold = self._thresholds()
        with np.errstate(invalid="ignore"):
            side = np.where(ready & (score >= threshold), 1, np.where(ready & (score <= -threshold), -1, 0))
        same = (side != 0) & (np.sign(self.streak) == side)
        self.streak = np.where(same, self.streak + side, side).astype(np.int64)

    def _thresholds(self) -> float | FloatArray:
        """The alert threshold of each series: per metric when one has its own, else one for all."""
        config = self.config
        if not config.overrides and all(s.threshold is None for s in config.specs()):
            return config.alert_threshold
        by_metric: dict[str, float] = {}
        for metric, _, _ in self.series:
            if metric not in by_metric:
                by_metric[metric] = config.threshold_for(metric)
        return np.array([by_metric[s[0]] for s in self.series], dtype=np.float64)

    def _ratio_noise(self, values: FloatArray, volumes: FloatArray) -> FloatArray:
        """Binomial sampling noise sqrt(p(1-p)/n) of ratio series; zero for the others."""
        ratio = self.detector.transform_ == 1
        p = np.clip(np.nan_to_num(values), 0.01, 0.99)
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = np.sqrt(p * (1 - p) / np.maximum(volumes, 1.0))
        return np.where(ratio, noise, 0.0)

    def _prune(self) -> None:
        horizon = self.last_period - PRUNE_AFTER_SEASONS * self.config.season
        keep = np.flatnonzero(self.detector.last_index_ >= horizon)
        if len(keep) == len(self.series):
            return
        self.detector.select(keep)
        self.streak = self.streak[keep]
        self.series = [self.series[i] for i in keep]
        self.index = {s: i for i, s in enumerate(self.series)}

    def remember(self, sync_id: str) -> None:
        self.processed.append(sync_id)
        del self.processed[:-PROCESSED_SYNCS_KEPT]

    # --- serialisation: a small header, JSON metadata, then the raw arrays; zlib-compressed ---

    def to_bytes(self) -> bytes:
        meta, arrays = self._dump()
        if self.rollup is not None:
            rollup_meta, rollup_arrays = self.rollup._dump()
            meta["rollup"] = {"state": rollup_meta, "pending": self.pending.to_dict()}
            meta["arrays"] += rollup_meta["arrays"]
            arrays += rollup_arrays
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
        payload = struct.pack(">I", len(meta_bytes)) + meta_bytes + b"".join(a.tobytes() for a in arrays)
        return STATE_FORMAT + zlib.compress(payload, 1)  # level 1: most of the gain, a fifth of the time

    def _dump(self) -> tuple[dict[str, Any], list[npt.NDArray[Any]]]:
        d = self.detector
        if not isinstance(d, SeasonalEWMA):
            raise TypeError(f"only the seasonal EWMA's state is stored, not {type(d).__name__}'s")
        arrays: list[npt.NDArray[Any]] = [
            d.baseline_.astype(np.float32),
            d.mean_.astype(np.float64),
            d.var_.astype(np.float64),
            d.count_.astype(np.int32),
            d.last_index_.astype(np.int64),
            d.transform_.astype(np.int8),
            d.run_.astype(np.int32),
            self.streak.astype(np.int32),
            d.slow_.astype(np.float64),
            d.chart_.astype(np.float64),
            d.cvar_.astype(np.float64),
            d.undo_.astype(np.float32),
        ]
        meta = {
            "config": self.config.to_dict(),
            "granularity": self.granularity,
            "series": [list(s) for s in self.series],
            "last_period": self.last_period,
            "processed": self.processed,
            "arrays": [[a.dtype.str, list(a.shape)] for a in arrays],
        }
        return meta, arrays

    @classmethod
    def from_bytes(cls, blob: bytes) -> IntegrationState:
        if not blob.startswith(STATE_FORMAT):
            raise ValueError("not a kpi-sentinel state blob (bad header)")
        payload = zlib.decompress(blob[len(STATE_FORMAT) :])
        (meta_len,) = struct.unpack(">I", payload[:4])
        meta: dict[str, Any] = json.loads(payload[4 : 4 + meta_len])
        offset = 4 + meta_len
        loaded = []
        for dtype, shape in meta["arrays"]:
            size = int(np.dtype(dtype).itemsize * math.prod(shape))
            loaded.append(np.frombuffer(payload[offset : offset + size], dtype=dtype).reshape(shape))
            offset += size
        rollup = meta.get("rollup")
        own = len(meta["arrays"]) - (len(rollup["state"]["arrays"]) if rollup else 0)
        state = cls._load(meta, loaded[:own])
        if state.rollup is not None and rollup is not None:  # else: a blob from before the roll-up
            state.rollup = cls._load(rollup["state"], loaded[own:])
            state.pending = PendingHour.from_dict(rollup["pending"])
        return state

    @classmethod
    def _load(cls, meta: Mapping[str, Any], loaded: list[npt.NDArray[Any]]) -> IntegrationState:
        config = IntegrationConfig.from_dict(meta["config"])
        state = cls(config, int(meta["granularity"]))
        state.series = [tuple(s) for s in meta["series"]]  # type: ignore[misc]
        state.index = {s: i for i, s in enumerate(state.series)}
        state.last_period = int(meta["last_period"])
        state.processed = list(meta["processed"])
        d = state.detector
        assert isinstance(d, SeasonalEWMA)
        d.baseline_ = loaded[0].astype(np.float64)
        d.mean_, d.var_ = loaded[1].copy(), loaded[2].copy()
        d.count_ = loaded[3].astype(np.int64)
        d.last_index_ = loaded[4].copy()
        d.transform_ = loaded[5].astype(np.int64)
        n = len(state.series)  # blobs written before these arrays existed start them at zero
        d.run_ = loaded[6].astype(np.int64) if len(loaded) > 6 else np.zeros(n, dtype=np.int64)
        state.streak = loaded[7].astype(np.int64) if len(loaded) > 7 else np.zeros(n, dtype=np.int64)
        d.slow_, d.chart_, d.cvar_ = (
            loaded[k].copy() if len(loaded) > k else np.zeros(n, dtype=np.float64) for k in (8, 9, 10)
        )
        d.undo_ = loaded[11].astype(np.float64) if len(loaded) > 11 else np.full_like(d.baseline_, np.nan)
        return state
