"""The SLA check with a controllable clock: one level at a time, P1 breach once, failures isolated."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from kpi_sentinel.adapters.memory import MemoryIncidents, MemoryTeamOutbox
from kpi_sentinel.ports import StoredIncident
from kpi_sentinel.triage.incidents import TriagePorts, iso, triage_alert
from kpi_sentinel.triage.routing import default_rules
from kpi_sentinel.triage.sla import SlaCheckFailed, check_sla

from tests.unit.triage_helpers import NOW, SETTINGS, T0, Clock, check_messages, make_alert, memory_ports

RULES = default_rules()  # SLA: P1 15, P2 60, P3 240, P4 1440 minutes


def _open(ports: TriagePorts, alert: dict[str, Any]) -> str:
    outcome = triage_alert(alert, RULES, ports, SETTINGS)
    assert outcome.incident_id is not None
    return outcome.incident_id


def _record(store: MemoryIncidents, incident_id: str) -> dict[str, Any]:
    stored = store.get(incident_id)
    assert stored is not None
    return stored.record


def test_given_an_unacknowledged_incident_when_it_passes_each_due_time_then_it_climbs_once_per_level() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    iid = _open(ports, make_alert("ngr", "source", "telegram-push"))  # P4: standard-tier slice warning
    assert _record(store, iid)["priority"] == "P4"
    outbox.sent.clear()

    assert check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=1439)).checked == 0  # not due yet
    expected_levels = [("P3", 240), ("P2", 60), ("P1", 15)]
    now = NOW + timedelta(minutes=1440)
    for level, minutes in expected_levels:
        outcome = check_sla(RULES, ports, SETTINGS, now)
        assert (outcome.escalated, outcome.breached, outcome.incident_ids) == (1, 0, [iid])
        record = _record(store, iid)
        assert (record["priority"], record["sla_minutes"]) == (level, minutes)
        assert record["due_at"] == iso(now + timedelta(minutes=minutes))
        assert record["escalations"][-1] == {"level": level, "from": record["escalations"][-1]["from"],
                                             "at": iso(now), "reason": "sla"}  # fmt: skip
        rerun = check_sla(RULES, ports, SETTINGS, now)  # the same time again: nothing more
        assert (rerun.checked, rerun.escalated, rerun.messages_sent) == (0, 0, 0)
        now += timedelta(minutes=minutes)
    assert [e["from"] for e in _record(store, iid)["escalations"]] == ["P4", "P3", "P2"]
    assert [(m["event"], m["reason"], m["priority"]) for m in outbox.sent] == [
        ("escalated", "sla", "P3"), ("escalated", "sla", "P2"), ("escalated", "sla", "P1"),
    ]  # fmt: skip
    assert all(m["alert"] is None for m in outbox.sent)
    check_messages(outbox.sent)


def test_given_a_p1_incident_past_due_when_checked_every_5_minutes_then_the_breach_is_announced_once() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    iid = _open(ports, make_alert("ngr", severity="critical", tier="business"))  # P1, due in 15 minutes
    outbox.sent.clear()
    results = [check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=m)) for m in range(0, 120, 5)]
    assert [r.breached for r in results] == [0, 0, 0, 1] + [0] * 20
    assert sum(r.escalated for r in results) == 0
    [message] = outbox.sent
    assert (message["event"], message["reason"], message["priority"]) == ("escalated", "sla_breached", "P1")
    assert message["dedup_key"] == f"{iid}:escalated:sla_breached:P1:critical"
    record = _record(store, iid)
    assert record["status"] == "open"  # still open; just no longer watched
    assert [e["reason"] for e in record["escalations"]] == ["sla_breached"]
    assert list(store.due(NOW + timedelta(days=30))) == []
    check_messages(outbox.sent)


def test_given_acknowledged_or_resolved_incidents_when_checked_then_they_are_not_escalated() -> None:
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    acked = _open(ports, make_alert("ngr", severity="critical"))
    done = _open(ports, make_alert("clicks", severity="critical"))
    store.acknowledge(acked, NOW + timedelta(minutes=5))
    store.resolve(done, NOW + timedelta(minutes=5))
    outbox.sent.clear()
    outcome = check_sla(RULES, ports, SETTINGS, NOW + timedelta(days=2))
    assert (outcome.checked, outcome.escalated, outcome.breached) == (0, 0, 0)
    assert outbox.sent == []


class AckWhileListing(MemoryIncidents):
    """The Due index is eventually consistent: an acknowledgement lands after the incident was listed."""

    def due(self, now: datetime) -> Iterator[StoredIncident]:
        listed = list(super().due(now))
        for stored in listed:
            self.acknowledge(stored.record["incident_id"], now)
        yield from listed


def test_given_an_incident_acknowledged_after_it_was_listed_when_checked_then_it_is_left_alone() -> None:
    store, outbox = AckWhileListing(), MemoryTeamOutbox()
    ports = TriagePorts(store, outbox, Clock())
    _open(ports, make_alert("ngr", severity="critical"))
    outbox.sent.clear()
    outcome = check_sla(RULES, ports, SETTINGS, NOW + timedelta(hours=2))
    assert (outcome.checked, outcome.unchanged, outcome.escalated) == (1, 1, 0)
    assert outbox.sent == []


class TeamDown(MemoryTeamOutbox):
    """One team's queue refuses messages until it is back."""

    def __init__(self, team: str) -> None:
        super().__init__()
        self.down = team

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        if any(m["team"] == self.down for m in messages):
            raise ConnectionError(f"queue of {self.down} unreachable")
        super().send(messages)


def test_given_one_team_queue_down_when_checked_then_others_escalate_and_the_next_run_resends() -> None:
    clock = Clock()
    store, outbox = MemoryIncidents(), TeamDown("nobody")
    ports = TriagePorts(store, outbox, clock)
    revenue = _open(ports, make_alert("ngr", severity="critical"))
    acquisition = _open(ports, make_alert("clicks", severity="critical"))
    outbox.sent.clear()
    outbox.down = "revenue"
    now = NOW + timedelta(hours=1)
    with pytest.raises(SlaCheckFailed, match=revenue) as caught:
        check_sla(RULES, ports, SETTINGS, now)
    assert (caught.value.outcome.escalated, caught.value.outcome.failed) == (1, [revenue])
    assert [m["team"] for m in outbox.sent] == ["acquisition"]
    # the escalation is saved with its message in the outbox, and not escalated twice
    assert _record(store, revenue)["priority"] == "P1"
    stored = store.get(revenue)
    assert stored is not None
    assert [m["reason"] for m in stored.outbox] == ["sla"]
    outbox.down = "nobody"
    rerun = check_sla(RULES, ports, SETTINGS, now + timedelta(minutes=5))
    assert (rerun.resent, rerun.escalated, rerun.breached) == (1, 0, 0)
    assert [(m["team"], m["reason"]) for m in outbox.sent] == [("acquisition", "sla"), ("revenue", "sla")]
    assert store.outboxes == {}
    # once its outbox is flushed it is watched again: breached at P1 after 15 more minutes
    assert check_sla(RULES, ports, SETTINGS, now + timedelta(minutes=16)).breached == 2
    assert {acquisition, revenue} == {m["incident"]["incident_id"] for m in outbox.sent}


def test_given_a_young_unsent_outbox_when_checked_then_the_sweep_leaves_it_to_its_writer() -> None:
    clock = Clock()
    store, outbox = MemoryIncidents(), TeamDown("revenue")
    ports = TriagePorts(store, outbox, clock)
    with pytest.raises(ConnectionError):
        triage_alert(make_alert("ngr"), RULES, ports, SETTINGS)
    outbox.down = "nobody"
    assert check_sla(RULES, ports, SETTINGS, NOW + timedelta(seconds=30)).resent == 0
    assert check_sla(RULES, ports, SETTINGS, NOW + timedelta(seconds=61)).resent == 1
    assert [m["event"] for m in outbox.sent] == ["opened"]


def test_given_a_priority_escalation_by_an_alert_when_checked_then_the_moved_due_time_is_used() -> None:
    clock = Clock()
    ports, store, _outbox = memory_ports(clock)
    iid = _open(ports, make_alert("ngr"))  # P3, due 13:05 + 4 h
    clock.advance(minutes=10)
    triage_alert(
        make_alert("ngr", "source", "x", severity="critical", period=T0 + timedelta(hours=1)),
        RULES,
        ports,
        SETTINGS,
    )
    assert _record(store, iid)["due_at"] == iso(NOW + timedelta(minutes=70))  # 13:15 + 60 min (P2)
    assert check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=69)).escalated == 0
    assert check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=70)).escalated == 1
    assert [e["reason"] for e in _record(store, iid)["escalations"]] == ["priority", "sla"]


def test_given_the_clock_port_when_no_time_is_passed_then_the_check_uses_it() -> None:
    clock = Clock()
    ports, _store, _ = memory_ports(clock)
    _open(ports, make_alert("ngr", severity="critical"))
    assert check_sla(RULES, ports, SETTINGS).escalated == 0
    clock.advance(minutes=60)
    outcome = check_sla(RULES, ports, SETTINGS)
    assert outcome.escalated == 1
    assert outcome.at == clock.now.isoformat()
