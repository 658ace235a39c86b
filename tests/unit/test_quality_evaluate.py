"""Quality scoring: matching, delay, bursts, known events, targeted kinds, granularity split, report."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kpi_sentinel.quality.evaluate import (
    Coverage,
    QualityReport,
    alert_margin,
    evaluate,
    format_curve,
    format_table,
    granularity_label,
    operating_curve,
)
from kpi_sentinel.quality.labels import ANOMALY_KINDS, EWMA_TARGETED, KnownEvent, Window

HOUR = 3600
DAY = 86400
T0 = datetime(2026, 9, 1, tzinfo=UTC)
ACME = Coverage("acme", HOUR, series=10, periods=168)  # 10 series-weeks
DAILY = Coverage("daily", DAY, series=2, periods=70)  # 20 series-weeks


def _at(hours: float, granularity: int = HOUR) -> datetime:
    return T0 + timedelta(seconds=hours * granularity)


def _alert(
    period: float,
    metric: str = "ngr",
    *,
    integration: str = "acme",
    dimension: str | None = None,
    value: str | None = None,
    severity: str = "warning",
    granularity: int = HOUR,
) -> dict[str, Any]:
    return {
        "integration_id": integration,
        "detector": "ewma",
        "metric": metric,
        "dimension": dimension,
        "dimension_value": value,
        "period_start": _at(period, granularity).isoformat(),
        "granularity_seconds": granularity,
        "severity": severity,
    }


def _window(
    start: float,
    end: float,
    kind: str = "spike",
    metrics: tuple[str, ...] = ("ngr",),
    *,
    integration: str = "acme",
    dimension: str | None = None,
    value: str | None = None,
    granularity: int = HOUR,
) -> Window:
    return Window(
        integration_id=integration,
        kind=kind,
        start=_at(start, granularity),
        end=_at(end, granularity),
        metrics=metrics,
        dimension=dimension,
        value=value,
    )


def _run(
    windows: list[Window],
    alerts: list[dict[str, Any]],
    events: list[KnownEvent] | None = None,
    coverage: list[Coverage] | None = None,
    burst_gap: int = 3,
) -> QualityReport:
    return evaluate(windows, events or [], alerts, coverage or [ACME], burst_gap=burst_gap)


# --- matching ---------------------------------------------------------------------------------------------


SLICE_WINDOW = _window(10, 14, dimension="source", value="google")


@pytest.mark.parametrize(
    ("alert", "caught"),
    [
        (_alert(11, dimension="source", value="google"), True),  # the window's slice
        (_alert(11), True),  # the total
        (_alert(11, dimension="source", value="meta"), False),  # another slice
        (_alert(11, dimension="country", value="google"), False),  # same value, other dimension
        (_alert(11, "clicks"), False),  # another metric
        (_alert(11, integration="other"), False),  # another integration
        (_alert(9), False),  # before the window
        (_alert(10), True),  # first period: inclusive
        (_alert(14), False),  # end: exclusive
        (_alert(11, severity="critical"), True),
        (_alert(11, severity="info"), False),  # harmless direction: ignored
    ],
)
def test_matching_rules(alert: dict[str, Any], caught: bool) -> None:
    other = Coverage("other", HOUR, series=1, periods=1)
    report = _run([SLICE_WINDOW], [alert], coverage=[ACME, other])
    assert report.windows[0].caught is caught
    assert report.overall.caught == int(caught)
    # a non-info alert that does not catch is a false alarm; an info alert is nothing at all
    assert report.overall.false_alerts == int(not caught and alert["severity"] != "info")


def test_window_without_slice_is_caught_by_any_slice() -> None:
    report = _run(
        [_window(0, 5, metrics=("ngr", "ftds"))], [_alert(2, "ftds", dimension="source", value="x")]
    )
    assert report.windows[0].caught
    assert report.overall.false_alerts == 0


def test_delay_is_counted_in_periods_from_the_earliest_matching_alert() -> None:
    alerts = [_alert(7), _alert(5, dimension="source", value="a"), _alert(9)]  # out of order on purpose
    report = _run([_window(3, 12)], alerts)
    result = report.windows[0]
    assert result.delay_periods == 2.0
    assert result.matching_alerts == 3
    assert report.overall.median_delay == 2.0


def test_daily_delay_uses_the_integration_granularity() -> None:
    w = _window(0, 5, integration="daily", granularity=DAY)
    report = _run([w], [_alert(3, integration="daily", granularity=DAY)], coverage=[DAILY])
    assert report.windows[0].delay_periods == 3.0


FIVE_MINUTES = 300
ADS_5M = Coverage("ads", FIVE_MINUTES, series=4, periods=2016)


def _hourly(hour: float, metric: str = "ngr", **kw: Any) -> dict[str, Any]:
    """An hourly roll-up alert of the 5-minute integration ``ads``."""
    return _alert(hour, metric, integration="ads", granularity=HOUR, **kw)


@pytest.mark.parametrize(
    ("start", "end", "caught", "delay"),
    [
        (36, 44, True, 11),  # 03:00-03:40 in 5-minute periods; the hour 03:00 ends 12 periods in
        (40, 44, True, 7),  # starts inside the hour: 03:20-03:40, known at 04:00
        (30, 36, False, None),  # ends where the hour starts
        (48, 50, False, None),  # starts where it ends
        (30, 40, True, 17),  # touches the hour's first periods; known at 04:00, period 48
    ],
)
def test_a_rollup_alert_matches_a_window_that_touches_its_hour_and_is_late_by_the_hour(
    start: int, end: int, caught: bool, delay: float | None
) -> None:
    window = _window(start, end, integration="ads", granularity=FIVE_MINUTES)

    report = _run([window], [_hourly(3)], coverage=[ADS_5M])

    assert (report.windows[0].caught, report.windows[0].delay_periods) == (caught, delay)
    assert report.windows[0].granularity_seconds == FIVE_MINUTES


def test_a_rollup_alert_and_the_five_minute_alerts_it_overlaps_are_one_burst() -> None:
    five = [_alert(k, integration="ads", granularity=FIVE_MINUTES) for k in (40, 47, 50, 60)]

    report = _run([], [_hourly(3), *five], coverage=[ADS_5M])

    # The hour covers periods 36-47; 50 is 3 periods after its end (gap 3: same burst), 60 is not.
    assert [(b.alerts, b.first_period, b.last_period) for b in report.false_bursts] == [
        (4, _at(3), _at(50, FIVE_MINUTES)),
        (1, _at(60, FIVE_MINUTES), _at(60, FIVE_MINUTES)),
    ]
    assert {b.granularity_seconds for b in report.false_bursts} == {FIVE_MINUTES}


def test_median_and_mean_delay_over_caught_windows() -> None:
    windows = [_window(0, 10), _window(20, 30), _window(40, 50), _window(60, 70)]
    alerts = [_alert(0), _alert(21), _alert(46)]  # delays 0, 1, 6; the last window is missed
    report = _run(windows, alerts)
    assert report.overall.median_delay == 1.0
    assert report.overall.mean_delay == pytest.approx(7 / 3)
    assert report.per_kind["spike"].median_delay == 1.0
    assert (report.overall.windows, report.overall.caught, report.overall.recall) == (4, 3, 0.75)


# --- isolation forest alerts ------------------------------------------------------------------------------


def _forest(
    period: float,
    metric: str = "clicks",
    moved: dict[str, float] | None = None,
    *,
    integration: str = "acme",
    severity: str = "warning",
) -> dict[str, Any]:
    """An isolation_forest alert: ``metric`` is the feature furthest out, ``moved`` the contributors' shares."""
    shares = moved if moved is not None else {metric: 1.0}
    return {
        **_alert(period, metric, integration=integration, severity=severity),
        "detector": "isolation_forest",
        "features": ["clicks", "conversion", "ftds", "ngr", "signups"],
        "contributors": [
            {"dimension": "feature", "value": name, "share": share, "score": 4.0}
            for name, share in shares.items()
        ],
    }


CRATER = _window(10, 14, "conversion_crater", metrics=("ftds", "conversion", "ngr"))
BOTS = _window(
    10, 14, "suspicious_traffic", metrics=("clicks", "conversion"), dimension="source", value="meta"
)


@pytest.mark.parametrize(
    ("window", "alert", "caught"),
    [
        (CRATER, _forest(11, "conversion"), True),  # the metric furthest out is the window's
        (CRATER, _forest(11, "clicks", {"clicks": 0.6, "ftds": 0.4}), True),  # a moved contributor is
        (CRATER, _forest(11, "clicks", {"clicks": 1.0, "ftds": 0.0}), False),  # listed, did not move
        (CRATER, _forest(11, "clicks", {"clicks": 0.7, "signups": 0.3}), False),  # none of its metrics
        (BOTS, _forest(11, "clicks"), True),  # a slice window: the forest sees totals, slice ignored
        (BOTS, _forest(11, "signups", {"signups": 0.5, "conversion": 0.5}), True),
        (CRATER, _forest(14, "conversion"), False),  # end: exclusive
        (CRATER, _forest(9, "conversion"), False),  # before the window
        (CRATER, _forest(11, "conversion", integration="other"), False),
        (CRATER, _forest(11, "conversion", severity="info"), False),
    ],
)
def test_forest_matching_rules(window: Window, alert: dict[str, Any], caught: bool) -> None:
    other = Coverage("other", HOUR, series=1, periods=1)
    report = _run([window], [alert], coverage=[ACME, other])
    assert report.windows[0].caught is caught
    assert report.overall.false_alerts == int(not caught and alert["severity"] != "info")


def test_an_ewma_alert_keeps_its_own_rule_next_to_the_forest_s() -> None:
    """Only isolation_forest alerts match on moved contributors and ignore the slice."""
    on_other_slice = _alert(11, "clicks", dimension="source", value="google")
    total_of_other_metric = {
        **_alert(11, "clicks"),
        "contributors": [{"dimension": "feature", "value": "ftds"}],
    }
    assert not _run([BOTS], [on_other_slice]).windows[0].caught
    assert not _run([CRATER], [total_of_other_metric]).windows[0].caught


def test_forest_false_alerts_burst_as_one_series_whatever_feature_leads() -> None:
    alerts = [_forest(100, "clicks"), _forest(101, "signups"), _forest(102, "clicks"), _alert(100, "clicks")]
    report = _run([], alerts)
    assert [(b.metric, b.alerts) for b in report.false_bursts] == [("clicks", 1), ("features", 3)]


@pytest.mark.parametrize(
    ("contributors", "field"),
    [
        ("clicks", "contributors"),
        ([{"dimension": "feature", "value": "", "share": 1.0}], "contributors[0].value"),
        ([{"dimension": "feature", "value": "clicks", "share": "big"}], "contributors[0].share"),
        (["clicks"], "contributors[0]"),
    ],
)
def test_a_malformed_forest_alert_names_the_field(contributors: Any, field: str) -> None:
    alert = {**_forest(11), "contributors": contributors}
    with pytest.raises(ValueError, match=rf"alert 0: field '{re.escape(field)}'"):
        _run([CRATER], [alert])


# --- false alarms -----------------------------------------------------------------------------------------


def test_false_alerts_group_into_bursts_by_integration_and_metric_and_gap() -> None:
    alerts = [
        # ngr: 100, 101, 104 (gap 3: same burst), 108 (gap 4: new burst), two slices in one period
        _alert(100),
        _alert(101),
        _alert(104),
        _alert(108, dimension="source", value="a"),
        _alert(108, dimension="source", value="b"),
        # clicks at the same periods: its own group
        _alert(100, "clicks"),
        _alert(101, "clicks"),
    ]
    report = _run([], alerts)
    assert report.overall.false_alerts == 7
    assert report.overall.false_bursts == 3
    by_metric = [(b.metric, b.alerts, b.first_period, b.last_period) for b in report.false_bursts]
    assert by_metric == [
        ("clicks", 2, _at(100), _at(101)),
        ("ngr", 3, _at(100), _at(104)),
        ("ngr", 2, _at(108), _at(108)),
    ]
    assert _run([], alerts, burst_gap=0).overall.false_bursts == 6  # every distinct period of a group
    assert _run([], alerts, burst_gap=4).overall.false_bursts == 2


def test_a_false_alert_can_bridge_two_bursts() -> None:
    """Documented: bursts are chains, so a false alert between two bursts merges them into one."""
    apart = _run([], [_alert(0), _alert(6)])
    bridged = _run([], [_alert(0), _alert(3), _alert(6)])
    assert (apart.overall.false_bursts, bridged.overall.false_bursts) == (2, 1)


def test_precision_and_false_alarm_rate() -> None:
    windows = [_window(0, 10), _window(20, 30)]
    alerts = [_alert(2), _alert(50), _alert(60), _alert(61)]  # 1 caught, 2 false bursts
    report = _run(windows, alerts)
    s = report.overall
    assert (s.caught, s.false_bursts, s.false_alerts) == (1, 2, 3)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == 0.5
    assert s.f2 == pytest.approx(5 * (1 / 3) * 0.5 / (4 / 3 + 0.5))
    assert s.series_weeks == pytest.approx(10.0)
    assert s.false_alarms_per_series_week == pytest.approx(0.2)


def test_precision_is_one_with_nothing_caught_and_nothing_false() -> None:
    report = _run([_window(0, 10)], [_alert(3, severity="info")])
    assert report.overall.precision == 1.0
    assert report.overall.recall == 0.0
    assert report.overall.f2 == pytest.approx(0.0)
    empty = _run([], [])
    assert empty.overall.precision == 1.0
    assert empty.overall.recall is None
    assert empty.overall.f2 is None
    assert empty.overall.false_alarms_per_series_week == 0.0


def test_known_event_alerts_are_false_and_counted_apart() -> None:
    events = [
        KnownEvent("acme", "holiday", _at(24), _at(48), "bank holiday"),
        KnownEvent(None, "campaign", _at(100), _at(101), "global campaign"),  # every integration
        KnownEvent("other", "campaign", _at(200), _at(300), "not ours"),
    ]
    windows = [_window(30, 40)]
    alerts = [
        _alert(25),  # in the holiday: known-event alert
        _alert(26),  # same burst, also known-event
        _alert(32),  # in the holiday but matches the window: caught, not false
        _alert(48),  # event end is exclusive: false but not known-event (and a new burst: gap 22)
        _alert(100, "clicks"),  # global event
        _alert(250),  # another integration's event: plain false
        _alert(27, severity="info"),  # ignored
    ]
    report = _run(windows, alerts, events)
    s = report.overall
    assert s.known_event_alerts == 3
    assert s.false_alerts == 5
    assert s.caught == 1
    assert [b.known_event_alerts for b in report.false_bursts] == [1, 2, 0, 0]


# --- kinds and granularity --------------------------------------------------------------------------------


def test_untargeted_kinds_are_reported_but_not_scored_and_their_alerts_are_not_false() -> None:
    windows = [_window(0, 10, "spike"), _window(20, 30, "level_shift"), _window(40, 50, "missing_data")]
    alerts = [_alert(21), _alert(22), _alert(60)]  # the level shift is caught; 60 is false
    report = _run(windows, alerts)
    s = report.overall
    assert (s.windows, s.caught, s.recall) == (1, 0, 0.0)
    assert (s.false_alerts, s.false_bursts) == (1, 1)
    assert s.precision == 0.0
    kinds = report.per_kind
    assert list(kinds) == ["spike", "missing_data", "level_shift"]  # ANOMALY_KINDS order
    assert kinds["level_shift"].targeted is False
    assert (kinds["level_shift"].windows, kinds["level_shift"].caught, kinds["level_shift"].recall) == (
        1,
        1,
        1.0,
    )
    assert kinds["missing_data"].recall == 0.0
    assert kinds["missing_data"].median_delay is None
    assert kinds["spike"].targeted is True
    # a custom target list moves the level shift into recall
    custom = evaluate(windows, [], alerts, [ACME], targeted_kinds=("spike", "level_shift"))
    assert (custom.overall.windows, custom.overall.caught) == (2, 1)


def test_per_granularity_split() -> None:
    windows = [
        _window(0, 10),
        _window(20, 30),
        _window(0, 3, integration="daily", granularity=DAY),
    ]
    alerts = [
        _alert(1),
        _alert(100),  # hourly false
        _alert(2, integration="daily", granularity=DAY),
        _alert(10, integration="daily", granularity=DAY),  # daily false
        _alert(20, integration="daily", granularity=DAY),  # daily false, other burst
    ]
    report = _run(windows, alerts, coverage=[DAILY, ACME])
    assert list(report.per_granularity) == [HOUR, DAY]
    hourly, daily = report.per_granularity[HOUR], report.per_granularity[DAY]
    assert (hourly.windows, hourly.caught, hourly.recall, hourly.false_bursts) == (2, 1, 0.5, 1)
    assert hourly.precision == 0.5
    assert hourly.false_alarms_per_series_week == pytest.approx(1 / 10)
    assert (daily.windows, daily.caught, daily.recall, daily.false_bursts) == (1, 1, 1.0, 2)
    assert daily.precision == pytest.approx(1 / 3)
    assert daily.median_delay == 2.0
    assert daily.false_alarms_per_series_week == pytest.approx(2 / 20)
    overall = report.overall
    assert (overall.windows, overall.caught, overall.false_bursts) == (3, 2, 3)
    assert overall.series_weeks == pytest.approx(30.0)
    assert overall.false_alarms_per_series_week == pytest.approx(3 / 30)


# --- report -----------------------------------------------------------------------------------------------


def test_to_dict_is_json_without_nan_and_in_a_stable_order() -> None:
    windows = [_window(0, 10), _window(20, 30, "missing_data")]
    report = _run(windows, [_alert(50)], coverage=[ACME, Coverage("empty", DAY, 0, 0)])
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)  # raises on NaN or infinity
    assert json.loads(text) == data
    assert list(data) == [
        "targeted_kinds",
        "burst_gap",
        "overall",
        "per_granularity",
        "per_kind",
        "windows",
        "false_bursts",
    ]
    assert data["overall"]["median_delay"] is None
    assert [g["granularity_seconds"] for g in data["per_granularity"]] == [HOUR, DAY]
    empty_day = data["per_granularity"][1]
    assert empty_day["false_alarms_per_series_week"] is None  # nothing scored: no rate
    assert empty_day["recall"] is None
    assert [k["kind"] for k in data["per_kind"]] == ["spike", "missing_data"]
    assert data["windows"][0]["caught"] is False
    assert json.dumps(
        _run(windows, [_alert(50)], coverage=[ACME, Coverage("empty", DAY, 0, 0)]).to_dict()
    ) == (json.dumps(data))


def test_format_table_compares_detectors() -> None:
    windows = [
        _window(0, 10),
        _window(20, 30, "level_shift"),
        _window(0, 2, integration="daily", granularity=DAY),
    ]
    good = _run(windows, [_alert(1), _alert(21)], coverage=[ACME, DAILY])
    bad = _run(windows, [_alert(50), _alert(90)], coverage=[ACME, DAILY])
    text = format_table({"ewma": good, "zscore": bad})
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:2] == ["detector", "gran"]
    assert "precision" in header
    assert "FA/series/wk" in header
    rows = [line.split() for line in lines[2:8]]
    assert [r[:2] for r in rows] == [
        ["ewma", "1h"],
        ["ewma", "1d"],
        ["ewma", "all"],
        ["zscore", "1h"],
        ["zscore", "1d"],
        ["zscore", "all"],
    ]
    assert rows[0][3] == "1.000"  # ewma hourly recall
    assert rows[3][4] == "0.000"  # zscore hourly precision
    assert "recall per kind" in text
    kind_lines = {line.split()[0]: line for line in lines if line.startswith(("spike", "level_shift"))}
    assert kind_lines["spike"].split()[1:] == ["0.500", "(1/2)", "0.000", "(0/2)"]
    assert "level_shift*" in kind_lines
    assert lines[-1].startswith("* not targeted")
    assert format_table({}) == ""


def test_format_table_columns_line_up() -> None:
    report = _run([_window(0, 10)], [_alert(1)])
    lines = format_table({"a-long-detector-name": report, "b": report}).splitlines()
    rule = lines[1]
    starts = [i for i in range(1, len(rule)) if rule[i] == "-" and rule[i - 1] == " "]
    for line in [lines[0], *lines[2:6]]:  # header and the four rows: same width, gaps at the same places
        assert len(line) == len(rule), line
        assert all(line[s - 1] == " " for s in starts), line


@pytest.mark.parametrize(("seconds", "label"), [(86400, "1d"), (3600, "1h"), (300, "5m"), (90, "90s")])
def test_granularity_label(seconds: int, label: str) -> None:
    assert granularity_label(seconds) == label


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"period_start": None}, "period_start"),
        ({"period_start": "yesterday"}, "period_start"),
        ({"period_start": "2026-09-01T00:00:00"}, "period_start"),  # no offset
        ({"severity": "loud"}, "severity"),
        ({"granularity_seconds": "3600"}, "granularity_seconds"),
        ({"granularity_seconds": 1800}, "granularity_seconds"),  # not whole periods of the integration
        ({"metric": ""}, "metric"),
        ({"dimension_value": 3}, "dimension_value"),
    ],
)
def test_malformed_alerts_name_the_field(change: dict[str, Any], field: str) -> None:
    alert = {**_alert(1), **change}
    with pytest.raises(ValueError, match=f"alert 1: field '{field}'"):
        _run([], [_alert(0), alert])


@pytest.mark.parametrize("field", ["integration_id", "metric", "dimension", "period_start", "severity"])
def test_missing_alert_field_is_named(field: str) -> None:
    alert = _alert(1)
    del alert[field]
    with pytest.raises(ValueError, match=f"alert 0: field '{field}' is missing"):
        _run([], [alert])


def test_missing_coverage_and_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="has no coverage"):
        _run([_window(0, 1, integration="ghost")], [])
    with pytest.raises(ValueError, match="has no coverage"):
        _run([], [_alert(0, integration="ghost")])
    with pytest.raises(ValueError, match="listed twice"):
        _run([], [], coverage=[ACME, ACME])
    with pytest.raises(ValueError, match="burst_gap"):
        _run([], [], burst_gap=-1)
    naive = Window("acme", "spike", datetime(2026, 9, 1), datetime(2026, 9, 2), ("ngr",))
    with pytest.raises(ValueError, match="field 'start' must be timezone-aware"):
        _run([naive], [])


# --- properties -------------------------------------------------------------------------------------------

METRICS = ("ngr", "clicks")
SLICES: tuple[tuple[str | None, str | None], ...] = ((None, None), ("source", "a"), ("source", "b"))


@st.composite
def _windows(draw: st.DrawFn) -> Window:
    start = draw(st.integers(0, 60))
    dimension, value = draw(st.sampled_from(SLICES))
    metrics = tuple(draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=2, unique=True)))
    kind = draw(st.sampled_from(ANOMALY_KINDS))
    return _window(start, start + draw(st.integers(1, 8)), kind, metrics, dimension=dimension, value=value)


@st.composite
def _alerts(draw: st.DrawFn, metrics: tuple[str, ...] = (*METRICS, "refunds")) -> dict[str, Any]:
    dimension, value = draw(st.sampled_from(SLICES))
    return _alert(
        draw(st.integers(0, 80)),
        draw(st.sampled_from(metrics)),
        dimension=dimension,
        value=value,
        severity=draw(st.sampled_from(("info", "warning", "critical"))),
    )


@st.composite
def _events(draw: st.DrawFn) -> KnownEvent:
    start = draw(st.integers(0, 70))
    return KnownEvent(draw(st.sampled_from(("acme", None))), "holiday", _at(start), _at(start + 5), "h")


CASES = st.tuples(
    st.lists(_windows(), max_size=6),
    st.lists(_alerts(), max_size=15),
    st.lists(_events(), max_size=2),
    st.integers(0, 4),
)


def _in_unit(value: float | None) -> bool:
    return value is None or 0.0 <= value <= 1.0


@settings(max_examples=150, deadline=None)
@given(CASES)
def test_scores_stay_in_the_unit_interval(
    case: tuple[list[Window], list[dict[str, Any]], list[KnownEvent], int],
) -> None:
    windows, alerts, events, gap = case
    report = _run(windows, alerts, events, burst_gap=gap)
    for s in [report.overall, *report.per_granularity.values()]:
        assert _in_unit(s.recall)
        assert _in_unit(s.precision)
        assert _in_unit(s.f2)
        assert s.known_event_alerts <= s.false_alerts
        assert s.false_bursts <= s.false_alerts
    for k in report.per_kind.values():
        assert _in_unit(k.recall)
    json.dumps(report.to_dict(), allow_nan=False)


def _bridges(existing: list[datetime], new: datetime, gap: int) -> bool:
    """The new alert would merge two bursts: a neighbour within ``gap`` on each side, none between."""
    before = [t for t in existing if t <= new]
    after = [t for t in existing if t >= new]
    if not before or not after:
        return False
    p, q = max(before), min(after)
    limit = timedelta(hours=gap)
    return new - p <= limit and q - new <= limit and q - p > limit


@settings(max_examples=150, deadline=None)
@given(CASES, _alerts(metrics=("refunds",)))  # no window names "refunds": its alerts are always false
def test_a_false_alert_never_raises_precision_unless_it_bridges_two_bursts(
    case: tuple[list[Window], list[dict[str, Any]], list[KnownEvent], int], extra: dict[str, Any]
) -> None:
    windows, alerts, events, gap = case
    before = _run(windows, alerts, events, burst_gap=gap)
    after = _run(windows, [*alerts, extra], events, burst_gap=gap)
    same_group = [
        datetime.fromisoformat(a["period_start"])
        for a in alerts
        if a["metric"] == "refunds" and a["severity"] != "info"
    ]
    assert after.overall.false_bursts >= before.overall.false_bursts - 1
    if extra["severity"] == "info" or not _bridges(
        same_group, datetime.fromisoformat(extra["period_start"]), gap
    ):
        assert after.overall.precision <= before.overall.precision
        assert after.overall.false_bursts >= before.overall.false_bursts
    # with burst_gap 0 no alert can bridge: precision is monotone outright
    strict_before = _run(windows, alerts, events, burst_gap=0)
    strict_after = _run(windows, [*alerts, extra], events, burst_gap=0)
    assert strict_after.overall.precision <= strict_before.overall.precision


@settings(max_examples=150, deadline=None)
@given(CASES, st.data())
def test_a_matching_alert_never_lowers_recall(
    case: tuple[list[Window], list[dict[str, Any]], list[KnownEvent], int], data: st.DataObject
) -> None:
    windows, alerts, events, gap = case
    if not windows:
        return
    w = data.draw(st.sampled_from(windows))
    span = int((w.end - w.start).total_seconds() // HOUR)
    offset = int((w.start - T0).total_seconds() // HOUR) + data.draw(st.integers(0, span - 1))
    dimension, value = (w.dimension, w.value) if data.draw(st.booleans()) else (None, None)
    extra = _alert(offset, data.draw(st.sampled_from(w.metrics)), dimension=dimension, value=value)
    before = _run(windows, alerts, events, burst_gap=gap)
    after = _run(windows, [*alerts, extra], events, burst_gap=gap)
    if before.overall.recall is not None:
        assert after.overall.recall is not None
        assert after.overall.recall >= before.overall.recall
    assert after.overall.caught >= before.overall.caught
    assert after.per_kind[w.kind].caught >= before.per_kind[w.kind].caught
    assert after.overall.false_alerts == before.overall.false_alerts
    assert after.windows[windows.index(w)].caught


def test_default_targets_are_the_ewma_targets() -> None:
    assert _run([], []).targeted_kinds == EWMA_TARGETED


# --- operating curve ---------------------------------------------------------------------------------------


def _scored(period: float, score: float, sustained: float | None = None, **kw: Any) -> dict[str, Any]:
    return {**_alert(period, **kw), "score": score, "sustained_score": sustained, "threshold": 4.0}


@pytest.mark.parametrize(
    ("score", "sustained", "margin"),
    [
        (-5.0, None, 1.25),
        (4.4, 2.0, 1.1),  # the slow chart below the score
        (-2.5, -6.0, 1.5),  # raised by the slow chart
        (2.5, -6.0, 0.625),  # a slow chart leaning the other way cannot raise it
    ],
)
def test_alert_margin_is_the_larger_of_the_score_and_the_slow_chart_leaning_its_way(
    score: float, sustained: float | None, margin: float
) -> None:
    assert alert_margin(_scored(1, score, sustained), 0) == pytest.approx(margin)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"score": None}, "score"),
        ({"score": float("nan")}, "score"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": "4"}, "threshold"),
        ({"detector": "isolation_forest"}, "detector"),
        ({"sustained_score": "high"}, "sustained_score"),
    ],
)
def test_alert_margin_names_the_unusable_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"alert 7: field '{field}'"):
        alert_margin({**_scored(1, 5.0), **change}, 7)


def test_the_curve_drops_weak_alerts_and_trades_recall_for_precision() -> None:
    windows = [_window(10, 12), _window(30, 32, metrics=("clicks",))]
    alerts = [
        _scored(10, -6.0),  # strong catch: 1.5x
        _scored(30, 4.2, metric="clicks"),  # weak catch: 1.05x
        _scored(50, 4.1),  # weak false alarm
        _scored(60, 4.0, 4.6, metric="clicks"),  # false alarm at 1.15x through the slow chart
        _scored(70, 9.0, severity="info"),  # harmless direction: never counted, whatever its margin
    ]
    points = operating_curve(windows, [], alerts, [ACME], factors=(1.0, 1.1, 1.2, 2.0))
    assert [p.factor for p in points] == [1.0, 1.1, 1.2, 2.0]
    assert [(p.alerts, p.summary.caught, p.summary.false_bursts) for p in points] == [
        (4, 2, 2),
        (2, 1, 1),
        (1, 1, 0),
        (0, 0, 0),
    ]
    assert points[0].summary == evaluate(windows, [], alerts, [ACME]).overall
    assert (points[2].summary.precision, points[2].summary.recall) == (1.0, 0.5)
    row = points[1].to_dict()
    assert (row["factor"], row["caught"], row["false_bursts"]) == (1.1, 1, 1)
    json.dumps([p.to_dict() for p in points], allow_nan=False)
    table = format_curve(points).splitlines()
    assert table[0].split()[:2] == ["past", "threshold"]
    assert table[2].split()[:3] == ["x1", "4", "2/2"]
    assert format_curve([]) == ""


def test_the_curve_names_a_malformed_alert_by_its_position_in_the_input() -> None:
    alerts = [_scored(10, -6.0), _scored(11, 2.0, severity="info"), {**_scored(12, 5.0), "severity": "warn"}]
    with pytest.raises(ValueError, match=r"alert 2: field 'severity'"):
        operating_curve([_window(10, 12)], [], alerts, [ACME])


@pytest.mark.parametrize("factor", [0.9, float("nan"), True, "1.2"])
def test_the_curve_refuses_factors_below_one(factor: Any) -> None:
    with pytest.raises(ValueError, match="factors must be numbers >= 1"):
        operating_curve([], [], [], [ACME], factors=(1.0, factor))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(_alerts(), st.floats(-12, 12, allow_nan=False)), max_size=15),
    st.lists(_windows(), max_size=6),
)
def test_a_higher_factor_never_catches_more_or_sends_more(
    scored: list[tuple[dict[str, Any], float]], windows: list[Window]
) -> None:
    alerts = [{**alert, "score": score, "sustained_score": None, "threshold": 3.5} for alert, score in scored]
    points = operating_curve(windows, [], alerts, [ACME], factors=(1.0, 1.2, 1.5, 3.0))
    for low, high in itertools.pairwise(points):
        assert high.alerts <= low.alerts
        assert high.summary.caught <= low.summary.caught
