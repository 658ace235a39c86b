"""The operator API's DynamoDB adapters on in-process moto, read back by what the scorer and the report use.

Items the API writes must be exactly what DynamoControl (scorer), DynamoFeedback (report) and the
incidents table already read; an override change and its audit entry are one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from kpi_sentinel.adapters import aws
from kpi_sentinel.adapters.aws import (
    DynamoControl,
    DynamoFeedback,
    DynamoIncidents,
    DynamoOperatorStore,
    DynamoScopes,
    S3Objects,
)
from kpi_sentinel.adapters.memory import MemoryTeamOutbox
from kpi_sentinel.calendar import parse_events
from kpi_sentinel.handlers import operator_api as handler
from kpi_sentinel.operator.local import http_api_event
from kpi_sentinel.ports import OperatorConflict
from kpi_sentinel.report.record import record_alerts
from kpi_sentinel.triage.incidents import TriagePorts, TriageSettings, triage_alert
from kpi_sentinel.triage.routing import default_rules
from moto import mock_aws

from tests.unit.aws_tables import create_table, offline_aws
from tests.unit.triage_helpers import Clock, make_alert

REGION = "eu-west-1"
CONTROL, INCIDENTS, DATA = "control", "incidents", "data-bucket"
NOW = datetime(2026, 10, 15, 13, 5, tzinfo=UTC)
OPS = "arn:aws:iam::123456789012:user/acme-ops"


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    offline_aws(monkeypatch, REGION)
    monkeypatch.setenv("CONTROL_TABLE", CONTROL)
    monkeypatch.setenv("INCIDENTS_TABLE", INCIDENTS)
    monkeypatch.setenv("DATA_BUCKET", DATA)
    monkeypatch.setenv("SCOPE_CACHE_SECONDS", "0")
    handler._aws_ports.cache_clear()
    with mock_aws():
        create_table("ControlTable", CONTROL, REGION)
        create_table("IncidentsTable", INCIDENTS, REGION)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=DATA, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield
    aws.client.cache_clear()
    handler._aws_ports.cache_clear()


def _item(pk: str, sk: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        boto3.client("dynamodb", region_name=REGION)
        .get_item(TableName=CONTROL, Key={"pk": {"S": pk}, "sk": {"S": sk}})
        .get("Item")
    )
    return found


def _audit(store: DynamoOperatorStore, at: str, subject: str = "ngr") -> dict[str, Any]:
    return {
        "audit_id": f"{at}#{subject}",
        "integration_id": "acme-ads",
        "kind": "override",
        "subject": subject,
        "who": OPS,
        "at": at,
        "old": None,
        "new": {"threshold": 5.0},
        "reason": "noisy",
    }


def test_given_a_snooze_written_by_the_api_store_when_the_scorer_reads_then_it_gets_the_same_snooze(
    cloud: None,
) -> None:
    store, control = DynamoOperatorStore(CONTROL), DynamoControl(CONTROL, cache_seconds=0)
    snooze = {
        "snooze_id": "s1",
        "integration_id": "acme-ads",
        "metric": "ngr",
        "dimension": None,
        "dimension_value": "telegram-push",
        "until": NOW.timestamp() + 3600,
        "reason": "push outage",
        "who": OPS,
        "created_at": NOW.isoformat(),
    }
    store.put_snooze(snooze)
    assert control.active_snoozes("acme-ads", NOW) == [
        {
            "integration_id": "acme-ads",
            "snooze_id": "s1",
            "metric": "ngr",
            "dimension": None,
            "dimension_value": "telegram-push",
            "until": NOW.timestamp() + 3600,
            "reason": "push outage",
        }
    ]
    item = _item("integration#acme-ads", "snooze#s1")
    assert item is not None
    assert item["expires_at"] == item["until"]
    assert "dimension" not in item  # only what is set, as DynamoControl.put_snooze writes it
    assert [s["snooze_id"] for s in store.snoozes("acme-ads", NOW)] == ["s1"]
    assert store.snoozes("acme-ads", NOW + timedelta(hours=1)) == []  # expired, even if still stored
    assert store.delete_snooze("acme-ads", "s1") == {**snooze, "until": NOW.timestamp() + 3600}
    assert store.delete_snooze("acme-ads", "s1") is None


def test_given_events_written_by_the_api_store_when_the_scorer_reads_then_own_and_global_events_parse(
    cloud: None,
) -> None:
    store, control = DynamoOperatorStore(CONTROL), DynamoControl(CONTROL, cache_seconds=0)
    start = NOW.timestamp()
    base = {"kind": "campaign", "who": OPS, "created_at": NOW.isoformat()}
    store.put_event(
        {
            **base,
            "event_id": "e1",
            "integration_id": "acme-ads",
            "name": "launch",
            "start": start,
            "end": start + 7200,
        }
    )
    store.put_event(
        {
            **base,
            "event_id": "g1",
            "integration_id": "*",
            "kind": "holiday",
            "name": "Xmas",
            "start": start,
            "end": start + 86400,
        }
    )
    spans = {s.event_id: s for s in parse_events(control.known_events("acme-ads"))}
    assert set(spans) == {"e1", "g1"}
    assert (spans["e1"].kind, spans["e1"].name, spans["e1"].end - spans["e1"].start) == (
        "campaign",
        "launch",
        7200,
    )
    assert spans["g1"].integration_id == "*"
    item = _item("integration#acme-ads", "calendar#e1")
    assert item is not None
    assert int(item["expires_at"]["N"]) == int(start) + 7200 + 90 * 86400
    assert [e["event_id"] for e in store.events("*")] == ["g1"]
    assert store.delete_event("acme-ads", "e1") is not None
    assert store.delete_event("acme-ads", "e1") is None
    assert [s.event_id for s in parse_events(DynamoControl(CONTROL, 0).known_events("acme-ads"))] == ["g1"]


def test_given_labels_written_by_the_api_store_when_the_report_reads_then_it_sees_the_label(
    cloud: None,
) -> None:
    store = DynamoOperatorStore(CONTROL)
    ids = [f"ewma-{n:032x}" for n in range(120)]
    for n in (0, 119):
        store.put_label(
            {
                "alert_id": ids[n],
                "integration_id": "acme-ads",
                "label": "false_positive",
                "note": "promo",
                "who": OPS,
                "at": NOW.isoformat(),
            }
        )
    assert DynamoFeedback(CONTROL).labels("acme-ads", ids) == {
        ids[0]: "false_positive",
        ids[119]: "false_positive",
    }
    records = store.label_records("acme-ads", ids)
    assert records[ids[119]] == {
        "alert_id": ids[119],
        "integration_id": "acme-ads",
        "label": "false_positive",
        "note": "promo",
        "who": OPS,
        "at": NOW.isoformat(),
    }
    assert store.label_records("globex-traffic", ids) == {}


def test_given_override_changes_when_saved_then_each_comes_with_its_audit_entry_all_or_nothing(
    cloud: None,
) -> None:
    store, control = DynamoOperatorStore(CONTROL), DynamoControl(CONTROL, cache_seconds=0)
    first = {
        "metric": "ngr",
        "threshold": 5.0,
        "bad_direction": None,
        "min_abs_change": None,
        "min_volume": 20.0,
        "updated_by": OPS,
        "updated_at": "t1",
        "reason": "noisy",
    }
    store.save_override("acme-ads", "ngr", first, 0, _audit(store, "2026-10-15T13:05:00.000000+00:00"))
    assert control.metric_overrides("acme-ads") == {"ngr": {"threshold": 5.0, "min_volume": 20.0}}
    assert store.overrides("acme-ads")["ngr"]["version"] == 1
    # a writer that read version 0 loses, and its audit entry is not written either
    with pytest.raises(OperatorConflict):
        store.save_override(
            "acme-ads",
            "ngr",
            {**first, "threshold": 9.0},
            0,
            _audit(store, "2026-10-15T13:06:00.000000+00:00"),
        )
    assert [e["at"] for e in store.audit("acme-ads", 10)] == ["2026-10-15T13:05:00.000000+00:00"]
    second = {**first, "threshold": 4.0, "bad_direction": "down", "min_volume": None}
    store.save_override("acme-ads", "ngr", second, 1, _audit(store, "2026-10-15T13:07:00.000000+00:00"))
    assert control.metric_overrides("acme-ads") == {"ngr": {"threshold": 4.0, "bad_direction": "down"}}
    store.save_override("acme-ads", "ngr", None, 2, _audit(store, "2026-10-15T13:08:00.000000+00:00"))
    assert store.overrides("acme-ads") == {}
    assert control.metric_overrides("acme-ads") == {}
    with pytest.raises(OperatorConflict):  # nothing left to delete
        store.save_override("acme-ads", "ngr", None, 2, _audit(store, "2026-10-15T13:09:00.000000+00:00"))
    entries = store.audit("acme-ads", 10)
    assert [e["at"][11:16] for e in entries] == ["13:08", "13:07", "13:05"]
    assert entries[-1]["new"] == {"threshold": 5.0}
    assert entries[-1]["who"] == OPS
    page = store.audit("acme-ads", 1, before=entries[0]["audit_id"])
    assert [e["audit_id"] for e in page] == [entries[1]["audit_id"]]


def test_given_scope_items_when_read_then_lists_and_string_sets_both_work_and_unknown_is_none(
    cloud: None,
) -> None:
    scopes = DynamoScopes(CONTROL, cache_seconds=0)
    scopes.put_scope(OPS, ["acme-ads", "globex-traffic"])
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=CONTROL,
        Item={"pk": {"S": "scope#admin"}, "sk": {"S": "scope"}, "integrations": {"SS": ["*"]}},
    )
    assert scopes.scope_of(OPS) == frozenset({"acme-ads", "globex-traffic"})
    assert scopes.scope_of("admin") == frozenset({"*"})
    assert scopes.scope_of("arn:aws:iam::123456789012:user/nobody") is None


def test_given_the_deployed_wiring_when_requests_arrive_then_the_handler_works_against_dynamodb_and_s3(
    cloud: None,
) -> None:
    DynamoScopes(CONTROL).put_scope(OPS, ["acme-ads"])

    def call(method: str, target: str, body: Any = None) -> tuple[int, Any]:
        event = http_api_event(method, target, body=None if body is None else json.dumps(body), user_arn=OPS)
        response = handler.handle(event, None)
        return int(response["statusCode"]), json.loads(response["body"])

    status, snooze = call(
        "POST", "/v1/integrations/acme-ads/snoozes", {"duration_minutes": 30, "reason": "deploy"}
    )
    assert status == 201
    assert [s["snooze_id"] for s in call("GET", "/v1/integrations/acme-ads/snoozes")[1]["snoozes"]] == [
        snooze["snooze_id"]
    ]
    assert call("GET", "/v1/integrations/globex-traffic/snoozes")[0] == 403
    status, _ = call("PUT", "/v1/integrations/acme-ads/overrides/ngr", {"threshold": 5, "reason": "noisy"})
    assert status == 200
    assert call("GET", "/v1/integrations/acme-ads/audit")[1]["entries"][0]["who"] == OPS
    # recorded alerts come from the data bucket, labels from the control table
    alert = make_alert("ngr")
    record_alerts(S3Objects(), DATA, [alert])
    call("PUT", f"/v1/integrations/acme-ads/alerts/{alert['alert_id']}/label", {"label": "true_positive"})
    listed = call("GET", f"/v1/integrations/acme-ads/alerts?date={alert['period_start'][:10]}")[1]["alerts"]
    assert [(a["alert_id"], a["label"]["label"]) for a in listed] == [(alert["alert_id"], "true_positive")]
    # incidents from the incidents table (ByDay index), acknowledged through the API
    clock = Clock(datetime.now(UTC))
    ports = TriagePorts(DynamoIncidents(INCIDENTS), MemoryTeamOutbox(), clock)
    outcome = triage_alert(make_alert("ngr", severity="critical"), default_rules(), ports, TriageSettings())
    listed = call("GET", "/v1/incidents?status=open")[1]["incidents"]
    assert [i["incident_id"] for i in listed] == [outcome.incident_id]
    status, acked = call("POST", f"/v1/incidents/{outcome.incident_id}/acknowledge")
    assert status == 200
    assert acked["status"] == "acknowledged"
