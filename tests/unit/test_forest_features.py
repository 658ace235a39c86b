"""Forest features: reading the scorer's history objects, one feature row per period, the fitted transform."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kpi_sentinel.config import IntegrationConfig, MetricSpec, RateSpec, RatioSpec
from kpi_sentinel.forest.features import (
    FeatureFrame,
    FeatureSpace,
    HistoryError,
    feature_frame,
    history_dates,
    inverse_slog,
    read_history,
    slog,
    usable_days,
)
from kpi_sentinel.sync import HISTORY_COLUMNS

T0 = datetime(2026, 9, 1, tzinfo=UTC)
PARTITION = "history/integration=acme-ads/date=2026-09-01/"
KEY = f"{PARTITION}0123456789abcdef.csv.gz"
STATUSES = ("scored", "warmup", "calendar", "late")
SEVERITIES = ("", "info", "warning", "critical")
ACME = IntegrationConfig(
    integration_id="acme-ads",
    granularity_seconds=3600,
    dimensions=("source",),
    metrics=(MetricSpec("clicks", "both"), MetricSpec("signups", "down")),
    ratios=(RatioSpec("signup_rate", "signups", "clicks", "down"),),
)


def _at(hour: int) -> str:
    return (T0 + timedelta(hours=hour)).isoformat()


@dataclass(frozen=True)
class Row:
    """One history row as the scorer writes it (only the fields the forest reads vary)."""

    period: str
    metric: str
    observed: str = "10"
    expected: str = "10"
    status: str = "scored"
    severity: str = ""
    dimension: str = ""
    value: str = ""

    def cells(self) -> list[str]:
        by_name = {
            "period_start": self.period,
            "integration_id": "acme-ads",
            "metric": self.metric,
            "dimension": self.dimension,
            "dimension_value": self.value,
            "observed": self.observed,
            "expected": self.expected,
            "expected_lower": "",
            "expected_upper": "",
            "score": "",
            "status": self.status,
            "alert_severity": self.severity,
            "sync_key": "syncs/acme-ads/2026/09/01/00.csv",
            "sustained": "",
        }
        return [by_name[name] for name in HISTORY_COLUMNS]


def _gzip_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return gzip.compress(text.getvalue().encode(), mtime=0)


def _history(rows: Sequence[Row]) -> bytes:
    return _gzip_csv(HISTORY_COLUMNS, [r.cells() for r in rows])


def _frame_of(*objects: Sequence[Row], config: IntegrationConfig | None = None) -> FeatureFrame:
    bodies = [(f"{PARTITION}{n:016x}.csv.gz", _history(rows)) for n, rows in enumerate(objects)]
    return feature_frame(read_history(bodies), config)


# --- read_history -----------------------------------------------------------------------------------------


def test_given_totals_and_slices_when_read_then_only_the_metric_totals_are_kept() -> None:
    rows = [
        Row(_at(0), "clicks", "100", "90"),
        Row(_at(0), "clicks", "60", "50", dimension="source", value="web"),
        Row(_at(0), "clicks", "40", "40", dimension="source", value="app"),
        Row(_at(0), "signups", "8", "", status="warmup"),
        Row(_at(1), "clicks", "120", "", status="late"),
    ]

    history = read_history([(KEY, _history(rows))])

    assert len(history) == 3
    assert (history["dimension"] == "").all()
    assert history[["period_start", "metric", "observed", "expected", "status"]].values.tolist() == [
        [_at(0), "clicks", "100", "90", "scored"],
        [_at(0), "signups", "8", "", "warmup"],
        [_at(1), "clicks", "120", "", "late"],
    ]


def test_given_a_warning_on_a_slice_only_when_read_then_its_period_is_marked_alerted() -> None:
    first = [
        Row(_at(0), "clicks"),
        Row(_at(1), "clicks"),
        Row(_at(1), "clicks", severity="warning", dimension="source", value="web"),
        Row(_at(2), "clicks", severity="critical"),
        Row(_at(3), "clicks", severity="info"),
    ]
    second = [Row(_at(4), "clicks", severity="critical", dimension="source", value="app")]
    third = [Row(_at(4), "clicks")]  # the total of hour 4 is in another object than its alert

    history = read_history(
        [(KEY, _history(first)), ("k2.csv.gz", _history(second)), ("k3.csv.gz", _history(third))]
    )

    alerted = dict(zip(history["period_start"], history["alerted"], strict=True))
    assert alerted == {_at(0): False, _at(1): True, _at(2): True, _at(3): False, _at(4): True}


@pytest.mark.parametrize(
    "body",
    [b"period_start,metric\n", gzip.compress(b"\xff\xfe\x00 not utf-8")[:-3], gzip.compress(b"\xff\xfe\xfa")],
    ids=["not-gzip", "truncated-gzip", "not-utf8"],
)
def test_given_a_corrupt_history_object_when_read_then_history_error_names_the_key(body: bytes) -> None:
    with pytest.raises(HistoryError, match=re.escape(f"{KEY}: not a gzip UTF-8 CSV")):
        read_history([("good.csv.gz", _history([Row(_at(0), "clicks")])), (KEY, body)])


def test_given_a_row_with_the_wrong_field_count_when_read_then_history_error_names_key_and_row() -> None:
    rows = [Row(_at(h), "clicks").cells() for h in range(3)]
    rows[2] = rows[2][:-1]  # the third data row, line 4 of the object

    with pytest.raises(HistoryError) as raised:
        read_history([(KEY, _gzip_csv(HISTORY_COLUMNS, rows))])

    assert str(raised.value).startswith(KEY)
    assert "row 4 has 13 fields" in str(raised.value)


@pytest.mark.parametrize("missing", ["period_start", "metric", "dimension", "observed", "expected", "status"])
def test_given_an_object_without_a_column_when_read_then_history_error_names_the_column(missing: str) -> None:
    header = [c for c in HISTORY_COLUMNS if c != missing]
    cells = dict(zip(HISTORY_COLUMNS, Row(_at(0), "clicks").cells(), strict=True))
    body = _gzip_csv(header, [[cells[name] for name in header]])

    with pytest.raises(
        HistoryError, match=re.escape(f"{KEY}: history object lacks column(s) {missing}") + "$"
    ):
        read_history([(KEY, body)])


# --- feature_frame ----------------------------------------------------------------------------------------


def test_given_a_config_then_ratios_and_rates_are_ratio_features_counts_level_and_other_metrics_ignored() -> (
    None
):
    metrics_rows = [Row(_at(0), m) for m in ("clicks", "signups", "signup_rate", "ngr", "ftds")]
    events = IntegrationConfig(
        integration_id="initech-support",
        shape="events",
        granularity_seconds=3600,
        count_metric="tickets",
        rates=(RateSpec("high_priority_rate", "priority", ("high", "urgent")),),
    )
    events_rows = [Row(_at(0), m) for m in ("tickets", "high_priority_rate", "events")]

    assert dict(_frame_of(metrics_rows, config=ACME).kinds) == {
        "clicks": "level",
        "signup_rate": "ratio",
        "signups": "level",
    }
    assert _frame_of(metrics_rows, config=ACME).names == ["clicks", "signup_rate", "signups"]
    assert dict(_frame_of(events_rows, config=events).kinds) == {
        "high_priority_rate": "ratio",
        "tickets": "level",
    }
    # Without a config every metric total is a feature, judged as a level.
    assert dict(_frame_of(metrics_rows).kinds) == dict.fromkeys(
        ["clicks", "ftds", "ngr", "signup_rate", "signups"], "level"
    )


def test_given_no_history_then_the_feature_frame_is_empty() -> None:
    frame = feature_frame(read_history([]), ACME)

    assert len(frame) == 0
    assert frame.names == []


def test_given_periods_on_three_dates_with_one_calendar_day_then_usable_days_counts_two() -> None:
    rows = [Row(_at(h), "clicks", status="calendar" if 24 <= h < 48 else "scored") for h in range(0, 72, 6)]

    assert usable_days(_frame_of(rows)) == 2


@pytest.mark.parametrize(
    ("end", "dates"),
    [
        (datetime(2026, 9, 3, tzinfo=UTC), ["2026-09-01", "2026-09-02"]),
        (datetime(2026, 9, 3, 0, 30, tzinfo=UTC), ["2026-09-01", "2026-09-02", "2026-09-03"]),
    ],
)
def test_given_a_window_then_history_dates_are_its_date_partitions_end_exclusive(
    end: datetime, dates: list[str]
) -> None:
    assert list(history_dates(datetime(2026, 9, 1, 5, tzinfo=UTC), end)) == dates


def test_given_only_warmup_and_late_totals_then_the_frame_is_empty_and_can_be_windowed() -> None:
    rows = [
        Row(_at(0), "clicks", "10", "", status="warmup"),
        Row(_at(1), "clicks", "10", "", status="warmup"),
        Row(_at(0), "clicks", "3", "", status="late"),
    ]
    frame = _frame_of(rows, config=ACME)

    window = frame.between(T0, T0 + timedelta(days=1))  # what the retrain job does next

    assert len(frame) == 0
    assert len(window) == 0
    assert frame.late_rows == 1
    assert frame.unusable_rows == 2


def test_given_warmup_totals_with_an_expectation_then_they_are_periods_of_the_frame() -> None:
    # The second season of a series: a baseline exists, the series may not alert yet, the forest learns.
    rows = [
        Row(_at(0), "clicks", "10", "", status="warmup"),  # first season: no baseline
        Row(_at(1), "clicks", "12", "11", status="warmup"),
        Row(_at(2), "clicks", "9", "10", status="scored"),
    ]
    frame = _frame_of(rows, config=ACME)

    assert [p.isoformat() for p in frame.periods] == [_at(1), _at(2)]
    assert frame.unusable_rows == 1


# --- properties of feature_frame and the transform --------------------------------------------------------

_PERIODS = [_at(h) for h in range(10)]
_CELL = st.one_of(
    st.just(""),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{round(v, 3):.10g}"),
)
_ROW = st.builds(
    Row,
    period=st.sampled_from(_PERIODS),
    metric=st.sampled_from(["clicks", "ngr", "signup_rate", "signups"]),
    observed=_CELL,
    expected=_CELL,
    status=st.sampled_from(STATUSES),
    severity=st.sampled_from(SEVERITIES),
    dimension=st.sampled_from(["", "", "source"]),
    value=st.sampled_from(["web", "app"]),
).map(lambda r: r if r.dimension else replace(r, value=""))


def _cell(text: str) -> float:
    return float(text) if text else math.nan


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
@settings(max_examples=80, deadline=None)
@given(objects=st.lists(st.lists(_ROW, max_size=30), min_size=1, max_size=3), with_config=st.booleans())
def test_property_one_feature_row_per_period_with_a_usable_total(
    objects: list[list[Row]], with_config: bool
) -> None:
    config = ACME if with_config else None
    features = (
        {"clicks", "signup_rate", "signups"} if with_config else {"clicks", "ngr", "signup_rate", "signups"}
    )
    rows = [r for rows in objects for r in rows]
    kept: dict[tuple[str, str], Row] = {}  # a period and metric scored twice keeps its last row
    for r in rows:
        usable = r.status in ("scored", "calendar") or (
            r.status == "warmup" and not math.isnan(_cell(r.expected))
        )
        if not r.dimension and usable and r.metric in features:
            kept[(r.period, r.metric)] = r
    periods = sorted({p for p, _ in kept})
    assume(kept)  # no usable total at all: see the warm-up-only test below

    frame = _frame_of(*objects, config=config)

    assert [
        p.isoformat() for p in frame.periods
    ] == periods  # late rows and warmup rows with no expectation are no periods
    assert frame.periods.is_unique
    assert list(frame.calendar) == [
        any(r.status == "calendar" for (q, _), r in kept.items() if q == p) for p in periods
    ]
    alerted = [] if frame.alerted is None else list(frame.alerted)  # None: an empty frame
    assert alerted == [
        any(r.period == p and r.severity in ("warning", "critical") for r in rows) for p in periods
    ]
    for (period, metric), r in kept.items():
        at = pd.Timestamp(period)
        assert _same(frame.observed.loc[at, metric], _cell(r.observed))
        assert _same(frame.expected.loc[at, metric], _cell(r.expected))

    space = FeatureSpace.fit(frame)
    z = space.transform(frame)
    raw = space.deviations(frame)

    assert z.shape == (len(periods), len(frame.names))
    assert np.isfinite(z).all()
    assert (z[np.isnan(raw)] == 0).all()  # a missing value is typical, not a dropped row
    for j in range(len(frame.names)):
        usable = np.isfinite(raw[:, j])
        if usable.any():
            spread = max(1.0, float(np.abs(z[usable, j]).max()))
            assert abs(float(np.median(z[usable, j]))) <= 1e-6 * spread  # the training median is typical


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-1e300, 1e300, allow_nan=False))
def test_property_inverse_slog_undoes_slog_and_slog_is_odd_and_increasing(x: float) -> None:
    value = np.array([x, -x, x + abs(x) * 1e-3 + 1.0])

    y = slog(value)

    assert inverse_slog(y)[0] == pytest.approx(x, rel=1e-9, abs=1e-12)
    assert y[1] == -y[0]
    assert y[2] > y[0]


@settings(max_examples=200, deadline=None)
@given(
    expected=st.floats(-1e9, 1e9, allow_nan=False),
    typical=st.floats(1e-4, 1e4),
    scale=st.floats(1e-3, 10.0),
    offset=st.floats(-1.0, 1.0),  # the training median deviation, in units of width * scale
    width=st.floats(0.5, 6.0),
    kind=st.sampled_from(["level", "ratio"]),
)
def test_property_the_band_is_ordered_and_holds_expected_when_the_training_median_is_within_it(
    expected: float, typical: float, scale: float, offset: float, width: float, kind: str
) -> None:
    space = FeatureSpace(
        names=["m"],
        kinds={"m": "level" if kind == "level" else "ratio"},
        typical={"m": typical} if kind == "ratio" else {},
        center={"m": offset * width * scale},
        scale={"m": scale},
    )

    lower, upper = space.band("m", expected, width)

    slack = 1e-9 * max(1.0, abs(expected))
    assert lower <= upper
    assert lower <= expected + slack
    assert expected - slack <= upper


def test_given_a_fitted_space_when_it_goes_through_json_then_it_transforms_identically() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for h in range(200):
        clicks = 1000 * rng.lognormal(0, 0.1)
        rows += [
            Row(_at(h), "clicks", f"{clicks:.0f}", "1000"),
            Row(_at(h), "signup_rate", f"{0.08 * rng.lognormal(0, 0.05):.5f}", "0.08"),
            Row(_at(h), "signups", "" if h % 17 == 0 else f"{clicks * 0.08:.0f}", "80"),
        ]
    frame = _frame_of(rows, config=ACME)
    space = FeatureSpace.fit(frame)

    restored = FeatureSpace.from_dict(json.loads(json.dumps(space.to_dict())))

    assert restored == space
    np.testing.assert_array_equal(restored.transform(frame), space.transform(frame))
    assert space.typical == {"signup_rate": pytest.approx(0.08)}
    assert all(s > 0 for s in space.scale.values())
