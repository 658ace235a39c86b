"""Aggregation, the integration state, and alerts v1: severity, floors, grouping, summary, ids, schema, snoozes."""

from __future__ import annotations

import copy
import json
import math
import struct
import zlib
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from kpi_sentinel.adapters.memory import MemoryControl
from kpi_sentinel.alerts import alert_id, build_alerts, classify, contributors, slice_share, snooze_matches
from kpi_sentinel.config import (
    OTHER_SLICE,
    SLICE_MIN_SHARE,
    IntegrationConfig,
    MetricSpec,
    RatioSpec,
    infer_config,
)
from kpi_sentinel.parsing import ValidRow, parse_sync_key, read_table, validate_rows
from kpi_sentinel.scoring import STATE_FORMAT, IntegrationState, ScoredPoint, Series, aggregate

HOUR = 3600
T0 = datetime(2026, 9, 1, tzinfo=UTC)
P0 = int(T0.timestamp()) // HOUR  # period index of T0
SCHEMA = json.loads(files("kpi_sentinel").joinpath("schemas/alert-v1.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
NGR: Series = ("ngr", "", "")
ACME = IntegrationConfig(
    integration_id="acme-ads",
    granularity_seconds=HOUR,
    dimensions=("source",),
    metrics=(MetricSpec("ngr", "down"),),
)


def _row(number: int, when: datetime, values: Mapping[str, float], **dimensions: str) -> ValidRow:
    return ValidRow(row=number, timestamp=when, dimensions=dimensions, values=dict(values))


def _point(
    series: Series,
    observed: float,
    expected: float,
    score: float,
    *,
    ready: bool = True,
    volume: float | None = None,
    period: int = P0,
    streak: int | None = None,
    sustained: float = math.nan,
) -> ScoredPoint:
    """A scored point; by default its deviation is already confirmed (the second period out in a row)."""
    spread = abs(observed - expected) / max(abs(score), 1e-9)
    return ScoredPoint(
        period=period,
        series=series,
        observed=observed,
        expected=expected,
        lower=expected - 3 * spread,
        upper=expected + 3 * spread,
        score=score,
        ready=ready,
        volume=abs(observed) if volume is None else volume,
        streak=int(math.copysign(2, score)) if streak is None else streak,
        sustained=sustained,
    )


def _source(value: str) -> Series:
    return ("ngr", "source", value)


def _schema_errors(alert: Mapping[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(alert)]


# --- aggregate ----------------------------------------------------------------------------------------------


def test_given_metric_rows_when_aggregated_then_periods_hold_totals_slices_and_ratios() -> None:
    config = IntegrationConfig(
        "acme-ads",
        dimensions=("source",),
        metrics=(MetricSpec("clicks"), MetricSpec("ftds"), MetricSpec("ngr", "down")),
        ratios=(RatioSpec("conversion", "ftds", "clicks"),),
    )
    rows = [
        _row(1, T0 + timedelta(hours=10), {"clicks": 100, "ftds": 5, "ngr": 80}, source="google-cpc"),
        _row(
            2,
            T0 + timedelta(hours=10, minutes=30),
            {"clicks": 300, "ftds": 6, "ngr": -20},
            source="telegram-push",
        ),
        _row(3, T0 + timedelta(hours=11), {"clicks": 50, "ftds": 0, "ngr": 0}, source="google-cpc"),
        _row(
            4, T0 + timedelta(hours=11, minutes=5), {"clicks": 0, "ftds": 0, "ngr": 0}, source="telegram-push"
        ),
    ]
    known: dict[str, set[str]] = {}

    agg = aggregate(rows, config, HOUR, known)

    ten, eleven = agg.periods[P0 + 10], agg.periods[P0 + 11]
    assert sorted(agg.periods) == [P0 + 10, P0 + 11]
    assert (ten.rows, eleven.rows) == ([1, 2], [3, 4])
    assert ten.values[("clicks", "", "")] == 400
    assert ten.values[("clicks", "source", "google-cpc")] == 100
    assert ten.values[("clicks", "source", "telegram-push")] == 300
    assert ten.values[("ngr", "", "")] == 60
    assert ten.volumes[("ngr", "source", "telegram-push")] == 20  # a volume is never negative
    assert ten.values[("conversion", "", "")] == pytest.approx(11 / 400)
    assert ten.volumes[("conversion", "", "")] == 400  # a ratio's volume is its denominator
    assert ten.values[("conversion", "source", "telegram-push")] == pytest.approx(6 / 300)
    assert eleven.values[("conversion", "", "")] == 0.0
    assert ("conversion", "source", "telegram-push") not in eleven.values  # 0 / 0 is not a ratio
    assert agg.zero_fill_metrics == {"clicks", "ftds", "ngr"}
    assert known == {"source": {"google-cpc", "telegram-push"}}  # updated in place


def test_given_ticket_events_when_aggregated_then_counts_per_queue_tag_and_the_high_priority_rate() -> None:
    body = (
        b"created_at,ticket_id,queue,priority,tags\n"
        b"2026-09-01T13:02:11Z,T-1,payments,high,withdrawal | kyc\n"
        b"2026-09-01T13:10:00Z,T-2,payments,low,withdrawal\n"
        b"2026-09-01T13:25:00Z,T-3,account,Urgent,\n"
        b"2026-09-01T13:59:59Z,T-4,technical,normal,login | login\n"
        b"2026-09-01T14:00:00Z,T-5,payments,normal,deposit\n"
    )
    table = read_table(body, parse_sync_key("syncs/initech-support/t.csv"), 10**6)
    config = infer_config("initech-support", table.columns, table.sample())
    valid, rejected = validate_rows(table, config, "t.csv")

    agg = aggregate(valid, config, HOUR, {})

    assert (config.shape, config.count_metric, config.tags_field) == ("events", "tickets", "tags")
    assert rejected == []
    one = agg.periods[P0 + 13].values
    assert one[("tickets", "", "")] == 4
    assert one[("tickets", "queue", "payments")] == 2
    assert one[("tickets", "queue", "account")] == 1
    assert one[("tickets", "tag", "withdrawal")] == 2
    assert one[("tickets", "tag", "kyc")] == 1
    assert one[("tickets", "tag", "login")] == 1  # a tag repeated on one ticket counts once
    assert one[("high_priority_rate", "", "")] == pytest.approx(2 / 4)  # high and Urgent
    assert agg.periods[P0 + 14].values[("high_priority_rate", "", "")] == 0.0
    assert agg.zero_fill_metrics == {"tickets"}


def test_given_more_than_fifty_values_in_a_dimension_then_the_rest_are_counted_under_other() -> None:
    config = IntegrationConfig("acme-ads", dimensions=("source",), metrics=(MetricSpec("clicks"),))
    rows = [_row(n, T0, {"clicks": 1.0}, source=f"s{n:02d}") for n in range(60)]
    known: dict[str, set[str]] = {}

    first = aggregate(rows, config, HOUR, known).periods[P0].values
    later = aggregate(
        [_row(1, T0 + timedelta(hours=1), {"clicks": 7.0}, source="s55"),
         _row(2, T0 + timedelta(hours=1), {"clicks": 3.0}, source="s03")],
        config, HOUR, known,
    ).periods[P0 + 1].values  # fmt: skip

    slices = {v for (_, d, v) in first if d == "source"}
    assert slices == {f"s{n:02d}" for n in range(50)} | {OTHER_SLICE}
    assert first[("clicks", "source", OTHER_SLICE)] == 10
    assert first[("clicks", "", "")] == 60  # the total still counts everything
    assert len(known["source"]) == 50
    assert later[("clicks", "source", OTHER_SLICE)] == 7  # still a newcomer
    assert later[("clicks", "source", "s03")] == 3


# --- the integration state ------------------------------------------------------------------------------------


def _traffic_rows(days: int, seed: int = 5, start_row: int = 1, start: datetime = T0) -> list[ValidRow]:
    rng = np.random.default_rng(seed)
    rows, n = [], start_row
    for hour in range(days * 24):
        when = start + timedelta(hours=hour)
        for source, level in (("google-cpc", 300.0), ("telegram-push", 500.0)):
            clicks = float(rng.poisson(level * (0.3 + 0.7 * (when.hour >= 8))))
            ftds = float(rng.binomial(int(clicks), 0.05))
            rows.append(_row(n, when, {"clicks": clicks, "ftds": ftds}, source=source))
            n += 1
    return rows


_STATE_CONFIG = IntegrationConfig(
    "acme-ads",
    granularity_seconds=HOUR,
    season_length=24,
    dimensions=("source",),
    metrics=(MetricSpec("clicks"), MetricSpec("ftds", "down")),
    ratios=(RatioSpec("conversion", "ftds", "clicks"),),
)


def _score(state: IntegrationState, rows: list[ValidRow]) -> list[ScoredPoint]:
    return state.score(aggregate(rows, state.config, HOUR, state.known_values())).points


def _as_arrays(points: list[ScoredPoint]) -> dict[str, np.ndarray]:
    return {
        "key": np.array([f"{p.period}|{p.series}" for p in points]),
        **{
            f: np.array([getattr(p, f) for p in points])
            for f in ("observed", "expected", "lower", "upper", "score")
        },
        "ready": np.array([p.ready for p in points]),
    }


def test_given_a_saved_state_when_restored_then_it_scores_the_next_periods_the_same_way() -> None:
    history, following = _traffic_rows(4), _traffic_rows(1, seed=6, start=T0 + timedelta(days=4))
    original = IntegrationState(_STATE_CONFIG, HOUR)
    _score(original, history)
    original.remember("syncs/acme-ads/a.csv#1")
    blob = original.to_bytes()

    first, second = IntegrationState.from_bytes(blob), IntegrationState.from_bytes(blob)

    assert first.to_bytes() == blob  # a restored state saves to the same bytes
    assert (first.config, first.series, first.last_period, first.processed) == (
        original.config, original.series, original.last_period, ["syncs/acme-ads/a.csv#1"],
    )  # fmt: skip
    ratio = first.index[("conversion", "source", "google-cpc")]
    count = first.index[("clicks", "source", "google-cpc")]
    assert (first.detector.transform_[ratio], first.detector.transform_[count]) == (1, 0)  # identity, ssqrt
    # The phase window and chart weight are hyperparameters of the granularity, not stored state.
    assert (first.detector.phase_window, first.detector.chart_lambda) == (0, 0.25)  # hourly
    np.testing.assert_array_equal(first.detector.undo_, original.detector.undo_.astype(np.float32))
    a, b, c = (_as_arrays(_score(s, following)) for s in (first, second, original))
    for field in a:
        np.testing.assert_array_equal(a[field], b[field], err_msg=field)  # restores are identical
    assert a["ready"].all()
    np.testing.assert_array_equal(a["key"], c["key"])
    np.testing.assert_array_equal(a["ready"], c["ready"])
    for field in ("expected", "lower", "upper", "score"):
        # Baselines are stored as float32 (a smaller state item): equal to ~7 significant digits.
        np.testing.assert_allclose(a[field], c[field], rtol=1e-4, atol=1e-4, err_msg=field)


def _without_last_array(blob: bytes) -> bytes:
    """The blob as a release that did not store its last array yet would have written it."""
    payload = zlib.decompress(blob[len(STATE_FORMAT) :])
    (meta_len,) = struct.unpack(">I", payload[:4])
    meta = json.loads(payload[4 : 4 + meta_len])
    dtype, shape = meta["arrays"].pop()
    dropped = np.dtype(dtype).itemsize * math.prod(shape)
    arrays = payload[4 + meta_len : len(payload) - dropped]
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    return STATE_FORMAT + zlib.compress(struct.pack(">I", len(meta_bytes)) + meta_bytes + arrays)


def test_given_a_state_saved_before_imprints_were_kept_then_it_loads_with_nothing_to_undo() -> None:
    state = IntegrationState(_STATE_CONFIG, HOUR)
    _score(state, _traffic_rows(2))
    state.detector.undo_[3, 0] = 1.5  # an imprint the older release would not have stored

    restored = IntegrationState.from_bytes(_without_last_array(state.to_bytes()))
    kept = IntegrationState.from_bytes(state.to_bytes())

    assert kept.detector.undo_[3, 0] == 1.5  # today's blobs keep it

    assert restored.detector.undo_.shape == state.detector.baseline_.shape
    assert np.isnan(restored.detector.undo_).all()
    np.testing.assert_array_equal(restored.detector.cvar_, state.detector.cvar_)


def test_given_a_blob_that_is_not_a_state_then_restoring_it_fails_loudly() -> None:
    with pytest.raises(ValueError, match="bad header"):
        IntegrationState.from_bytes(b"{}")


def test_given_periods_at_or_before_the_last_scored_one_then_they_are_reported_late_and_not_scored() -> None:
    state = IntegrationState(_STATE_CONFIG, HOUR)
    _score(state, _traffic_rows(2))
    last = state.last_period
    count_before = state.detector.count_.copy()
    late_rows = [_row(901, T0 + timedelta(hours=40), {"clicks": 5000.0, "ftds": 0.0}, source="google-cpc")]
    new_rows = [_row(902, T0 + timedelta(hours=49), {"clicks": 300.0, "ftds": 15.0}, source="google-cpc")]

    result = state.score(aggregate(late_rows + new_rows, state.config, HOUR, state.known_values()))

    assert result.late_periods == {P0 + 40: [901]}
    assert result.late_values[P0 + 40][("clicks", "", "")] == 5000.0
    assert {p.period for p in result.points} == {P0 + 49}  # the gap (hour 48) is skipped, not invented
    assert result.scored_rows == 1
    assert state.last_period == P0 + 49 > last
    # Only the new period taught the detector: one more update for the series it observed.
    assert (state.detector.count_ - count_before).max() == 1


# --- classify: severity, direction, floors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "point", "verdict"),
    [
        (MetricSpec("ngr", "down"), _point(NGR, 80, 100, -4), ("warning", "down")),
        (MetricSpec("ngr", "down"), _point(NGR, 50, 100, -7), ("critical", "down")),
        (MetricSpec("ngr", "down"), _point(NGR, 70, 100, -6), ("critical", "down")),  # both at the edge
        (MetricSpec("ngr", "down"), _point(NGR, 90, 100, -7), ("warning", "down")),  # far out, small change
        (MetricSpec("ngr", "down"), _point(NGR, 50, 100, -5.9), ("warning", "down")),  # big change, < 2×
        (MetricSpec("ngr", "down"), _point(NGR, 95, 100, -2.99), None),
        (MetricSpec("ngr", "down"), _point(NGR, 150, 100, 4), ("info", "up")),  # good news is info
        (MetricSpec("ngr", "down"), _point(NGR, 500, 100, 40), ("info", "up")),
        (MetricSpec("tickets", "up"), _point(("tickets", "", ""), 150, 100, 4), ("warning", "up")),
        (MetricSpec("tickets", "up"), _point(("tickets", "", ""), 50, 100, -4), ("info", "down")),
        (MetricSpec("clicks", "both"), _point(("clicks", "", ""), 50, 100, -4), ("warning", "down")),
        (MetricSpec("clicks", "both"), _point(("clicks", "", ""), 150, 100, 4), ("warning", "up")),
        (MetricSpec("ngr", "down"), _point(NGR, 50, 0, 7), ("info", "up")),
        (MetricSpec("ngr", "up"), _point(NGR, 50, 0, 7), ("critical", "up")),  # no % when expected is 0
        (MetricSpec("ngr", "down"), _point(NGR, 10, 100, -9, ready=False), None),  # warm-up
        (MetricSpec("ngr", "down"), _point(NGR, 10, 100, math.nan), None),
    ],
)
def test_given_a_scored_point_when_classified_then_severity_follows_the_rules(
    spec: MetricSpec, point: ScoredPoint, verdict: tuple[str, str] | None
) -> None:
    assert classify(point, spec, threshold=3.0) == verdict


@pytest.mark.parametrize(
    ("spec", "point", "alerts"),
    [
        (MetricSpec("ngr", "down", min_abs_change=50), _point(NGR, 80, 100, -9), False),
        (MetricSpec("ngr", "down", min_abs_change=50), _point(NGR, 40, 100, -9), True),
        (MetricSpec("ngr", "down", min_volume=1000), _point(NGR, 50, 100, -9), False),  # a tiny segment
        (MetricSpec("ngr", "down", min_volume=100), _point(NGR, 50, 100, -9), True),
        (
            RatioSpec("conversion", "ftds", "clicks", min_volume=50),
            _point(("conversion", "", ""), 0.01, 0.05, -9, volume=20),  # 20 clicks: too few to judge
            False,
        ),
        (
            RatioSpec("conversion", "ftds", "clicks", min_volume=50),
            _point(("conversion", "", ""), 0.01, 0.05, -9, volume=500),
            True,
        ),
    ],
)
def test_given_floors_when_a_change_is_small_or_the_segment_tiny_then_it_does_not_alert(
    spec: MetricSpec | RatioSpec, point: ScoredPoint, alerts: bool
) -> None:
    assert (classify(point, spec, threshold=3.0) is not None) is alerts


@pytest.mark.parametrize(
    ("point", "confirm", "alerts"),
    [
        (_point(NGR, 60, 100, -4, streak=-1), 1, True),  # daily data: one period is enough
        (_point(NGR, 60, 100, -4, streak=-1), 2, False),  # sub-daily: one period out is not yet a break
        (_point(NGR, 60, 100, -4, streak=-2), 2, True),  # the second in a row is
        (_point(NGR, 10, 100, -6.5, streak=-1), 2, True),  # past twice the threshold: at once
        (_point(_source("web"), 10, 100, -7.5, streak=-1), 2, False),  # ... but never a lone slice period
        (_point(_source("web"), 10, 100, -7.5, streak=-2), 2, True),
        (_point(NGR, 80, 100, -1.5, streak=0, sustained=-3.4), 2, True),  # a sustained break
        (
            _point(NGR, 80, 100, -0.5, streak=0, sustained=-3.4),
            2,
            False,
        ),  # ... on a period that is itself out
        (_point(NGR, 120, 100, 1.5, streak=0, sustained=-3.4), 2, False),  # ... in the chart's direction
        (_point(NGR, 80, 100, -1.5, streak=0, sustained=-2.9), 2, False),
    ],
)
def test_given_confirmation_and_the_slow_chart_then_a_point_alerts_only_when_the_break_is_established(
    point: ScoredPoint, confirm: int, alerts: bool
) -> None:
    verdict = classify(point, MetricSpec("ngr", "down"), threshold=3.0, confirm=confirm)

    assert (verdict is not None) is alerts
    if verdict:
        assert verdict[1] == "down"


# --- grouping, contributors, summary --------------------------------------------------------------------------


def test_given_a_total_crater_when_alerts_are_built_then_one_alert_explains_it_by_its_sources() -> None:
    points = [
        _point(NGR, 600, 1000, -8),
        _point(_source("telegram-push"), 100, 432, -9),
        _point(_source("google-cpc"), 300, 320, -1),
        _point(_source("email"), 200, 248, -2),
        _point(_source("affiliates"), 0, 0, 0),
        _point(_source("tiktok"), 60, 40, 1),  # moved the other way: not a contributor
    ]

    alerts = build_alerts(ACME, HOUR, points, "syncs/acme-ads/x.csv")

    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["metric"], alert["dimension"], alert["severity"], alert["direction"]) == (
        "ngr", None, "critical", "down",
    )  # fmt: skip
    assert [(c["value"], c["share"]) for c in alert["contributors"]] == [
        ("telegram-push", 0.83), ("email", 0.12), ("google-cpc", 0.05),
    ]  # fmt: skip
    assert alert["contributors"][0]["delta"] == -332
    assert alert["summary"] == (
        "NGR dropped 40% vs the 7-day baseline (600 vs 1,000 expected); "
        "source telegram-push accounts for 83% of the drop"
    )
    assert alert["deviation"] == {"absolute": -400, "percent": -40.0}
    assert alert["period_start"] == T0.isoformat()
    assert alert["period_end"] == (T0 + timedelta(hours=1)).isoformat()
    assert _schema_errors(alert) == []


def test_given_a_slice_crater_the_total_hides_then_the_slice_alerts_on_its_own() -> None:
    points = [
        _point(NGR, 600, 640, -1),
        _point(_source("tiktok"), 5, 40, -5),
        _point(_source("google-cpc"), 595, 600, -0.5),
    ]

    alerts = build_alerts(ACME, HOUR, points, "k")

    assert [(a["dimension"], a["dimension_value"], a["severity"]) for a in alerts] == [
        ("source", "tiktok", "warning")
    ]
    assert alerts[0]["contributors"] == []
    assert (
        alerts[0]["summary"] == "NGR for source tiktok dropped 88% vs the 7-day baseline (5 vs 40 expected)"
    )


def test_given_a_slice_change_too_small_for_its_total_then_the_slice_does_not_alert() -> None:
    # 27 EUR of a 10,000 EUR total is 0.27%: many deviations out for a tiny source, noise for its readers.
    tiny = [_point(NGR, 9990, 10_000, -0.5), _point(_source("bing-cpc"), 0, 27, -21)]
    # 200 EUR is 2%: a source that matters.
    small = [_point(NGR, 9800, 10_000, -0.5), _point(_source("bing-cpc"), 0, 200, -21)]
    # No total in the period: nothing to compare with, so the slice speaks for itself.
    alone = [_point(_source("bing-cpc"), 0, 27, -21)]

    assert SLICE_MIN_SHARE == 0.01
    assert build_alerts(ACME, HOUR, tiny, "k") == []
    assert [a["dimension_value"] for a in build_alerts(ACME, HOUR, small, "k")] == ["bing-cpc"]
    assert [a["dimension_value"] for a in build_alerts(ACME, HOUR, alone, "k")] == ["bing-cpc"]


def test_given_a_ratio_slice_then_its_share_is_weighted_by_volume() -> None:
    total = _point(("conversion", "", ""), 0.05, 0.05, 0.0, volume=100_000)
    # Conversion halved in a source with 500 of 100,000 clicks: 0.025 × 500 / (0.05 × 100,000) = 0.25%.
    small = _point(("conversion", "source", "niche"), 0.025, 0.05, -6, volume=500)
    # The same halving with 5,000 clicks is 2.5% of the total's conversions.
    big = _point(("conversion", "source", "broad"), 0.025, 0.05, -6, volume=5_000)

    assert slice_share(small, total, ratio=True) == pytest.approx(0.0025)
    assert slice_share(big, total, ratio=True) == pytest.approx(0.025)
    assert slice_share(big, None, ratio=True) is None
    assert slice_share(big, _point(("conversion", "", ""), 0.0, 0.0, 0.0, volume=0), ratio=True) is None


def test_given_a_slice_crater_under_a_rising_total_then_the_crater_is_not_swallowed() -> None:
    points = [
        _point(NGR, 1500, 1000, 5),  # info: NGR going up is good news
        _point(_source("google-cpc"), 1400, 550, 9),  # the reason it went up (info, absorbed)
        _point(_source("telegram-push"), 100, 450, -7),  # a broken campaign at the same time
    ]

    alerts = build_alerts(ACME, HOUR, points, "k")

    found = {(a["dimension_value"], a["severity"], a["direction"]) for a in alerts}
    assert found == {(None, "info", "up"), ("telegram-push", "critical", "down")}
    total = next(a for a in alerts if a["dimension"] is None)
    assert [c["value"] for c in total["contributors"]] == ["google-cpc"]
    assert total["summary"].endswith("source google-cpc accounts for 100% of the rise")


def test_given_a_ratio_drop_then_contributors_are_weighted_by_their_volume() -> None:
    config = IntegrationConfig(
        "acme-ads",
        granularity_seconds=HOUR,
        dimensions=("source",),
        metrics=(MetricSpec("ftds"), MetricSpec("clicks")),
        ratios=(RatioSpec("conversion", "ftds", "clicks"),),
    )
    total = _point(("conversion", "", ""), 0.03, 0.05, -6, volume=11_000)
    slices = [
        _point(("conversion", "source", "big"), 0.04, 0.05, -3, volume=10_000),  # -0.01 × 10,000 = -100
        _point(("conversion", "source", "small"), 0.0, 0.05, -2, volume=1_000),  # -0.05 × 1,000 = -50
    ]

    found = contributors(total, slices, ratio=True)
    alerts = build_alerts(config, HOUR, [total, *slices], "k")

    assert [(c["value"], c["share"]) for c in found] == [
        ("big", pytest.approx(2 / 3, abs=1e-4)),
        ("small", pytest.approx(1 / 3, abs=1e-4)),
    ]
    assert alerts[0]["summary"].startswith(
        "Conversion dropped 40% vs the 7-day baseline (3.0% vs 5.0% expected)"
    )


def test_given_the_same_points_twice_then_the_alerts_and_their_ids_are_the_same() -> None:
    points = [_point(NGR, 600, 1000, -8), _point(_source("telegram-push"), 100, 432, -9)]

    assert build_alerts(ACME, HOUR, points, "k") == build_alerts(ACME, HOUR, list(reversed(points)), "k")


def test_given_the_documented_inputs_then_the_alert_id_is_stable_across_releases() -> None:
    # Support tooling deduplicates on alert_id: the hashing must not change within schema v1.
    assert alert_id("acme-ads", "ewma", "ngr", "", "", "2026-10-15T12:00:00+00:00") == (
        "ewma-62b9241ce6e02396835c0e2529ff34d5"
    )


def test_given_different_series_or_periods_then_alert_ids_differ() -> None:
    base = ("acme-ads", "ewma", "ngr", "source", "email", "2026-10-15T12:00:00+00:00")
    variants = [
        base,
        ("globex", *base[1:]),
        ("acme-ads", "isolation_forest", *base[2:]),
        ("acme-ads", "ewma", "clicks", *base[3:]),
        ("acme-ads", "ewma", "ngr", "campaign", "email", base[5]),
        ("acme-ads", "ewma", "ngr", "source", "tiktok", base[5]),
        ("acme-ads", "ewma", "ngr", "sourceemail", "", base[5]),  # no collision by concatenation
        (*base[:5], "2026-10-15T13:00:00+00:00"),
    ]

    ids = [alert_id(*v) for v in variants]

    assert len(set(ids)) == len(ids)
    assert alert_id(*base) == ids[0]


# --- a realistic run: a source crater in hourly traffic -----------------------------------------------------


@pytest.fixture(scope="module")
def crater_run() -> tuple[list[dict[str, Any]], datetime]:
    """Three weeks of hourly NGR by source and country; telegram-push breaks for one afternoon hour."""
    config = IntegrationConfig(
        "acme-ads",
        granularity_seconds=HOUR,
        season_length=24,
        dimensions=("source", "country"),
        metrics=(MetricSpec("ngr", "down", 5.0, 10.0), MetricSpec("clicks", "both", 5.0, 10.0)),
    )
    rng = np.random.default_rng(11)
    crater = T0 + timedelta(days=18, hours=15)
    rows, n = [], 0
    for hour in range(21 * 24):
        when = T0 + timedelta(hours=hour)
        profile = 0.25 + 0.75 * (1 + math.cos(2 * math.pi * (when.hour - 16) / 24)) / 2
        for source, share in (
            ("telegram-push", 0.45),
            ("google-cpc", 0.3),
            ("facebook", 0.2),
            ("email", 0.05),
        ):
            for country, weight in (("de", 0.6), ("at", 0.4)):
                level = 2000 * profile * share * weight
                factor = 0.15 if (when == crater and source == "telegram-push") else 1.0
                clicks = rng.poisson(level * factor)
                ngr = round(float(rng.normal(2.0 * clicks, 2.0 * math.sqrt(clicks + 1))), 2)
                n += 1
                rows.append(
                    _row(n, when, {"ngr": ngr, "clicks": float(clicks)}, source=source, country=country)
                )
    state = IntegrationState(config, HOUR)
    points = state.score(aggregate(rows, config, HOUR, state.known_values())).points
    return build_alerts(config, HOUR, points, "syncs/acme-ads/backfill.csv"), crater


def test_given_a_source_crater_then_the_total_alert_ranks_that_source_first(
    crater_run: tuple[list[dict[str, Any]], datetime],
) -> None:
    alerts, crater = crater_run

    at_crater = [a for a in alerts if a["period_start"] == crater.isoformat() and a["metric"] == "ngr"]

    total = next(a for a in at_crater if a["dimension"] is None)
    assert total["severity"] in ("warning", "critical")
    assert total["direction"] == "down"
    assert total["contributors"][0]["dimension"] == "source"
    assert total["contributors"][0]["value"] == "telegram-push"
    assert total["contributors"][0]["share"] > 0.7
    assert "source telegram-push accounts for" in total["summary"]
    # The source's own alert was folded into the total's (no duplicate alert for the same crater).
    assert not [a for a in at_crater if a["dimension_value"] == "telegram-push"]


def test_given_any_alert_then_contributor_shares_are_fractions_summing_to_at_most_one_per_dimension(
    crater_run: tuple[list[dict[str, Any]], datetime],
) -> None:
    alerts, _ = crater_run
    with_contributors = [a for a in alerts if a["contributors"]]
    assert with_contributors

    for alert in with_contributors:
        per_dimension: dict[str, float] = defaultdict(float)
        for c in alert["contributors"]:
            assert 0 < c["share"] <= 1
            assert (c["delta"] < 0) == (alert["direction"] == "down")  # contributors moved with the total
            per_dimension[c["dimension"]] += c["share"]
        assert all(total <= 1 + 1e-3 for total in per_dimension.values()), per_dimension
        shares = [c["share"] for c in alert["contributors"]]
        assert shares == sorted(shares, reverse=True)


def test_given_a_run_then_alert_ids_are_unique_and_every_alert_matches_schema_v1(
    crater_run: tuple[list[dict[str, Any]], datetime],
) -> None:
    alerts, _ = crater_run

    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    for alert in alerts:
        assert _schema_errors(json.loads(json.dumps(alert))) == [], alert["summary"]


# --- schema v1 ----------------------------------------------------------------------------------------------


def test_the_schema_is_valid_draft_2020_12_and_describes_every_property() -> None:
    Draft202012Validator.check_schema(SCHEMA)

    def undescribed(properties: Mapping[str, Any], path: str) -> list[str]:
        missing = []
        for name, sub in properties.items():
            if "description" not in sub:
                missing.append(f"{path}{name}")
            missing += undescribed(sub.get("properties", {}), f"{path}{name}.")
            missing += undescribed(sub.get("items", {}).get("properties", {}), f"{path}{name}[].")
        return missing

    assert undescribed(SCHEMA["properties"], "") == []
    assert SCHEMA["additionalProperties"] is True


def _valid_alert() -> dict[str, Any]:
    points = [_point(NGR, 600, 1000, -8), _point(_source("telegram-push"), 100, 432, -9)]
    return build_alerts(ACME, HOUR, points, "k")[0]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda a: a.update(severity="urgent"), "'urgent' is not one of"),
        (lambda a: a.update(detector="prophet"), "is not one of"),
        (lambda a: a.update(direction="sideways"), "is not one of"),
        (lambda a: a.update(schema_version=1), "'1' was expected"),
        (lambda a: a.update(alert_id="ewma-XYZ"), "does not match"),
        (lambda a: a.update(integration_id="../etc"), "does not match"),
        (lambda a: a.update(period_start="yesterday"), "is not a 'date-time'"),
        (lambda a: a.pop("summary"), "'summary' is a required property"),
        (lambda a: a.update(observed="600"), "is not of type 'number'"),
        (lambda a: a["deviation"].pop("percent"), "'percent' is a required property"),
        (lambda a: a["contributors"][0].update(share=1.5), "greater than the maximum"),
        (lambda a: a["contributors"][0].pop("delta"), "'delta' is a required property"),
    ],
)
def test_given_an_alert_that_breaks_v1_then_the_schema_rejects_it(change: Any, complaint: str) -> None:
    alert = copy.deepcopy(_valid_alert())

    change(alert)

    assert any(complaint in message for message in _schema_errors(alert)), _schema_errors(alert)


def test_given_added_fields_or_nulls_where_allowed_then_the_schema_accepts_them() -> None:
    alert = _valid_alert()
    alert.update(runbook="https://example.invalid/runbook", features=["clicks", "ngr"])
    alert["deviation"]["percent"] = None
    alert["contributors"][0]["note"] = "new in a later minor version"

    assert _schema_errors(alert) == []


# --- snoozes ------------------------------------------------------------------------------------------------


def _alerts_for_snoozing() -> dict[str, dict[str, Any]]:
    total = build_alerts(
        ACME,
        HOUR,
        [
            _point(NGR, 600, 1000, -8),
            _point(_source("telegram-push"), 100, 432, -9),
            _point(_source("email"), 10, 90, -4),
        ],
        "k",
    )[0]
    second = build_alerts(
        ACME,
        HOUR,
        [
            _point(NGR, 600, 1000, -8),
            _point(_source("email"), 100, 432, -9),
            _point(_source("telegram-push"), 10, 90, -4),
        ],
        "k",
    )[0]
    alone = build_alerts(
        ACME, HOUR, [_point(NGR, 990, 1000, -1), _point(_source("telegram-push"), 5, 40, -5)], "k"
    )[0]
    other = {**total, "integration_id": "globex-traffic"}
    clicks = {**total, "metric": "clicks"}
    return {"total": total, "second": second, "slice": alone, "other": other, "clicks": clicks}


@pytest.mark.parametrize(
    ("snooze", "covered"),
    [
        ({"integration_id": "acme-ads"}, {"total", "second", "slice", "clicks"}),
        ({"integration_id": "acme-ads", "metric": "ngr"}, {"total", "second", "slice"}),
        ({"integration_id": "acme-ads", "metric": "clicks"}, {"clicks"}),
        # A snoozed source covers its own alerts and the totals it is the top contributor of ...
        (
            {"integration_id": "acme-ads", "metric": "ngr", "dimension_value": "telegram-push"},
            {"total", "slice"},
        ),
        (
            {"integration_id": "acme-ads", "dimension": "source", "dimension_value": "telegram-push"},
            {"total", "slice", "clicks"},
        ),
        # ... but not a total it only comes second in, nor another dimension's value.
        ({"integration_id": "acme-ads", "dimension": "campaign", "dimension_value": "telegram-push"}, set()),
        ({"integration_id": "acme-ads", "dimension": "source"}, {"slice"}),
        ({"integration_id": "globex-traffic"}, {"other"}),
        ({"integration_id": "initech-support"}, set()),
    ],
)
def test_given_a_snooze_then_it_covers_exactly_its_scope(snooze: dict[str, Any], covered: set[str]) -> None:
    alerts = _alerts_for_snoozing()

    assert {name for name, alert in alerts.items() if snooze_matches(snooze, alert)} == covered


def test_given_expired_or_foreign_snoozes_then_the_control_store_only_returns_active_ones() -> None:
    now = datetime(2026, 10, 1, 12, tzinfo=UTC)
    control = MemoryControl()
    control.snoozes = [
        {
            "snooze_id": "active",
            "integration_id": "acme-ads",
            "until": (now + timedelta(hours=1)).timestamp(),
        },
        {
            "snooze_id": "expired",
            "integration_id": "acme-ads",
            "until": (now - timedelta(seconds=1)).timestamp(),
        },
        {"snooze_id": "ends-now", "integration_id": "acme-ads", "until": now.timestamp()},
        {
            "snooze_id": "foreign",
            "integration_id": "globex-traffic",
            "until": (now + timedelta(days=1)).timestamp(),
        },
    ]

    active = control.active_snoozes("acme-ads", now)

    assert [s["snooze_id"] for s in active] == ["active"]
