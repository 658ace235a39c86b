"""isolation_forest alerts: schema v1, stable ids, a summary a person can act on, severity by direction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from kpi_sentinel.alerts import alert_id
from kpi_sentinel.config import IntegrationConfig, MetricSpec, RatioSpec
from kpi_sentinel.forest.explain import FlaggedAlert, clears_floors, flagged_alerts
from kpi_sentinel.forest.features import FeatureFrame
from kpi_sentinel.forest.model import ForestModel, train

from tests.unit.test_forest_model import BREAK_HOURS, DAYS, IID, T0, score_day, synthetic_frame

SCHEMA = json.loads(files("kpi_sentinel").joinpath("schemas/alert-v1.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
HOUR = 3600
MODEL_KEY = f"models/{IID}/iforest/20260930T0200Z.joblib"
CONFIG = IntegrationConfig(
    integration_id=IID,
    granularity_seconds=HOUR,
    dimensions=("source",),
    metrics=(MetricSpec("clicks", "both"), MetricSpec("signups", "down")),
    ratios=(RatioSpec("signup_rate", "signups", "clicks", "down"),),
    tier="business",
    segment="igaming",
)


def _schema_errors(alert: Mapping[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(alert)]


def _alerts(
    model: ForestModel, frame: FeatureFrame, config: IntegrationConfig | None = CONFIG
) -> list[FlaggedAlert]:
    return flagged_alerts(model, frame, config, IID, HOUR, MODEL_KEY, DAYS)


def _by_period(flagged: list[FlaggedAlert]) -> dict[str, dict[str, Any]]:
    return {f.alert["period_start"]: f.alert for f in flagged}


def _break_starts(frame: FeatureFrame) -> list[str]:
    return [frame.periods[h].isoformat() for h in BREAK_HOURS]


@pytest.fixture(scope="module")
def model() -> ForestModel:
    trained = train(synthetic_frame(T0, DAYS, seed=11), IID)
    trained.metadata = {"version": "20260930T0200Z"}
    return trained


@pytest.fixture(scope="module")
def crater(model: ForestModel) -> tuple[FeatureFrame, list[FlaggedAlert]]:
    day = score_day(factor=0.5)
    return day, _alerts(model, day)


def test_given_a_funnel_break_then_each_broken_hour_gives_one_schema_valid_forest_alert(
    crater: tuple[FeatureFrame, list[FlaggedAlert]],
) -> None:
    day, flagged = crater
    alerts = _by_period(flagged)

    assert set(_break_starts(day)) <= set(alerts)
    assert len(alerts) == len(flagged)  # one alert per period, however many features moved
    for alert in alerts.values():
        assert _schema_errors(alert) == []
        assert alert["detector"] == "isolation_forest"
        assert alert["features"] == ["clicks", "signup_rate", "signups"]
        assert alert["dimension"] is None
        assert alert["dimension_value"] is None
        assert alert["granularity_seconds"] == HOUR
        assert datetime.fromisoformat(alert["period_end"]) - datetime.fromisoformat(
            alert["period_start"]
        ) == timedelta(seconds=HOUR)
        assert alert["anomaly_score"] > alert["threshold"] > 0  # rarer than the model's threshold
        assert alert["model_version"] == "20260930T0200Z"
        assert alert["source_key"] == MODEL_KEY
        assert (alert["tier"], alert["segment"]) == ("business", "igaming")
        assert alert["baseline"] == f"{DAYS}-day isolation forest"


def test_given_a_down_move_of_down_is_bad_metrics_then_the_alert_is_a_warning_or_critical_down_move(
    crater: tuple[FeatureFrame, list[FlaggedAlert]],
) -> None:
    day, flagged = crater
    alerts = _by_period(flagged)

    for start in _break_starts(day):
        alert = alerts[start]
        assert alert["metric"] in ("signup_rate", "signups")
        assert alert["severity"] in ("warning", "critical")
        assert alert["direction"] == "down"
        assert alert["bad_direction"] == "down"
        assert alert["score"] < -3
        assert alert["observed"] == pytest.approx(0.5 * alert["expected"], rel=1e-4)
        assert alert["deviation"]["percent"] == pytest.approx(-50.0, abs=0.01)
        assert alert["expected_lower"] <= alert["expected"] <= alert["expected_upper"]
        assert not alert["expected_lower"] <= alert["observed"] <= alert["expected_upper"]


def test_given_a_funnel_break_then_the_summary_names_the_moved_feature_its_typical_value_and_normal_clicks(
    crater: tuple[FeatureFrame, list[FlaggedAlert]],
) -> None:
    day, flagged = crater
    alerts = _by_period(flagged)

    for start in _break_starts(day):
        summary = alerts[start]["summary"]
        lead = "Signup rate" if alerts[start]["metric"] == "signup_rate" else "Signups"
        assert summary.startswith(f"{lead} ")
        assert "typical" in summary
        assert "while clicks are normal" in summary
        assert summary.endswith(f"(isolation forest over {DAYS} days: rarer than 99% of training periods)")
    rate_led = next(a for a in alerts.values() if a["metric"] == "signup_rate")
    assert rate_led["summary"].startswith("Signup rate 4.0% vs 8.0% typical")


def test_given_a_funnel_break_then_contributors_rank_the_features_by_distance(
    crater: tuple[FeatureFrame, list[FlaggedAlert]],
) -> None:
    day, flagged = crater

    for alert in (_by_period(flagged)[s] for s in _break_starts(day)):
        found = alert["contributors"]
        assert {c["dimension"] for c in found} == {"feature"}
        assert found[0]["value"] == alert["metric"]
        assert sorted(c["value"] for c in found) == ["clicks", "signup_rate", "signups"]
        assert [abs(c["score"]) for c in found] == sorted((abs(c["score"]) for c in found), reverse=True)
        moved = [c for c in found if abs(c["score"]) >= 3]
        assert {c["value"] for c in moved} == {"signup_rate", "signups"}
        assert sum(c["share"] for c in moved) == pytest.approx(1.0, abs=1e-3)
        clicks = next(c for c in found if c["value"] == "clicks")
        assert clicks["share"] == 0.0
        assert clicks["delta"] == pytest.approx(0.0, abs=1e-6)


def test_given_the_same_period_then_the_alert_id_is_the_same_whichever_model_flags_it(
    model: ForestModel, crater: tuple[FeatureFrame, list[FlaggedAlert]]
) -> None:
    day, flagged = crater
    other = train(synthetic_frame(T0 + timedelta(days=15), DAYS - 15, seed=99), IID, percentile=2.0, trees=60)
    again = _by_period(_alerts(other, day))
    first = _by_period(flagged)

    for start in _break_starts(day):
        assert again[start]["alert_id"] == first[start]["alert_id"]
        assert first[start]["alert_id"] == alert_id(IID, "isolation_forest", "features", "", "", start)
    assert len({a["alert_id"] for a in first.values()}) == len(first)


def test_given_a_surge_of_down_is_bad_metrics_then_the_alert_is_info(model: ForestModel) -> None:
    day = score_day(factor=2.0)

    alerts = _by_period(_alerts(model, day))

    for start in _break_starts(day):
        assert alerts[start]["severity"] == "info"
        assert alerts[start]["direction"] == "up"
        assert _schema_errors(alerts[start]) == []


def test_given_no_config_then_a_surge_is_judged_by_the_metric_names_defaults(model: ForestModel) -> None:
    day = score_day(factor=2.0)

    alerts = _by_period(_alerts(model, day, config=None))

    for start in _break_starts(day):
        # signups and signup_rate are down-is-bad by name: a surge of both is good news
        assert alerts[start]["severity"] == "info"
        assert alerts[start]["bad_direction"] == "down"
        assert (alerts[start]["tier"], alerts[start]["segment"]) == ("standard", "default")


def test_given_a_flagged_period_in_a_known_event_then_the_alert_is_marked_calendar(
    model: ForestModel,
) -> None:
    day = score_day(factor=0.5)
    calendar = np.zeros(len(day), dtype=bool)
    calendar[list(BREAK_HOURS)[:2]] = True
    known = FeatureFrame(day.periods, day.observed, day.expected, calendar, day.kinds, day.alerted)

    flagged = {f.alert["period_start"]: f.calendar for f in _alerts(model, known)}

    starts = _break_starts(day)
    assert [flagged[s] for s in starts] == [True, True, False, False, False]


def test_given_an_empty_or_normal_frame_then_no_alert(model: ForestModel) -> None:
    quiet = synthetic_frame(T0 + timedelta(days=DAYS), 1, seed=12)

    assert _alerts(model, quiet.subset(np.zeros(len(quiet), dtype=bool))) == []
    assert len(_alerts(model, quiet)) <= 1


def test_given_a_model_feature_missing_from_the_scored_periods_then_alerts_are_still_built(
    model: ForestModel,
) -> None:
    day = score_day(factor=0.5)
    names = ["clicks", "signups"]
    frame = FeatureFrame(
        day.periods,
        day.observed[names],
        day.expected[names],
        day.calendar,
        {n: day.kinds[n] for n in names},
        day.alerted,
    )

    alerts = _by_period(_alerts(model, frame))

    assert set(_break_starts(day)) <= set(alerts)
    for alert in alerts.values():
        assert _schema_errors(alert) == []
        assert "signup_rate" not in {c["value"] for c in alert["contributors"]}


def _floored(
    min_abs_change: float = 0.0, min_volume: float = 0.0, ratio_volume: float = 0.0
) -> IntegrationConfig:
    return IntegrationConfig(
        integration_id=IID,
        granularity_seconds=HOUR,
        metrics=(
            MetricSpec("clicks", "both", min_abs_change, min_volume),
            MetricSpec("signups", "down", min_abs_change, min_volume),
        ),
        ratios=(RatioSpec("signup_rate", "signups", "clicks", "down", 0.0, ratio_volume),),
    )


def test_given_a_flagged_break_whose_moves_are_under_every_floor_then_no_alert(
    model: ForestModel, crater: tuple[FeatureFrame, list[FlaggedAlert]]
) -> None:
    day, flagged = crater
    assert flagged  # the same break alerts without floors

    assert _alerts(model, day, _floored(min_abs_change=1e9, ratio_volume=1e12)) == []


def test_given_floors_the_break_clears_then_the_same_alerts_are_raised(
    model: ForestModel, crater: tuple[FeatureFrame, list[FlaggedAlert]]
) -> None:
    day, flagged = crater

    floored = _alerts(model, day, _floored(min_abs_change=1.0, min_volume=5.0, ratio_volume=5.0))

    assert [f.alert["alert_id"] for f in floored] == [f.alert["alert_id"] for f in flagged]


def test_clears_floors_checks_change_volume_and_a_ratios_denominator() -> None:
    config = _floored(min_abs_change=5.0, min_volume=10.0, ratio_volume=50.0)
    assert clears_floors(config, "clicks", {"clicks": 0.0}, {"clicks": 12.0})
    assert not clears_floors(config, "clicks", {"clicks": 0.0}, {"clicks": 4.0})  # change under 5
    assert not clears_floors(config, "signups", {"signups": 9.0}, {"signups": 3.0})  # volume under 10
    assert clears_floors(config, "signup_rate", {"signup_rate": 0.0, "clicks": 80.0}, {"signup_rate": 0.2})
    assert not clears_floors(
        config, "signup_rate", {"signup_rate": 0.0, "clicks": 20.0}, {"signup_rate": 0.2}
    )
    assert clears_floors(config, "unknown", {"unknown": 0.0}, {"unknown": 0.1})  # no spec: no floor
    assert clears_floors(None, "clicks", {"clicks": 0.0}, {"clicks": 0.1})
