"""The quality benchmark end to end on the small suite: replay through the scorer, scoring, results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from kpi_sentinel.quality.evaluate import evaluate
from kpi_sentinel.quality.labels import Suite
from kpi_sentinel.quality.replay import ReplayError, replay, replay_core
from kpi_sentinel.quality.scenarios import generate_suite
from kpi_sentinel.scoring import seasonal_ewma

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small() -> Suite:
    return generate_suite(seed=3, size="small")


def test_given_the_small_suite_then_the_scorer_use_case_scores_every_row_and_catches_most_windows(
    small: Suite,
) -> None:
    result = replay("ewma", small.scenarios)

    assert result.files == sum(len(s.syncs) for s in small.scenarios)
    assert result.rows_in == result.rows_scored > 0
    assert result.rows_rejected == 0
    assert {c.integration_id for c in result.coverage} == {s.integration_id for s in small.scenarios}
    report = evaluate(small.windows, small.known_events, result.alerts, result.coverage)
    assert report.overall.recall is not None
    assert report.overall.recall >= 0.7
    assert report.overall.known_event_alerts == 0


def test_given_the_same_detector_then_the_core_path_and_the_use_case_agree_on_what_is_caught(
    small: Suite,
) -> None:
    production = replay("ewma", small.scenarios)
    core = replay_core("ewma", small.scenarios, seasonal_ewma)
    caught = [
        [w.caught for w in evaluate(small.windows, small.known_events, r.alerts, r.coverage).windows]
        for r in (production, core)
    ]

    assert caught[0] == caught[1]


def test_given_no_calendar_then_known_events_raise_alerts_the_calendar_suppresses(small: Suite) -> None:
    with_calendar = replay("ewma", small.scenarios)
    without = replay("ewma", small.scenarios, use_calendar=False)

    assert with_calendar.suppressed_by_calendar > 0
    assert without.suppressed_by_calendar == 0
    report = evaluate(small.windows, small.known_events, without.alerts, without.coverage)
    assert report.overall.known_event_alerts > 0


def test_given_a_file_that_breaks_then_the_replay_says_which(small: Suite) -> None:
    scenario = small.scenarios[0]
    broken = type(scenario.syncs[0])(scenario.syncs[0].key, b"not,a\nsync,file\n")
    scenario = type(scenario)(**{**scenario.__dict__, "syncs": [broken, *scenario.syncs[1:]]})

    with pytest.raises(ReplayError, match=scenario.syncs[0].key):
        replay("ewma", [scenario])


def test_given_an_unknown_detector_then_the_error_lists_the_known_ones(small: Suite) -> None:
    with pytest.raises(ValueError, match="rolling_zscore"):
        replay("prophet", small.scenarios)


def test_bench_quality_writes_comparable_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_quality
    finally:
        sys.path.pop(0)
    out = tmp_path / "quality.json"

    args = ["--size", "small", "--seed", "3", "--jobs", "2", "--forest-trees", "20", "--out", str(out)]
    assert bench_quality.main(args) == 0

    printed = capsys.readouterr().out
    summary = printed.splitlines()[-2]
    assert "quality: ewma recall" in summary
    assert "isolation_forest F2" in summary
    assert "ewma+forest F2" in summary
    result = json.loads(out.read_text())
    assert set(result["detectors"]) == {
        "ewma",
        "isolation_forest",
        "ewma+forest",
        "rolling_zscore",
        "static_threshold",
    }
    assert {t["target"] for t in result["targets"]} >= {"recall", "precision", "median_delay_periods"}
    assert [t["target"] for t in result["targets_union"]] == [t["target"] for t in result["targets"]]
    assert result["rows"]["in"] == result["rows"]["scored"]
    forest = result["forest"]
    assert (forest["cadence_days"], forest["min_training_days"], forest["trees"]) == (7, 7, 20)
    assert forest["jobs"]["retrain/trained"] > 0
    assert set(result["timing_seconds"]) >= {"ewma", "isolation_forest"}
    union = result["detectors"]["ewma+forest"]["overall"]
    assert union["caught"] >= result["detectors"]["ewma"]["overall"]["caught"]


def test_bench_quality_without_the_forest_keeps_the_previous_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_quality
    finally:
        sys.path.pop(0)
    out = tmp_path / "quality.json"

    args = [
        "--size",
        "small",
        "--seed",
        "3",
        "--jobs",
        "1",
        "--no-forest",
        "--no-baselines",
        "--out",
        str(out),
    ]
    assert bench_quality.main(args) == 0

    assert "isolation_forest" not in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["detectors"]) == {"ewma"}
    assert result["forest"] is None
    assert result["targets_union"] == []
