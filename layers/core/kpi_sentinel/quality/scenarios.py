"""Seeded, reproducible scenarios of the detection-quality benchmark.

:func:`generate_suite` builds a :class:`~kpi_sentinel.quality.labels.Suite`: integrations of three
granularities and three archetypes, each with the sync files it would drop, an operator's config (or
``None`` for a third of the ads integrations, so the scorer's inference path is measured too), the
labelled anomaly windows injected into its data and the known events (holidays, planned campaigns)
that move its data without being anomalies.

Granularities (``full`` size; ``small`` keeps the mix with one integration per combination and
shorter spans, for unit tests):

- ``day``: weekly seasonality (season 7), 26 weeks, one file per week;
- ``hour``: hour-of-day x weekday seasonality (season 168), 9 weeks, one file per day;
- ``5min``: daily seasonality (season 288), 3 weeks, one file per day.

Archetypes:

- ``ads`` (*metrics* shape): ``timestamp``, ``source`` (3-6 traffic sources, one of them a
  low-volume source with a handful of clicks per period), ``clicks``, ``signups``, ``ftds``,
  ``deposits`` (counts) and ``ngr`` (EUR, 2 decimals); ratios ``conversion = ftds / clicks`` and
  ``signup_rate = signups / clicks``. Clicks are gamma-Poisson (negative binomial) counts, the funnel
  below them binomial, NGR = deposits x a lognormal amount (minus the odd chargeback).
- ``tickets`` (*events* shape, ``day`` and ``hour`` only): one row per support ticket with
  ``created_at``, ``ticket_id``, ``queue`` (one low-volume queue), ``priority`` and ``tags``
  (``"a | b"``); the count metric is named ``tickets``.
- ``revenue`` (*metrics* shape, ``day`` and ``hour`` only): ``timestamp``, ``country`` (one
  low-volume country), ``signups``, ``deposits`` and ``ngr``.

Every series has a trend (up to +-0.5 % a day), a seasonal profile, a day-to-day wobble and noise
that grows with volume. After a warm-up of two seasons plus two days, 2-4 anomaly windows per
integration are injected (kinds of :data:`~kpi_sentinel.quality.labels.ANOMALY_KINDS`, each kind at
least 8 times in the full suite), together with one or two holidays (the total down 30-60 % for a
day) and, for ads and revenue, a planned campaign (one segment up 50-150 % for 1-3 days). Windows and
known events never overlap and are at least a day apart; level shifts come after the other windows of
their integration, since their new level is the normal from then on. Windows are ``[start, end)``,
aligned to period starts, in UTC.

Files are dropped in time order under ``syncs/<integration_id>/<YYYY-MM-DD>.<ext>``; the extension
rotates over ``.csv``, ``.csv.gz``, ``.jsonl`` and ``.jsonl.gz`` across integrations and timestamps
end in ``Z`` or ``+00:00``. A metrics row exists for every segment and period (zeros included) except
during ``missing_data``, where the rows are absent; a file left with no row at all is not dropped.

Reproducibility: the same seed gives byte-identical files (gzip with ``mtime=0``) and identical
labels. The kinds each integration receives are drawn from one suite-level stream; everything else
from a stream per integration, derived from ``(seed, integration_id)``. The data starts on a fixed
Monday, :data:`START`, so nothing depends on today's date. Only numpy and the standard library are
used.
"""

from __future__ import annotations

import gzip
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kpi_sentinel.quality.labels import ANOMALY_KINDS, KnownEvent, Scenario, Suite, SyncDrop, Window

__all__ = ["ARCHETYPES", "FORMATS", "GRANULARITIES", "START", "generate_suite"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

START: Final = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
ARCHETYPES: Final = ("ads", "tickets", "revenue")
FORMATS: Final = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz")

_SUITE_STREAM: Final = 0x5CE7A210  # the suite-level stream (kinds per integration)
_DAY: Final = 86400


@dataclass(frozen=True)
class _Grain:
    name: str  # the config's ``granularity``
    seconds: int
    season: int
    seasonality: str
    days_full: int
    days_small: int
    days_per_file: int
    tail_days: int  # kept free of windows at the end, so what follows the last one is observable
    gamma_shape: float  # gamma-Poisson shape: smaller = more over-dispersed counts

    @property
    def per_day(self) -> int:
        return _DAY // self.seconds


GRANULARITIES: Final = {
    "day": _Grain("day", 86400, 7, "weekly", 182, 84, 7, 7, 200.0),
    "hour": _Grain("hour", 3600, 168, "weekly", 63, 42, 1, 2, 100.0),
    "5min": _Grain("5min", 300, 288, "daily", 21, 16, 1, 1, 60.0),
}

# (granularity, archetype, integrations) in suite order.
_FULL_LAYOUT: Final = (
    ("day", "ads", 5),
    ("day", "tickets", 4),
    ("day", "revenue", 3),
    ("hour", "ads", 5),
    ("hour", "tickets", 4),
    ("hour", "revenue", 3),
    ("5min", "ads", 12),
)
_SMALL_LAYOUT: Final = tuple((grain, archetype, 1) for grain, archetype, _ in _FULL_LAYOUT)

# Kinds are dealt to the integrations of an archetype from consecutive shuffled copies of its cycle,
# so every kind gets its share whatever the seed. Ads repeat the two kinds only they can carry.
_KIND_CYCLES: Final[Mapping[str, tuple[str, ...]]] = {
    "ads": (
        "spike",
        "dip",
        "source_crater",
        "drift",
        "suspicious_traffic",
        "conversion_crater",
        "missing_data",
        "level_shift",
        "suspicious_traffic",
        "conversion_crater",
    ),
    "tickets": ("ticket_surge", "spike", "ticket_surge", "missing_data", "level_shift"),
    "revenue": ("dip", "source_crater", "drift", "missing_data", "level_shift"),
}
_WINDOWS_PER_INTEGRATION: Final = (3, 2, 4, 3)  # dealt (shuffled) over an archetype's integrations

# Window lengths in periods, inclusive ranges, per granularity.
_LENGTHS: Final[Mapping[str, Mapping[str, tuple[int, int]]]] = {
    "spike": {"day": (1, 3), "hour": (1, 6), "5min": (1, 6)},
    "dip": {"day": (1, 3), "hour": (1, 6), "5min": (1, 6)},
    "source_crater": {"day": (3, 6), "hour": (3, 24), "5min": (3, 24)},
    "drift": {"day": (14, 28), "hour": (72, 168), "5min": (864, 2016)},
    "suspicious_traffic": {"day": (1, 3), "hour": (2, 8), "5min": (3, 24)},
    "conversion_crater": {"day": (1, 3), "hour": (3, 12), "5min": (6, 36)},
    "ticket_surge": {"day": (2, 4), "hour": (2, 8), "5min": (2, 8)},
    "missing_data": {"day": (3, 12), "hour": (3, 12), "5min": (3, 12)},
    "level_shift": {"day": (3, 3), "hour": (24, 24), "5min": (288, 288)},
}
# Kinds placed in business hours (09:00-19:00 UTC) on sub-daily data: where the volume is.
_DAYTIME_KINDS: Final = frozenset(
    {"spike", "dip", "source_crater", "suspicious_traffic", "conversion_crater", "ticket_surge"}
)

_ADS_METRICS: Final = ("clicks", "signups", "ftds", "deposits", "ngr")
# In the order infer_config lists them.
_ADS_RATIOS: Final = (("signup_rate", "signups", "clicks"), ("conversion", "ftds", "clicks"))
_REVENUE_METRICS: Final = ("signups", "deposits", "ngr")
_MONEY: Final = frozenset({"ngr"})
_DIRECTIONS: Final[Mapping[str, str]] = {
    "clicks": "both",
    "signups": "down",
    "ftds": "down",
    "deposits": "down",
    "ngr": "down",
}
# The floors infer_config gives: a change must be >= 5 units on a series of volume >= 10; a ratio
# needs a denominator of >= 50; the high-priority rate a change of >= 5 points on >= 10 tickets.
_MIN_ABS_CHANGE: Final = 5.0
_MIN_VOLUME: Final = 10.0
_RATIO_MIN_VOLUME: Final = 50.0

_SOURCES: Final = (
    "google-cpc",
    "meta-ads",
    "telegram-push",
    "affiliate-x",
    "tiktok-ads",
    "bing-cpc",
    "email-crm",
    "push-house",
)
_COUNTRIES: Final = ("DE", "BR", "MX", "CA", "IN", "TR", "PL", "JP", "ZA", "NO")
_QUEUES: Final = ("payments", "account", "technical", "general")
_LOW_QUEUE: Final = "vip"
_PRIORITIES: Final = ("low", "normal", "high", "urgent")
_PRIORITY_SHARE: Final = (0.35, 0.45, 0.15, 0.05)
_TAGS: Final = ("withdrawal", "kyc", "login", "bonus", "app-crash", "deposit")
# Probability that a ticket of each queue (in _QUEUES order, then the low-volume queue) carries a tag.
_TAG_PROBABILITY: Final = (
    (0.55, 0.10, 0.02, 0.10, 0.02, 0.40),
    (0.05, 0.45, 0.40, 0.10, 0.03, 0.03),
    (0.02, 0.03, 0.30, 0.02, 0.55, 0.05),
    (0.10, 0.10, 0.10, 0.30, 0.10, 0.10),
    (0.40, 0.20, 0.05, 0.30, 0.02, 0.30),
)


# --- public API ------------------------------------------------------------------------------------


def generate_suite(seed: int = 1, size: str = "full") -> Suite:
    """Generate the benchmark's scenarios for ``seed``; ``size`` is ``"full"`` or ``"small"``.

    ``full``: 36 integrations (12 per granularity), every anomaly kind at least 8 times. ``small``:
    one integration per granularity/archetype combination (7) over shorter spans, for unit tests.
    The same ``(seed, size)`` always gives byte-identical files and identical labels.
    """
    if size not in ("full", "small"):
        raise ValueError(f"size must be 'full' or 'small', got {size!r}")
    return Suite(seed=seed, scenarios=[_scenario(seed, plan) for plan in _plans(seed, size)])


# --- suite plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    integration_id: str
    archetype: str
    grain: _Grain
    days: int
    kinds: tuple[str, ...]
    extension: str
    suffix: str  # how timestamps end: "Z" or "+00:00"
    explicit_config: bool


def _plans(seed: int, size: str) -> list[_Plan]:
    """Who is in the suite and which kinds of windows each integration receives."""
    rng = np.random.default_rng([seed, _SUITE_STREAM])
    layout = _FULL_LAYOUT if size == "full" else _SMALL_LAYOUT
    slots: list[tuple[str, str, int]] = [
        (grain, archetype, number) for grain, archetype, count in layout for number in range(1, count + 1)
    ]
    kinds: dict[int, tuple[str, ...]] = {}
    for archetype in ARCHETYPES:
        members = [i for i, slot in enumerate(slots) if slot[1] == archetype]
        counts = rng.permutation(np.resize(np.array(_WINDOWS_PER_INTEGRATION), len(members))).tolist()
        for i, kinds_of_member in zip(
            members, _deal(rng, archetype, [slots[i][0] for i in members], counts), strict=True
        ):
            kinds[i] = kinds_of_member
    plans = []
    ads_seen = 0
    for i, (grain_name, archetype, number) in enumerate(slots):
        grain = GRANULARITIES[grain_name]
        explicit = True
        if archetype == "ads":
            explicit = ads_seen % 3 != 1  # a third of the ads integrations rely on inference
            ads_seen += 1
        plans.append(
            _Plan(
                integration_id=f"q-{grain_name}-{archetype}-{number:02d}",
                archetype=archetype,
                grain=grain,
                days=grain.days_full if size == "full" else grain.days_small,
                kinds=kinds[i],
                extension=FORMATS[i % len(FORMATS)],
                suffix="Z" if (i // len(FORMATS)) % 2 == 0 else "+00:00",
                explicit_config=explicit,
            )
        )
    return plans


def _deal(
    rng: np.random.Generator, archetype: str, grains: Sequence[str], counts: Sequence[int]
) -> list[tuple[str, ...]]:
    """The kinds of windows each integration of ``archetype`` receives (``counts[i]`` for the i-th).

    The kinds are consecutive shuffled copies of the archetype's cycle (so every kind gets its share
    whatever the seed). They are grouped by kind and laid over the window slots of all the
    integrations, interleaved by granularity in proportion to their number, so the copies of a kind
    are spread across granularities; each granularity's kinds are then shuffled and dealt.
    """
    cycle = _KIND_CYCLES[archetype]
    deck = [cycle[int(i)] for _ in range(-(-sum(counts) // len(cycle))) for i in rng.permutation(len(cycle))]
    rank = {
        kind: r for r, kind in enumerate(dict.fromkeys(cycle[int(i)] for i in rng.permutation(len(cycle))))
    }
    grouped = sorted(deck[: sum(counts)], key=rank.__getitem__)
    capacity: dict[str, int] = {}
    for grain, count in zip(grains, counts, strict=True):
        capacity[grain] = capacity.get(grain, 0) + count
    offset = {grain: float(rng.uniform()) for grain in capacity}
    lanes = sorted(((k + offset[g]) / n, g) for g, n in capacity.items() for k in range(n))
    per_grain: dict[str, list[str]] = {grain: [] for grain in capacity}
    for kind, (_, grain) in zip(grouped, lanes, strict=True):
        per_grain[grain].append(kind)
    for grain, dealt in per_grain.items():
        per_grain[grain] = [dealt[int(i)] for i in rng.permutation(len(dealt))]
    out = []
    for grain, count in zip(grains, counts, strict=True):
        out.append(tuple(per_grain[grain][:count]))
        per_grain[grain] = per_grain[grain][count:]
    return out


# --- calendar --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Calendar:
    grain: _Grain
    periods: int
    day: IntArray  # whole days since START
    hour: FloatArray  # hour of day at the middle of the period
    weekday: IntArray  # 0 = Monday
    text: list[str]  # period starts as ISO 8601

    def moment(self, period: int) -> datetime:
        return START + timedelta(seconds=period * self.grain.seconds)


def _calendar(grain: _Grain, days: int, suffix: str) -> _Calendar:
    periods = days * grain.per_day
    index = np.arange(periods, dtype=np.int64)
    day = index // grain.per_day
    seconds_in_day = (index % grain.per_day) * grain.seconds
    hour = (seconds_in_day + grain.seconds / 2.0) / 3600.0 if grain.per_day > 1 else np.full(periods, 12.0)
    return _Calendar(
        grain=grain,
        periods=periods,
        day=day,
        hour=np.asarray(hour, dtype=np.float64),
        weekday=(day + START.weekday()) % 7,
        text=_timestamps(index * grain.seconds, suffix),
    )


def _timestamps(offsets: IntArray, suffix: str) -> list[str]:
    """``START + offsets`` (seconds) as ISO 8601 text ending in ``suffix``."""
    base = np.datetime64(START.replace(tzinfo=None), "s")
    moments = base + offsets.astype("timedelta64[s]")
    return [f"{text}{suffix}" for text in np.datetime_as_string(moments, unit="s").tolist()]


def _day_curve(hour: FloatArray, peak: float, floor: float) -> FloatArray:
    """1.0 at ``peak`` o'clock, ``floor`` twelve hours away, smooth in between."""
    phase = 2.0 * np.pi * (hour - peak) / 24.0
    return np.asarray(floor + (1.0 - floor) * ((1.0 + np.cos(phase)) / 2.0) ** 1.5, dtype=np.float64)


@dataclass(frozen=True)
class _Seasonal:
    """What the volume of a series looks like before anomalies: one row per segment."""

    shape: FloatArray  # (segments, periods): seasonal profile (mean 1) x trend x day-to-day wobble
    weekly: list[float]
    trend_per_day: float


def _seasonal(
    rng: np.random.Generator, calendar: _Calendar, segments: int, weekend: tuple[float, float]
) -> _Seasonal:
    grain = calendar.grain
    weekly = np.ones(7)
    if grain.seasonality == "weekly":
        weekly[4] = rng.uniform(0.95, 1.05)
        weekly[5:] = rng.uniform(*weekend, size=2)
        weekly[:5] *= rng.uniform(0.97, 1.03, size=5)
        weekly /= weekly.mean()
    trend_per_day = float(rng.uniform(-0.005, 0.005))
    days = int(calendar.day[-1]) + 1
    trend = np.exp(trend_per_day * (calendar.day + calendar.hour / 24.0))
    market = rng.lognormal(0.0, 0.03, size=days)
    rows = []
    for _ in range(segments):
        if grain.per_day > 1:
            one_day = np.asarray((np.arange(grain.per_day) + 0.5) * grain.seconds / 3600.0, dtype=np.float64)
            peak, floor = rng.uniform(11.0, 21.0), rng.uniform(0.08, 0.3)
            curve = _day_curve(calendar.hour, peak, floor) / _day_curve(one_day, peak, floor).mean()
        else:
            curve = np.ones(calendar.periods)
        wobble = rng.lognormal(0.0, 0.03, size=days)
        rows.append(curve * weekly[calendar.weekday] * trend * market[calendar.day] * wobble[calendar.day])
    return _Seasonal(np.vstack(rows), [round(float(w), 4) for w in weekly], round(trend_per_day, 5))


def _counts(rng: np.random.Generator, expected: FloatArray, shape: float) -> IntArray:
    """Gamma-Poisson (negative binomial) counts: the variance grows faster than the mean."""
    rate = np.maximum(expected, 0.0) * rng.gamma(shape, 1.0 / shape, size=expected.shape)
    return rng.poisson(rate).astype(np.int64)


# --- placement of windows and known events ------------------------------------------------------------


@dataclass
class _Item:
    kind: str  # an anomaly kind, or "holiday" / "campaign"
    length: int  # periods
    slot: int | None  # required period-of-day of the start (sub-daily data), None = any
    minimum: int  # shortest acceptable length
    start: int = 0

    @property
    def is_window(self) -> bool:
        return self.kind in ANOMALY_KINDS


def _items(rng: np.random.Generator, plan: _Plan) -> list[_Item]:
    grain = plan.grain
    per_day = grain.per_day
    items = []
    for kind in plan.kinds:
        low, high = _LENGTHS[kind][grain.name]
        slot: int | None = None
        if per_day > 1:
            if kind in _DAYTIME_KINDS:
                slot = int(rng.integers(9 * 3600, 19 * 3600)) // grain.seconds
            else:
                slot = int(rng.integers(0, per_day))
        items.append(_Item(kind, int(rng.integers(low, high + 1)), slot, low))
    holiday_slot = 0 if per_day > 1 else None
    for _ in range(2 if grain.name == "day" else 1):
        items.append(_Item("holiday", per_day, holiday_slot, per_day))
    if plan.archetype != "tickets":
        items.append(_Item("campaign", int(rng.integers(1, 4)) * per_day, holiday_slot, per_day))
    return items


def _place(rng: np.random.Generator, items: list[_Item], calendar: _Calendar) -> list[_Item]:
    """Order and place the items after the warm-up, a day apart; drop what cannot fit.

    Level shifts come after the other windows. If the span is too short, campaigns, then holidays
    are dropped, drifts shortened to their minimum, then windows beyond two dropped.
    """
    grain = calendar.grain
    lo = 2 * grain.season + 2 * grain.per_day
    hi = calendar.periods - grain.tail_days * grain.per_day
    gap = grain.per_day
    order = [items[int(i)] for i in rng.permutation(len(items))]
    positions = [i for i, item in enumerate(order) if item.is_window]
    windows = sorted((order[i] for i in positions), key=lambda item: item.kind == "level_shift")
    for i, window in zip(positions, windows, strict=True):
        order[i] = window

    def fit(extra: Sequence[int]) -> int | None:
        cursor = lo + extra[0]
        for n, item in enumerate(order):
            start = cursor
            if item.slot is not None:
                start = (cursor // grain.per_day) * grain.per_day + item.slot
                if start < cursor:
                    start += grain.per_day
            item.start = start
            cursor = start + item.length + gap + extra[n + 1]
        end = order[-1].start + order[-1].length
        return end if end <= hi else None

    while (end := fit([0] * (len(order) + 1))) is None:
        order = _shrink(order)
    free = hi - end
    extra = np.floor(rng.dirichlet(np.ones(len(order) + 1)) * free).astype(np.int64)
    while fit([int(e) for e in extra]) is None:
        extra //= 2
    return order


def _shrink(order: list[_Item]) -> list[_Item]:
    for kind in ("campaign", "holiday"):
        found = [item for item in order if item.kind == kind]
        if found:
            return [item for item in order if item is not found[-1]]
    for item in order:
        if item.kind == "drift" and item.length > item.minimum:
            item.length = item.minimum
            return order
    windows = [item for item in order if item.is_window]
    if len(windows) > 2:
        return [item for item in order if item is not windows[-1]]
    raise ValueError("the span is too short for two windows after the warm-up")


# --- per-scenario generation ---------------------------------------------------------------------------


@dataclass
class _Effects:
    """Multipliers the windows and known events put on the data, per segment and period."""

    traffic: FloatArray  # (segments, periods): volume multiplier
    bots: FloatArray  # (segments, periods): extra clicks that never convert, as a multiple of clicks
    conversion: FloatArray  # (segments, periods): multiplier on the FTD (ads) or deposit rate
    present: BoolArray  # (periods,): False = no rows at all
    surges: list[tuple[int, int, int | None, int | None, float]] = field(default_factory=list)
    # ticket surges: (start, end, queue index or None, tag index or None, factor)


@dataclass(frozen=True)
class _Segments:
    dimension: str
    names: list[str]
    shares: FloatArray
    low: int  # index of the low-volume segment

    def big(self, rng: np.random.Generator) -> int:
        """A segment with at least 15 % of the volume."""
        candidates = [i for i, share in enumerate(self.shares) if share >= 0.15]
        return int(candidates[int(rng.integers(0, len(candidates)))])


def _segments(
    rng: np.random.Generator,
    dimension: str,
    pool: Sequence[str],
    count: int,
    low_share: float,
    fixed: Sequence[str] = (),
) -> _Segments:
    names = list(fixed) or [pool[int(i)] for i in rng.choice(len(pool), size=count, replace=False)]
    shares = np.empty(len(names))
    shares[:-1] = rng.dirichlet(np.full(len(names) - 1, 4.0)) * (1.0 - low_share)
    shares[-1] = low_share
    return _Segments(dimension, names, shares, len(names) - 1)


def _scenario(seed: int, plan: _Plan) -> Scenario:
    rng = np.random.default_rng([seed, zlib.crc32(plan.integration_id.encode("utf-8"))])
    calendar = _calendar(plan.grain, plan.days, plan.suffix)
    model: _Model
    if plan.archetype == "ads":
        model = _Ads(rng, plan, calendar)
    elif plan.archetype == "revenue":
        model = _Revenue(rng, plan, calendar)
    else:
        model = _Tickets(rng, plan, calendar)
    items = _place(rng, _items(rng, plan), calendar)
    effects = _Effects(
        traffic=np.ones((len(model.segments.names), calendar.periods)),
        bots=np.zeros((len(model.segments.names), calendar.periods)),
        conversion=np.ones((len(model.segments.names), calendar.periods)),
        present=np.ones(calendar.periods, dtype=np.bool_),
    )
    windows: list[Window] = []
    events: list[KnownEvent] = []
    for item in items:
        start, end = calendar.moment(item.start), calendar.moment(item.start + item.length)
        if item.is_window:
            metrics, dimension, value, note = model.inject(item, effects)
            windows.append(
                Window(plan.integration_id, item.kind, start, end, metrics, dimension, value, note)
            )
        else:
            name = model.known_event(item, effects)
            events.append(KnownEvent(plan.integration_id, item.kind, start, end, name))
    bodies = model.render(effects)
    syncs = [
        SyncDrop(f"syncs/{plan.integration_id}/{calendar.moment(first):%Y-%m-%d}{plan.extension}", body)
        for first, body in bodies
    ]
    return Scenario(
        integration_id=plan.integration_id,
        archetype=plan.archetype,
        granularity_seconds=plan.grain.seconds,
        season_length=plan.grain.season,
        seasonality=plan.grain.seasonality,
        start=START,
        end=calendar.moment(calendar.periods),
        syncs=syncs,
        windows=sorted(windows, key=lambda w: w.start),
        known_events=sorted(events, key=lambda e: e.start),
        config=model.config() if plan.explicit_config else None,
        notes={
            "file_format": plan.extension,
            "timestamp_suffix": plan.suffix,
            "kinds_dealt": list(plan.kinds),
            **model.notes,
        },
    )


class _Model(ABC):
    """What the archetypes share: segments, seasonal shape, effects of known events, file layout."""

    dimension: str = ""
    shape: str = "metrics"

    def __init__(self, rng: np.random.Generator, plan: _Plan, calendar: _Calendar) -> None:
        self.rng = rng
        self.plan = plan
        self.calendar = calendar
        self.segments = self._make_segments()
        self.seasonal = _seasonal(rng, calendar, len(self.segments.names), self._weekend())
        self.notes: dict[str, Any] = {
            "segments": {
                name: round(float(share), 5)
                for name, share in zip(self.segments.names, self.segments.shares, strict=True)
            },
            "low_volume_segment": self.segments.names[self.segments.low],
            "weekly_factors": self.seasonal.weekly,
            "trend_per_day": self.seasonal.trend_per_day,
        }

    @abstractmethod
    def _make_segments(self) -> _Segments:
        """Draw the segments (and the archetype's own parameters)."""

    def _weekend(self) -> tuple[float, float]:
        return (0.7, 0.9)

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The explicit config an operator would store for this integration."""

    @abstractmethod
    def inject(self, item: _Item, effects: _Effects) -> tuple[tuple[str, ...], str | None, str | None, str]:
        """Apply an anomaly window to ``effects``; return its metrics, dimension, value and note."""

    @abstractmethod
    def render(self, effects: _Effects) -> list[tuple[int, bytes]]:
        """Draw the data under ``effects``; return ``(first period, body)`` per file, in time order."""

    def _base_config(self) -> dict[str, Any]:
        grain = self.plan.grain
        return {
            "integration_id": self.plan.integration_id,
            "shape": self.shape,
            "granularity": grain.name,
            "season_length": grain.season,
            "dimensions": [self.dimension],
        }

    def known_event(self, item: _Item, effects: _Effects) -> str:
        """Apply a holiday or a campaign to the data and name it."""
        a, b = item.start, item.start + item.length
        if item.kind == "holiday":
            drop = self.rng.uniform(0.3, 0.6)
            effects.traffic[:, a:b] *= 1.0 - drop
            return f"public holiday (volume -{drop:.0%})"
        target = self.segments.big(self.rng)
        lift = self.rng.uniform(0.5, 1.5)
        effects.traffic[target, a:b] *= 1.0 + lift
        name = self.segments.names[target]
        return f"planned campaign on {self.dimension} {name} (+{lift:.0%})"

    def _common(
        self, kind: str, a: int, b: int, effects: _Effects, metrics: tuple[str, ...], up_only: bool = False
    ) -> tuple[tuple[str, ...], str | None, str | None, str] | None:
        """Kinds that act on the volume of every segment or one segment, whatever the archetype."""
        rng = self.rng
        names = self.segments.names
        dim = self.dimension
        if kind == "spike":
            lift = rng.uniform(0.6, 2.5)
            effects.traffic[:, a:b] *= 1.0 + lift
            return metrics, None, None, f"every {dim} x{1.0 + lift:.2f}"
        if kind == "dip":
            drop = rng.uniform(0.35, 0.7)
            effects.traffic[:, a:b] *= 1.0 - drop
            return metrics, None, None, f"every {dim} -{drop:.0%}"
        if kind == "source_crater":
            target = self.segments.big(rng)
            drop = rng.uniform(0.7, 1.0)
            effects.traffic[target, a:b] *= 1.0 - drop
            return metrics, dim, names[target], f"{dim} {names[target]} -{drop:.0%}"
        if kind == "drift":
            depth = rng.uniform(0.3, 0.5)
            ramp = np.arange(1, b - a + 1, dtype=np.float64) / (b - a)
            effects.traffic[:, a:b] *= 1.0 - depth * ramp
            return metrics, None, None, f"slow decline of every {dim} to -{depth:.0%}, then back"
        if kind == "missing_data":
            effects.present[a:b] = False
            return metrics, None, None, f"no rows for {b - a} periods"
        if kind == "level_shift":
            size = rng.uniform(0.2, 0.4)
            factor = 1.0 + size if up_only or rng.random() < 0.5 else 1.0 - size
            change = f"{factor - 1.0:+.0%} from then on"
            if rng.random() < 0.5:
                effects.traffic[:, a:] *= factor
                return metrics, None, None, f"every {dim} {change}"
            target = self.segments.big(rng)
            effects.traffic[target, a:] *= factor
            return metrics, dim, names[target], f"{dim} {names[target]} {change}"
        return None

    def _files(self, lines: Sequence[Sequence[str]], header: str) -> list[tuple[int, bytes]]:
        """Group per-period lines into files (``lines[period]``); files without a row are not dropped."""
        grain = self.plan.grain
        step = grain.days_per_file * grain.per_day
        compressed = self.plan.extension.endswith(".gz")
        out = []
        for first in range(0, self.calendar.periods, step):
            rows = [line for period in lines[first : first + step] for line in period]
            if not rows:
                continue
            text = header + "".join(rows)
            data = text.encode("utf-8")
            out.append((first, gzip.compress(data, compresslevel=6, mtime=0) if compressed else data))
        return out


def _metric_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "bad_direction": _DIRECTIONS[name],
        "min_abs_change": _MIN_ABS_CHANGE,
        "min_volume": _MIN_VOLUME,
    }


class _MetricsModel(_Model):
    """Metrics shape: one row per segment and period with integer counts and 2-decimal money."""

    metric_names: tuple[str, ...] = ()

    def _volume(self, daily: float, effects: _Effects) -> FloatArray:
        """Expected volume per segment and period for a total of ``daily`` a day."""
        per_period = daily / self.plan.grain.per_day
        return np.asarray(
            per_period * self.segments.shares[:, None] * self.seasonal.shape * effects.traffic,
            dtype=np.float64,
        )

    def _ngr(self, deposits: IntArray, mean_amount: FloatArray) -> FloatArray:
        """Money = deposits x a lognormal mean amount per period, less chargebacks.

        The amount's spread shrinks with the number of deposits it averages (from about 0.6 for one
        deposit to 0.1 for many); about 1 % of deposits come back as a chargeback of ~1.5 amounts.
        """
        sigma = 0.1 + 0.5 / np.sqrt(deposits + 1.0)
        amount = self.rng.lognormal(np.log(mean_amount)[:, None], sigma)
        chargebacks = self.rng.binomial(deposits, 0.01)
        lost = chargebacks * 1.5 * mean_amount[:, None] * self.rng.lognormal(0.0, 0.3, size=deposits.shape)
        return np.asarray(np.round(deposits * amount - lost, 2) + 0.0, dtype=np.float64)

    def _render_metrics(
        self, columns: Mapping[str, npt.NDArray[Any]], present: BoolArray
    ) -> list[tuple[int, bytes]]:
        names = self.segments.names
        jsonl = ".jsonl" in self.plan.extension
        texts = {
            metric: [
                [f"{v:.2f}" for v in row] if metric in _MONEY else [str(v) for v in row]
                for row in values.tolist()
            ]
            for metric, values in columns.items()
        }
        per_segment: list[list[str]] = []
        for s, name in enumerate(names):
            cells = list(zip(*(texts[m][s] for m in self.metric_names), strict=True))
            if jsonl:
                keys = [f'"{m}": ' for m in self.metric_names]
                lead = f'", "{self.dimension}": "{name}", '
                per_segment.append(
                    [
                        f'{{"timestamp": "{ts}{lead}'
                        + ", ".join(k + v for k, v in zip(keys, row, strict=True))
                        + "}\n"
                        for ts, row in zip(self.calendar.text, cells, strict=True)
                    ]
                )
            else:
                per_segment.append(
                    [
                        f"{ts},{name},{','.join(row)}\n"
                        for ts, row in zip(self.calendar.text, cells, strict=True)
                    ]
                )
        lines = [
            [rows[t] for rows in per_segment] if present[t] else [] for t in range(self.calendar.periods)
        ]
        header = "" if jsonl else ",".join(("timestamp", self.dimension, *self.metric_names)) + "\n"
        return self._files(lines, header)


class _Ads(_MetricsModel):
    dimension = "source"
    metric_names = _ADS_METRICS

    def _make_segments(self) -> _Segments:
        rng = self.rng
        grain = self.plan.grain
        self.daily_clicks = float(np.exp(rng.uniform(np.log(20_000), np.log(120_000))))
        handful = rng.uniform(2.0, 10.0)  # clicks per period of the low-volume source
        low_share = handful * grain.per_day / self.daily_clicks
        segments = _segments(rng, "source", _SOURCES, int(rng.integers(3, 7)), low_share)
        count = len(segments.names)
        self.signup_rate = rng.uniform(0.04, 0.12, size=count)
        self.ftd_rate = rng.uniform(0.15, 0.35, size=count)
        self.redeposits = rng.uniform(0.2, 0.6, size=count)
        self.amount = rng.uniform(25.0, 80.0, size=count)
        return segments

    def config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "timestamp_field": "timestamp",
            "metrics": [_metric_spec(m) for m in _ADS_METRICS],
            "ratios": [
                {
                    "name": name,
                    "numerator": numerator,
                    "denominator": denominator,
                    "bad_direction": "down",
                    "min_abs_change": 0.0,
                    "min_volume": _RATIO_MIN_VOLUME,
                }
                for name, numerator, denominator in _ADS_RATIOS
            ],
        }

    def inject(self, item: _Item, effects: _Effects) -> tuple[tuple[str, ...], str | None, str | None, str]:
        a, b = item.start, item.start + item.length
        rng = self.rng
        if item.kind == "missing_data":
            effects.present[a:b] = False
            everything = (*_ADS_METRICS, *(r[0] for r in _ADS_RATIOS))
            return everything, None, None, f"no rows for {b - a} periods"
        if item.kind == "suspicious_traffic":
            target = self.segments.big(rng)
            factor = rng.uniform(2.0, 4.0)
            effects.bots[target, a:b] += factor - 1.0
            name = self.segments.names[target]
            note = f"source {name} clicks x{factor:.2f}, signups and ftds unchanged (bots)"
            return ("clicks", "conversion", "signup_rate"), "source", name, note
        if item.kind == "conversion_crater":
            drop = rng.uniform(0.6, 0.9)
            effects.conversion[:, a:b] *= 1.0 - drop
            return ("ftds", "conversion", "deposits", "ngr"), None, None, f"ftds -{drop:.0%}, clicks flat"
        common = self._common(item.kind, a, b, effects, _ADS_METRICS)
        if common is None:
            raise ValueError(f"ads scenarios cannot carry {item.kind!r} windows")
        return common

    def render(self, effects: _Effects) -> list[tuple[int, bytes]]:
        rng = self.rng
        expected = self._volume(self.daily_clicks, effects)
        organic = _counts(rng, expected, self.plan.grain.gamma_shape)
        bots = rng.poisson(expected * effects.bots).astype(np.int64)
        signups = rng.binomial(organic, self.signup_rate[:, None])
        ftds = rng.binomial(signups, np.clip(self.ftd_rate[:, None] * effects.conversion, 0.0, 1.0))
        deposits = ftds + rng.poisson(self.redeposits[:, None] * ftds)
        self.notes.update(
            daily_clicks=round(self.daily_clicks, 1),
            signup_rate=[round(float(v), 4) for v in self.signup_rate],
            ftd_rate=[round(float(v), 4) for v in self.ftd_rate],
            mean_amount_eur=[round(float(v), 2) for v in self.amount],
        )
        columns = {
            "clicks": organic + bots,
            "signups": signups,
            "ftds": ftds,
            "deposits": deposits,
            "ngr": self._ngr(deposits, self.amount),
        }
        return self._render_metrics(columns, effects.present)


class _Revenue(_MetricsModel):
    dimension = "country"
    metric_names = _REVENUE_METRICS

    def _make_segments(self) -> _Segments:
        rng = self.rng
        grain = self.plan.grain
        self.daily_deposits = float(np.exp(rng.uniform(np.log(2_000), np.log(20_000))))
        handful = rng.uniform(2.0, 10.0)  # deposits per period of the low-volume country
        low_share = handful * grain.per_day / self.daily_deposits
        segments = _segments(rng, "country", _COUNTRIES, int(rng.integers(3, 7)), low_share)
        count = len(segments.names)
        self.signups_per_deposit = rng.uniform(0.3, 0.8, size=count)
        self.amount = rng.uniform(20.0, 120.0, size=count)
        return segments

    def _weekend(self) -> tuple[float, float]:
        return (1.05, 1.25)  # people play more at the weekend

    def config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "timestamp_field": "timestamp",
            "metrics": [_metric_spec(m) for m in _REVENUE_METRICS],
        }

    def inject(self, item: _Item, effects: _Effects) -> tuple[tuple[str, ...], str | None, str | None, str]:
        common = self._common(item.kind, item.start, item.start + item.length, effects, _REVENUE_METRICS)
        if common is None:
            raise ValueError(f"revenue scenarios cannot carry {item.kind!r} windows")
        return common

    def render(self, effects: _Effects) -> list[tuple[int, bytes]]:
        rng = self.rng
        shape = self.plan.grain.gamma_shape
        expected = self._volume(self.daily_deposits, effects)
        deposits = _counts(rng, expected * effects.conversion, shape)
        signups = _counts(rng, expected * self.signups_per_deposit[:, None], shape)
        self.notes.update(
            daily_deposits=round(self.daily_deposits, 1),
            signups_per_deposit=[round(float(v), 4) for v in self.signups_per_deposit],
            mean_amount_eur=[round(float(v), 2) for v in self.amount],
        )
        columns = {"signups": signups, "deposits": deposits, "ngr": self._ngr(deposits, self.amount)}
        return self._render_metrics(columns, effects.present)


class _Tickets(_Model):
    """Events shape: one row per support ticket; the low-volume segment is the ``vip`` queue."""

    dimension = "queue"
    shape = "events"

    def _make_segments(self) -> _Segments:
        rng = self.rng
        grain = self.plan.grain
        low, high = (300.0, 1500.0) if grain.name == "hour" else (100.0, 600.0)
        self.daily_tickets = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        handful = rng.uniform(0.5, 2.0) if grain.per_day > 1 else rng.uniform(2.0, 8.0)
        low_share = handful * grain.per_day / self.daily_tickets
        names = [*_QUEUES, _LOW_QUEUE]
        segments = _segments(rng, "queue", names, len(names), low_share, fixed=names)
        jitter = rng.uniform(0.8, 1.2, size=(len(names), len(_TAGS)))
        self.tag_probability = np.clip(np.array(_TAG_PROBABILITY) * jitter, 0.0, 0.9)
        return segments

    def _weekend(self) -> tuple[float, float]:
        return (0.55, 0.8)

    def config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "timestamp_field": "created_at",
            "count_metric": "tickets",
            "tags_field": "tags",
            "tags_separator": "|",
            "rates": [
                {
                    "name": "high_priority_rate",
                    "field": "priority",
                    "values": ["high", "urgent"],
                    "bad_direction": "up",
                    "min_abs_change": 0.05,
                    "min_volume": _MIN_VOLUME,
                }
            ],
        }

    def inject(self, item: _Item, effects: _Effects) -> tuple[tuple[str, ...], str | None, str | None, str]:
        a, b = item.start, item.start + item.length
        rng = self.rng
        if item.kind == "missing_data":
            effects.present[a:b] = False
            return ("tickets", "high_priority_rate"), None, None, f"no rows for {b - a} periods"
        if item.kind == "ticket_surge":
            factor = rng.uniform(3.0, 6.0)
            if rng.random() < 0.5:
                queue = self.segments.big(rng)
                effects.surges.append((a, b, queue, None, factor))
                name = self.segments.names[queue]
                return ("tickets",), "queue", name, f"queue {name} tickets x{factor:.2f}"
            marginal = self.segments.shares @ self.tag_probability
            candidates = [t for t, share in enumerate(marginal) if share >= 0.15] or [
                int(np.argmax(marginal))
            ]
            tag = candidates[int(rng.integers(0, len(candidates)))]
            effects.surges.append((a, b, None, tag, factor))
            return ("tickets",), "tag", _TAGS[tag], f"tickets tagged {_TAGS[tag]} x{factor:.2f}"
        if item.kind in ("spike", "level_shift"):
            common = self._common(item.kind, a, b, effects, ("tickets",), up_only=True)
            assert common is not None
            return common
        raise ValueError(f"ticket scenarios cannot carry {item.kind!r} windows")

    def render(self, effects: _Effects) -> list[tuple[int, bytes]]:
        rng = self.rng
        grain = self.plan.grain
        periods = self.calendar.periods
        per_period = self.daily_tickets / grain.per_day
        expected = per_period * self.segments.shares[:, None] * self.seasonal.shape * effects.traffic
        counts = _counts(rng, np.asarray(expected, dtype=np.float64), grain.gamma_shape)
        queue_of = [np.repeat(np.full(periods, q), counts[q]) for q in range(len(counts))]
        period_of = [np.repeat(np.arange(periods), counts[q]) for q in range(len(counts))]
        forced_tag = [np.full(int(counts.sum()), -1)]
        for a, b, surge_queue, tag, factor in effects.surges:
            if surge_queue is not None:
                extra = rng.poisson((factor - 1.0) * expected[surge_queue, a:b])
                queues = np.full(int(extra.sum()), surge_queue)
                forced = np.full(int(extra.sum()), -1)
            else:
                assert tag is not None
                weight = expected[:, a:b] * self.tag_probability[:, tag][:, None]
                extra = rng.poisson((factor - 1.0) * weight.sum(axis=0))
                share = self.segments.shares * self.tag_probability[:, tag]
                queues = rng.choice(len(share), size=int(extra.sum()), p=share / share.sum())
                forced = np.full(int(extra.sum()), tag)
            queue_of.append(queues.astype(np.int64))
            period_of.append(np.repeat(np.arange(a, b), extra))
            forced_tag.append(forced.astype(np.int64))
        queue = np.concatenate(queue_of).astype(np.int64)
        period = np.concatenate(period_of).astype(np.int64)
        tagged = np.concatenate(forced_tag)
        keep = effects.present[period]
        queue, period, tagged = queue[keep], period[keep], tagged[keep]
        total = len(queue)
        second = rng.integers(0, grain.seconds, size=total)
        priority = rng.choice(len(_PRIORITIES), size=total, p=_PRIORITY_SHARE)
        has_tag = rng.random((total, len(_TAGS))) < self.tag_probability[queue]
        has_tag[np.arange(total)[tagged >= 0], tagged[tagged >= 0]] = True
        mask = has_tag.astype(np.int64) @ (1 << np.arange(len(_TAGS)))
        tag_text = [" | ".join(t for i, t in enumerate(_TAGS) if m >> i & 1) for m in range(1 << len(_TAGS))]
        order = np.lexsort((second, period))
        period, second = period[order], second[order]
        created = _timestamps(period * grain.seconds + second, self.plan.suffix)
        prefix = f"T{zlib.crc32(self.plan.integration_id.encode()) % 1000:03d}"
        names = self.segments.names
        jsonl = ".jsonl" in self.plan.extension
        lines: list[list[str]] = [[] for _ in range(periods)]
        for number, (p, ts, q, pr, m) in enumerate(
            zip(
                period.tolist(),
                created,
                queue[order].tolist(),
                priority[order].tolist(),
                mask[order].tolist(),
                strict=True,
            ),
            start=1,
        ):
            if jsonl:
                lines[p].append(
                    f'{{"created_at": "{ts}", "ticket_id": "{prefix}-{number:07d}", "queue": "{names[q]}", '
                    f'"priority": "{_PRIORITIES[pr]}", "tags": "{tag_text[m]}"}}\n'
                )
            else:
                lines[p].append(f"{ts},{prefix}-{number:07d},{names[q]},{_PRIORITIES[pr]},{tag_text[m]}\n")
        self.notes.update(
            daily_tickets=round(self.daily_tickets, 1),
            tag_share=[round(float(v), 4) for v in self.segments.shares @ self.tag_probability],
        )
        header = "" if jsonl else "created_at,ticket_id,queue,priority,tags\n"
        return self._files(lines, header)
