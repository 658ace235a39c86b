"""The freshness check on in-memory adapters, with a clock the tests move: missing_data alerts, their
escalation and resolution, suppression, cadences, the active window, and the handler's inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kpi_sentinel.adapters.memory import MemoryControl, MemoryFreshness, MemoryPublisher, MemoryState
from kpi_sentinel.alerts import alert_id as scorer_alert_id
from kpi_sentinel.handlers import freshness as handler
from kpi_sentinel.operator_jobs.freshness import (
    FreshnessOutcome,
    FreshnessSettings,
    check,
    expectation,
    outage_alert_id,
)
from kpi_sentinel.operator_jobs.schedule import BadJobEvent
from kpi_sentinel.ports import FreshnessPorts

SETTINGS = FreshnessSettings()
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
SCHEMA = json.loads(resources.files("kpi_sentinel").joinpath("schemas/alert-v1.json").read_text())
EVENTS = Path(__file__).resolve().parents[2] / "events"


@dataclass
class World:
    """Scorer state (whose commits feed the ActiveIntegrations view), control items, the alerts topic
    and the outage store, all on one clock the test moves."""

    state: MemoryState = field(default_factory=MemoryState)
    control: MemoryControl = field(default_factory=MemoryControl)
    publisher: MemoryPublisher = field(default_factory=MemoryPublisher)
    outages: MemoryFreshness = field(default_factory=MemoryFreshness)
    now: datetime = T0

    @property
    def ports(self) -> FreshnessPorts:
        return FreshnessPorts(self.state, self.control, self.outages, self.publisher, lambda: self.now)

    def sync(
        self, integration_id: str, at: datetime, granularity: int = 3600, tier: str = "standard"
    ) -> None:
        """A sync of the integration committed by the scorer at ``at``."""
        self.state.clock = at.timestamp
        stored = self.state.load(integration_id)
        self.state.commit(
            integration_id,
            stored.version,
            b"state",
            f"sync-{at.isoformat()}",
            [],
            {"tier": tier, "granularity": granularity},
        )

    def run(self, at: datetime, settings: FreshnessSettings = SETTINGS) -> FreshnessOutcome:
        """The 5-minute schedule at ``at``; returns the outcome (the new alerts are in ``published``)."""
        self.now = at
        return check(at, self.ports, settings)

    def published(self) -> list[dict[str, Any]]:
        return [dict(a) for a in self.publisher.published]


def _valid(alert: dict[str, Any]) -> None:
    jsonschema.validate(alert, SCHEMA)


# --- the rules ------------------------------------------------------------------------------------------


def test_given_an_hourly_integration_that_synced_50_minutes_ago_when_checked_then_nothing_is_published() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    outcome = world.run(T0 + timedelta(minutes=50))
    assert world.published() == []
    assert outcome.active == 1
    assert outcome.late == 0


def test_given_an_hourly_integration_late_but_within_its_grace_when_checked_then_nothing_is_published() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    for minutes in range(60, 120, 5):  # due after one cadence plus one cadence of grace: 2 h
        world.run(T0 + timedelta(minutes=minutes))
    assert world.published() == []


def test_given_an_hourly_integration_silent_past_its_grace_when_checked_then_one_warning_names_the_silence() -> (
    None
):
    world = World()
    world.control.configs["acme-ads"] = {"segment": "casino-eu"}
    world.sync("acme-ads", T0, tier="business")
    outcome = world.run(T0 + timedelta(hours=3, minutes=10))
    [alert] = world.published()
    _valid(alert)
    assert alert["alert_id"] == outage_alert_id("acme-ads", T0.timestamp())
    assert alert["alert_id"] == scorer_alert_id("acme-ads", "missing_data", "sync", "", "", T0.isoformat())
    assert alert["summary"] == "No sync from acme-ads for 3 h 10 min (expected every hour)"
    assert (alert["detector"], alert["metric"], alert["severity"]) == ("missing_data", "sync", "warning")
    assert (alert["observed"], alert["expected"], alert["expected_upper"]) == (190.0, 60.0, 120.0)
    assert alert["score"] == pytest.approx(190 / 60, abs=0.01)
    assert (alert["direction"], alert["bad_direction"]) == ("up", "up")  # a silence, never a "drop"
    assert (alert["tier"], alert["segment"], alert["source_key"]) == ("business", "casino-eu", "")
    assert alert["period_start"] == T0.isoformat()
    assert alert["period_end"] == (T0 + timedelta(hours=3, minutes=10)).isoformat()
    assert alert["expected_by"] == (T0 + timedelta(hours=1)).isoformat()
    assert (outcome.alerts_published, outcome.alert_ids) == (1, [alert["alert_id"]])


def test_given_an_announced_outage_when_the_check_reruns_every_5_minutes_then_nothing_is_published_twice() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    first = world.run(T0 + timedelta(hours=2, minutes=5))
    reruns = [world.run(T0 + timedelta(hours=2, minutes=5 + 5 * n)) for n in range(1, 12)]
    assert len(world.published()) == 1
    assert first.alerts_published == 1
    assert all(r.alerts_published == 0 and r.already_announced == 1 for r in reruns)
    # The same moment replayed (a retried invocation) publishes nothing either.
    world.run(T0 + timedelta(hours=2, minutes=5))
    assert len(world.published()) == 1


def test_given_an_outage_that_lasts_when_checked_then_it_escalates_to_critical_once_after_6_cadences() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    runs = [world.run(T0 + timedelta(minutes=m)) for m in range(125, 12 * 60, 5)]
    warning, critical = world.published()
    _valid(critical)
    assert (warning["severity"], critical["severity"]) == ("warning", "critical")
    assert critical["period_end"] == (T0 + timedelta(hours=6)).isoformat()  # the first run at 6 cadences
    assert critical["alert_id"] == outage_alert_id("acme-ads", T0.timestamp(), "critical")
    assert critical["escalates"] == warning["alert_id"]
    assert critical["outage_alert_id"] == warning["alert_id"]
    assert critical["summary"] == "No sync from acme-ads for 6 h (expected every hour)"
    assert sum(r.escalated for r in runs) == 1


def test_given_an_announced_outage_when_data_arrives_then_one_resolution_is_published_and_the_outage_cleared() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    world.run(T0 + timedelta(hours=2, minutes=30))
    world.sync("acme-ads", T0 + timedelta(hours=3, minutes=10))
    outcome = world.run(T0 + timedelta(hours=3, minutes=15))
    later = [world.run(T0 + timedelta(hours=3, minutes=15 + 5 * n)) for n in range(1, 6)]
    warning, resolution = world.published()
    _valid(resolution)
    assert resolution["severity"] == "info"
    assert resolution["resolves"] == warning["alert_id"]
    assert resolution["resolved_alert_ids"] == [warning["alert_id"]]
    assert resolution["summary"] == "Syncs from acme-ads resumed after 3 h 10 min"
    assert resolution["alert_id"] == outage_alert_id("acme-ads", T0.timestamp(), "resolved")
    assert (
        resolution["period_end"]
        == resolution["resumed_at"]
        == (T0 + timedelta(hours=3, minutes=10)).isoformat()
    )
    assert outcome.resolved == 1
    assert all(r.resolved == 0 and r.alerts_published == 0 for r in later)
    assert list(world.outages.open_outages()) == []


def test_given_an_escalated_outage_when_data_arrives_then_the_resolution_lists_both_alerts() -> None:
    world = World()
    world.sync("acme-ads", T0)
    world.run(T0 + timedelta(hours=2, minutes=5))
    world.run(T0 + timedelta(hours=7))
    world.sync("acme-ads", T0 + timedelta(hours=8))
    world.run(T0 + timedelta(hours=8, minutes=5))
    warning, critical, resolution = world.published()
    assert resolution["resolves"] == warning["alert_id"]
    assert resolution["resolved_alert_ids"] == [warning["alert_id"], critical["alert_id"]]


def test_given_syncs_that_resume_and_stop_again_when_checked_then_the_second_silence_is_a_new_outage() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    world.run(T0 + timedelta(hours=2, minutes=5))
    world.sync("acme-ads", T0 + timedelta(hours=3))
    world.run(T0 + timedelta(hours=3, minutes=5))
    world.run(T0 + timedelta(hours=5, minutes=5))
    first, resolution, second = world.published()
    assert resolution["resolves"] == first["alert_id"]
    assert second["alert_id"] == outage_alert_id("acme-ads", (T0 + timedelta(hours=3)).timestamp())
    assert second["alert_id"] != first["alert_id"]


def test_given_an_outage_first_seen_past_the_critical_mark_when_checked_then_one_critical_alert_alone() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    world.run(T0 + timedelta(hours=9))  # the check was down until now
    world.run(T0 + timedelta(hours=9, minutes=5))
    [alert] = world.published()
    assert alert["severity"] == "critical"
    assert "escalates" not in alert
    world.sync("acme-ads", T0 + timedelta(hours=10))
    world.run(T0 + timedelta(hours=10, minutes=5))
    assert world.published()[-1]["resolves"] == alert["alert_id"]


# --- suppression ----------------------------------------------------------------------------------------


def test_given_a_snooze_on_metric_sync_when_the_integration_is_late_then_no_alert_until_the_snooze_ends() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    until = T0 + timedelta(hours=4)
    world.control.snoozes.append(
        {"integration_id": "acme-ads", "snooze_id": "s1", "metric": "sync", "until": until.timestamp()}
    )
    outcomes = [world.run(T0 + timedelta(minutes=m)) for m in range(125, 240, 5)]
    assert world.published() == []
    assert all(o.suppressed == 1 for o in outcomes)
    world.run(until + timedelta(minutes=5))
    [alert] = world.published()
    assert alert["summary"] == "No sync from acme-ads for 4 h 5 min (expected every hour)"


def test_given_a_snooze_of_the_whole_integration_when_late_then_no_alert_but_a_snooze_of_another_metric_does_not_hide_it() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    world.sync("globex", T0)
    later = (T0 + timedelta(days=1)).timestamp()
    world.control.snoozes.append({"integration_id": "acme-ads", "snooze_id": "all", "until": later})
    world.control.snoozes.append(
        {"integration_id": "globex", "snooze_id": "n", "metric": "ngr", "until": later}
    )
    world.run(T0 + timedelta(hours=2, minutes=5))
    assert [a["integration_id"] for a in world.published()] == ["globex"]


def test_given_a_maintenance_window_when_the_integration_is_silent_then_no_alert_and_the_clock_restarts_at_its_end() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    end = T0 + timedelta(hours=5)
    world.control.calendar.append(
        {"event_id": "m1", "integration_id": "acme-ads", "kind": "maintenance", "name": "db upgrade",
         "start": (T0 + timedelta(minutes=30)).timestamp(), "end": end.timestamp()}
    )  # fmt: skip
    for minutes in range(125, 7 * 60, 5):  # silent through the window and 2 h after it
        world.run(T0 + timedelta(minutes=minutes))
    assert world.published() == []
    world.run(end + timedelta(hours=2, minutes=5))
    [alert] = world.published()
    assert alert["summary"] == "No sync from acme-ads for 7 h 5 min (expected every hour)"


def test_given_a_campaign_in_the_calendar_when_the_integration_is_silent_then_the_alert_is_not_suppressed() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    world.control.calendar.append(
        {"event_id": "c1", "integration_id": "*", "kind": "campaign", "name": "Black Friday",
         "start": T0.timestamp(), "end": (T0 + timedelta(days=2)).timestamp()}
    )  # fmt: skip
    world.run(T0 + timedelta(hours=2, minutes=5))
    assert len(world.published()) == 1


# --- cadences -------------------------------------------------------------------------------------------


def test_given_a_5_minute_and_a_daily_integration_when_both_fall_silent_then_each_is_judged_by_its_cadence() -> (
    None
):
    world = World()
    world.sync("fast", T0, granularity=300)
    world.sync("daily", T0, granularity=86400)
    world.run(T0 + timedelta(minutes=15))  # 5-minute: due after 5 min + 15 min of grace
    assert world.published() == []
    world.run(T0 + timedelta(minutes=20))
    [fast] = world.published()
    assert fast["summary"] == "No sync from fast for 20 min (expected every 5 minutes)"
    world.run(T0 + timedelta(minutes=30))  # critical at 6 cadences: 30 minutes
    assert [a["severity"] for a in world.published()] == ["warning", "critical"]
    for hours in (25, 47):  # daily: due after a day plus a day of grace
        world.run(T0 + timedelta(hours=hours))
    assert [a["integration_id"] for a in world.published()] == ["fast", "fast"]
    world.run(T0 + timedelta(hours=48))
    daily = world.published()[-1]
    assert (daily["integration_id"], daily["severity"]) == ("daily", "warning")
    assert daily["summary"] == "No sync from daily for 2 d (expected every day)"
    world.run(T0 + timedelta(hours=71))
    assert len(world.published()) == 3
    world.run(T0 + timedelta(hours=72))  # critical after two missed days, never before the warning
    assert world.published()[-1]["severity"] == "critical"


def test_given_a_configured_expected_cadence_when_it_is_shorter_than_the_granularity_then_it_is_the_cadence() -> (
    None
):
    world = World()
    world.control.configs["acme-ads"] = {"extra": {"expected_every_seconds": 300}}
    world.control.configs["globex"] = {"expected_every_seconds": 86400, "freshness_grace_seconds": 3600}
    world.sync("acme-ads", T0)
    world.sync("globex", T0)
    world.run(T0 + timedelta(minutes=20))
    [alert] = world.published()
    assert alert["summary"] == "No sync from acme-ads for 20 min (expected every 5 minutes)"
    world.run(T0 + timedelta(hours=24, minutes=55))
    assert len(world.published()) == 2  # acme-ads escalated; globex not yet due
    world.run(T0 + timedelta(hours=25))
    assert world.published()[-1]["summary"] == "No sync from globex for 1 d 1 h (expected every day)"


def test_given_an_unusable_expected_cadence_when_checked_then_the_problem_names_the_field_and_the_granularity_counts() -> (
    None
):
    world = World()
    world.control.configs["acme-ads"] = {"expected_every_seconds": "hourly"}
    world.sync("acme-ads", T0)
    outcome = world.run(T0 + timedelta(hours=2))
    assert len(world.published()) == 1
    assert any("'expected_every_seconds'" in p for p in outcome.problems)


def test_expectations_for_the_three_granularities() -> None:
    cases = {300: (1200, 1800), 3600: (7200, 21600), 86400: (172800, 259200)}
    for granularity, (due, critical) in cases.items():
        found = expectation(granularity, None, SETTINGS, [])
        assert found is not None
        assert (found.due_after, found.critical_after) == (due, critical)
    assert expectation(0, None, SETTINGS, []) is None


# --- the active window ----------------------------------------------------------------------------------


def test_given_an_integration_that_stopped_before_the_active_window_when_checked_then_it_is_never_alerted() -> (
    None
):
    world = World()
    world.sync("gone", T0 - timedelta(days=8))
    world.run(T0)
    assert world.published() == []


def test_given_an_announced_outage_that_leaves_the_active_window_when_checked_then_it_is_abandoned_quietly() -> (
    None
):
    world = World()
    world.sync("acme-ads", T0)
    for hours in range(2, 24 * 9, 1):
        outcome = world.run(T0 + timedelta(hours=hours, minutes=5))
    assert [a["severity"] for a in world.published()] == ["warning", "critical"]
    assert (outcome.active, outcome.abandoned) == (0, 1)
    world.sync("acme-ads", T0 + timedelta(days=30))  # it comes back a month later
    world.run(T0 + timedelta(days=30, minutes=5))
    assert world.published()[-1]["summary"] == "Syncs from acme-ads resumed after 30 d"


def test_given_the_check_when_it_runs_then_no_scorer_state_is_touched() -> None:
    """A silence is never scored: the check only reads the index, never the EWMA state."""
    world = World()
    world.sync("acme-ads", T0)
    before = world.state.load("acme-ads")
    world.run(T0 + timedelta(hours=5))
    assert world.state.load("acme-ads") == before


# --- the handler ----------------------------------------------------------------------------------------


def test_given_a_scheduled_event_or_an_as_of_when_handled_then_the_check_runs_for_that_moment() -> None:
    world = World()
    world.sync("acme-ads", T0)
    scheduled = json.loads((EVENTS / "schedule-freshness-check.json").read_text())
    scheduled["time"] = (T0 + timedelta(hours=2, minutes=5)).isoformat().replace("+00:00", "Z")
    result = handler.handle(scheduled, world.ports, SETTINGS)
    assert result["as_of"] == (T0 + timedelta(hours=2, minutes=5)).isoformat()
    assert result["alerts_published"] == 1
    world.sync("acme-ads", T0 + timedelta(hours=3))
    result = handler.handle(
        {"as_of": (T0 + timedelta(hours=3, minutes=5)).isoformat()}, world.ports, SETTINGS
    )
    assert result["resolved"] == 1
    world.now = T0 + timedelta(hours=3, minutes=10)
    assert handler.handle({}, world.ports, SETTINGS)["as_of"] == world.now.isoformat()


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"as_of": "yesterday"}, "'as_of'"),
        ({"as_of": "2026-11-25T02:00:00"}, "'as_of' needs a UTC offset"),
        ({"detail-type": "Scheduled Event"}, "'time' is missing"),
    ],
)
def test_given_a_bad_event_when_handled_then_the_error_names_the_field(
    event: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadJobEvent, match=field):
        handler.handle(event, World().ports, SETTINGS)


def test_given_missing_environment_when_wired_for_aws_then_the_error_names_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in handler.REQUIRED:
        monkeypatch.delenv(name, raising=False)
    handler._aws_ports.cache_clear()
    with pytest.raises(RuntimeError, match="STATE_TABLE, CONTROL_TABLE, ALERTS_TOPIC_ARN"):
        handler.handle({})
    handler._aws_ports.cache_clear()


def test_given_bad_settings_in_the_environment_when_read_then_the_error_names_the_variable() -> None:
    assert FreshnessSettings.from_env({}) == SETTINGS
    assert FreshnessSettings.from_env({"GRACE_MIN_SECONDS": "600"}).grace_min_seconds == 600
    with pytest.raises(ValueError, match="GRACE_CADENCES"):
        FreshnessSettings.from_env({"GRACE_CADENCES": "-1"})


@pytest.mark.parametrize("module", ["kpi_sentinel.handlers.freshness", "kpi_sentinel.handlers.tuning"])
def test_given_an_operator_job_handler_when_imported_then_no_numeric_library_is_loaded(module: str) -> None:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert not loaded & {"numpy", "pandas", "sklearn", "scipy", "joblib", "matplotlib"}
