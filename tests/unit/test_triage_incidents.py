"""Incidents with the memory ports: grouping, dedup, escalation, outbox recovery, concurrency, the record."""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kpi_sentinel.adapters.memory import MemoryIncidents, MemoryTeamOutbox
from kpi_sentinel.ports import IncidentConflict, IncidentNotFound
from kpi_sentinel.triage.incidents import (
    ALERT_IDS_KEPT,
    DIMENSIONS_KEPT,
    BadAlert,
    TriagePorts,
    TriageSettings,
    incident_id,
    parse_iso,
    triage_alert,
)
from kpi_sentinel.triage.messages import INCIDENT_FIELDS
from kpi_sentinel.triage.routing import PRIORITIES, default_rules, more_urgent, parse_rules

from tests.unit.triage_helpers import (
    NOW,
    SETTINGS,
    T0,
    Clock,
    FlakyOutbox,
    check_messages,
    make_alert,
    memory_ports,
)

RULES = default_rules()
H = timedelta(hours=1)


def run(
    alerts: Sequence[Mapping[str, Any]],
    ports: TriagePorts,
    rules: Any = RULES,
    config: TriageSettings = SETTINGS,
) -> list[Any]:
    return [triage_alert(copy.deepcopy(dict(a)), rules, ports, config) for a in alerts]


def records(store: MemoryIncidents) -> list[dict[str, Any]]:
    return sorted(
        (store.get(i).record for i in store.records), key=lambda r: r["opened_at"] + r["incident_id"]
    )  # type: ignore[union-attr]


# --- opening ---------------------------------------------------------------------------------------------


def test_given_a_first_alert_when_triaged_then_an_incident_opens_with_the_full_record_and_one_message() -> (
    None
):
    ports, store, outbox = memory_ports()
    alert = make_alert("ngr", severity="critical", contributors=[("source", "telegram-push")])
    [outcome] = run([alert], ports)
    assert outcome.status == "opened"
    assert outcome.messages_sent == 1
    [record] = records(store)
    assert set(INCIDENT_FIELDS) <= set(record)
    assert record["incident_id"] == incident_id("acme-ads", "revenue", alert["alert_id"])
    assert re.fullmatch(r"inc-[0-9a-f]{24}", record["incident_id"])
    assert {
        k: record[k]
        for k in (
            "integration_id",
            "family",
            "team",
            "priority",
            "sla_minutes",
            "status",
            "severity",
            "count",
        )
    } == {
        "integration_id": "acme-ads",
        "family": "revenue",
        "team": "revenue",
        "priority": "P2",
        "sla_minutes": 60,
        "status": "open",
        "severity": "critical",
        "count": 1,
    }
    assert record["opened_at"] == record["last_seen_at"] == "2026-10-15T13:05:00+00:00"
    assert record["due_at"] == "2026-10-15T14:05:00+00:00"  # opened_at + 60 min (P2)
    assert record["acknowledged_at"] is None
    assert record["resolved_at"] is None
    assert record["alert_ids"] == [alert["alert_id"]]
    assert record["dimensions"] == ["total", "source=telegram-push"]
    assert record["metrics"] == ["ngr"]
    assert record["summary"] == record["first_summary"] == alert["summary"]
    assert record["escalations"] == []
    assert record["version"] == 1
    [message] = outbox.sent
    check_messages(outbox.sent)
    assert (message["event"], message["reason"], message["team"]) == ("opened", "new", "revenue")
    assert message["dedup_key"] == f"{record['incident_id']}:opened:new:P2:critical"
    assert message["alert"]["alert_id"] == alert["alert_id"]
    assert store.outboxes == {}  # sent, then cleared


def test_given_an_info_alert_when_triaged_then_it_is_skipped_with_a_reason_and_nothing_is_stored() -> None:
    ports, store, outbox = memory_ports()
    [outcome] = run([make_alert(severity="info")], ports)
    assert outcome.status == "ignored"
    assert "reports only" in (outcome.reason or "")
    assert store.records == {}
    assert store.claims == {}
    assert outbox.sent == []


# --- grouping --------------------------------------------------------------------------------------------


def test_given_same_family_alerts_whose_slices_overlap_when_triaged_then_they_are_one_incident() -> None:
    ports, store, outbox = memory_ports()
    alerts = [
        make_alert("ngr", contributors=[("source", "telegram-push")]),  # a total
        make_alert("deposits", "source", "email", period=T0 + H),  # a total covers every slice
        make_alert("ftds", "campaign", "x", period=T0 + 2 * H, contributors=[("source", "email")]),
    ]
    outcomes = run(alerts, ports)
    assert [o.status for o in outcomes] == ["opened", "updated", "updated"]
    [record] = records(store)
    assert record["count"] == 3
    assert record["version"] == 3
    assert record["metrics"] == ["deposits", "ftds", "ngr"]
    assert record["dimensions"] == ["total", "campaign=x", "source=email", "source=telegram-push"]
    assert record["alert_ids"] == [a["alert_id"] for a in alerts]
    assert len(outbox.sent) == 1  # warnings at P3/P4: nothing rose, nothing more to announce


def test_given_slices_sharing_a_contributor_when_triaged_then_they_group_without_any_total() -> None:
    ports, store, _ = memory_ports()
    run(
        [
            make_alert("ngr", "source", "a"),
            make_alert("deposits", "campaign", "c", contributors=[("source", "a")]),
        ],
        ports,
    )
    assert len(store.records) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (make_alert("ngr"), make_alert("clicks")),  # another family
        (make_alert("ngr", "source", "a"), make_alert("deposits", "source", "b")),  # disjoint slices
        (make_alert("ngr", "source", "a"), make_alert("ngr", "campaign", "a")),  # same value, other dimension
        (make_alert("ngr"), make_alert("ngr", integration="globex-traffic")),  # another integration
        (make_alert("ngr"), make_alert("ngr", detector="isolation_forest")),  # the forest is its own family
        (make_alert("ngr"), make_alert("ngr", period=T0 + 8 * H)),  # starts 7 h after the last period ended
    ],
)
def test_given_unrelated_alerts_when_triaged_then_they_open_separate_incidents(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    ports, store, outbox = memory_ports()
    assert [o.status for o in run([first, second], ports)] == ["opened", "opened"]
    assert len(store.records) == 2
    assert [m["event"] for m in outbox.sent] == ["opened", "opened"]


def test_given_the_window_when_an_alert_is_at_its_edge_then_it_joins_and_just_past_it_opens_a_new_one() -> (
    None
):
    ports, _store, _ = memory_ports()
    # the incident's last period ends at T0 + 1 h; the window reaches T0 + 7 h
    outcomes = run([make_alert("ngr"), make_alert("ngr", period=T0 + 7 * H)], ports)
    assert [o.status for o in outcomes] == ["opened", "updated"]
    # now it ends at T0 + 8 h: T0 + 14 h + 1 s is past the window
    late = make_alert("ngr", period=T0 + 14 * H + timedelta(seconds=1))
    assert run([late], ports)[0].status == "opened"


def test_given_a_configured_window_when_alerts_are_further_apart_then_they_do_not_group() -> None:
    ports, _store, _ = memory_ports()
    narrow = TriageSettings(window=timedelta(minutes=30), backoff_seconds=0)
    outcomes = run([make_alert("ngr"), make_alert("ngr", period=T0 + 2 * H)], ports, config=narrow)
    assert [o.status for o in outcomes] == ["opened", "opened"]
    assert TriageSettings.from_env({"INCIDENT_WINDOW_MINUTES": "30"}).window == timedelta(minutes=30)
    assert TriageSettings.from_env({}).window == timedelta(hours=6)
    for bad in ("0", "-5", "six hours"):
        with pytest.raises(ValueError, match="INCIDENT_WINDOW_MINUTES"):
            TriageSettings.from_env({"INCIDENT_WINDOW_MINUTES": bad})


def test_given_a_late_alert_from_before_the_incident_when_triaged_then_it_joins_without_taking_the_summary() -> (
    None
):
    ports, store, _ = memory_ports()
    newer = make_alert("ngr", period=T0 + 3 * H, summary="newest")
    older = make_alert("deposits", period=T0, summary="older")
    run([newer, older], ports)
    [record] = records(store)
    assert record["summary"] == record["first_summary"] == "newest"
    assert record["first_period_start"] == T0.isoformat()
    assert record["last_period_end"] == (T0 + 4 * H).isoformat()
    run([make_alert("ngr", period=T0 + 4 * H, summary="latest")], ports)
    assert records(store)[0]["summary"] == "latest"
    assert records(store)[0]["first_summary"] == "newest"


def test_given_a_resolved_incident_when_a_related_alert_arrives_then_a_new_incident_opens() -> None:
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    first = run([make_alert("ngr")], ports)[0]
    resolved = store.resolve(first.incident_id, clock.advance(minutes=10))
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] == "2026-10-15T13:15:00+00:00"
    second = run([make_alert("deposits", period=T0 + H)], ports)[0]
    assert second.status == "opened"
    assert second.incident_id != first.incident_id
    old = store.get(first.incident_id)
    assert old is not None
    assert old.record["status"] == "resolved"
    assert old.record["count"] == 1
    assert [m["event"] for m in outbox.sent] == ["opened", "opened"]


def test_given_an_acknowledged_incident_when_a_repeat_arrives_then_it_is_updated_and_stays_acknowledged() -> (
    None
):
    clock = Clock()
    ports, store, _ = memory_ports(clock)
    first = run([make_alert("ngr")], ports)[0]
    store.acknowledge(first.incident_id, clock.advance(minutes=3))
    second = run([make_alert("ngr", period=T0 + H)], ports)[0]
    assert second.status == "updated"
    assert second.incident_id == first.incident_id
    record = records(store)[0]
    assert record["status"] == "acknowledged"
    assert record["count"] == 2
    assert record["acknowledged_at"] == "2026-10-15T13:08:00+00:00"


def test_given_two_fitting_incidents_when_a_total_arrives_then_it_joins_the_one_with_the_latest_period() -> (
    None
):
    ports, _store, _ = memory_ports()
    a = run([make_alert("ngr", "source", "a", period=T0)], ports)[0]
    b = run([make_alert("ngr", "source", "b", period=T0 + H)], ports)[0]
    total = run([make_alert("deposits", period=T0 + H)], ports)[0]
    assert a.incident_id != b.incident_id
    assert total.incident_id == b.incident_id


# --- repeats, dedup and escalation -----------------------------------------------------------------------


def test_given_the_same_alert_twice_when_triaged_then_the_second_is_a_no_op_that_sends_nothing() -> None:
    ports, store, outbox = memory_ports()
    alert = make_alert("ngr", severity="critical")
    first, again = run([alert, alert], ports)
    assert (first.status, again.status) == ("opened", "duplicate")
    assert again.incident_id == first.incident_id
    assert again.messages_sent == 0
    [record] = records(store)
    assert record["count"] == 1
    assert record["version"] == 1
    assert store.saves == 1
    assert len(outbox.sent) == 1


def test_given_a_repeat_that_changes_nothing_important_when_triaged_then_it_updates_quietly() -> None:
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    run([make_alert("ngr", severity="critical")], ports)
    clock.advance(minutes=20)
    [outcome] = run([make_alert("deposits", severity="warning", period=T0 + H)], ports)  # a lower priority
    assert outcome.status == "updated"
    assert outcome.escalation is None
    assert outcome.messages_sent == 0
    [record] = records(store)
    assert (record["priority"], record["severity"], record["count"]) == ("P2", "critical", 2)
    assert record["last_seen_at"] == "2026-10-15T13:25:00+00:00"
    assert record["due_at"] == "2026-10-15T14:05:00+00:00"  # unchanged
    assert len(outbox.sent) == 1


def test_given_a_repeat_with_a_more_urgent_route_when_triaged_then_the_incident_escalates_once() -> None:
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    run([make_alert("ngr", severity="warning")], ports)  # P3: due 13:05 + 4 h
    clock.advance(minutes=30)
    [outcome] = run([make_alert("ngr", "source", "x", severity="critical", period=T0 + H)], ports)
    assert outcome.escalation == "priority"
    assert outcome.priority == "P2"
    [record] = records(store)
    assert (record["priority"], record["severity"], record["sla_minutes"]) == ("P2", "critical", 60)
    assert record["due_at"] == "2026-10-15T14:35:00+00:00"  # now + the P2 SLA, sooner than before
    assert record["escalations"] == [
        {"level": "P2", "from": "P3", "at": "2026-10-15T13:35:00+00:00", "reason": "priority"}
    ]
    _opened, escalated = outbox.sent
    assert (escalated["event"], escalated["reason"]) == ("escalated", "priority")
    assert escalated["dedup_key"] == f"{record['incident_id']}:escalated:priority:P2:critical"
    check_messages(outbox.sent)
    run([make_alert("deposits", severity="critical", period=T0 + 2 * H)], ports)  # same level again
    assert len(outbox.sent) == 2


def test_given_a_repeat_that_only_raises_the_severity_when_triaged_then_it_is_a_severity_escalation() -> None:
    flat = parse_rules(
        {"version": 1, "teams": ["ops"], "sla_minutes": {"P1": 5, "P2": 10, "P3": 20, "P4": 40}, "rules": [],
         "default": {"team": "ops", "priority": "P3"}}
    )  # fmt: skip
    ports, store, outbox = memory_ports()
    run(
        [make_alert("ngr"), make_alert("ngr", "source", "a", severity="critical", period=T0 + H)], ports, flat
    )
    [record] = records(store)
    assert record["priority"] == "P3"
    assert record["severity"] == "critical"
    assert [e["reason"] for e in record["escalations"]] == ["severity"]
    assert [(m["event"], m["reason"]) for m in outbox.sent] == [("opened", "new"), ("escalated", "severity")]
    assert record["due_at"] == "2026-10-15T13:25:00+00:00"  # same priority, same SLA clock
    check_messages(outbox.sent)


def test_given_more_alerts_than_kept_when_triaged_then_ids_are_bounded_and_the_count_is_total() -> None:
    ports, store, _ = memory_ports()
    alerts = [
        make_alert("ngr", period=T0 + n * timedelta(minutes=5), hours=1 / 12)
        for n in range(ALERT_IDS_KEPT + 10)
    ]
    run(alerts, ports)
    [record] = records(store)
    assert record["count"] == ALERT_IDS_KEPT + 10
    assert record["alert_ids"] == [a["alert_id"] for a in alerts[-ALERT_IDS_KEPT:]]


def test_given_more_slices_than_kept_when_triaged_then_dimensions_are_bounded_and_flagged() -> None:
    ports, store, _ = memory_ports()
    many = [("source", f"s{n:03d}") for n in range(DIMENSIONS_KEPT + 5)]
    run(
        [
            make_alert("ngr", "campaign", "c", contributors=many[:3]),
            make_alert("ngr", "campaign", "c2", contributors=many),
        ],
        ports,
    )
    [record] = records(store)
    assert len(record["dimensions"]) == DIMENSIONS_KEPT
    assert record["dimensions_truncated"] is True
    assert {"campaign=c", "source=s000"} <= set(record["dimensions"])
    run([make_alert("deposits")], ports)  # a total still joins and is kept
    assert records(store)[0]["dimensions"][0] == "total"


# --- malformed alerts ------------------------------------------------------------------------------------


def _without(name: str) -> dict[str, Any]:
    alert = make_alert()
    del alert[name]
    return alert


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([1, 2], "(message)"),
        (_without("alert_id"), "alert_id"),
        (_without("integration_id"), "integration_id"),
        (make_alert() | {"integration_id": "../etc/passwd"}, "integration_id"),
        (make_alert() | {"alert_id": "not-an-id"}, "alert_id"),
        (make_alert() | {"schema_version": "2"}, "schema_version"),
        (make_alert() | {"detector": "prophet"}, "detector"),
        (make_alert() | {"severity": "fatal"}, "severity"),
        (make_alert() | {"tier": "gold"}, "tier"),
        (_without("segment"), "segment"),
        (_without("dimension"), "dimension"),
        (make_alert() | {"dimension": "source"}, "dimension_value"),
        (make_alert() | {"period_start": "yesterday"}, "period_start"),
        (make_alert() | {"period_start": "2026-10-15T12:00:00"}, "period_start"),
        (make_alert() | {"period_end": "2026-10-15T11:00:00+00:00"}, "period_end"),
        (make_alert() | {"summary": ""}, "summary"),
        (make_alert() | {"contributors": None}, "contributors"),
        (make_alert() | {"contributors": [{"dimension": "source"}]}, "contributors[0].value"),
    ],
)
def test_given_a_malformed_alert_when_triaged_then_bad_alert_names_the_field_and_nothing_is_stored(
    raw: Any, field: str
) -> None:
    ports, store, outbox = memory_ports()
    with pytest.raises(BadAlert) as caught:
        triage_alert(raw, RULES, ports, SETTINGS)
    assert caught.value.field == field
    assert f"field {field!r}" in str(caught.value)
    assert store.records == {}
    assert store.claims == {}
    assert outbox.sent == []


# --- at least once in, at least once out -----------------------------------------------------------------


class CrashBeforeClear(MemoryIncidents):
    """Dies after the messages went out but before the outbox was cleared, once."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def clear_outbox(self, record: Mapping[str, Any]) -> None:
        if self.armed:
            self.armed = False
            raise TimeoutError("Lambda timed out")
        super().clear_outbox(record)


def test_given_a_crash_between_save_and_send_when_the_alert_is_redelivered_then_the_messages_go_out() -> None:
    store, outbox = MemoryIncidents(), FlakyOutbox(failures=1)
    ports = TriagePorts(store, outbox, Clock())
    alert = make_alert("ngr", severity="critical")
    with pytest.raises(ConnectionError):
        triage_alert(alert, RULES, ports, SETTINGS)
    # committed: the alert is claimed and its incident holds the unsent message
    [iid] = store.records
    assert store.claims == {alert["alert_id"]: iid}
    assert outbox.sent == []
    stored = store.get(iid)
    assert stored is not None
    assert [m["event"] for m in stored.outbox] == ["opened"]
    redelivered = triage_alert(alert, RULES, ports, SETTINGS)
    assert redelivered.status == "duplicate"
    assert redelivered.messages_sent == 1
    assert [m["dedup_key"] for m in outbox.sent] == [stored.outbox[0]["dedup_key"]]
    assert store.outboxes == {}
    assert records(store)[0]["count"] == 1
    assert triage_alert(alert, RULES, ports, SETTINGS).messages_sent == 0  # nothing left to send


def test_given_a_crash_after_send_before_clear_when_redelivered_then_it_resends_the_same_key() -> None:
    store, outbox = CrashBeforeClear(), MemoryTeamOutbox()
    ports = TriagePorts(store, outbox, Clock())
    alert = make_alert("ngr")
    with pytest.raises(TimeoutError):
        triage_alert(alert, RULES, ports, SETTINGS)
    triage_alert(alert, RULES, ports, SETTINGS)
    keys = [m["dedup_key"] for m in outbox.sent]
    assert len(keys) == 2
    assert len(set(keys)) == 1
    assert outbox.sent[0] == outbox.sent[1]


def test_given_an_unsent_outbox_when_another_alert_updates_the_incident_then_it_sends_both() -> None:
    store, outbox = MemoryIncidents(), FlakyOutbox(failures=1)
    ports = TriagePorts(store, outbox, Clock())
    with pytest.raises(ConnectionError):
        triage_alert(make_alert("ngr"), RULES, ports, SETTINGS)
    outcome = triage_alert(
        make_alert("ngr", "source", "x", severity="critical", period=T0 + H), RULES, ports, SETTINGS
    )
    assert outcome.messages_sent == 2
    assert [(m["event"], m["reason"]) for m in outbox.sent] == [("opened", "new"), ("escalated", "priority")]


class RacingStore(MemoryIncidents):
    """Before the next save, another writer triages ``rival`` (a concurrent Lambda in the same family)."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: dict[str, Any] | None = None
        self.ports: TriagePorts | None = None
        self.conflicts = 0

    def save(self, record: Mapping[str, Any], expected_version: int, outbox: Sequence[Mapping[str, Any]],
             claim_alert_id: str | None = None, group_version: int | None = None) -> None:  # fmt: skip
        if self.rival is not None and self.ports is not None:
            rival, self.rival = self.rival, None
            triage_alert(rival, RULES, self.ports, SETTINGS)
        try:
            super().save(record, expected_version, outbox, claim_alert_id, group_version)
        except IncidentConflict:
            self.conflicts += 1
            raise


def test_given_two_alerts_of_one_family_at_once_when_both_would_open_then_one_incident_takes_both() -> None:
    store = RacingStore()
    ports = TriagePorts(store, MemoryTeamOutbox(), Clock())
    store.ports = ports
    store.rival = make_alert("deposits")
    outcome = triage_alert(make_alert("ngr"), RULES, ports, SETTINGS)
    assert store.conflicts == 1
    assert outcome.attempts == 2
    assert outcome.status == "updated"
    [record] = records(store)
    assert record["count"] == 2


def test_given_the_same_alert_delivered_twice_at_once_when_both_run_then_it_is_claimed_once() -> None:
    store = RacingStore()
    ports = TriagePorts(store, MemoryTeamOutbox(), Clock())
    store.ports = ports
    alert = make_alert("ngr")
    store.rival = copy.deepcopy(alert)
    outcome = triage_alert(alert, RULES, ports, SETTINGS)
    assert outcome.status == "duplicate"
    assert store.conflicts == 1
    assert records(store)[0]["count"] == 1


class AlwaysConflicting(MemoryIncidents):
    def save(self, *args: Any, **kwargs: Any) -> None:
        raise IncidentConflict("someone else, forever")


def test_given_an_incident_that_keeps_changing_when_triaged_then_it_gives_up_with_a_conflict() -> None:
    ports = TriagePorts(AlwaysConflicting(), MemoryTeamOutbox(), Clock())
    with pytest.raises(IncidentConflict, match="gave up after 3 attempts"):
        triage_alert(make_alert(), RULES, ports, TriageSettings(max_attempts=3, backoff_seconds=0))


# --- store operations ------------------------------------------------------------------------------------


def test_given_an_incident_when_acknowledged_and_resolved_then_both_are_idempotent_and_unknown_ids_fail() -> (
    None
):
    clock = Clock()
    ports, store, _ = memory_ports(clock)
    iid = run([make_alert("ngr", severity="critical")], ports)[0].incident_id
    assert [s.record["incident_id"] for s in store.due(NOW + 2 * H)] == [iid]
    acked = store.acknowledge(iid, NOW + timedelta(minutes=7))
    assert acked["status"] == "acknowledged"
    assert acked["version"] == 2
    assert store.acknowledge(iid, NOW + H)["acknowledged_at"] == "2026-10-15T13:12:00+00:00"  # unchanged
    assert list(store.due(NOW + 2 * H)) == []  # acknowledged: the SLA check leaves it alone
    done = store.resolve(iid, NOW + H)
    assert (done["status"], done["resolved_at"], done["version"]) == (
        "resolved",
        "2026-10-15T14:05:00+00:00",
        3,
    )
    assert store.resolve(iid, NOW + 2 * H)["version"] == 3
    assert store.acknowledge(iid, NOW + 3 * H)["status"] == "resolved"  # never back
    with pytest.raises(IncidentNotFound):
        store.acknowledge("inc-000000000000000000000000", NOW)


def test_given_incidents_on_several_days_when_listed_by_opening_time_then_the_range_is_half_open() -> None:
    clock = Clock(NOW)
    ports, store, _ = memory_ports(clock)
    opened = []
    for n, metric in enumerate(("ngr", "clicks", "tickets")):
        clock.now = NOW + n * timedelta(hours=12)
        opened.append(run([make_alert(metric)], ports)[0].incident_id)
    start, end = NOW, NOW + 24 * H  # 13:05 day 1 .. 13:05 day 2: the third opened exactly at end
    assert [r["incident_id"] for r in store.incidents_opened(start, end)] == opened[:2]
    assert [
        r["incident_id"] for r in store.incidents_opened(start + timedelta(seconds=1), end + H)
    ] == opened[1:]


# --- properties ------------------------------------------------------------------------------------------

_ALERT = st.builds(
    lambda metric, slice_, severity, tier, hour: make_alert(
        metric, *(slice_ or (None, None)), severity=severity, tier=tier, period=T0 + hour * H
    ),
    metric=st.sampled_from(["ngr", "deposits", "clicks", "tickets"]),
    slice_=st.none() | st.tuples(st.sampled_from(["source", "queue"]), st.sampled_from(["a", "b"])),
    severity=st.sampled_from(["warning", "critical"]),
    tier=st.sampled_from(["standard", "business"]),
    hour=st.integers(0, 30),
)


@settings(max_examples=60, deadline=None)
@given(alerts=st.lists(_ALERT, min_size=1, max_size=25), redeliver=st.lists(st.integers(0, 24), max_size=8))
def test_property_every_alert_lands_in_exactly_one_incident_and_announcements_match_escalations(
    alerts: list[dict[str, Any]], redeliver: list[int]
) -> None:
    ports, store, outbox = memory_ports()
    stream = list(alerts) + [alerts[i % len(alerts)] for i in redeliver]
    outcomes = run(stream, ports)
    distinct: dict[str, dict[str, Any]] = {}
    for alert in alerts:  # the same id twice is a no-op: the first delivery is the one that counts
        distinct.setdefault(alert["alert_id"], alert)
    assert set(store.claims) == set(distinct)
    incidents = records(store)
    assert sum(r["count"] for r in incidents) == len(distinct)
    assert sum(o.status == "opened" for o in outcomes) == len(incidents)
    # each incident announced its opening once and each escalation once; nothing was sent twice
    sent = Counter(m["dedup_key"] for m in outbox.sent)
    assert all(n == 1 for n in sent.values())
    for record in incidents:
        events = [m["event"] for m in outbox.sent if m["incident"]["incident_id"] == record["incident_id"]]
        assert events.count("opened") == 1
        assert events.count("escalated") == len(record["escalations"])
        members = [distinct[a] for a, owner in store.claims.items() if owner == record["incident_id"]]
        urgent = PRIORITIES[3]
        for member in members:
            urgent = more_urgent(urgent, RULES.route(member).priority)
            assert RULES.family_of(member) == record["family"]
        assert record["priority"] == urgent  # the most urgent route among its alerts
        assert record["severity"] == max((m["severity"] for m in members), key=["warning", "critical"].index)
        assert parse_iso(record["due_at"]) > parse_iso(record["opened_at"])
    check_messages(outbox.sent)
