"""SeasonalEWMA: hand-computed steps, warm-up, what it flags and what it leaves alone, per-series state."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kpi_sentinel.detectors.ewma import SeasonalEWMA, StepResult

NAN = float("nan")
DAY = 24


def _one(d: SeasonalEWMA, t: int, value: float) -> StepResult:
    return d.step(t, np.array([value]))


def _state(d: SeasonalEWMA) -> dict[str, npt.NDArray[np.generic]]:
    return {
        name: getattr(d, name).copy()
        for name in (
            "baseline_",
            "undo_",
            "mean_",
            "var_",
            "count_",
            "last_index_",
            "transform_",
            "run_",
            "slow_",
            "chart_",
            "cvar_",
        )
    }


def _assert_same_state(a: dict[str, npt.NDArray[np.generic]], b: dict[str, npt.NDArray[np.generic]]) -> None:
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _hourly_traffic(seed: int, days: int, level: float = 400.0) -> npt.NDArray[np.float64]:
    """Poisson counts with a daily profile: night about 20% of the afternoon peak."""
    t = np.arange(days * DAY)
    profile = 0.2 + 0.8 * (1 + np.cos(2 * np.pi * (t % DAY - 15) / DAY)) / 2
    return np.random.default_rng(seed).poisson(level * profile).astype(np.float64)


def _documented() -> SeasonalEWMA:
    """The class docstring's example: identity transform, season 2, level alpha 0.5, variance alpha 0.02."""
    return SeasonalEWMA(
        season_length=2,
        alpha=0.5,
        variance_alpha=0.02,
        seasonal_smoothing=1.0,
        transform="identity",
        warmup=2,
    ).resize(1)


def _rates(updates_so_far: int) -> tuple[float, float]:
    """(level rate, variance rate): running averages at first, then the EWMA rates."""
    start = 1 / (updates_so_far + 1)
    return max(0.5, start), max(0.02, start)


# --- hand-computed values -----------------------------------------------------------------------------------


def test_given_the_documented_example_then_expected_and_score_are_the_hand_computed_ones() -> None:
    d = _documented()

    results = [_one(d, t, y) for t, y in enumerate([10.0, 20.0, 12.0, 20.0, 16.0])]

    # Season 1 seeds the baselines (nothing to compare with yet).
    assert math.isnan(results[0].score[0])
    assert math.isnan(results[1].score[0])
    # t=2: baseline 10, mean 0 -> expected 10; variance still 0, so the sd floor (0.02) applies.
    assert results[2].expected[0] == 10.0
    assert results[2].score[0] == pytest.approx(2 / 0.02)
    assert not results[2].ready[0]
    # t=4: baseline 12 + mean 1 = 13, sd 1 -> score (16 - 13) / 1 = 3, warmed up after 2 updates.
    assert (results[4].expected[0], results[4].score[0], bool(results[4].ready[0])) == (13.0, 3.0, True)
    assert results[4].lower[0] == pytest.approx(13 - 3)
    assert results[4].upper[0] == pytest.approx(13 + 3)
    # Folding t=4 in (third update): deviation 3 is inside the 3-sd band, so it is learned in full.
    level_rate, var_rate = _rates(2)
    assert (level_rate, var_rate) == (0.5, 1 / 3)
    assert d.mean_[0] == pytest.approx(1 + level_rate * 3)
    assert d.var_[0] == pytest.approx((1 - var_rate) * (1 + var_rate * 3**2))
    assert d.baseline_[0, 0] == pytest.approx(13 + 3)


def test_given_a_warm_detector_when_a_spike_arrives_then_what_it_teaches_is_clipped_to_the_band() -> None:
    d = _documented()
    for t, y in enumerate([10.0, 20.0, 12.0, 20.0, 16.0]):
        _one(d, t, y)
    mean, var = 2.5, 8 / 3  # from the test above; the baseline of phase 1 is 20
    sd = math.sqrt(var)

    result = _one(d, 5, 100.0)

    assert result.expected[0] == pytest.approx(20 + mean)
    assert result.score[0] == pytest.approx((100 - 22.5) / sd)
    assert (result.lower[0], result.upper[0]) == pytest.approx((22.5 - 3 * sd, 22.5 + 3 * sd))
    # The state learns a deviation of 3 sd, not 77.5.
    level_rate, var_rate = _rates(3)
    assert d.mean_[0] == pytest.approx(mean + level_rate * 3 * sd)
    assert d.var_[0] == pytest.approx((1 - var_rate) * (var + var_rate * (3 * sd) ** 2))
    assert d.baseline_[1, 0] == pytest.approx(22.5 + 3 * sd)


def test_given_counts_when_scored_then_the_model_works_in_square_roots_and_reports_in_counts() -> None:
    d = SeasonalEWMA(season_length=1, alpha=0.5, seasonal_smoothing=1.0, warmup=1).resize(1)

    _one(d, 0, 100.0)
    result = _one(d, 1, 144.0)

    assert d.transform_[0] == 0  # ssqrt
    # sqrt space: expected 10, observed 12, sd at its floor 0.02 -> score 100.
    assert result.score[0] == pytest.approx((12 - 10) / 0.02)
    # Reported back in counts: 10², and an asymmetric band (10 ± 0.06)².
    assert result.expected[0] == pytest.approx(100.0)
    assert (result.lower[0], result.upper[0]) == pytest.approx((9.94**2, 10.06**2))


def test_given_negative_values_when_scored_under_ssqrt_then_the_sign_survives_the_round_trip() -> None:
    d = SeasonalEWMA(season_length=1, warmup=0).resize(1)  # NGR can be negative (chargebacks)

    _one(d, 0, -9.0)
    result = _one(d, 1, -9.0)

    assert d.baseline_[0, 0] == pytest.approx(-3.0)
    assert result.expected[0] == pytest.approx(-9.0)
    assert result.score[0] == pytest.approx(0.0)


def test_given_a_ratio_and_a_count_series_then_only_the_count_is_square_rooted() -> None:
    d = SeasonalEWMA(season_length=1, warmup=0).resize(2, ["identity", "ssqrt"])

    first = d.step(0, np.array([16.0, 16.0]))
    result = d.step(1, np.array([16.0, 16.0]))

    assert np.isnan(first.score).all()
    np.testing.assert_allclose(d.baseline_[0], [16.0, 4.0])
    np.testing.assert_allclose(result.expected, [16.0, 16.0])
    assert list(d.transform_) == [1, 0]


def test_given_bad_arguments_then_the_detector_refuses_them() -> None:
    with pytest.raises(ValueError, match="season_length"):
        SeasonalEWMA(season_length=0)
    with pytest.raises(ValueError, match="alpha"):
        SeasonalEWMA(season_length=7, alpha=0.0)
    with pytest.raises(ValueError, match="transform"):
        SeasonalEWMA(season_length=7, transform="log")
    d = SeasonalEWMA(season_length=7).resize(2)
    with pytest.raises(ValueError, match="only grows"):
        d.resize(1)
    with pytest.raises(ValueError, match="transforms"):
        d.resize(4, ["ssqrt"])
    with pytest.raises(ValueError, match="expected 2 values"):
        d.step(0, np.array([1.0]))


# --- warm-up ------------------------------------------------------------------------------------------------


def test_given_a_new_series_then_it_is_not_ready_before_two_seasons() -> None:
    d = SeasonalEWMA(season_length=DAY).resize(1)
    assert d.warmup_updates == DAY  # a season of residual updates
    assert SeasonalEWMA(season_length=168).warmup_updates == 168
    assert SeasonalEWMA(season_length=4).warmup_updates == 7  # never fewer than 7

    ready = [bool(_one(d, t, 100.0 + t % 3).ready[0]) for t in range(4 * DAY)]

    first_ready = ready.index(True)
    assert first_ready == 2 * DAY  # one season to seed every phase, then a season of residual updates
    assert all(ready[first_ready:])


def test_given_a_new_series_then_its_slow_chart_speaks_a_season_after_its_single_periods() -> None:
    d = SeasonalEWMA(season_length=DAY).resize(1)
    assert d.chart_warmup_updates == 2 * DAY
    assert SeasonalEWMA(season_length=DAY, warmup=30).chart_warmup_updates == 30  # explicit: as told

    results = [_one(d, t, 100.0 + t % 3) for t in range(4 * DAY)]

    ready = [bool(r.ready[0]) for r in results]
    charted = [r.sustained is not None and not math.isnan(r.sustained[0]) for r in results]
    assert ready.index(True) == 2 * DAY
    assert charted.index(True) == 3 * DAY  # a season of updates more
    assert all(charted[3 * DAY :])
    assert not any(charted[: 3 * DAY])


def test_given_the_second_season_then_outliers_are_clipped_before_the_series_may_alert() -> None:
    d = SeasonalEWMA(season_length=DAY).resize(1)
    assert (d.robust_updates, SeasonalEWMA(season_length=168).robust_updates) == (7, 24)
    assert SeasonalEWMA(season_length=DAY, warmup=3).robust_updates == 3  # never after the warm-up
    values = _hourly_traffic(2, days=2)
    _run(d, values[: DAY + 10])  # seeded, and 10 residual updates: robust, not ready
    mean, band = d.mean_[0], d.threshold * np.sqrt(max(d.var_[0], d.sd_floor**2))
    spike = d.step(DAY + 10, np.array([values[DAY + 10] * 20]))

    assert not spike.ready[0]
    assert spike.sustained is not None
    assert np.isnan(spike.sustained[0])
    assert spike.score[0] > 10 * d.threshold  # scored all the same
    assert d.mean_[0] - mean == pytest.approx(0.1 * band)  # the level learned the clipped deviation


def test_given_a_phase_never_seen_then_it_is_not_ready_there_even_after_warmup() -> None:
    d = SeasonalEWMA(season_length=4, warmup=0).resize(1)
    for t in (0, 1, 2):  # phase 3 is missing in the first season
        _one(d, t, 50.0)

    seen = {t: _one(d, t, 50.0) for t in (4, 5, 6, 7, 8, 11)}

    assert all(seen[t].ready[0] for t in (4, 5, 6))
    assert not seen[7].ready[0]
    assert math.isnan(seen[7].score[0])
    assert seen[8].ready[0]
    assert seen[11].ready[0]


# --- what it flags ------------------------------------------------------------------------------------------


def test_given_clean_seasonal_traffic_with_noise_then_alerts_stay_rare_after_warmup() -> None:
    scores = []
    for seed in range(8):
        d = SeasonalEWMA(season_length=DAY).resize(1)
        for t, y in enumerate(_hourly_traffic(seed, days=21)):
            result = _one(d, t, y)
            if result.ready[0]:
                scores.append(result.score[0])
    scores_ = np.abs(np.array(scores))

    assert len(scores_) == 8 * 19 * DAY  # ready from the third day on
    # Pure Poisson noise: a few false exceedances per thousand points at most, none of them extreme.
    assert np.mean(scores_ >= 3) < 0.02
    assert scores_.max() < 8


def test_given_a_crater_at_one_phase_then_it_scores_far_below_minus_three() -> None:
    y = _hourly_traffic(seed=1, days=21)
    crater = 20 * DAY + 15  # day 21, 15:00, the daily peak
    y[crater] *= 0.2
    d = SeasonalEWMA(season_length=DAY).resize(1)

    results = [_one(d, t, v) for t, v in enumerate(y)]

    assert results[crater].ready[0]
    assert results[crater].score[0] <= -3
    assert results[crater].expected[0] > 2.5 * y[crater]


def test_given_one_huge_spike_then_a_crater_a_few_periods_later_is_still_flagged() -> None:
    y = _hourly_traffic(seed=2, days=21)
    spike, crater = 19 * DAY + 12, 19 * DAY + 16
    y[spike] *= 20
    y[crater] *= 0.2
    d = SeasonalEWMA(season_length=DAY).resize(1)
    for t in range(spike):
        _one(d, t, y[t])
    mean, sd = d.mean_[0], math.sqrt(max(d.var_[0], d.sd_floor**2))

    at_spike = _one(d, spike, y[spike])
    learned = d.mean_[0] - mean
    later = [_one(d, t, y[t]) for t in range(spike + 1, len(y))]

    assert at_spike.ready[0]
    assert at_spike.score[0] >= 20
    # What the spike taught the level was clipped to alpha × 3 sd, not alpha × 20+ sd ...
    assert 0 < learned <= d.alpha * d.threshold * sd + 1e-9
    # ... so the crater four hours later still stands out.
    at_crater = later[crater - spike - 1]
    assert at_crater.ready[0]
    assert at_crater.score[0] <= -3


# --- late, repeated and missing data ------------------------------------------------------------------------


def test_given_a_repeated_or_late_period_then_the_state_is_untouched_and_nothing_is_said() -> None:
    d = SeasonalEWMA(season_length=3, warmup=0).resize(1)
    for t in range(10):
        _one(d, t, 100.0 + t)
    before = _state(d)

    repeated = _one(d, 9, 5.0)
    late = _one(d, 7, 5.0)

    _assert_same_state(before, _state(d))
    for result in (repeated, late):
        assert math.isnan(result.score[0])
        assert not result.ready[0]


def test_given_nan_for_one_series_then_that_series_is_not_updated_and_the_others_are() -> None:
    d = SeasonalEWMA(season_length=2, warmup=0).resize(2)
    for t in range(6):
        d.step(t, np.array([10.0 + t, 20.0 + t]))
    before = _state(d)

    result = d.step(6, np.array([NAN, 30.0]))

    after = _state(d)
    for name in ("mean_", "var_", "count_", "last_index_"):
        assert after[name][0] == before[name][0], name
        assert after[name][1] != before[name][1], name
    np.testing.assert_array_equal(after["baseline_"][:, 0], before["baseline_"][:, 0])
    assert math.isnan(result.score[0])
    assert not result.ready[0]
    assert result.ready[1]


# --- per-series state ---------------------------------------------------------------------------------------


def test_given_resize_and_select_then_each_series_keeps_its_own_state() -> None:
    a, b = _hourly_traffic(3, days=3), _hourly_traffic(4, days=3, level=50.0)
    both = SeasonalEWMA(season_length=DAY).resize(2)
    alone = SeasonalEWMA(season_length=DAY).resize(1)
    for t in range(2 * DAY):
        both.step(t, np.array([a[t], b[t]]))
        _one(alone, t, b[t])
    before = _state(both)

    both.resize(3)
    grown = _state(both)
    both.select(np.array([1]))  # keep only b

    for name in ("mean_", "var_", "count_", "last_index_", "transform_"):
        np.testing.assert_array_equal(grown[name][:2], before[name], err_msg=name)
    np.testing.assert_array_equal(grown["baseline_"][:, :2], before["baseline_"])
    assert np.isnan(grown["baseline_"][:, 2]).all()
    assert grown["count_"][2] == 0
    assert grown["last_index_"][2] == -1
    _assert_same_state(_state(alone), _state(both))
    for t in range(2 * DAY, 3 * DAY):  # and it goes on exactly as if b had always been alone
        r_both, r_alone = both.step(t, np.array([b[t]])), _one(alone, t, b[t])
        np.testing.assert_array_equal(r_both.score, r_alone.score)
        np.testing.assert_array_equal(r_both.expected, r_alone.expected)


# --- properties ---------------------------------------------------------------------------------------------

_VALUE = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
_MAYBE = st.one_of(_VALUE, _VALUE, _VALUE, st.just(NAN))


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(_VALUE, min_size=1, max_size=60),
    season=st.integers(1, 6),
    alpha=st.floats(0.01, 1.0),
    smoothing=st.floats(0.05, 1.0),
    transform=st.sampled_from(["ssqrt", "identity"]),
)
def test_property_the_state_stays_finite_for_any_finite_non_negative_series(
    values: list[float], season: int, alpha: float, smoothing: float, transform: str
) -> None:
    d = SeasonalEWMA(season_length=season, alpha=alpha, seasonal_smoothing=smoothing, transform=transform)
    d.resize(1)

    for t, value in enumerate(values):
        result = _one(d, t, value)

        assert np.isfinite(d.mean_).all()
        assert np.isfinite(d.var_).all()
        assert (d.var_ >= 0).all()
        seen = ~np.isnan(d.baseline_)
        assert np.isfinite(d.baseline_[seen]).all()
        kept = ~np.isnan(d.undo_)  # an imprint is only kept where a seen phase learned from an outlier
        assert np.isfinite(d.undo_[kept]).all()
        assert seen[kept].all()
        assert seen[: min(t + 1, season)].all()  # a phase once seen stays seeded
        if t >= season:  # every phase seeded: there is a score and an expectation
            assert np.isfinite(result.score[0])
            assert np.isfinite(result.expected[0])


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(_MAYBE, _MAYBE, _MAYBE), min_size=1, max_size=50),
    season=st.integers(1, 5),
    position=st.integers(0, 2),
    transforms=st.lists(st.sampled_from(["ssqrt", "identity"]), min_size=3, max_size=3),
)
def test_property_a_series_result_does_not_depend_on_the_other_series_in_the_detector(
    data: list[tuple[float, float, float]], season: int, position: int, transforms: list[str]
) -> None:
    alone = SeasonalEWMA(season_length=season, warmup=2).resize(1, [transforms[position]])
    shared = SeasonalEWMA(season_length=season, warmup=2).resize(3, transforms)

    for t, row in enumerate(data):
        mine = row[position]
        r_alone = alone.step(t, np.array([mine]))
        r_shared = shared.step(t, np.array(row))

        for field in ("expected", "lower", "upper", "score", "ready"):
            np.testing.assert_array_equal(
                getattr(r_alone, field)[0], getattr(r_shared, field)[position], err_msg=field
            )
    for name, value in _state(alone).items():
        mine_shared = getattr(shared, name)[..., position]
        np.testing.assert_array_equal(value[..., 0], mine_shared, err_msg=name)


# --- level shifts, drifts and the slow chart -----------------------------------------------------------------


def _run(d: SeasonalEWMA, values: npt.NDArray[np.float64], start: int = 0) -> list[StepResult]:
    return [_one(d, start + t, float(v)) for t, v in enumerate(values)]


def test_given_a_level_shift_then_it_is_the_new_normal_after_the_adaptation_periods() -> None:
    d = SeasonalEWMA(season_length=DAY).resize(1)
    before = _hourly_traffic(1, 14)
    after = _hourly_traffic(2, 14) * 1.6  # a permanent +60% from day 15
    _run(d, before)
    results = _run(d, after, start=len(before))
    scores = np.array([r.score[0] for r in results])

    assert np.any(scores[:3] > 3)  # the onset is flagged ...
    assert np.sum(np.abs(scores[2 * DAY :]) > 3) <= 2  # ... and from the second day on it is normal again
    sustained = np.array([r.sustained[0] for r in results if r.sustained is not None])
    assert np.sum(np.abs(sustained[2 * DAY :]) > 3) <= 2


def test_given_a_level_shift_then_a_season_later_the_expectation_does_not_overshoot() -> None:
    week = np.array([1.0, 1.1, 1.05, 1.0, 0.95, 0.7, 0.6])
    overshoots = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        d = SeasonalEWMA(season_length=7).resize(1)
        _run(d, rng.poisson(np.tile(5000 * week, 10)).astype(np.float64))
        after = _run(d, rng.poisson(np.tile(3000 * week, 4)).astype(np.float64), start=70)  # -40% for good
        overshoots += sum(1 for r in after[7:] if r.score[0] > 3)

    # The baselines absorb the new level once; a baseline that also took the whole level correction
    # would count the shift twice from the second week on (58 such periods over these 8 series).
    assert overshoots <= 24


def test_given_a_slow_drift_then_the_slow_chart_flags_it_while_single_periods_look_normal() -> None:
    d = SeasonalEWMA(season_length=DAY).resize(1)
    _run(d, _hourly_traffic(5, 21, level=2000.0))
    hours = 4 * DAY
    decline = np.linspace(1.0, 0.6, hours)  # to -40% over four days
    results = _run(d, _hourly_traffic(6, 4, level=2000.0) * decline, start=21 * DAY)
    scores = np.array([r.score[0] for r in results])
    sustained = np.array([r.sustained[0] for r in results if r.sustained is not None])

    assert np.sum(scores < -3) < 5  # the fast level follows the drift
    assert np.any(sustained[: 3 * DAY] < -3)  # the slow chart does not


_WEEK = np.array([1.0, 1.1, 1.05, 1.0, 0.95, 0.7, 0.6])


def _daily(seed: int, weeks: int, factor: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Daily counts around 10,000 with a weekly profile, 5% day-to-day wobble, times ``factor``."""
    rng = np.random.default_rng(seed)
    expected = np.tile(10_000 * _WEEK, weeks) * factor * rng.lognormal(0.0, 0.05, 7 * weeks)
    return rng.poisson(expected).astype(np.float64)


def _factor(days: int, start: int, factor: float, length: int | None = None) -> npt.NDArray[np.float64]:
    """1 everywhere, ``factor`` from ``start`` for ``length`` days (for good when None)."""
    out = np.ones(days)
    out[start : None if length is None else start + length] = factor
    return out


def _burst_run(seed: int, factor: npt.NDArray[np.float64], forget: bool = False) -> npt.NDArray[np.float64]:
    """Scores of ten weeks of daily data; ``forget`` wipes the kept rows after day 45."""
    values = _daily(seed, 10, factor)
    d = SeasonalEWMA(season_length=7).resize(1)
    results = _run(d, values[:45])
    if forget:
        d.undo_[:] = np.nan
    results += _run(d, values[45:], start=45)
    return np.array([r.score[0] for r in results])


@pytest.mark.parametrize("seed", range(4))
def test_given_a_three_day_burst_then_a_season_later_its_phases_expect_the_old_level(seed: int) -> None:
    bots = _factor(70, 42, 3.0, length=3)  # six clean weeks, three days of bot traffic (x3), clean again

    scores = _burst_run(seed, bots)
    forgotten = _burst_run(seed, bots, forget=True)  # what it would be without the kept rows

    assert (scores[42:45] > 3.5).all()  # the burst is flagged
    # Its third day was learned as a new level: without the old row it echoes a season later, and
    # for weeks while the clipped learning unwinds it; with it, nothing.
    assert forgotten[51] < -3.5
    assert np.sum(np.abs(forgotten[49:]) > 3.5) >= 2
    assert np.sum(np.abs(scores[49:]) > 3.5) == 0


def test_given_a_calendar_period_then_it_neither_leaves_nor_settles_an_imprint() -> None:
    values = _daily(0, 8, _factor(56, 42, 3.0, length=1))  # a burst on day 42
    d = SeasonalEWMA(season_length=7).resize(1)
    _run(d, values[:43])
    kept = d.undo_[0, 0]  # day 42's phase keeps its row from before the burst
    assert np.isfinite(kept)

    # A campaign from the calendar on that phase a season later, far out of band: scored, not learned.
    d.step(49, np.array([values[49] * 3]), learn=np.array([False]))

    assert d.undo_[0, 0] == kept
    assert np.isnan(d.undo_[1:, 0]).all()


@pytest.mark.parametrize("seed", range(4))
def test_given_a_lasting_level_shift_then_its_imprints_stay(seed: int) -> None:
    shift = _factor(70, 42, 1.5)  # +50% for good from day 42
    values = _daily(seed, 10, shift)
    d = SeasonalEWMA(season_length=7).resize(1)
    results = _run(d, values)
    scores = np.array([r.score[0] for r in results])
    expected = np.array([r.expected[0] for r in results])

    assert (scores[42:44] > 3.5).all()  # the onset is flagged
    assert np.sum(np.abs(scores[49:]) > 3.5) == 0  # a season later the new level is the normal one
    old_level = np.tile(10_000 * _WEEK, 10)
    assert (expected[49:] > 1.25 * old_level[49:]).all()  # no phase went back to the old level
    assert np.isnan(d.undo_[:, 0]).sum() >= 6  # imprints settle when their phase comes round again


def test_given_clean_traffic_then_the_slow_chart_stays_quiet() -> None:
    d = SeasonalEWMA(season_length=DAY).resize(1)
    results = _run(d, _hourly_traffic(7, 35))
    sustained = np.array([r.sustained[0] for r in results[14 * DAY :] if r.sustained is not None])

    assert np.mean(np.abs(sustained) > 3) < 0.01


# --- the phase window ----------------------------------------------------------------------------------------


def test_given_a_phase_window_then_the_expectation_averages_the_neighbouring_phases_hand_computed() -> None:
    d = SeasonalEWMA(
        season_length=4, alpha=0.5, seasonal_smoothing=0.5, transform="identity", warmup=1, phase_window=1
    ).resize(1)
    for t, y in enumerate([10.0, 20.0, 30.0, 40.0]):  # season 1 seeds the phases
        _one(d, t, y)

    # Phase 0 wraps around: its neighbours are phases 3 and 1 -> (40 + 10 + 20) / 3.
    first = _one(d, 4, 26.0)
    assert first.expected[0] == pytest.approx(70 / 3)
    # Phase 0 learns towards the neighbourhood's average plus the residual (26, learned in full: not
    # ready before its first update, so nothing is clipped): 10 + 0.5 * (26 - 10).
    assert d.baseline_[0, 0] == pytest.approx(18.0)
    assert d.mean_[0] == pytest.approx(26 - 70 / 3)  # the first update is a plain average

    # Phase 1: (18 + 20 + 30) / 3 plus the level.
    second = _one(d, 5, 30.0)
    assert second.expected[0] == pytest.approx(68 / 3 + (26 - 70 / 3))


def test_given_a_phase_window_then_a_phase_never_seen_is_still_not_scored() -> None:
    d = SeasonalEWMA(season_length=5, warmup=0, transform="identity", phase_window=1).resize(1)
    _one(d, 0, 10.0)
    _one(d, 1, 20.0)  # phases 2 to 4 not seen in the first season

    assert math.isnan(_one(d, 7, 50.0).score[0])  # phase 2 itself unseen, though its neighbour 1 was
    result = _one(d, 11, 16.0)  # phase 1: neighbours 0 (10), 1 (20) and 2 (50, seeded at t=7)
    assert result.expected[0] == pytest.approx((10 + 20 + 50) / 3)


def test_given_a_phase_window_then_unseen_neighbours_are_left_out_of_the_average() -> None:
    d = SeasonalEWMA(season_length=5, warmup=0, transform="identity", phase_window=1).resize(1)
    _one(d, 0, 10.0)
    _one(d, 1, 20.0)

    assert _one(d, 5, 12.0).expected[0] == pytest.approx(15.0)  # phase 0: phase 4 unseen, (10 + 20) / 2


@pytest.mark.parametrize("seed", [11, 13])
def test_given_small_counts_with_a_smooth_profile_then_a_phase_window_learns_less_noise(seed: int) -> None:
    # About 2 events per 5 minutes: one phase's baseline is a few days of 0s, 1s, 2s and 3s, and its
    # noise adds to the residual's; the neighbours' average has less of it.
    periods = 288
    t = np.arange(periods * 12)
    rate = 3.0 * (0.5 + 0.5 * np.sin(2 * np.pi * (t % periods) / periods) ** 2)
    counts = np.random.default_rng(seed).poisson(rate).astype(np.float64)
    variance = {}
    for window in (0, 2):
        d = SeasonalEWMA(season_length=periods, phase_window=window).resize(1)
        _run(d, counts)
        variance[window] = float(d.var_[0])

    assert variance[2] < 0.9 * variance[0]


def test_given_a_negative_phase_window_then_the_detector_refuses_it() -> None:
    with pytest.raises(ValueError, match="phase_window"):
        SeasonalEWMA(season_length=7, phase_window=-1)


# --- the slow chart's spread growth cap ----------------------------------------------------------------------

_FIVE_MIN_DAY = 288


_CRATER = slice(_FIVE_MIN_DAY * 7 + 132, _FIVE_MIN_DAY * 7 + 158)  # 11:00-13:10 on the eighth day


def _five_minute_ftds(seed: int) -> npt.NDArray[np.float64]:
    """Eight days of about 2-9 FTDs per 5 minutes on a daily profile, with a -66% crater at ``_CRATER``."""
    t = np.arange(_FIVE_MIN_DAY * 8)
    rate = 2.0 + 7.0 * np.sin(np.pi * (t % _FIVE_MIN_DAY) / _FIVE_MIN_DAY) ** 2
    rate[_CRATER] *= 0.34
    return np.random.default_rng(seed).poisson(rate).astype(np.float64)


def _five_minute_detector(growth: float | None) -> SeasonalEWMA:
    return SeasonalEWMA(
        season_length=_FIVE_MIN_DAY,
        threshold=4.0,
        phase_window=2,
        chart_lambda=0.1,
        chart_spread_growth=growth,
    ).resize(1)


@pytest.mark.parametrize("seed", range(4))
def test_given_a_two_hour_crater_in_small_counts_then_a_capped_chart_spread_flags_it_and_an_unbounded_one_less(
    seed: int,
) -> None:
    # Each period of the crater is about 2 SD low, which no single period shows; the chart is past 4 once
    # its spread cannot grow as fast as the crater would teach it.
    counts = _five_minute_ftds(seed)
    low = {}
    for growth in (0.03, None):
        results = _run(_five_minute_detector(growth), counts)
        sustained = np.array([r.sustained[0] if r.sustained is not None else NAN for r in results])
        low[growth] = float(np.nanmin(sustained[_CRATER]))

    assert low[0.03] < -4.0
    assert low[0.03] < low[None] - 0.5


def _wobbling_counts(seed: int, days: int) -> npt.NDArray[np.float64]:
    """16-72 events per 5 minutes on a daily profile, each hour ±10% off it at random (lognormal)."""
    rng = np.random.default_rng(seed)
    t = np.arange(_FIVE_MIN_DAY * days)
    rate = 16.0 + 56.0 * np.sin(np.pi * (t % _FIVE_MIN_DAY) / _FIVE_MIN_DAY) ** 2
    hourly = np.repeat(rng.lognormal(0.0, 0.1, size=days * 24), 12)
    return rng.poisson(rate * hourly).astype(np.float64)


def test_given_hourly_wobble_then_a_capped_chart_spread_stays_quiet_and_a_ten_times_tighter_cap_does_not() -> (
    None
):
    # The spread must still follow normal swings: hour-long wobbles of ±10% move the chart, and a spread
    # that may barely grow takes them for breaks.
    def alerting_share(growth: float) -> float:
        flags = []
        for seed in range(3):
            results = _run(_five_minute_detector(growth), _wobbling_counts(seed, days=10))
            sustained = np.array([r.sustained[0] if r.sustained is not None else NAN for r in results])
            flags.append(np.abs(sustained[~np.isnan(sustained)]) >= 4.0)
        return float(np.concatenate(flags).mean())

    assert alerting_share(0.03) < 0.005
    assert alerting_share(0.003) > 0.005


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(_VALUE, min_size=1, max_size=80),
    season=st.integers(1, 6),
    growth=st.floats(0.001, 0.5),
    lam=st.floats(0.05, 1.0),
)
def test_property_from_robust_learning_on_the_chart_spread_grows_at_most_the_cap_per_period(
    values: list[float], season: int, growth: float, lam: float
) -> None:
    d = SeasonalEWMA(season_length=season, chart_lambda=lam, chart_spread_growth=growth).resize(1)
    floor = lam / (2.0 - lam)

    for t, value in enumerate(values):
        before, robust = float(d.cvar_[0]), bool(d.count_[0] >= d.robust_updates)
        _one(d, t, value)

        assert np.isfinite(d.cvar_).all()
        assert (d.cvar_ >= 0).all()
        if robust:
            assert d.cvar_[0] <= max(before, floor) * (1.0 + growth) * (1 + 1e-12)


def test_given_a_non_positive_chart_spread_growth_then_the_detector_refuses_it() -> None:
    with pytest.raises(ValueError, match="chart_spread_growth"):
        SeasonalEWMA(season_length=7, chart_spread_growth=0.0)


def _two_hour_bots(seed: int) -> list[StepResult]:
    """A week of 5-minute counts around 100 (daily profile); on day 5, 24 periods of bot traffic (x3) at
    phases 150-173, fewer than ``adapt_periods`` (41): the fast level follows them by clipped steps."""
    rng = np.random.default_rng(seed)
    season = 288
    t = np.arange(7 * season)
    burst = (t // season == 5) & (t % season >= 150) & (t % season < 174)
    expected = 100 * (1.0 + 0.5 * np.sin(2 * np.pi * (t % season) / season)) * np.where(burst, 3.0, 1.0)
    values = rng.poisson(expected).astype(np.float64)
    d = SeasonalEWMA(season_length=season).resize(1)
    assert d.adapt_periods == 41
    return [_one(d, k, float(v)) for k, v in enumerate(values)][6 * season + 150 : 6 * season + 174]


@pytest.mark.parametrize("seed", range(4))
def test_given_bots_shorter_than_the_adaptation_then_the_next_day_expects_the_old_level(seed: int) -> None:
    day_after = _two_hour_bots(seed)

    scores = [r.score[0] for r in day_after]
    charts = [r.sustained[0] for r in day_after if r.sustained is not None]
    # Without imprints kept for in-band-looking periods of the burst: mean -1.3 to -1.5, chart -5.6 to -8.6.
    assert abs(float(np.mean(scores))) < 0.5
    assert min(charts) > -3.5
