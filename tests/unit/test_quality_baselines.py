"""Baseline detectors: hand-computed steps, NaN and late data, learn=False, resize/select, IntegrationState."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kpi_sentinel.alerts import build_alerts
from kpi_sentinel.config import IntegrationConfig, MetricSpec, RatioSpec
from kpi_sentinel.detectors.ewma import StepResult
from kpi_sentinel.parsing import ValidRow
from kpi_sentinel.quality.baselines import SD_FLOOR, RollingZScore, StaticThreshold
from kpi_sentinel.quality.evaluate import Coverage, evaluate
from kpi_sentinel.quality.labels import Window
from kpi_sentinel.scoring import IntegrationState, aggregate

NAN = float("nan")
HOUR = 3600
T0 = datetime(2026, 9, 1, tzinfo=UTC)
P0 = int(T0.timestamp()) // HOUR

Baseline = RollingZScore | StaticThreshold


def _make(kind: type[Baseline], size: int, threshold: float = 3.0, season_length: int = 1) -> Baseline:
    """A baseline of ``kind`` whose readiness takes ``size`` observations (window or training)."""
    if kind is RollingZScore:
        return RollingZScore(season_length=season_length, threshold=threshold, window=size)
    return StaticThreshold(season_length=season_length, threshold=threshold, training=size)


def _one(
    d: Baseline,
    t: int,
    value: float,
    floor_sd: float | None = None,
    learn: bool | None = None,
) -> StepResult:
    """Step a one-series detector."""
    return d.step(
        t,
        np.array([value]),
        floor_sd=None if floor_sd is None else np.array([floor_sd]),
        learn=None if learn is None else np.array([learn]),
    )


def _floats(result: StepResult) -> tuple[float, float, float, float, bool]:
    return (
        float(result.expected[0]),
        float(result.lower[0]),
        float(result.upper[0]),
        float(result.score[0]),
        bool(result.ready[0]),
    )


def _state(d: Baseline) -> dict[str, npt.NDArray[np.generic]]:
    names = ["count_", "last_index_", "transform_"]
    names += ["buffer_"] if isinstance(d, RollingZScore) else ["mean_", "m2_"]
    return {name: getattr(d, name).copy() for name in names}


def _assert_same_state(a: dict[str, npt.NDArray[np.generic]], b: dict[str, npt.NDArray[np.generic]]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --- hand-computed ----------------------------------------------------------------------------------------


def test_rolling_zscore_by_hand() -> None:
    d = RollingZScore(season_length=24, threshold=3.0, window=3).resize(1)
    first = _floats(_one(d, 0, 10.0))  # nothing seen: all NaN
    assert all(math.isnan(v) for v in first[:4])
    assert first[4] is False
    expected, lower, _, score, ready = _floats(_one(d, 1, 12.0))  # one observation: a mean, no sd
    assert expected == 10.0
    assert math.isnan(lower)
    assert math.isnan(score)
    assert not ready
    expected, _, _, score, ready = _floats(_one(d, 2, 14.0))  # mean 11, sd sqrt(2): scored, not ready
    assert expected == 11.0
    assert score == pytest.approx(3 / math.sqrt(2))
    assert not ready
    # window [10, 12, 14]: mean 12, sd 2 -> band 6..18, (18 - 12) / 2 = 3
    assert _floats(_one(d, 3, 18.0)) == pytest.approx((12.0, 6.0, 18.0, 3.0, True))
    # the ring dropped the 10: window [12, 14, 18]
    window = np.array([12.0, 14.0, 18.0])
    mean, sd = window.mean(), window.std(ddof=1)
    assert _floats(_one(d, 4, 11.0)) == pytest.approx(
        (mean, mean - 3 * sd, mean + 3 * sd, (11 - mean) / sd, True)
    )
    assert int(d.count_[0]) == 5
    assert sorted(d.buffer_[:, 0].tolist()) == [11.0, 14.0, 18.0]


def test_static_threshold_by_hand_then_frozen() -> None:
    d = StaticThreshold(season_length=24, threshold=2.0, training=3).resize(1)
    for t, y in enumerate([10.0, 12.0, 14.0]):
        assert not _one(d, t, y).ready[0]
    # mean 12, sd 2: band 8..16 at threshold 2
    assert _floats(_one(d, 3, 100.0)) == pytest.approx((12.0, 8.0, 16.0, 44.0, True))
    assert _floats(_one(d, 4, 8.0)) == pytest.approx((12.0, 8.0, 16.0, -2.0, True))  # the 100 was not learned
    assert int(d.count_[0]) == 3
    assert float(d.mean_[0]) == pytest.approx(12.0)
    assert float(d.m2_[0]) == pytest.approx(8.0)


def test_static_threshold_default_training() -> None:
    assert StaticThreshold(season_length=168).training_periods == 336
    assert StaticThreshold(season_length=3).training_periods == 14
    assert StaticThreshold(season_length=3, training=5).training_periods == 5


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_constructor_keeps_the_protocol_hyperparameters(make: type[Baseline]) -> None:
    d = make(season_length=7, alpha=0.3, threshold=4.0, warmup=2)
    assert (d.season_length, d.alpha, d.threshold, d.warmup) == (7, 0.3, 4.0, 2)
    assert d.n_series == 0
    with pytest.raises(ValueError, match="threshold"):
        make(season_length=7, threshold=0.0)
    with pytest.raises(ValueError, match="season_length"):
        make(season_length=0)


def test_window_and_training_need_two_observations() -> None:
    with pytest.raises(ValueError, match="window"):
        RollingZScore(season_length=1, window=1)
    with pytest.raises(ValueError, match="training"):
        StaticThreshold(season_length=1, training=1)


# --- floors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_constant_series_uses_the_tiny_floor_and_floor_sd_bounds_it(make: type[Baseline]) -> None:
    d = _make(make, 3).resize(1)
    for t in range(3):
        _one(d, t, 5.0)
    same = _one(d, 3, 5.0)
    assert float(same.score[0]) == 0.0
    assert bool(same.ready[0])
    assert float(_one(d, 4, 5.0 + 1e-6, learn=False).score[0]) == pytest.approx(1e-6 / SD_FLOOR)
    floored = _one(d, 5, 6.0, floor_sd=0.5, learn=False)
    assert _floats(floored) == pytest.approx((5.0, 3.5, 6.5, 2.0, True))
    ignored = _one(d, 6, 6.0, floor_sd=NAN, learn=False)  # NaN floor: no floor
    assert float(ignored.score[0]) == pytest.approx(1.0 / SD_FLOOR)


# --- NaN, late data, learn=False --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_nan_is_no_observation(make: type[Baseline]) -> None:
    d = make(season_length=1).resize(2)
    for t in range(20):
        d.step(t, np.array([float(t % 3), 10.0 + t % 2]))
    before = _state(d)
    result = d.step(20, np.array([NAN, 11.0]))
    assert math.isnan(result.expected[0])
    assert math.isnan(result.lower[0])
    assert math.isnan(result.upper[0])
    assert math.isnan(result.score[0])
    assert not result.ready[0]
    assert result.ready[1]
    after = _state(d)
    for name, array in before.items():
        np.testing.assert_array_equal(array[..., 0], after[name][..., 0], err_msg=name)
    assert int(d.last_index_[1]) == 20


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_late_and_repeated_periods_are_left_untouched(make: type[Baseline]) -> None:
    d = make(season_length=1).resize(1)
    for t in range(20):
        _one(d, t, float(t % 4))
    before = _state(d)
    for t in (19, 5):  # repeated, then late
        result = _one(d, t, 100.0)
        assert math.isnan(result.score[0])
        assert math.isnan(result.expected[0])
        assert not result.ready[0]
    _assert_same_state(before, _state(d))


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_learn_false_scores_but_does_not_learn(make: type[Baseline]) -> None:
    d = _make(make, 4).resize(2)
    twin = _make(make, 4).resize(2)
    for t in range(3):
        values = np.array([float(t), 2.0 * t])
        d.step(t, values)
        twin.step(t, values)
    before = _state(d)
    result = d.step(3, np.array([50.0, 7.0]), learn=np.array([False, True]))
    reference = twin.step(3, np.array([50.0, 7.0]))
    np.testing.assert_array_equal(result.score, reference.score)  # scored like any period
    np.testing.assert_array_equal(result.expected, reference.expected)
    after = _state(d)
    assert int(after["count_"][0]) == int(before["count_"][0])
    assert int(after["count_"][1]) == int(before["count_"][1]) + 1
    for name in ("buffer_",) if make is RollingZScore else ("mean_", "m2_"):
        np.testing.assert_array_equal(after[name][..., 0], before[name][..., 0], err_msg=name)
    np.testing.assert_array_equal(d.last_index_, [2, 3])  # not learned: untouched, like SeasonalEWMA
    # the next period is scored as if period 3 had never taught series 0 anything
    fresh = _make(make, 4).resize(1)
    for t in range(3):
        _one(fresh, t, float(t))
    np.testing.assert_allclose(d.step(4, np.array([1.0, NAN])).score[0], _one(fresh, 4, 1.0).score[0])
    # a whole calendar period: scored, nothing learned at all
    before = _state(d)
    calendar = d.step(5, np.array([3.0, 9.0]), learn=np.zeros(2, dtype=np.bool_))
    assert not np.isnan(calendar.score).any()
    _assert_same_state(before, _state(d))


def test_shape_mismatch_is_an_error() -> None:
    d = RollingZScore(season_length=1).resize(2)
    with pytest.raises(ValueError, match="values"):
        d.step(0, np.array([1.0]))
    with pytest.raises(ValueError, match="learn"):
        d.step(0, np.array([1.0, 2.0]), learn=np.array([True]))
    with pytest.raises(ValueError, match="floor_sd"):
        d.step(0, np.array([1.0, 2.0]), floor_sd=np.array([0.0]))


# --- resize / select --------------------------------------------------------------------------------------


def _series(seed: int, n: int, length: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 10.0, size=(length, n))
    data[rng.random((length, n)) < 0.2] = np.nan
    return data


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_resize_and_select_keep_per_series_state_aligned(make: type[Baseline]) -> None:
    data = _series(7, 3, 40)
    d = _make(make, 5).resize(1, ["identity"])
    solo = [_make(make, 5).resize(1) for _ in range(3)]
    for t in range(40):
        if t == 10:
            d.resize(3, ["ssqrt", "identity"])  # series 1 and 2 join late
        row = data[t, : d.n_series]
        result = d.step(t, row)
        for i in range(d.n_series):
            alone = solo[i].step(t, row[i : i + 1])
            np.testing.assert_allclose(result.score[i], alone.score[0], err_msg=f"t={t} series={i}")
            assert result.ready[i] == alone.ready[0]
        if t < 10:
            for s in (1, 2):  # keep the late joiners' twins in step with their (empty) start
                solo[s].step(t, np.array([NAN]))
    np.testing.assert_array_equal(d.transform_, [1, 0, 1])
    d.select(np.array([2, 0]))
    np.testing.assert_array_equal(d.transform_, [1, 1])
    assert d.n_series == 2
    for t in range(40, 50):
        row = data[t - 30, [2, 0]]
        result = d.step(t, row)
        for position, i in enumerate((2, 0)):
            alone = solo[i].step(t, row[position : position + 1])
            np.testing.assert_allclose(result.score[position], alone.score[0])
            np.testing.assert_allclose(result.expected[position], alone.expected[0])


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_resize_only_grows_and_checks_transforms(make: type[Baseline]) -> None:
    d = make(season_length=1).resize(2)
    np.testing.assert_array_equal(d.transform_, [0, 0])  # default transform: ssqrt
    assert make(season_length=1, transform="identity").resize(1).transform_.tolist() == [1]
    with pytest.raises(ValueError, match="only grows"):
        d.resize(1)
    with pytest.raises(ValueError, match="transforms"):
        d.resize(3, ["log"])
    with pytest.raises(ValueError, match="transforms"):
        d.resize(4, ["ssqrt"])
    assert d.resize(2) is d


# --- properties: against a plain numpy reference ----------------------------------------------------------

VALUES = st.lists(
    st.one_of(st.just(NAN), st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(VALUES, st.integers(2, 6))
def test_rolling_zscore_matches_numpy(values: list[float], window: int) -> None:
    d = RollingZScore(season_length=1, threshold=3.0, window=window).resize(1)
    seen: list[float] = []
    for t, y in enumerate(values):
        result = _one(d, t, y)
        if math.isnan(y):
            assert math.isnan(result.score[0])
            assert not result.ready[0]
            continue
        last = np.array(seen[-window:])
        assert bool(result.ready[0]) == (len(seen) >= window)
        if len(last) >= 2:
            sd = max(float(last.std(ddof=1)), SD_FLOOR)
            assert float(result.expected[0]) == pytest.approx(float(last.mean()), rel=1e-9, abs=1e-9)
            assert float(result.upper[0] - result.lower[0]) == pytest.approx(6 * sd, rel=1e-6, abs=1e-6)
        seen.append(y)


@settings(max_examples=150, deadline=None)
@given(VALUES, st.integers(2, 6))
def test_static_threshold_matches_numpy(values: list[float], training: int) -> None:
    d = StaticThreshold(season_length=1, threshold=3.0, training=training).resize(1)
    seen: list[float] = []
    for t, y in enumerate(values):
        result = _one(d, t, y)
        if math.isnan(y):
            assert not result.ready[0]
            continue
        first = np.array(seen[:training])
        assert bool(result.ready[0]) == (len(seen) >= training)
        if len(first) >= 2:
            sd = max(float(first.std(ddof=1)), SD_FLOOR)
            assert float(result.expected[0]) == pytest.approx(float(first.mean()), rel=1e-9, abs=1e-9)
            assert float(result.upper[0] - result.lower[0]) == pytest.approx(6 * sd, rel=1e-6, abs=1e-6)
        seen.append(y)


# --- driven by IntegrationState ---------------------------------------------------------------------------

CONFIG = IntegrationConfig(
    integration_id="acme",
    granularity_seconds=HOUR,
    season_length=4,
    dimensions=("source",),
    metrics=(MetricSpec("clicks", "both"), MetricSpec("ftds", "down")),
    ratios=(RatioSpec("conversion", "ftds", "clicks"),),
)


def _rows(hours: int, spike_at: int) -> list[ValidRow]:
    rows: list[ValidRow] = []
    for h in range(hours):
        for source, clicks in (("google", 100.0 + (h % 3)), ("meta", 50.0 + (h % 2))):
            if h == spike_at and source == "google":
                clicks = 400.0
            rows.append(
                ValidRow(
                    row=len(rows) + 1,
                    timestamp=T0 + timedelta(hours=h),
                    dimensions={"source": source},
                    values={"clicks": clicks, "ftds": clicks / 10},
                )
            )
    return rows


@pytest.mark.parametrize("make", [RollingZScore, StaticThreshold])
def test_integration_state_drives_a_baseline(make: type[Baseline]) -> None:
    state = IntegrationState(CONFIG, HOUR)
    state.detector = _make(make, 3, season_length=CONFIG.season).resize(0)
    agg = aggregate(_rows(12, spike_at=10), CONFIG, HOUR, state.known_values())
    result = state.score(agg)

    # 3 metrics × (total + 2 sources) = 9 series, every period
    assert len(state.series) == 9
    assert len(result.points) == 9 * 12
    assert {p.period for p in result.points} == set(range(P0, P0 + 12))
    assert state.last_period == P0 + 11
    transforms = dict(zip(state.series, state.detector.transform_.tolist(), strict=True))
    assert transforms[("conversion", "", "")] == 1
    assert transforms[("clicks", "source", "google")] == 0

    clicks = [p for p in result.points if p.series == ("clicks", "", "")]
    assert [p.ready for p in clicks] == [False] * 3 + [True] * 9
    assert clicks[3].expected == pytest.approx(np.mean([150.0, 152.0, 152.0]))  # totals of hours 0-2
    spike = next(p for p in clicks if p.period == P0 + 10)
    assert spike.score > 3.0

    alerts = build_alerts(CONFIG, HOUR, result.points, "syncs/acme/1.csv")
    flagged = {(a["metric"], a["dimension_value"], a["period_start"]) for a in alerts}
    spike_start = (T0 + timedelta(hours=10)).isoformat()
    assert ("clicks", None, spike_start) in flagged

    # the benchmark's scoring accepts what came out
    window = Window("acme", "spike", T0 + timedelta(hours=10), T0 + timedelta(hours=11), ("clicks",))
    coverage = Coverage("acme", HOUR, series=len(state.series), periods=12)
    report = evaluate([window], [], alerts, [coverage])
    assert report.windows[0].caught
    assert report.windows[0].delay_periods == 0.0

    # reconfigure sets the hyperparameters it knows about and keeps the baseline
    assert not state.reconfigure(replace(CONFIG, threshold=5.0, alpha=0.3, warmup=2))
    assert isinstance(state.detector, make)
    assert (state.detector.threshold, state.detector.alpha, state.detector.warmup) == (5.0, 0.3, 2)
