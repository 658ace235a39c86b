"""The isolation forest in the quality benchmark: replayed through ``run_job`` on the EWMA's adapters.

One replay of the small suite (the EWMA's use case, and right after each integration the forest's
jobs on the same in-memory adapters), shared by the tests of this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from kpi_sentinel.adapters.memory import MemoryLedger, MemoryPublisher
from kpi_sentinel.forest.retrain import load_latest, model_prefix
from kpi_sentinel.ports import ForestPorts
from kpi_sentinel.quality.evaluate import evaluate
from kpi_sentinel.quality.labels import Suite
from kpi_sentinel.quality.replay import (
    DATA,
    FOREST,
    SIGNING_KEY,
    ForestReplay,
    ReplayResult,
    ScenarioAdapters,
    replay,
    replay_forest,
    replay_production,
    union,
)
from kpi_sentinel.quality.scenarios import generate_suite

OPTIONS = ForestReplay(cadence_days=7, min_training_days=7, trees=50)


@dataclass(frozen=True)
class Replayed:
    suite: Suite
    ewma: ReplayResult
    forest: ReplayResult
    adapters: list[ScenarioAdapters]


@pytest.fixture(scope="module")
def replayed() -> Replayed:
    suite = generate_suite(seed=1, size="small")
    forest = ReplayResult(FOREST)
    adapters: list[ScenarioAdapters] = []

    def after(scenario: ScenarioAdapters) -> None:
        adapters.append(scenario)
        replay_forest(scenario, OPTIONS, forest)

    ewma = replay_production(suite.scenarios, after=after)
    return Replayed(suite, ewma, forest, adapters)


def test_given_the_small_suite_then_forest_alerts_come_only_from_the_isolation_forest(
    replayed: Replayed,
) -> None:
    forest, ewma = replayed.forest, replayed.ewma

    assert forest.alerts
    assert {a["detector"] for a in forest.alerts} == {FOREST}
    assert {a["detector"] for a in ewma.alerts} == {"ewma"}  # the forest publishes on its own publisher
    assert len({a["alert_id"] for a in forest.alerts}) == len(forest.alerts)  # each published once
    assert forest.coverage == ewma.coverage  # false alarms per series-week of the same data
    assert forest.details["jobs"]["retrain/trained"] >= len(replayed.suite.scenarios) - 1
    assert forest.details["jobs"]["score/scored"] > forest.details["jobs"]["retrain/trained"]
    scored_integrations = {k for k, v in forest.details["first_scored"].items() if v is not None}
    assert {a["integration_id"] for a in forest.alerts} <= scored_integrations
    for alert in forest.alerts:
        assert alert["period_start"] >= forest.details["first_scored"][alert["integration_id"]]


def test_given_the_small_suite_then_the_forest_runs_through_run_job_on_the_scenario_adapters(
    replayed: Replayed,
) -> None:
    first_scored = replayed.forest.details["first_scored"]
    days_scored = 0
    for adapters in replayed.adapters:
        iid, scenario = adapters.scenario.integration_id, adapters.scenario
        if first_scored[iid] is None:
            continue
        first = datetime.fromisoformat(first_scored[iid])
        days_scored += (scenario.end - first).days
        prefix = model_prefix(iid)
        keys = adapters.objects.keys(DATA, prefix)
        pointer = json.loads(adapters.objects.get(DATA, f"{prefix}latest.json"))
        assert f"{prefix}{pointer['version']}.joblib" in keys
        ports = ForestPorts(
            adapters.objects,
            adapters.state,
            adapters.control,
            MemoryLedger(),
            MemoryPublisher(),
            lambda end=scenario.end: end,
            lambda: SIGNING_KEY,
        )
        model = load_latest(ports, OPTIONS.settings(), iid)  # stored signed with the benchmark's key
        assert model is not None
        assert model.metadata["trees"] == OPTIONS.trees
        # One run record per night from the first model on (older ones pruned with their models).
        records = [k.removeprefix(f"{prefix}runs/") for k in keys if "/runs/" in k]
        nights = sorted(r.split("-", 1)[0] for r in records)
        assert len(nights) == len(set(nights))
        expected = [
            (scenario.end - timedelta(days=n)).strftime("%Y%m%dT%H%MZ")
            for n in range(len(nights) - 1, -1, -1)
        ]
        assert nights == expected
        assert nights[0] >= (first + timedelta(days=1)).strftime("%Y%m%dT%H%MZ")
        retrains = sorted(r.split("-", 1)[0] for r in records if r.endswith("-retrain.json"))
        assert retrains
        gaps = {
            (datetime.strptime(b, "%Y%m%dT%H%MZ") - datetime.strptime(a, "%Y%m%dT%H%MZ")).days
            for a, b in pairwise(retrains)
        }
        assert gaps <= {OPTIONS.cadence_days}
    assert replayed.forest.details["days_scored"] == days_scored  # every day after the first model, once


def test_given_both_detectors_then_the_union_catches_what_either_caught(replayed: Replayed) -> None:
    suite, ewma, forest = replayed.suite, replayed.ewma, replayed.forest
    both = union("ewma+forest", ewma, forest)

    reports = [
        evaluate(suite.windows, suite.known_events, r.alerts, r.coverage) for r in (ewma, forest, both)
    ]

    assert [u.caught for u in reports[2].windows] == [
        e.caught or f.caught for e, f in zip(reports[0].windows, reports[1].windows, strict=True)
    ]
    assert reports[1].overall.caught > 0
    assert (
        reports[2].overall.false_bursts == reports[0].overall.false_bursts + reports[1].overall.false_bursts
    )


def test_given_a_window_only_the_forest_catches_then_the_union_counts_it(replayed: Replayed) -> None:
    suite, ewma = replayed.suite, replayed.ewma
    report = evaluate(suite.windows, suite.known_events, ewma.alerts, ewma.coverage)
    missed = next(r for r in report.windows if r.targeted and not r.caught)
    window, template = missed.window, replayed.forest.alerts[0]
    caught_by_forest = {
        **template,
        "integration_id": window.integration_id,
        "period_start": window.start.isoformat(),
        "granularity_seconds": missed.granularity_seconds,
        "metric": "not-the-window-metric",
        "severity": "warning",
        "contributors": [
            {"dimension": "feature", "value": "not-the-window-metric", "share": 0.6},
            {"dimension": "feature", "value": window.metrics[-1], "share": 0.4},
        ],
    }
    forest = ReplayResult(FOREST, alerts=[caught_by_forest], coverage=list(ewma.coverage))

    both = union("ewma+forest", ewma, forest)
    united = evaluate(suite.windows, suite.known_events, both.alerts, both.coverage)

    assert united.overall.caught == report.overall.caught + 1
    assert united.overall.false_bursts == report.overall.false_bursts


def test_a_union_of_replays_over_other_integrations_is_refused(replayed: Replayed) -> None:
    partial = ReplayResult(FOREST, coverage=replayed.ewma.coverage[:1])
    with pytest.raises(ValueError, match="cover different integrations"):
        union("ewma+forest", replayed.ewma, partial)


@pytest.mark.parametrize("field", ["cadence_days", "min_training_days"])
def test_a_forest_schedule_below_one_day_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        ForestReplay(**{field: 0})


def test_the_forest_can_be_replayed_by_name_like_the_other_detectors(replayed: Replayed) -> None:
    daily = [s for s in replayed.suite.scenarios if s.granularity_seconds == 86400][:1]

    result = replay(FOREST, daily)

    assert result.detector == FOREST
    assert {a["detector"] for a in result.alerts} <= {FOREST}
    assert [c.integration_id for c in result.coverage] == [daily[0].integration_id]
    assert result.details["jobs"]["retrain/trained"] >= 1
