"""The operator API through its Lambda handler, on memory ports: every route, its errors and the scopes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from kpi_sentinel.adapters.memory import MemoryTeamOutbox
from kpi_sentinel.alerts import snooze_matches
from kpi_sentinel.calendar import parse_events
from kpi_sentinel.report.record import record_alerts
from kpi_sentinel.triage.incidents import TriagePorts, TriageSettings, triage_alert
from kpi_sentinel.triage.routing import default_rules

from tests.unit.operator_helpers import (
    ACME_OPS,
    ADMIN,
    DATA,
    GLOBEX_OPS,
    NOBODY,
    NOW,
    ROLE_SESSION,
    World,
    world,
)
from tests.unit.triage_helpers import T0, make_alert

ACME = "/v1/integrations/acme-ads"
GLOBEX = "/v1/integrations/globex-traffic"


@pytest.fixture
def w() -> World:
    return world()


def _open_incident(w: World, integration: str = "acme-ads", metric: str = "ngr") -> dict[str, Any]:
    ports = TriagePorts(w.incidents, MemoryTeamOutbox(), w.clock)
    alert = make_alert(metric, integration=integration, severity="critical")
    outcome = triage_alert(alert, default_rules(), ports, TriageSettings(backoff_seconds=0.0))
    assert outcome.incident_id is not None
    stored = w.incidents.get(outcome.incident_id)
    assert stored is not None
    return stored.record


# --- callers and scopes ---------------------------------------------------------------------------------


def test_given_a_scoped_caller_when_asking_who_they_are_then_the_api_answers_with_their_scope(
    w: World,
) -> None:
    answer = w.call("GET", "/v1/whoami")
    assert answer.status == 200
    assert answer.body == {"who": ACME_OPS, "source": "iam", "integrations": ["acme-ads"]}


def test_given_no_identity_when_calling_then_401(w: World) -> None:
    answer = w.call("GET", f"{ACME}/snoozes", who=None)
    assert answer.status == 401
    assert "SigV4" in answer.message


def test_given_a_caller_without_scope_item_when_calling_anything_then_403(w: World) -> None:
    for method, target, body in (
        ("GET", f"{ACME}/snoozes", None),
        ("POST", f"{ACME}/snoozes", {"duration_minutes": 30, "reason": "x"}),
        ("GET", "/v1/calendar", None),
        ("GET", "/v1/incidents", None),
    ):
        answer = w.call(method, target, body, who=NOBODY)
        assert answer.status == 403, (method, target)
        assert "no operator scope" in answer.message
    assert w.control.snoozes == []


def test_given_a_caller_scoped_to_another_integration_when_reading_or_changing_then_403_and_nothing_changes(
    w: World,
) -> None:
    created = w.call("POST", f"{ACME}/snoozes", {"duration_minutes": 30, "reason": "deploy"})
    assert created.status == 201
    snooze_id = created.body["snooze_id"]
    attempts = [
        ("GET", f"{ACME}/snoozes", None),
        ("POST", f"{ACME}/snoozes", {"duration_minutes": 30, "reason": "x"}),
        ("DELETE", f"{ACME}/snoozes/{snooze_id}", None),
        ("PUT", f"{ACME}/alerts/ewma-{'0' * 32}/label", {"label": "false_positive"}),
        ("GET", f"{ACME}/alerts?date=2026-10-15", None),
        (
            "POST",
            f"{ACME}/calendar",
            {"kind": "campaign", "name": "x", "start": "2026-10-16T00:00:00Z", "end": "2026-10-17T00:00:00Z"},
        ),
        ("GET", f"{ACME}/calendar", None),
        ("PUT", f"{ACME}/overrides/ngr", {"threshold": 9}),
        ("GET", f"{ACME}/overrides", None),
        ("DELETE", f"{ACME}/overrides/ngr", None),
        ("GET", f"{ACME}/audit", None),
        ("GET", "/v1/incidents?integration_id=acme-ads", None),
    ]
    for method, target, body in attempts:
        answer = w.call(method, target, body, who=GLOBEX_OPS)
        assert answer.status == 403, (method, target, answer.body)
        assert "not scoped to integration 'acme-ads'" in answer.message
    assert len(w.control.snoozes) == 1
    assert w.control.calendar == []
    assert w.control.overrides == {}
    assert w.store.labels == {}


def test_given_an_assumed_role_session_when_the_role_is_scoped_then_the_session_inherits_its_scope(
    w: World,
) -> None:
    answer = w.call("GET", f"{ACME}/snoozes", who=ROLE_SESSION)
    assert answer.status == 200
    assert w.call("GET", f"{GLOBEX}/snoozes", who=ROLE_SESSION).status == 403
    created = w.call("POST", f"{ACME}/snoozes", {"duration_minutes": 5, "reason": "r"}, who=ROLE_SESSION)
    assert created.body["who"] == ROLE_SESSION  # the session, not the role: who did it


def test_given_a_jwt_caller_when_the_token_carries_the_scope_claim_then_it_is_the_scope(w: World) -> None:
    claims = {"sub": "u-1", "kpi_sentinel_integrations": "[acme-ads]"}
    assert w.call("GET", f"{ACME}/snoozes", who=None, jwt=claims).status == 200
    assert w.call("GET", f"{GLOBEX}/snoozes", who=None, jwt=claims).status == 403
    who = w.call("GET", "/v1/whoami", who=None, jwt=claims).body
    assert who == {"who": "jwt:u-1", "source": "jwt", "integrations": ["acme-ads"]}


def test_given_a_jwt_caller_without_the_claim_when_calling_then_the_scope_item_of_its_subject_decides(
    w: World,
) -> None:
    assert w.call("GET", f"{GLOBEX}/snoozes", who=None, jwt={"sub": "u-2"}).status == 403
    w.scopes.put_scope("jwt:u-2", ["globex-traffic"])
    assert w.call("GET", f"{GLOBEX}/snoozes", who=None, jwt={"sub": "u-2"}).status == 200


def test_given_an_unknown_route_when_called_then_404(w: World) -> None:
    assert w.call("GET", "/v1/nothing-here").status == 404


# --- snoozes --------------------------------------------------------------------------------------------


def test_given_a_snooze_for_a_duration_when_created_then_the_scorer_reads_it_and_who_is_the_caller(
    w: World,
) -> None:
    body = {
        "metric": "ngr",
        "dimension_value": "telegram-push",
        "duration_minutes": 90,
        "reason": "push outage",
    }
    answer = w.call("POST", f"{ACME}/snoozes", body)
    assert answer.status == 201
    snooze = answer.body
    assert snooze["who"] == ACME_OPS
    assert snooze["until"] == "2026-10-15T14:35:00Z"
    assert snooze["metric"] == "ngr"
    assert snooze["dimension"] is None
    # what the scorer reads: MemoryControl.active_snoozes, matched by alerts.snooze_matches
    active = w.control.active_snoozes("acme-ads", NOW)
    assert [s["snooze_id"] for s in active] == [snooze["snooze_id"]]
    alert = make_alert("ngr", contributors=[("source", "telegram-push")])
    assert snooze_matches(active[0], alert)
    assert not snooze_matches(active[0], make_alert("clicks"))


def test_given_a_snooze_until_a_time_when_the_time_passes_then_it_is_no_longer_listed_nor_applied(
    w: World,
) -> None:
    until = (NOW + timedelta(hours=2)).isoformat()
    created = w.call("POST", f"{ACME}/snoozes", {"until": until, "reason": "maintenance"}).body
    assert [s["snooze_id"] for s in w.call("GET", f"{ACME}/snoozes").body["snoozes"]] == [
        created["snooze_id"]
    ]
    w.clock.advance(hours=2)
    assert w.call("GET", f"{ACME}/snoozes").body["snoozes"] == []
    assert w.control.active_snoozes("acme-ads", w.clock()) == []  # the scorer's own until check
    assert w.call("DELETE", f"{ACME}/snoozes/{created['snooze_id']}").status == 404


def test_given_a_snooze_when_deleted_then_it_stops_at_once_and_a_second_delete_is_404(w: World) -> None:
    created = w.call("POST", f"{ACME}/snoozes", {"duration_minutes": 60, "reason": "r"}).body
    deleted = w.call("DELETE", f"{ACME}/snoozes/{created['snooze_id']}")
    assert deleted.status == 200
    assert deleted.body["snooze_id"] == created["snooze_id"]
    assert w.control.active_snoozes("acme-ads", NOW) == []
    again = w.call("DELETE", f"{ACME}/snoozes/{created['snooze_id']}")
    assert again.status == 404
    assert created["snooze_id"] in again.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "r"}, "until"),  # neither until nor duration
        ({"reason": "r", "duration_minutes": 5, "until": "2026-10-16T00:00:00Z"}, "until"),  # both
        ({"reason": "r", "until": "2026-10-15T12:00:00Z"}, "until"),  # past
        ({"reason": "r", "until": "2027-03-01T00:00:00Z"}, "until"),  # beyond 90 days
        ({"reason": "r", "until": "2026-10-16T00:00:00"}, "until"),  # no UTC offset
        ({"reason": "r", "duration_minutes": 0}, "duration_minutes"),
        ({"reason": "r", "duration_minutes": "soon"}, "duration_minutes"),
        ({"reason": "   ", "duration_minutes": 5}, "reason"),
        ({"duration_minutes": 5}, "reason"),
        ({"reason": "r", "duration_minutes": 5, "who": "someone-else"}, "who"),  # who is never the body's
        ({"reason": "r", "duration_minutes": 5, "metric": ""}, "metric"),
        ({"reason": "r", "duration_minutes": 5, "dimension_value": "a\nb"}, "dimension_value"),
    ],
)
def test_given_an_invalid_snooze_when_posted_then_422_names_the_field(
    w: World, body: dict[str, Any], field: str
) -> None:
    answer = w.call("POST", f"{ACME}/snoozes", body)
    assert answer.status == 422, answer.body
    assert ["body", field] in answer.fields()
    assert f"field 'body.{field}'" in answer.message
    assert w.control.snoozes == []


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', ""])
def test_given_a_body_that_is_not_an_object_when_posted_then_422(w: World, raw: str) -> None:
    answer = w.call("POST", f"{ACME}/snoozes", raw=raw)
    assert answer.status == 422
    assert answer.fields()
    assert answer.fields()[0][0] == "body"


def test_given_a_bad_integration_id_in_the_path_when_called_then_422_names_the_path_parameter(
    w: World,
) -> None:
    answer = w.call("GET", "/v1/integrations/-bad-/snoozes", who=ADMIN)
    assert answer.status == 422
    assert ["path", "integration_id"] in answer.fields()


# --- feedback -------------------------------------------------------------------------------------------


def test_given_a_label_when_put_then_the_report_reads_it_and_a_new_label_replaces_it(w: World) -> None:
    alert = make_alert("ngr")
    target = f"{ACME}/alerts/{alert['alert_id']}/label"
    answer = w.call("PUT", target, {"label": "false_positive", "note": "  promo ended  "})
    assert answer.status == 200
    assert answer.body == {
        "alert_id": alert["alert_id"],
        "integration_id": "acme-ads",
        "label": "false_positive",
        "note": "promo ended",
        "who": ACME_OPS,
        "at": "2026-10-15T13:05:00+00:00",
    }
    assert w.feedback.labels("acme-ads", [alert["alert_id"]]) == {alert["alert_id"]: "false_positive"}
    assert w.call("PUT", target, {"label": "true_positive"}).status == 200
    assert w.feedback.labels("acme-ads", [alert["alert_id"]]) == {alert["alert_id"]: "true_positive"}


@pytest.mark.parametrize(
    ("target", "body", "loc"),
    [
        (f"{ACME}/alerts/ewma-{'0' * 32}/label", {"label": "maybe"}, ["body", "label"]),
        (f"{ACME}/alerts/ewma-{'0' * 32}/label", {"label": "expected", "note": "x" * 2001}, ["body", "note"]),
        (f"{ACME}/alerts/not-an-alert/label", {"label": "expected"}, ["path", "alert_id"]),
    ],
)
def test_given_an_invalid_label_when_put_then_422_names_the_field(
    w: World, target: str, body: dict[str, Any], loc: list[str]
) -> None:
    answer = w.call("PUT", target, body)
    assert answer.status == 422
    assert loc in answer.fields()


def test_given_recorded_alerts_when_listing_a_day_then_only_the_integrations_alerts_come_with_labels(
    w: World,
) -> None:
    ours = [make_alert("ngr"), make_alert("clicks", "source", "email")]
    theirs = make_alert("ftds", integration="globex-traffic")
    other_day = make_alert("ngr", period=T0 + timedelta(days=1))
    record_alerts(w.objects, DATA, [*ours, theirs, other_day])
    w.call("PUT", f"{ACME}/alerts/{ours[1]['alert_id']}/label", {"label": "expected", "note": "campaign"})
    answer = w.call("GET", f"{ACME}/alerts?date=2026-10-15")
    assert answer.status == 200
    listed = answer.body["alerts"]
    assert sorted(a["alert_id"] for a in listed) == sorted(a["alert_id"] for a in ours)
    labels = {a["alert_id"]: a["label"] for a in listed}
    assert labels[ours[0]["alert_id"]] is None
    assert labels[ours[1]["alert_id"]]["label"] == "expected"
    assert labels[ours[1]["alert_id"]]["who"] == ACME_OPS
    assert answer.body["unreadable_objects"] == 0


def test_given_no_date_when_listing_alerts_then_422_names_the_query_parameter(w: World) -> None:
    answer = w.call("GET", f"{ACME}/alerts")
    assert answer.status == 422
    assert ["query", "date"] in answer.fields()


# --- calendar -------------------------------------------------------------------------------------------


def _event(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "campaign",
        "name": "Black Friday push",
        "start": "2026-11-27T00:00:00+01:00",
        "end": "2026-11-28T00:00:00+01:00",
        **overrides,
    }


def test_given_a_campaign_when_registered_then_the_scorer_reads_it_as_a_known_event(w: World) -> None:
    answer = w.call("POST", f"{ACME}/calendar", _event())
    assert answer.status == 201
    assert answer.body["start"] == "2026-11-26T23:00:00Z"
    assert answer.body["who"] == ACME_OPS
    spans = parse_events(w.control.known_events("acme-ads"))
    assert [(s.event_id, s.kind, s.name) for s in spans] == [
        (answer.body["event_id"], "campaign", "Black Friday push")
    ]
    assert spans[0].end - spans[0].start == 86400
    assert parse_events(w.control.known_events("globex-traffic")) == []


def test_given_global_and_own_events_when_listing_then_both_unless_asked_not_to(w: World) -> None:
    own = w.call("POST", f"{ACME}/calendar", _event()).body
    holiday = _event(
        kind="holiday", name="Christmas", start="2026-12-25T00:00:00Z", end="2026-12-26T00:00:00Z"
    )
    glob = w.call("POST", "/v1/calendar", holiday, who=ADMIN)
    assert glob.status == 201
    assert glob.body["integration_id"] == "*"
    listed = w.call("GET", f"{ACME}/calendar").body["events"]
    assert [e["event_id"] for e in listed] == [own["event_id"], glob.body["event_id"]]
    alone = w.call("GET", f"{ACME}/calendar?include_global=false").body["events"]
    assert [e["event_id"] for e in alone] == [own["event_id"]]
    assert [e["name"] for e in w.call("GET", "/v1/calendar").body["events"]] == ["Christmas"]
    # the scorer of any integration sees the global event
    assert [s.name for s in parse_events(w.control.known_events("globex-traffic"))] == ["Christmas"]


def test_given_a_caller_without_star_scope_when_changing_the_global_calendar_then_403(w: World) -> None:
    assert w.call("POST", "/v1/calendar", _event()).status == 403
    created = w.call("POST", "/v1/calendar", _event(), who=ADMIN).body
    answer = w.call("DELETE", f"/v1/calendar/{created['event_id']}")
    assert answer.status == 403
    assert "scope '*'" in answer.message
    # nor through an integration's path: the global event is not the integration's
    assert w.call("DELETE", f"{ACME}/calendar/{created['event_id']}").status == 404
    assert w.call("DELETE", f"/v1/calendar/{created['event_id']}", who=ADMIN).status == 200
    assert w.control.calendar == []


def test_given_an_event_when_deleted_then_gone_and_unknown_ids_are_404(w: World) -> None:
    created = w.call("POST", f"{ACME}/calendar", _event()).body
    assert w.call("DELETE", f"{ACME}/calendar/{created['event_id']}").status == 200
    assert w.control.known_events("acme-ads") == []
    assert w.call("DELETE", f"{ACME}/calendar/{created['event_id']}").status == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"end": "2026-11-27T00:00:00+01:00"}, "end"),  # end == start
        ({"end": "2026-11-26T00:00:00+01:00"}, "end"),  # end before start
        ({"end": "2028-01-01T00:00:00Z"}, "end"),  # longer than a year
        ({"kind": "party"}, "kind"),
        ({"name": ""}, "name"),
        ({"start": "tomorrow"}, "start"),
        ({"start": "1970-01-01T00:00:00Z"}, "start"),
    ],
)
def test_given_an_invalid_event_when_posted_then_422_names_the_field(
    w: World, changes: dict[str, Any], field: str
) -> None:
    answer = w.call("POST", f"{ACME}/calendar", _event(**changes))
    assert answer.status == 422, answer.body
    assert ["body", field] in answer.fields()
    assert w.control.calendar == []


# --- overrides ------------------------------------------------------------------------------------------


def test_given_an_override_when_changed_twice_then_each_change_is_audited_with_who_when_old_and_new(
    w: World,
) -> None:
    first = w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 5, "reason": "too noisy"})
    assert first.status == 200
    assert first.body["version"] == 1
    assert first.body["threshold"] == 5.0
    assert first.body["updated_by"] == ACME_OPS
    w.clock.advance(minutes=10)
    second = w.call(
        "PUT", f"{ACME}/overrides/ngr", {"threshold": 4.5, "bad_direction": "down", "min_volume": 20}
    )
    assert second.body["version"] == 2
    entries = w.call("GET", f"{ACME}/audit").body["entries"]
    assert [e["at"] for e in entries] == ["2026-10-15T13:15:00+00:00", "2026-10-15T13:05:00+00:00"]
    newest, oldest = entries
    assert oldest["old"] is None
    assert oldest["new"] == {
        "threshold": 5.0,
        "bad_direction": None,
        "min_abs_change": None,
        "min_volume": None,
    }
    assert oldest["who"] == ACME_OPS
    assert oldest["reason"] == "too noisy"
    assert oldest["subject"] == "ngr"
    assert newest["old"] == oldest["new"]
    assert newest["new"] == {
        "threshold": 4.5,
        "bad_direction": "down",
        "min_abs_change": None,
        "min_volume": 20.0,
    }
    # what the scorer reads
    assert w.control.metric_overrides("acme-ads") == {
        "ngr": {"threshold": 4.5, "bad_direction": "down", "min_volume": 20.0}
    }


def test_given_the_same_override_again_when_put_then_nothing_is_written_nor_audited(w: World) -> None:
    w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 5})
    again = w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 5, "reason": "same"})
    assert again.status == 200
    assert again.body["version"] == 1
    assert len(w.call("GET", f"{ACME}/audit").body["entries"]) == 1


def test_given_an_expected_version_when_it_is_not_the_stored_one_then_409_and_nothing_changes(
    w: World,
) -> None:
    assert w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 5, "expected_version": 0}).status == 200
    stale = w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 6, "expected_version": 0})
    assert stale.status == 409
    assert "version 1" in stale.message
    assert (
        w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 6, "expected_version": 1}).body["version"] == 2
    )
    assert [o["threshold"] for o in w.call("GET", f"{ACME}/overrides").body["overrides"]] == [6.0]


def test_given_an_override_when_deleted_then_audited_and_gone_and_a_second_delete_is_404(w: World) -> None:
    w.call("PUT", f"{ACME}/overrides/signup%20rate", {"min_abs_change": 0.5})
    assert w.control.metric_overrides("acme-ads") == {"signup rate": {"min_abs_change": 0.5}}
    w.clock.advance(minutes=1)
    deleted = w.call("DELETE", f"{ACME}/overrides/signup%20rate")
    assert deleted.status == 200
    assert deleted.body["metric"] == "signup rate"
    assert w.control.metric_overrides("acme-ads") == {}
    newest = w.call("GET", f"{ACME}/audit").body["entries"][0]
    assert newest["new"] is None
    assert newest["old"]["min_abs_change"] == 0.5
    assert w.call("DELETE", f"{ACME}/overrides/signup%20rate").status == 404


def test_given_many_audit_entries_when_paging_then_before_walks_back_to_the_first(w: World) -> None:
    for n in range(5):
        w.call("PUT", f"{ACME}/overrides/ngr", {"threshold": 3 + n})
        w.clock.advance(minutes=1)
    seen: list[float] = []
    before = None
    while True:
        page = w.call("GET", f"{ACME}/audit?limit=2" + (f"&before={before}" if before else "")).body
        seen += [e["new"]["threshold"] for e in page["entries"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [7.0, 6.0, 5.0, 4.0, 3.0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "threshold"),  # nothing to override
        ({"reason": "only a reason"}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": -1}, "threshold"),
        ({"threshold": 1000}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"bad_direction": "sideways"}, "bad_direction"),
        ({"min_volume": -5}, "min_volume"),
        ({"min_abs_change": -0.1}, "min_abs_change"),
        ({"threshold": 4, "expected_version": -1}, "expected_version"),
        ({"threshold": 4, "windows": 3}, "windows"),
    ],
)
def test_given_an_invalid_override_when_put_then_422_names_the_field_and_nothing_is_audited(
    w: World, body: dict[str, Any], field: str
) -> None:
    answer = w.call("PUT", f"{ACME}/overrides/ngr", body)
    assert answer.status == 422, answer.body
    assert ["body", field] in answer.fields()
    assert w.control.overrides == {}
    assert w.store.audits == {}


def test_given_a_metric_with_a_control_character_when_overridden_then_422_names_the_path_parameter(
    w: World,
) -> None:
    answer = w.call("PUT", f"{ACME}/overrides/ng%0Ar", {"threshold": 4})
    assert answer.status == 422
    assert ["path", "metric"] in answer.fields()


# --- incidents ------------------------------------------------------------------------------------------


def test_given_incidents_of_two_integrations_when_listing_then_only_the_callers_come_back(w: World) -> None:
    ours = _open_incident(w)
    theirs = _open_incident(w, "globex-traffic", "ftds")
    listed = w.call("GET", "/v1/incidents?status=open").body["incidents"]
    assert [i["incident_id"] for i in listed] == [ours["incident_id"]]
    everything = w.call("GET", "/v1/incidents", who=ADMIN).body["incidents"]
    assert {i["incident_id"] for i in everything} == {ours["incident_id"], theirs["incident_id"]}
    assert w.call("GET", f"/v1/incidents?team={ours['team']}").body["incidents"][0]["team"] == ours["team"]
    assert w.call("GET", "/v1/incidents?team=nobody-team").body["incidents"] == []
    assert w.call("GET", "/v1/incidents?status=resolved").body["incidents"] == []


def test_given_an_open_incident_when_acknowledged_then_resolved_then_it_cannot_be_acknowledged_again(
    w: World,
) -> None:
    incident = _open_incident(w)
    target = f"/v1/incidents/{incident['incident_id']}"
    w.clock.advance(minutes=3)
    acked = w.call("POST", f"{target}/acknowledge")
    assert acked.status == 200
    assert acked.body["status"] == "acknowledged"
    assert acked.body["acknowledged_at"] == "2026-10-15T13:08:00+00:00"
    assert w.call("POST", f"{target}/acknowledge").body["acknowledged_at"] == "2026-10-15T13:08:00+00:00"
    assert list(w.incidents.due(w.clock() + timedelta(days=1))) == []  # out of the SLA check
    resolved = w.call("POST", f"{target}/resolve")
    assert resolved.status == 200
    assert resolved.body["status"] == "resolved"
    assert w.call("POST", f"{target}/resolve").status == 200  # idempotent
    late = w.call("POST", f"{target}/acknowledge")
    assert late.status == 409
    assert "resolved" in late.message
    assert w.call("GET", target).body["status"] == "resolved"


def test_given_an_incident_when_acknowledged_and_resolved_through_the_api_then_it_records_who(
    w: World,
) -> None:
    incident = _open_incident(w)
    target = f"/v1/incidents/{incident['incident_id']}"
    fresh = w.call("GET", target).body
    assert (fresh["acknowledged_by"], fresh["resolved_by"], fresh["resolution_reason"]) == (None, None, None)
    acked = w.call("POST", f"{target}/acknowledge").body
    assert acked["acknowledged_by"] == ACME_OPS
    assert w.call("POST", f"{target}/acknowledge", who=ROLE_SESSION).body["acknowledged_by"] == ACME_OPS
    done = w.call("POST", f"{target}/resolve", who=ROLE_SESSION).body
    assert (done["resolved_by"], done["resolution_reason"]) == (ROLE_SESSION, "operator")
    assert (
        w.call("POST", f"{target}/resolve", who=ADMIN).body["resolved_by"] == ROLE_SESSION
    )  # the first stays
    stored = w.incidents.get(incident["incident_id"])
    assert stored is not None
    assert (stored.record["acknowledged_by"], stored.record["resolved_by"]) == (ACME_OPS, ROLE_SESSION)
    [listed] = w.call("GET", "/v1/incidents?status=resolved").body["incidents"]
    assert (listed["acknowledged_by"], listed["resolved_by"], listed["resolution_reason"]) == (
        ACME_OPS,
        ROLE_SESSION,
        "operator",
    )


def test_given_an_incident_stored_before_who_was_recorded_when_read_then_the_fields_are_null(
    w: World,
) -> None:
    incident = _open_incident(w)
    iid = incident["incident_id"]
    raw = json.loads(w.incidents.records[iid])
    for name in ("acknowledged_by", "resolved_by", "resolution_reason"):
        raw.pop(name)
    w.incidents.records[iid] = json.dumps(raw)
    answer = w.call("GET", f"/v1/incidents/{iid}")
    assert answer.status == 200
    assert (answer.body["acknowledged_by"], answer.body["resolved_by"]) == (None, None)
    assert w.call("GET", "/v1/incidents").body["incidents"][0]["resolution_reason"] is None
    assert w.call("POST", f"/v1/incidents/{iid}/acknowledge").body["acknowledged_by"] == ACME_OPS


def test_given_another_integrations_incident_when_acting_on_it_then_403_and_it_is_unchanged(w: World) -> None:
    theirs = _open_incident(w, "globex-traffic", "ftds")
    for action in ("acknowledge", "resolve"):
        answer = w.call("POST", f"/v1/incidents/{theirs['incident_id']}/{action}")
        assert answer.status == 403
    assert w.call("GET", f"/v1/incidents/{theirs['incident_id']}").status == 403
    stored = w.incidents.get(theirs["incident_id"])
    assert stored is not None
    assert stored.record["status"] == "open"


def test_given_an_unknown_incident_when_acting_on_it_then_404(w: World) -> None:
    answer = w.call("POST", f"/v1/incidents/inc-{'a' * 24}/acknowledge")
    assert answer.status == 404
    assert w.call("POST", "/v1/incidents/not-an-incident/resolve").status == 422


def test_given_no_incidents_table_when_asking_for_incidents_then_503(w: World) -> None:
    w.incidents = None  # type: ignore[assignment]
    assert w.call("GET", "/v1/incidents").status == 503


# --- the function ---------------------------------------------------------------------------------------


def test_given_the_function_module_then_it_re_exports_the_handler() -> None:
    from kpi_sentinel.handlers import operator_api as handler

    from functions.operator_api import app

    assert app.lambda_handler is handler.lambda_handler


def test_given_the_handler_when_imported_then_no_numeric_or_plotting_library_is_loaded() -> None:
    import json as json_
    import subprocess
    import sys

    code = (
        "import json, sys; import kpi_sentinel.handlers.operator_api; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = {name.split(".")[0] for name in json_.loads(out)}
    assert not loaded & {"numpy", "pandas", "sklearn", "scipy", "joblib", "matplotlib", "pyarrow", "boto3"}


def test_given_missing_environment_when_the_deployed_wiring_starts_then_it_names_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kpi_sentinel.handlers import operator_api as handler

    monkeypatch.delenv("CONTROL_TABLE", raising=False)
    monkeypatch.delenv("DATA_BUCKET", raising=False)
    handler._aws_ports.cache_clear()
    with pytest.raises(RuntimeError, match="CONTROL_TABLE, DATA_BUCKET"):
        handler._aws_ports()
    handler._aws_ports.cache_clear()
