"""Missing-data resolutions close their incidents, and incidents keep who acknowledged and resolved them.

The alerts are the freshness check's own (:func:`missing_alert`, :func:`resolution_alert`), triaged
with the memory ports; the messages validate against incident-v1.json.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kpi_sentinel.adapters.memory import MemoryIncidents, MemoryTeamOutbox
from kpi_sentinel.handlers import triage as handler
from kpi_sentinel.operator_jobs.freshness import (
    Expectation,
    missing_alert,
    outage_alert_id,
    resolution_alert,
)
from kpi_sentinel.ports import ActiveIntegration, IncidentConflict, Outage
from kpi_sentinel.triage.incidents import (
    FRESHNESS_CHECK,
    BadAlert,
    TriageOutcome,
    TriagePorts,
    acknowledged,
    resolved,
    triage_alert,
)
from kpi_sentinel.triage.messages import ADDED_FIELDS, INCIDENT_FIELDS, build_message
from kpi_sentinel.triage.routing import default_rules
from kpi_sentinel.triage.sla import check_sla

from tests.unit.triage_helpers import (
    NOW,
    SETTINGS,
    Clock,
    FlakyOutbox,
    check_messages,
    make_alert,
    memory_ports,
    sqs_event,
)

RULES = default_rules()
INTEGRATION = "acme-ads"
LAST_SYNC = datetime(2026, 10, 15, 9, tzinfo=UTC).timestamp()  # hourly syncs stopped at 09:00
HOURLY = Expectation(cadence=3600, grace=3600, critical_after=6 * 3600)
ACTIVE = ActiveIntegration(INTEGRATION, "standard", 3600, LAST_SYNC)
OPERATOR = "arn:aws:iam::123456789012:user/alice"


def warning() -> dict[str, Any]:
    """The freshness check's warning: no sync for 4 hours (checked at 13:00)."""
    return missing_alert(ACTIVE, "default", LAST_SYNC + 4 * 3600, HOURLY, "warning")


def critical() -> dict[str, Any]:
    """Its escalation, 6 hours into the silence."""
    alert = missing_alert(ACTIVE, "default", LAST_SYNC + 6 * 3600, HOURLY, "critical")
    alert["escalates"] = outage_alert_id(INTEGRATION, LAST_SYNC)
    return alert


def resolution(*alerts: Mapping[str, Any]) -> dict[str, Any]:
    """The freshness check's info resolution of the outage ``alerts`` announced (syncs resumed 14:10)."""
    announced = alerts or (warning(),)
    outage = Outage(
        integration_id=INTEGRATION,
        last_sync_at=LAST_SYNC,
        cadence_seconds=3600,
        alert_ids=tuple(a["alert_id"] for a in announced),
        severity=announced[-1]["severity"],
        alerted_at=LAST_SYNC + 4 * 3600,
    )
    return resolution_alert(outage, LAST_SYNC + 5 * 3600 + 600)


def run(alerts: Sequence[Mapping[str, Any]], ports: TriagePorts) -> list[TriageOutcome]:
    return [triage_alert(copy.deepcopy(dict(a)), RULES, ports, SETTINGS) for a in alerts]


def stored_record(store: MemoryIncidents, incident_id: str | None) -> dict[str, Any]:
    assert incident_id is not None
    stored = store.get(incident_id)
    assert stored is not None
    return stored.record


# --- resolution closes the incident ---------------------------------------------------------------------


def test_given_a_missing_data_incident_when_its_resolution_arrives_then_it_is_resolved_and_announced_once() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    [opened] = run([warning()], ports)
    assert (opened.status, opened.team) == ("opened", "integrations")
    clock.advance(minutes=70)
    fix = resolution()
    [outcome] = run([fix], ports)
    assert outcome.status == "resolved"
    assert outcome.incident_id == opened.incident_id
    assert outcome.resolved_incidents == [opened.incident_id]
    assert outcome.messages_sent == 1
    assert outcome.reason == "data_resumed"
    record = stored_record(store, opened.incident_id)
    assert {
        k: record[k] for k in ("status", "resolved_at", "resolved_by", "resolution_reason", "version")
    } == {
        "status": "resolved",
        "resolved_at": "2026-10-15T14:15:00+00:00",  # the triage clock
        "resolved_by": FRESHNESS_CHECK,
        "resolution_reason": "data_resumed",
        "version": 2,
    }
    assert record["count"] == 1  # the resolution is not one of the incident's alerts
    assert record["alert_ids"] == [warning()["alert_id"]]
    assert store.claims == {warning()["alert_id"]: opened.incident_id}  # nothing claims the resolution
    assert store.outboxes == {}  # sent, then cleared
    assert list(store.due(NOW + timedelta(days=2))) == []  # the SLA check no longer watches it
    messages = outbox.for_team("integrations")
    assert [(m["event"], m["reason"]) for m in messages] == [("opened", "new"), ("resolved", "data_resumed")]
    check_messages(messages)
    done = messages[1]
    assert done["dedup_key"] == f"{opened.incident_id}:resolved:data_resumed:{record['priority']}:warning"
    assert done["at"] == "2026-10-15T14:15:00+00:00"
    assert done["incident"]["status"] == "resolved"
    assert done["incident"]["resolved_by"] == FRESHNESS_CHECK
    assert done["alert"]["alert_id"] == fix["alert_id"]
    assert done["alert"]["severity"] == "info"
    assert "resumed" in done["alert"]["summary"]


def test_given_a_resolved_incident_when_the_resolution_is_redelivered_then_nothing_is_sent_or_changed() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    [opened] = run([warning()], ports)
    run([resolution()], ports)
    before, sent = copy.deepcopy(store.records), len(outbox.sent)
    clock.advance(minutes=5)
    outcomes = run([resolution(), resolution()], ports)
    assert [o.status for o in outcomes] == ["duplicate", "duplicate"]
    assert [o.messages_sent for o in outcomes] == [0, 0]
    assert all(o.incident_id == opened.incident_id for o in outcomes)
    assert store.records == before
    assert len(outbox.sent) == sent


def test_given_a_crash_before_the_resolved_message_went_out_when_redelivered_then_it_goes_out_once() -> None:
    store, outbox = MemoryIncidents(), FlakyOutbox()
    ports = TriagePorts(store, outbox, Clock())
    [opened] = run([warning()], ports)
    outbox.failures = 1
    with pytest.raises(ConnectionError):
        run([resolution()], ports)
    # committed with its message: resolved, the message waiting in the outbox
    stored = store.get(opened.incident_id or "")
    assert stored is not None
    assert stored.record["status"] == "resolved"
    assert [m["event"] for m in stored.outbox] == ["resolved"]
    [again] = run([resolution()], ports)
    assert (again.status, again.messages_sent) == ("duplicate", 1)
    assert [m["event"] for m in outbox.sent] == ["opened", "resolved"]
    assert outbox.sent[-1]["dedup_key"] == stored.outbox[0]["dedup_key"]
    assert stored_record(store, opened.incident_id)["version"] == stored.record["version"]
    assert run([resolution()], ports)[0].messages_sent == 0


def test_given_an_unsent_resolution_when_the_sla_check_sweeps_then_it_is_delivered() -> None:
    clock = Clock()
    store, outbox = MemoryIncidents(), FlakyOutbox()
    ports = TriagePorts(store, outbox, clock)
    run([warning()], ports)
    outbox.failures = 1
    with pytest.raises(ConnectionError):
        run([resolution()], ports)
    swept = check_sla(RULES, ports, SETTINGS, clock.advance(minutes=10))
    assert (swept.resent, swept.escalated, swept.breached) == (1, 0, 0)
    assert [m["event"] for m in outbox.sent] == ["opened", "resolved"]


def test_given_a_warning_and_its_escalation_in_one_incident_when_resolved_then_it_closes_once() -> None:
    ports, _store, outbox = memory_ports()
    first, second = run([warning(), critical()], ports)
    assert (first.status, second.status, second.escalation) == ("opened", "updated", "priority")
    [outcome] = run([resolution(warning(), critical())], ports)
    assert outcome.resolved_incidents == [first.incident_id]
    assert outcome.messages_sent == 1
    assert [m["event"] for m in outbox.sent] == ["opened", "escalated", "resolved"]
    assert outbox.sent[-1]["severity"] == "critical"
    check_messages(outbox.sent)


def test_given_an_acknowledged_incident_when_data_resumes_then_it_is_resolved_and_keeps_who_acknowledged() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    [opened] = run([warning()], ports)
    store.acknowledge(opened.incident_id or "", clock.advance(minutes=4), by=OPERATOR)
    [outcome] = run([resolution()], ports)
    assert outcome.status == "resolved"
    record = stored_record(store, opened.incident_id)
    assert (record["status"], record["acknowledged_by"], record["resolved_by"]) == (
        "resolved",
        OPERATOR,
        FRESHNESS_CHECK,
    )
    assert outbox.sent[-1]["incident"]["acknowledged_by"] == OPERATOR
    check_messages(outbox.sent)


def test_given_the_warnings_incident_resolved_by_an_operator_when_data_resumes_then_only_the_later_one_closes() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    [first] = run([warning()], ports)
    store.resolve(first.incident_id or "", clock.advance(minutes=20), by=OPERATOR)
    operator_view = stored_record(store, first.incident_id)
    clock.advance(minutes=100)
    [second] = run([critical()], ports)  # a resolved incident is never reopened: a new one opens
    assert second.status == "opened"
    [outcome] = run([resolution(warning(), critical())], ports)
    assert outcome.resolved_incidents == [second.incident_id]
    assert stored_record(store, first.incident_id) == operator_view  # untouched
    assert [m["event"] for m in outbox.sent] == ["opened", "opened", "resolved"]
    assert outbox.sent[-1]["incident"]["incident_id"] == second.incident_id


# --- no-ops ---------------------------------------------------------------------------------------------


def test_given_a_resolution_of_alerts_no_incident_claimed_when_triaged_then_it_is_ignored_with_a_reason() -> (
    None
):
    ports, store, outbox = memory_ports()
    [outcome] = run([resolution()], ports)  # the warning was snoozed: support triage never saw it
    assert outcome.status == "ignored"
    assert "no incident claimed" in (outcome.reason or "")
    assert warning()["alert_id"] in (outcome.reason or "")
    assert "snooze" in (outcome.reason or "")
    assert store.records == {}
    assert store.claims == {}
    assert outbox.sent == []


def test_given_an_incident_an_operator_resolved_when_data_resumes_then_it_is_untouched_and_ignored() -> None:
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    [opened] = run([warning()], ports)
    store.resolve(opened.incident_id or "", clock.advance(minutes=30), by=OPERATOR)
    before, sent = copy.deepcopy(store.records), len(outbox.sent)
    [outcome] = run([resolution()], ports)
    assert outcome.status == "ignored"
    assert "resolved already" in (outcome.reason or "")
    assert OPERATOR in (outcome.reason or "")
    assert store.records == before
    record = stored_record(store, opened.incident_id)
    assert (record["resolved_by"], record["resolution_reason"]) == (OPERATOR, "operator")
    assert len(outbox.sent) == sent


def test_given_other_info_alerts_when_triaged_then_they_stay_ignored() -> None:
    ports, store, outbox = memory_ports()
    [opened] = run([warning()], ports)
    plain = make_alert("ngr", severity="info")
    # an EWMA info alert that claims to resolve the outage: only missing_data resolutions close incidents
    lookalike = make_alert("clicks", severity="info") | {"resolves": warning()["alert_id"]}
    outcomes = run([plain, lookalike], ports)
    assert [o.status for o in outcomes] == ["ignored", "ignored"]
    assert "reports only" in (outcomes[0].reason or "")
    assert "missing_data" in (outcomes[1].reason or "")
    assert stored_record(store, opened.incident_id)["status"] == "open"
    assert len(outbox.sent) == 1
    # and a warning that carries ``resolves`` is an ordinary alert
    again = run([critical() | {"resolves": warning()["alert_id"]}], ports)[0]
    assert again.status == "updated"


def test_given_another_integrations_incident_when_a_resolution_names_its_alert_then_it_is_left_alone() -> (
    None
):
    ports, store, _outbox = memory_ports()
    [opened] = run([warning()], ports)
    forged = resolution() | {"integration_id": "globex-traffic"}
    [outcome] = run([forged], ports)
    assert outcome.status == "ignored"
    assert "another integration" in (outcome.reason or "")
    assert stored_record(store, opened.incident_id)["status"] == "open"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resolves": "not-an-id"}, "resolves"),
        ({"resolves": 7}, "resolves"),
        ({"resolved_alert_ids": "missing_data-" + "0" * 32}, "resolved_alert_ids"),
        ({"resolved_alert_ids": ["missing_data-" + "0" * 32, None]}, "resolved_alert_ids[1]"),
    ],
)
def test_given_a_malformed_resolution_when_triaged_then_bad_alert_names_the_field(
    change: dict[str, Any], field: str
) -> None:
    ports, store, _ = memory_ports()
    with pytest.raises(BadAlert) as caught:
        run([resolution() | change], ports)
    assert caught.value.field == field
    assert store.records == {}


# --- concurrency ----------------------------------------------------------------------------------------


class ConflictOnce(MemoryIncidents):
    """Someone else changes the incident between our read and our write, once (an operator's ack)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def save(
        self,
        record: Mapping[str, Any],
        expected_version: int,
        outbox: Sequence[Mapping[str, Any]],
        claim_alert_id: str | None = None,
        group_version: int | None = None,
    ) -> None:
        if self.armed:
            self.armed = False
            self.acknowledge(str(record["incident_id"]), NOW, by=OPERATOR)
        super().save(record, expected_version, outbox, claim_alert_id, group_version)


def test_given_an_incident_changing_meanwhile_when_resolving_then_it_retries_on_the_new_version() -> None:
    store, outbox = ConflictOnce(), MemoryTeamOutbox()
    ports = TriagePorts(store, outbox, Clock())
    [opened] = run([warning()], ports)
    store.armed = True
    [outcome] = run([resolution()], ports)
    assert (outcome.status, outcome.attempts) == ("resolved", 2)
    record = stored_record(store, opened.incident_id)
    assert (record["version"], record["acknowledged_by"], record["status"]) == (3, OPERATOR, "resolved")
    assert [m["event"] for m in outbox.sent] == ["opened", "resolved"]


class AlwaysConflicting(MemoryIncidents):
    def save(self, record: Mapping[str, Any], expected_version: int, *args: Any, **kwargs: Any) -> None:
        if record["status"] == "resolved":
            raise IncidentConflict("changed")
        super().save(record, expected_version, *args, **kwargs)


def test_given_an_incident_that_keeps_changing_when_resolving_then_it_gives_up_for_a_retry() -> None:
    store = AlwaysConflicting()
    ports = TriagePorts(store, MemoryTeamOutbox(), Clock())
    run([warning()], ports)
    with pytest.raises(IncidentConflict, match="gave up after"):
        run([resolution()], ports)


# --- the handler ----------------------------------------------------------------------------------------


class FixedRules:
    def get(self) -> Any:
        return RULES


def test_given_a_batch_with_a_resolution_when_handled_then_it_is_counted_as_a_resolution() -> None:
    ports, _store, outbox = memory_ports()
    runtime = handler.TriageRuntime(ports, FixedRules(), SETTINGS)
    seen: list[TriageOutcome] = []
    handler.observers.append(seen.append)
    handler.metrics.clear_metrics()
    try:
        handler.handle(sqs_event(json.dumps(warning())), None, runtime)
        handler.metrics.clear_metrics()
        response = handler.handle(
            sqs_event(json.dumps(resolution()), json.dumps(resolution())), None, runtime
        )
        counted = {name: sum(m["Value"]) for name, m in handler.metrics.metric_set.items()}
    finally:
        handler.observers.remove(seen.append)
        handler.metrics.clear_metrics()
    assert response["batchItemFailures"] == []
    assert [o.status for o in seen] == ["opened", "resolved", "duplicate"]
    assert counted["ResolutionAlerts"] == 1
    assert counted["IncidentsResolved"] == 1
    assert counted["AlertsDeduplicated"] == 1
    assert counted["IncidentMessagesSent"] == 1
    assert [m["event"] for m in outbox.sent] == ["opened", "resolved"]


# --- who acknowledged and resolved ----------------------------------------------------------------------


def test_given_a_new_incident_then_who_acknowledged_and_resolved_it_start_unset() -> None:
    ports, store, outbox = memory_ports()
    [opened] = run([make_alert("ngr")], ports)
    record = stored_record(store, opened.incident_id)
    assert {name: record[name] for name in ADDED_FIELDS} == dict.fromkeys(ADDED_FIELDS)
    assert set(INCIDENT_FIELDS) <= set(record)
    check_messages(outbox.sent)


def test_given_a_record_when_acknowledged_and_resolved_then_by_and_the_reason_are_set_once() -> None:
    ports, store, _ = memory_ports()
    [opened] = run([make_alert("ngr")], ports)
    record = stored_record(store, opened.incident_id)
    acked = acknowledged(record, NOW + timedelta(minutes=5), by=OPERATOR)
    assert acked is not None
    assert (acked["acknowledged_by"], acked["resolved_by"]) == (OPERATOR, None)
    done = resolved(acked, NOW + timedelta(minutes=9), by="bob")
    assert done is not None
    assert (done["resolved_by"], done["resolution_reason"], done["acknowledged_by"]) == (
        "bob",
        "operator",
        OPERATOR,
    )
    assert resolved(done, NOW + timedelta(hours=1), by=FRESHNESS_CHECK, reason="data_resumed") is None
    with pytest.raises(ValueError, match="resolution reason"):
        resolved(record, NOW, by="bob", reason="because")


def test_given_the_memory_store_when_acknowledged_and_resolved_by_someone_then_the_first_stays() -> None:
    clock = Clock()
    ports, store, _ = memory_ports(clock)
    iid = run([make_alert("ngr", severity="critical")], ports)[0].incident_id or ""
    assert store.acknowledge(iid, clock.advance(minutes=3), by=OPERATOR)["acknowledged_by"] == OPERATOR
    assert store.acknowledge(iid, clock.advance(minutes=3), by="bob")["acknowledged_by"] == OPERATOR
    done = store.resolve(iid, clock.advance(minutes=3), by="bob")
    assert (done["resolved_by"], done["resolution_reason"]) == ("bob", "operator")
    assert store.resolve(iid, clock.advance(minutes=3), by="carol")["resolved_by"] == "bob"


def old_record(store: MemoryIncidents, incident_id: str | None) -> dict[str, Any]:
    """Rewrite the stored incident as a record from before the fields existed; returns it."""
    assert incident_id is not None
    raw = json.loads(store.records[incident_id])
    for name in ADDED_FIELDS:
        raw.pop(name, None)
    store.records[incident_id] = json.dumps(raw)
    return raw


def test_given_an_incident_stored_before_the_fields_existed_when_read_then_they_are_none_and_it_works() -> (
    None
):
    clock = Clock()
    ports, store, outbox = memory_ports(clock)
    [opened] = run([warning()], ports)
    old_record(store, opened.incident_id)
    record = stored_record(store, opened.incident_id)
    assert {name: record[name] for name in ADDED_FIELDS} == dict.fromkeys(ADDED_FIELDS)
    [listed] = store.incidents_opened(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert listed["acknowledged_by"] is None
    # a message built from the old record (e.g. by an SLA escalation) says null
    message = build_message(
        old_record(store, opened.incident_id), "escalated", "sla", "2026-10-15T15:00:00+00:00", None
    )
    assert message["incident"]["resolved_by"] is None
    check_messages([message])
    # and it can still be acknowledged, escalated and resolved by data resuming
    old_record(store, opened.incident_id)
    escalated = check_sla(RULES, ports, SETTINGS, clock.advance(days=1))
    assert escalated.escalated == 1
    old_record(store, opened.incident_id)
    assert run([resolution()], ports)[0].status == "resolved"
    assert stored_record(store, opened.incident_id)["resolved_by"] == FRESHNESS_CHECK
    check_messages(outbox.sent)
