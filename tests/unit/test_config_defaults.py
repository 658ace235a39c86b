"""Detector defaults that depend on the granularity: threshold, confirmation, phase window, chart weight."""

from __future__ import annotations

import pytest
from kpi_sentinel.config import ConfigError, IntegrationConfig
from kpi_sentinel.scoring import seasonal_ewma


@pytest.mark.parametrize(
    ("granularity", "threshold", "confirm"),
    [("5min", 4.0, 2), ("hour", 3.5, 2), ("day", 3.5, 1)],
)
def test_given_no_threshold_then_the_granularity_default_applies(
    granularity: str, threshold: float, confirm: int
) -> None:
    config = IntegrationConfig.from_dict({"integration_id": "x", "granularity": granularity})

    assert config.alert_threshold == threshold
    assert config.confirm == confirm


def test_given_an_operator_threshold_and_confirmation_then_they_win() -> None:
    config = IntegrationConfig.from_dict(
        {"integration_id": "x", "granularity": "5min", "threshold": 3.0, "confirm_periods": 1}
    )

    assert config.alert_threshold == 3.0
    assert config.confirm == 1


@pytest.mark.parametrize(
    ("field", "value"), [("threshold", 0.0), ("confirm_periods", 0), ("confirm_periods", 49)]
)
def test_given_an_invalid_value_then_the_error_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        IntegrationConfig.from_dict({"integration_id": "x", field: value})


@pytest.mark.parametrize(
    ("granularity", "phase_window", "chart_lambda", "spread_growth"),
    [("5min", 2, 0.1, 0.03), ("hour", 0, 0.25, None), ("day", 0, 0.25, None)],
)
def test_given_a_granularity_then_the_production_detector_gets_its_phase_window_and_chart_settings(
    granularity: str, phase_window: int, chart_lambda: float, spread_growth: float | None
) -> None:
    config = IntegrationConfig.from_dict({"integration_id": "x", "granularity": granularity})

    detector = seasonal_ewma(config)

    assert (detector.phase_window, detector.chart_lambda) == (phase_window, chart_lambda)
    assert detector.chart_spread_growth == spread_growth
