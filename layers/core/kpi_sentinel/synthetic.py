"""Seeded, reproducible synthetic sync files with known incidents.

``demo_dataset()`` produces what three integrations would upload to the ingest bucket, one sync file
per integration per hour, each file holding exactly that hour's rows:

- ``acme-ads``: *metrics* shape, CSV (``.csv``). One row per traffic source per hour with ``clicks``,
  ``signups``, ``ftds``, ``deposits`` and ``ngr`` (EUR, 2 decimals). Known incident ``source_crater``:
  the ``telegram-push`` campaign breaks for 6 weekday daytime hours (clicks -80%, ftds/deposits/NGR
  about -85%). Known incident ``funnel_break`` on the last day: for 5 hours the signup rate of every
  source falls 30%, so signups, ftds, deposits and NGR all drop about 30% while clicks stay normal —
  a correlated break for the nightly isolation forest rather than one series far past its threshold.
- ``globex-traffic``: *metrics* shape, gzip JSON lines (``.jsonl.gz``). One object per campaign per
  hour with ``clicks``, ``signups``, ``ftds``. Known incident ``click_spike``: one campaign's clicks
  go x6 for 4 hours while signups and ftds stay normal (bot traffic).
- ``initech-support``: *events* shape, gzip CSV (``.csv.gz``). One row per support ticket. An hour
  without tickets still yields a header-only file, so a drop arrives every hour. Known incident
  ``ticket_surge``: ``payments`` tickets x4 for 5 hours, mostly tagged ``withdrawal`` and with a
  higher share of ``high``/``urgent`` priority.

The data has daily seasonality (night about 15% of peak), weekly seasonality (weekends lower), a slow
trend (+10% over 60 days) and noise that grows with volume (gamma-Poisson counts, binomial funnel).

Why it exists: the end-to-end demo needs data with incidents a person can check the alerts against;
tests need realistic, seeded inputs; benchmarks need many files of a known size. The same seed gives
byte-identical files (gzip is written with ``mtime=0``). Every integration draws from its own random
stream, derived from ``(seed, integration_id)``, so changing how one integration is generated never
changes another one's data. Incidents are placed on the calendar (not drawn at random): at least
21 days into the data so detectors are warmed up, on weekdays between 10:00 and 18:00 UTC, never
overlapping each other. Only the standard library and numpy are used.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DemoDataset",
    "Incident",
    "SyncFile",
    "demo_dataset",
    "incident_to_dict",
    "write_dataset",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GRANULARITY_SECONDS: Final = 3600
DEFAULT_START: Final = datetime(2026, 9, 1, tzinfo=UTC)
WARMUP: Final = timedelta(days=21)

ACME: Final = "acme-ads"
GLOBEX: Final = "globex-traffic"
INITECH: Final = "initech-support"

_HOURS_PER_DAY: Final = 24
_TREND_PER_HOUR: Final = 0.10 / (60 * _HOURS_PER_DAY)  # +10% over 60 days
_NIGHT_FLOOR: Final = 0.15  # night traffic as a share of the daily peak
_WEEKEND_FACTOR: Final = 0.75  # weekends about -25%


@dataclass(frozen=True)
class SyncFile:
    """One file as an integration uploads it to ``syncs/<integration_id>/...``."""

    key: str
    body: bytes
    period_start: datetime
    integration_id: str


@dataclass(frozen=True)
class Incident:
    """A known anomaly planted in the data; an alert on ``metric`` (and the slice) catches it."""

    integration_id: str
    kind: str
    metric: str
    dimension: str | None
    dimension_value: str | None
    start: datetime
    end: datetime  # last affected period, inclusive
    description: str


@dataclass(frozen=True)
class DemoDataset:
    files: list[SyncFile]
    incidents: list[Incident]
    start: datetime
    end: datetime  # exclusive
    granularity_seconds: int


@dataclass(frozen=True)
class _Source:
    name: str
    peak_clicks: float
    signup_rate: float
    ftd_rate: float
    deposit_value: float  # mean EUR of NGR per deposit
    peak_hour: float


# telegram-push carries about 40% of NGR; tiktok is the tiny source whose NGR is sometimes negative.
_ACME_SOURCES: Final = (
    _Source("google-cpc", 1200.0, 0.070, 0.25, 45.0, 15.0),
    _Source("telegram-push", 1800.0, 0.090, 0.25, 40.0, 17.0),
    _Source("facebook", 900.0, 0.060, 0.22, 38.0, 19.0),
    _Source("affiliates", 400.0, 0.100, 0.30, 55.0, 16.0),
    _Source("email", 150.0, 0.120, 0.30, 50.0, 11.0),
    _Source("tiktok", 50.0, 0.050, 0.20, 35.0, 20.0),
)
_GLOBEX_CAMPAIGNS: Final = (
    _Source("brand-search", 800.0, 0.080, 0.25, 0.0, 15.0),
    _Source("summer-promo", 500.0, 0.060, 0.20, 0.0, 18.0),
    _Source("retargeting", 300.0, 0.110, 0.30, 0.0, 16.0),
    _Source("partner-network", 150.0, 0.070, 0.25, 0.0, 14.0),
)
_SPIKE_CAMPAIGN: Final = "partner-network"
_CRATER_SOURCE: Final = "telegram-push"

_QUEUES: Final = ("payments", "account", "technical", "general")
_QUEUE_SHARE: Final = (0.30, 0.25, 0.25, 0.20)
_PRIORITIES: Final = ("low", "normal", "high", "urgent")
_PRIORITY_SHARE: Final = (0.35, 0.45, 0.15, 0.05)
_SURGE_PRIORITY_SHARE: Final = (0.05, 0.35, 0.38, 0.22)
_TAGS: Final = ("withdrawal", "kyc", "login", "bonus", "app-crash", "deposit")
# Relative weight of each tag (in _TAGS order) for tickets of each queue (in _QUEUES order).
_TAG_WEIGHTS: Final = (
    (5.0, 1.0, 0.2, 1.0, 0.2, 4.0),
    (0.5, 4.0, 4.0, 1.0, 0.3, 0.3),
    (0.2, 0.3, 3.0, 0.2, 5.0, 0.5),
    (1.0, 1.0, 1.0, 3.0, 1.0, 1.0),
)
_SURGE_TAG_WEIGHTS: Final = (40.0, 1.0, 0.1, 1.0, 0.1, 3.0)
_TAG_COUNT_SHARE: Final = (0.25, 0.45, 0.22, 0.08)  # 0, 1, 2 or 3 tags
_TICKETS_PEAK: Final = 60.0
_TICKETS_NIGHT_FLOOR: Final = 0.06  # support is quiet at night: some hours have no ticket at all


@dataclass(frozen=True)
class _Plan:
    integration_id: str
    kind: str
    metric: str
    dimension: str | None
    dimension_value: str | None
    target_day: float  # as a fraction of a 60-day dataset
    first_hour: int
    hours: int
    what: str


# In calendar order: each incident is placed after the previous one ends.
_PLANS: Final = (
    _Plan(
        GLOBEX,
        "click_spike",
        "clicks",
        "campaign",
        _SPIKE_CAMPAIGN,
        38 / 60,
        12,
        4,
        f"suspicious clicks: campaign {_SPIKE_CAMPAIGN} clicks x6 while signups and ftds stay normal",
    ),
    _Plan(
        ACME,
        "source_crater",
        "ngr",
        "source",
        _CRATER_SOURCE,
        45 / 60,
        11,
        6,
        f"broken push campaign: source {_CRATER_SOURCE} clicks -80%, ftds, deposits and NGR about -85%",
    ),
    _Plan(
        INITECH,
        "ticket_surge",
        "tickets",
        "queue",
        "payments",
        50 / 60,
        13,
        5,
        "withdrawal problems: payments tickets x4, mostly tagged withdrawal, more high/urgent priority",
    ),
    # On the last day, so the nightly isolation-forest retrain scores it: a correlated break (every
    # funnel metric about -30% at once, clicks normal) that no single series shows strongly.
    _Plan(
        ACME,
        "funnel_break",
        "signup_rate",
        None,
        None,
        59 / 60,
        10,
        5,
        "signup flow broken for part of the users: signups, ftds, deposits and NGR about -30% on every "
        "source while clicks stay normal",
    ),
)


@dataclass(frozen=True)
class _Calendar:
    starts: list[datetime]
    iso: list[str]  # period start as ISO 8601 with Z
    paths: list[str]  # "<YYYY>/<MM>/<DD>/<HH>"
    hour_of_day: IntArray
    weekend: npt.NDArray[np.bool_]
    day_index: IntArray  # whole days since the dataset start
    trend: FloatArray


def demo_dataset(days: int = 60, seed: int = 7, start: datetime | None = None) -> DemoDataset:
    """Hourly sync files of three integrations over ``days`` days from ``start`` (UTC, on the hour).

    Datasets shorter than the warm-up plus an incident window carry fewer (or no) incidents.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    start = start.astimezone(UTC)
    if start.minute or start.second or start.microsecond:
        raise ValueError("start must be on the hour")
    calendar = _calendar(start, days * _HOURS_PER_DAY)
    end = start + timedelta(days=days)
    incidents = _place_incidents(start, end)
    windows = {inc.kind: _window_mask(calendar, inc) for inc in incidents}
    files = [
        *_acme_files(_rng(seed, ACME), calendar, windows.get("source_crater"), windows.get("funnel_break")),
        *_globex_files(_rng(seed, GLOBEX), calendar, windows.get("click_spike")),
        *_initech_files(_rng(seed, INITECH), calendar, windows.get("ticket_surge")),
    ]
    files.sort(key=lambda f: (f.period_start, f.key))
    return DemoDataset(
        files=files, incidents=incidents, start=start, end=end, granularity_seconds=GRANULARITY_SECONDS
    )


def incident_to_dict(incident: Incident) -> dict[str, str | None]:
    """JSON-ready form of an incident, datetimes as ISO 8601 with Z."""
    return {
        "integration_id": incident.integration_id,
        "kind": incident.kind,
        "metric": incident.metric,
        "dimension": incident.dimension,
        "dimension_value": incident.dimension_value,
        "start": _iso(incident.start),
        "end": _iso(incident.end),
        "description": incident.description,
    }


def write_dataset(dataset: DemoDataset, folder: Path) -> None:
    """Write every file under ``folder/<key>`` and the incidents to ``folder/incidents.json``."""
    root = folder.resolve()
    for sync in dataset.files:
        target = (root / sync.key).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"key escapes the output folder: {sync.key!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sync.body)
    incidents = [incident_to_dict(inc) for inc in dataset.incidents]
    (root / "incidents.json").write_text(json.dumps(incidents, indent=2) + "\n", encoding="utf-8")


# --- calendar and incidents -------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rng(seed: int, integration_id: str) -> np.random.Generator:
    """An independent stream per integration: depends on the seed and the integration id only."""
    return np.random.default_rng([seed, zlib.crc32(integration_id.encode("utf-8"))])


def _calendar(start: datetime, hours: int) -> _Calendar:
    starts = [start + timedelta(hours=i) for i in range(hours)]
    return _Calendar(
        starts=starts,
        iso=[_iso(moment) for moment in starts],
        paths=[moment.strftime("%Y/%m/%d/%H") for moment in starts],
        hour_of_day=np.array([moment.hour for moment in starts], dtype=np.int64),
        weekend=np.array([moment.weekday() >= 5 for moment in starts], dtype=np.bool_),
        day_index=np.arange(hours, dtype=np.int64) // _HOURS_PER_DAY,
        trend=1.0 + _TREND_PER_HOUR * np.arange(hours, dtype=np.float64),
    )


def _place_incidents(start: datetime, end: datetime) -> list[Incident]:
    """Put each planned incident on the first weekday at or after its target day that fits."""
    days = (end - start) // timedelta(days=1)
    earliest = start + WARMUP
    incidents: list[Incident] = []
    midnight = start.replace(hour=0)
    for plan in _PLANS:
        day = max(round(days * plan.target_day), WARMUP.days)
        while True:
            first = midnight + timedelta(days=day, hours=plan.first_hour)
            last = first + timedelta(hours=plan.hours - 1)
            if last + timedelta(hours=1) > end:
                break
            if first >= earliest and first.weekday() < 5:
                incidents.append(
                    Incident(
                        integration_id=plan.integration_id,
                        kind=plan.kind,
                        metric=plan.metric,
                        dimension=plan.dimension,
                        dimension_value=plan.dimension_value,
                        start=first,
                        end=last,
                        description=(
                            f"{plan.integration_id}: {plan.what} "
                            f"({first:%Y-%m-%d %H:%M}-{last + timedelta(hours=1):%H:%M} UTC, "
                            f"{plan.hours} hours)"
                        ),
                    )
                )
                earliest = last + timedelta(days=1)  # keep incidents apart
                break
            day += 1
    return incidents


def _window_mask(calendar: _Calendar, incident: Incident) -> npt.NDArray[np.bool_]:
    return np.array([incident.start <= moment <= incident.end for moment in calendar.starts], dtype=np.bool_)


def _daily_profile(hour_of_day: IntArray, peak_hour: float, floor: float) -> FloatArray:
    """1.0 at ``peak_hour``, ``floor`` twelve hours away, smooth in between."""
    phase = 2.0 * np.pi * (hour_of_day.astype(np.float64) - peak_hour) / _HOURS_PER_DAY
    bump = ((1.0 + np.cos(phase)) / 2.0) ** 1.5
    return np.asarray(floor + (1.0 - floor) * bump, dtype=np.float64)


def _expected_level(
    rng: np.random.Generator, calendar: _Calendar, peak: float, peak_hour: float, floor: float
) -> FloatArray:
    """Seasonal expected volume per hour, with a day-to-day wobble shared by the whole day."""
    daily_wobble = rng.lognormal(0.0, 0.05, size=int(calendar.day_index[-1]) + 1)
    weekly = np.where(calendar.weekend, _WEEKEND_FACTOR, 1.0)
    level = peak * _daily_profile(calendar.hour_of_day, peak_hour, floor) * weekly * calendar.trend
    return np.asarray(level * daily_wobble[calendar.day_index], dtype=np.float64)


def _counts(rng: np.random.Generator, expected: FloatArray, shape: float = 60.0) -> IntArray:
    """Gamma-Poisson (negative binomial) counts: variance grows faster than the mean."""
    rate = expected * rng.gamma(shape, 1.0 / shape, size=expected.shape)
    return rng.poisson(rate).astype(np.int64)


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


# --- acme-ads: CSV metrics ----------------------------------------------------------------------------

_ACME_HEADER: Final = "timestamp,source,clicks,signups,ftds,deposits,ngr\n"


def _acme_files(
    rng: np.random.Generator,
    calendar: _Calendar,
    crater: npt.NDArray[np.bool_] | None,
    funnel: npt.NDArray[np.bool_] | None = None,
) -> list[SyncFile]:
    hours = len(calendar.starts)
    per_source: list[list[str]] = []
    for source in _ACME_SOURCES:
        expected = _expected_level(rng, calendar, source.peak_clicks, source.peak_hour, _NIGHT_FLOOR)
        signup_rate = np.full(hours, source.signup_rate)
        if crater is not None and source.name == _CRATER_SOURCE:
            expected = np.where(crater, expected * 0.20, expected)  # clicks -80%
            signup_rate = np.where(crater, signup_rate * 0.75, signup_rate)  # ftds and NGR about -85%
        if funnel is not None:
            signup_rate = np.where(funnel, signup_rate * 0.45, signup_rate)  # the funnel -55%, clicks normal
        clicks = _counts(rng, expected)
        signups = rng.binomial(clicks, signup_rate)
        ftds = rng.binomial(signups, source.ftd_rate)
        deposits = ftds + rng.poisson(0.4 * ftds)
        value = rng.normal(source.deposit_value * deposits, 0.5 * source.deposit_value * np.sqrt(deposits))
        chargeback = (rng.random(hours) < 0.03) * rng.exponential(1.5 * source.deposit_value, size=hours)
        ngr = np.round(value - chargeback, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
        per_source.append(
            [
                f"{ts},{source.name},{c},{s},{f},{d},{n:.2f}\n"
                for ts, c, s, f, d, n in zip(
                    calendar.iso,
                    clicks.tolist(),
                    signups.tolist(),
                    ftds.tolist(),
                    deposits.tolist(),
                    ngr.tolist(),
                    strict=True,
                )
            ]
        )
    files = []
    for i, path in enumerate(calendar.paths):
        body = _ACME_HEADER + "".join(rows[i] for rows in per_source)
        files.append(
            SyncFile(
                key=f"syncs/{ACME}/{path}.csv",
                body=body.encode("utf-8"),
                period_start=calendar.starts[i],
                integration_id=ACME,
            )
        )
    return files


# --- globex-traffic: gzip JSON lines metrics ------------------------------------------------------------


def _globex_files(
    rng: np.random.Generator, calendar: _Calendar, spike: npt.NDArray[np.bool_] | None
) -> list[SyncFile]:
    per_campaign: list[list[str]] = []
    for campaign in _GLOBEX_CAMPAIGNS:
        expected = _expected_level(rng, calendar, campaign.peak_clicks, campaign.peak_hour, _NIGHT_FLOOR)
        clicks = _counts(rng, expected)
        signups = rng.binomial(clicks, campaign.signup_rate)
        ftds = rng.binomial(signups, campaign.ftd_rate)
        if spike is not None and campaign.name == _SPIKE_CAMPAIGN:
            bot_clicks = rng.poisson(np.where(spike, 5.0 * expected, 0.0))  # x6 in total; bots never sign up
            clicks = clicks + bot_clicks
        name = json.dumps(campaign.name)
        per_campaign.append(
            [
                f'{{"timestamp": "{ts}", "campaign": {name}, "clicks": {c}, "signups": {s}, "ftds": {f}}}\n'
                for ts, c, s, f in zip(
                    calendar.iso, clicks.tolist(), signups.tolist(), ftds.tolist(), strict=True
                )
            ]
        )
    return [
        SyncFile(
            key=f"syncs/{GLOBEX}/{path}.jsonl.gz",
            body=_gzip("".join(rows[i] for rows in per_campaign)),
            period_start=calendar.starts[i],
            integration_id=GLOBEX,
        )
        for i, path in enumerate(calendar.paths)
    ]


# --- initech-support: gzip CSV events (tickets) ---------------------------------------------------------

_INITECH_HEADER: Final = "created_at,ticket_id,queue,priority,tags\n"


def _initech_files(
    rng: np.random.Generator, calendar: _Calendar, surge: npt.NDArray[np.bool_] | None
) -> list[SyncFile]:
    hours = len(calendar.starts)
    expected = _expected_level(rng, calendar, _TICKETS_PEAK, 15.0, _TICKETS_NIGHT_FLOOR)
    normal_counts = _counts(rng, expected)
    in_surge = np.zeros(hours, dtype=np.bool_) if surge is None else surge
    # Extra payments tickets on top of the normal ones: payments x4 in total.
    surge_counts = rng.poisson(np.where(in_surge, 3.0 * _QUEUE_SHARE[0] * expected, 0.0)).astype(np.int64)

    n_normal = int(normal_counts.sum())
    n_surge = int(surge_counts.sum())
    hour = np.concatenate(
        [np.repeat(np.arange(hours), normal_counts), np.repeat(np.arange(hours), surge_counts)]
    )
    queue = np.concatenate(
        [rng.choice(len(_QUEUES), size=n_normal, p=_QUEUE_SHARE), np.zeros(n_surge, dtype=np.int64)]
    )
    priority = np.concatenate(
        [
            rng.choice(len(_PRIORITIES), size=n_normal, p=_PRIORITY_SHARE),
            rng.choice(len(_PRIORITIES), size=n_surge, p=_SURGE_PRIORITY_SHARE),
        ]
    )
    tag_count = np.concatenate(
        [
            rng.choice(len(_TAG_COUNT_SHARE), size=n_normal, p=_TAG_COUNT_SHARE),
            rng.choice([1, 2], size=n_surge, p=[0.6, 0.4]),
        ]
    )
    # Tags without replacement, weighted by queue: Gumbel top-k over log weights.
    log_weights = np.log(np.array([*_TAG_WEIGHTS, _SURGE_TAG_WEIGHTS], dtype=np.float64))
    weight_row = np.concatenate([queue[:n_normal], np.full(n_surge, len(_QUEUES), dtype=np.int64)])
    keys = log_weights[weight_row] + rng.gumbel(size=(n_normal + n_surge, len(_TAGS)))
    tag_order = np.argsort(-keys, axis=1, kind="stable")
    second = rng.integers(0, GRANULARITY_SECONDS, size=n_normal + n_surge)

    order = np.lexsort((second, hour))
    lines_per_hour: list[list[str]] = [[] for _ in range(hours)]
    for ticket_number, (h, sec, q, p, k, tags) in enumerate(
        zip(
            hour[order].tolist(),
            second[order].tolist(),
            queue[order].tolist(),
            priority[order].tolist(),
            tag_count[order].tolist(),
            tag_order[order].tolist(),
            strict=True,
        ),
        start=1,
    ):
        created = calendar.starts[h] + timedelta(seconds=sec)
        tag_text = " | ".join(_TAGS[t] for t in tags[:k])
        lines_per_hour[h].append(
            f"{_iso(created)},INI-{ticket_number:07d},{_QUEUES[q]},{_PRIORITIES[p]},{tag_text}\n"
        )
    return [
        SyncFile(
            key=f"syncs/{INITECH}/{path}.csv.gz",
            body=_gzip(_INITECH_HEADER + "".join(lines_per_hour[i])),
            period_start=calendar.starts[i],
            integration_id=INITECH,
        )
        for i, path in enumerate(calendar.paths)
    ]
