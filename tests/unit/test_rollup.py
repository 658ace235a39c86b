"""The hourly roll-up of 5-minute integrations: which hours it scores, what it sums, what it remembers
between syncs, and what it catches that five minutes cannot."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from kpi_sentinel.alerts import build_alerts
from kpi_sentinel.config import IntegrationConfig, MetricSpec, RateSpec, RatioSpec
from kpi_sentinel.parsing import ValidRow
from kpi_sentinel.quality.baselines import RollingZScore
from kpi_sentinel.scoring import (
    STATE_FORMAT,
    IntegrationState,
    ScoredPoint,
    aggregate,
    rollup_config,
)

FIVE, HOUR = 300, 3600
T0 = datetime(2026, 9, 1, tzinfo=UTC)
H0 = int(T0.timestamp()) // HOUR  # hour index of T0
ADS = IntegrationConfig(
    "acme-ads",
    granularity_seconds=FIVE,
    season_length=288,
    dimensions=("source",),
    metrics=(MetricSpec("clicks"), MetricSpec("ftds", "down", min_volume=10.0)),
    ratios=(RatioSpec("conversion", "ftds", "clicks"),),
)
TICKETS = IntegrationConfig(
    "acme-support",
    shape="events",
    timestamp_field="created_at",
    granularity_seconds=FIVE,
    season_length=288,
    count_metric="tickets",
    rates=(RateSpec("urgent_rate", "priority", ("urgent",)),),
)


def _rows(start: datetime, periods: int, ftds: float = 2.0, first_row: int = 1) -> list[ValidRow]:
    """Two sources a period: clicks 100 and 50, FTDs ``ftds`` and 1."""
    rows, n = [], first_row
    for k in range(periods):
        when = start + timedelta(seconds=FIVE * k)
        for source, clicks, converted in (("google-cpc", 100.0, ftds), ("telegram-push", 50.0, 1.0)):
            rows.append(ValidRow(n, when, {"source": source}, {"clicks": clicks, "ftds": converted}))
            n += 1
    return rows


def _score(
    state: IntegrationState, rows: Iterable[ValidRow], calendar: Iterable[int] = ()
) -> list[ScoredPoint]:
    agg = aggregate(list(rows), state.config, state.granularity, state.known_values())
    return state.score(agg, frozenset(calendar)).rollup_points


def _observed(points: list[ScoredPoint], hour: int) -> dict[tuple[str, str, str], float]:
    return {p.series: p.observed for p in points if p.period == hour}


# --- which integrations have one, and its config ------------------------------------------------------------


def test_given_a_five_minute_config_then_the_rollup_is_hourly_with_the_season_in_hours() -> None:
    hourly = rollup_config(ADS)

    assert hourly is not None
    assert (hourly.granularity_seconds, hourly.season, hourly.confirm) == (HOUR, 24, 1)
    assert hourly.warmup == 48  # two seasons of hours after the seeding one
    assert hourly.alert_threshold == 3.5  # the hourly default, as the integration set none
    assert (hourly.metrics, hourly.ratios, hourly.dimensions) == (ADS.metrics, ADS.ratios, ADS.dimensions)


def test_given_an_explicit_threshold_or_warmup_then_the_rollup_keeps_them_in_its_units() -> None:
    hourly = rollup_config(replace(ADS, threshold=5.0, warmup=576))

    assert hourly is not None
    assert (hourly.alert_threshold, hourly.warmup) == (5.0, 48)


@pytest.mark.parametrize(
    "config",
    [
        replace(ADS, granularity_seconds=HOUR, season_length=168),
        replace(ADS, granularity_seconds=86400, season_length=7),
        replace(ADS, season_length=100),  # not whole hours
        replace(ADS, season_length=12),  # one hour: no season left to compare with
    ],
)
def test_given_other_granularities_or_seasons_then_there_is_no_rollup(config: IntegrationConfig) -> None:
    assert rollup_config(config) is None
    assert IntegrationState(config, config.granularity_seconds or FIVE).rollup is None


def test_given_a_baseline_detector_then_its_state_keeps_no_rollup() -> None:
    state = IntegrationState(ADS, FIVE, lambda c: RollingZScore(season_length=c.season))

    assert state.rollup is None
    assert _score(state, _rows(T0, 24)) == []


# --- what an hour is ----------------------------------------------------------------------------------------


def test_given_a_whole_hour_then_counts_are_summed_and_ratios_are_sums_over_sums() -> None:
    points = _score(IntegrationState(ADS, FIVE), _rows(T0, 12, ftds=3.0))

    hour = _observed(points, H0)
    assert hour[("clicks", "", "")] == 12 * 150.0
    assert hour[("ftds", "", "")] == 12 * 4.0
    assert hour[("clicks", "source", "telegram-push")] == 12 * 50.0
    assert hour[("conversion", "", "")] == pytest.approx(48.0 / 1800.0)
    assert hour[("conversion", "source", "google-cpc")] == pytest.approx(36.0 / 1200.0)
    assert {p.period for p in points} == {H0}  # complete at its last period: no need to wait


def test_given_an_hour_split_over_two_syncs_and_a_restart_then_it_is_scored_once_whole() -> None:
    state = IntegrationState(ADS, FIVE)
    rows = _rows(T0, 12)

    assert _score(state, rows[:14]) == []  # 7 periods: the hour is open
    restored = IntegrationState.from_bytes(state.to_bytes())
    assert restored.pending == state.pending
    points = _score(restored, rows[14:])

    assert _observed(points, H0)[("clicks", "", "")] == 1800.0
    assert restored.rollup is not None
    assert restored.rollup.last_period == H0


def test_given_a_metrics_hour_with_a_missing_period_then_it_is_a_gap_not_a_drop() -> None:
    state = IntegrationState(ADS, FIVE)
    rows = [r for r in _rows(T0, 24) if r.timestamp != T0 + timedelta(minutes=35)]

    points = _score(state, rows)

    assert {p.period for p in points} == {H0 + 1}  # the first hour, missing 00:35, is skipped
    assert state.rollup is not None
    assert state.rollup.last_period == H0 + 1


def test_given_an_events_hour_with_a_quiet_period_then_it_is_scored_when_the_next_hour_starts() -> None:
    state = IntegrationState(TICKETS, FIVE)
    times = [T0 + timedelta(minutes=m) for m in range(0, 60, 5) if m != 35]  # no ticket at 00:35
    rows = [
        ValidRow(n, when, {"priority": "urgent" if n % 4 == 0 else "normal"}, {})
        for n, when in enumerate(times, start=1)
    ]

    assert _score(state, rows) == []  # 11 periods seen: the hour may still get its 00:35
    points = _score(state, [ValidRow(99, T0 + timedelta(hours=1), {"priority": "normal"}, {})])

    hour = _observed(points, H0)
    assert hour[("tickets", "", "")] == 11.0
    assert hour[("urgent_rate", "", "")] == pytest.approx(2 / 11)


def test_given_late_periods_then_they_do_not_reach_the_rollup() -> None:
    state = IntegrationState(ADS, FIVE)
    _score(state, _rows(T0 + timedelta(minutes=30), 6))  # 00:30-00:55: the hour's second half
    late = _rows(T0, 6, ftds=50.0, first_row=100)  # 00:00-00:25 arrives after it

    points = _score(state, late + _rows(T0 + timedelta(hours=1), 12, first_row=200))

    assert state.pending.hour == -1
    assert H0 not in {p.period for p in points}  # half an hour of a metrics integration: a gap
    assert _observed(points, H0 + 1)[("ftds", "", "")] == 36.0  # the late FTDs were counted nowhere


def test_given_a_calendar_period_then_its_hour_is_scored_but_not_learned() -> None:
    state = IntegrationState(ADS, FIVE)
    assert state.rollup is not None
    _score(state, _rows(T0, 24 * 12))  # a day: the baselines are seeded
    learned = state.rollup.detector.count_.copy()
    holiday = int((T0 + timedelta(days=1, minutes=20)).timestamp()) // FIVE

    points = _score(state, _rows(T0 + timedelta(days=1), 12, first_row=10_000), calendar=[holiday])

    assert {p.period for p in points} == {H0 + 24}
    np.testing.assert_array_equal(state.rollup.detector.count_, learned)


# --- the stored state ---------------------------------------------------------------------------------------


def _without_rollup(blob: bytes) -> bytes:
    """The blob as a release without the roll-up would have written it."""
    payload = zlib.decompress(blob[len(STATE_FORMAT) :])
    (meta_len,) = struct.unpack(">I", payload[:4])
    meta = json.loads(payload[4 : 4 + meta_len])
    rollup = meta.pop("rollup")
    kept = len(meta["arrays"]) - len(rollup["state"]["arrays"])
    size = sum(np.dtype(t).itemsize * int(np.prod(shape)) for t, shape in meta["arrays"][:kept])
    meta["arrays"] = meta["arrays"][:kept]
    arrays = payload[4 + meta_len : 4 + meta_len + size]
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    return STATE_FORMAT + zlib.compress(struct.pack(">I", len(meta_bytes)) + meta_bytes + arrays)


def test_given_a_saved_state_then_the_rollup_and_its_open_hour_restore_exactly() -> None:
    state = IntegrationState(ADS, FIVE)
    _score(state, _rows(T0, 2 * 288 + 5))
    blob = state.to_bytes()

    restored = IntegrationState.from_bytes(blob)

    assert restored.to_bytes() == blob
    assert restored.rollup is not None
    assert state.rollup is not None
    assert (restored.rollup.series, restored.rollup.last_period) == (
        state.rollup.series,
        state.rollup.last_period,
    )
    assert restored.pending.covered == 5
    following = _rows(T0 + timedelta(days=2, minutes=25), 40, first_row=50_000)
    a, b = _score(restored, following), _score(state, following)
    assert [(p.period, p.series, p.observed) for p in a] == [(p.period, p.series, p.observed) for p in b]
    np.testing.assert_allclose([p.score for p in a], [p.score for p in b], rtol=1e-4, atol=1e-4)


def test_given_a_state_saved_before_the_rollup_then_it_loads_and_starts_one() -> None:
    state = IntegrationState(ADS, FIVE)
    _score(state, _rows(T0, 30))

    restored = IntegrationState.from_bytes(_without_rollup(state.to_bytes()))

    assert restored.rollup is not None
    assert restored.rollup.series == []
    assert restored.pending.hour == -1
    np.testing.assert_array_equal(restored.detector.count_, state.detector.count_)


# --- what it catches ----------------------------------------------------------------------------------------

_CRATER_DAY = 6


def _few_ftds(seed: int) -> list[ValidRow]:
    """A week of 5-minute periods: clicks ~100 with a daily profile, 1-3 FTDs a period; on day 6
    the FTDs drop 85% from 06:05 to 06:55, near the day's peak (clicks flat)."""
    rng = np.random.default_rng(seed)
    rows, n = [], 1
    for k in range(7 * 288):
        when = T0 + timedelta(seconds=FIVE * k)
        profile = 1.0 + 0.5 * np.sin(2 * np.pi * (k % 288) / 288)
        crater = when.day == T0.day + _CRATER_DAY and when.hour == 6 and when.minute >= 5
        clicks = float(rng.poisson(100 * profile))
        ftds = float(rng.poisson(1.5 * profile * (0.15 if crater else 1.0)))
        rows.append(ValidRow(n, when, {"source": "google-cpc"}, {"clicks": clicks, "ftds": ftds}))
        n += 1
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_given_a_crater_of_a_few_ftds_a_period_then_the_hour_alerts_and_five_minutes_cannot(
    seed: int,
) -> None:
    state = IntegrationState(ADS, FIVE)
    agg = aggregate(_few_ftds(seed), ADS, FIVE, state.known_values())

    result = state.score(agg)

    assert state.rollup is not None
    crater_hour = H0 + 24 * _CRATER_DAY + 6
    fine = build_alerts(ADS, FIVE, result.points, "k")
    hourly = build_alerts(state.rollup.config, HOUR, result.rollup_points, "k", rollup=True)
    assert not [a for a in fine if a["metric"] == "ftds" and a["severity"] != "info"]  # under its floor
    ftds = {a["period_start"]: a for a in hourly if a["metric"] == "ftds" and a["severity"] != "info"}
    alert = ftds.pop(datetime.fromtimestamp(crater_hour * HOUR, tz=UTC).isoformat())
    assert len(ftds) <= 1  # 96 hours of Poisson noise scored: at most one false alarm
    assert (alert["granularity_seconds"], alert["period_end"]) == (
        HOUR, datetime.fromtimestamp((crater_hour + 1) * HOUR, tz=UTC).isoformat(),
    )  # fmt: skip
    assert alert["summary"].startswith("FTDs dropped")
    assert "in the hour vs the 1-day baseline" in alert["summary"]


def test_given_the_same_start_then_an_hourly_alert_and_a_five_minute_alert_have_different_ids() -> None:
    point = ScoredPoint(H0, ("ftds", "", ""), 2.0, 20.0, 10.0, 30.0, -6.0, True, 20.0, streak=-1)
    fine = replace(point, period=H0 * 12)

    hourly = build_alerts(rollup_config(ADS) or ADS, HOUR, [point], "k", rollup=True)
    five = build_alerts(replace(ADS, confirm_periods=1), FIVE, [fine], "k")

    assert hourly[0]["period_start"] == five[0]["period_start"]
    assert hourly[0]["alert_id"] != five[0]["alert_id"]
    assert hourly[0]["alert_id"].startswith("ewma-")


def test_given_a_slice_crater_in_the_rollup_then_the_slice_explains_but_never_alerts_alone() -> None:
    total = ScoredPoint(H0, ("clicks", "", ""), 1800.0, 1850.0, 1500.0, 2200.0, -0.5, True, 1800.0, streak=0)
    crater = ScoredPoint(
        H0, ("clicks", "source", "telegram-push"), 300.0, 600.0, 500.0, 700.0, -8.0, True, 300.0, streak=-1
    )
    hourly = rollup_config(ADS)
    assert hourly is not None

    assert build_alerts(hourly, HOUR, [total, crater], "k", rollup=True) == []
    alone = build_alerts(hourly, HOUR, [total, crater], "k")  # the same points at their own granularity
    assert [a["dimension_value"] for a in alone] == ["telegram-push"]
