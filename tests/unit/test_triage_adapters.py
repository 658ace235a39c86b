"""The boto3 triage adapters on in-process moto, and the support_triage handler (memory and AWS wiring)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

import boto3
import pytest
from kpi_sentinel.adapters import aws
from kpi_sentinel.adapters.aws import AwsRulesSource, DynamoIncidents, SqsTeamOutbox
from kpi_sentinel.handlers import triage as handler
from kpi_sentinel.ports import IncidentConflict, IncidentNotFound
from kpi_sentinel.triage.incidents import TriagePorts, iso, new_incident, triage_alert
from kpi_sentinel.triage.routing import RulesCache, default_rules
from kpi_sentinel.triage.sla import check_sla
from moto import mock_aws

from tests.unit.aws_tables import create_table, offline_aws
from tests.unit.test_triage_resolutions import resolution, warning
from tests.unit.triage_helpers import (
    NOW,
    SETTINGS,
    T0,
    TEAMS,
    Clock,
    check_messages,
    make_alert,
    memory_ports,
    sqs_event,
)

REGION = "eu-west-1"
TABLE = "incidents"
RULES = default_rules()


@dataclass
class Aws:
    table: str
    queues: dict[str, str]
    bucket: str

    def receive(self, team: str) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=REGION)
        found: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(
                QueueUrl=self.queues[team], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return found
            found.extend(got)
            for m in got:
                sqs.delete_message(QueueUrl=self.queues[team], ReceiptHandle=m["ReceiptHandle"])

    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        ddb = boto3.client("dynamodb", region_name=REGION)
        found: dict[str, Any] | None = ddb.get_item(
            TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}
        ).get("Item")
        return found


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    offline_aws(monkeypatch, REGION)
    handler._aws_ports.cache_clear()
    with mock_aws():
        create_table("IncidentsTable", TABLE, REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queues = {team: sqs.create_queue(QueueName=f"team-{team}")["QueueUrl"] for team in TEAMS}
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket="ops-config", CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield Aws(TABLE, queues, "ops-config")
    aws.client.cache_clear()
    handler._aws_ports.cache_clear()


def dynamo_ports(cloud: Aws, clock: Clock | None = None) -> tuple[TriagePorts, DynamoIncidents]:
    store = DynamoIncidents(cloud.table)
    return TriagePorts(store, SqsTeamOutbox(cloud.queues), clock or Clock()), store


# --- DynamoIncidents and SqsTeamOutbox --------------------------------------------------------------------


def test_given_alerts_when_triaged_on_dynamodb_then_items_follow_the_layout_and_messages_reach_the_team(
    cloud: Aws,
) -> None:
    clock = Clock()
    ports, store = dynamo_ports(cloud, clock)
    first = make_alert("ngr", severity="warning", contributors=[("source", "telegram-push")])
    opened = triage_alert(first, RULES, ports, SETTINGS)
    clock.advance(minutes=10)
    raised = triage_alert(make_alert("deposits", "source", "email", severity="critical", period=T0 + timedelta(hours=1)),
                          RULES, ports, SETTINGS)  # fmt: skip
    again = triage_alert(first, RULES, ports, SETTINGS)
    assert (opened.status, raised.status, again.status) == ("opened", "updated", "duplicate")
    assert raised.escalation == "priority"
    assert again.messages_sent == 0
    iid = opened.incident_id
    assert iid is not None

    item = cloud.item("integration#acme-ads", f"family#revenue#incident#{iid}")
    assert item is not None
    record = json.loads(item["record"]["S"])
    assert (record["count"], record["version"], record["priority"]) == (2, 2, "P2")
    assert item["version"]["N"] == "2"
    assert item["status"]["S"] == "open"
    assert "outbox" not in item
    assert item["opened_day"]["S"] == "2026-10-15"
    assert item["opened_at"]["S"] == record["opened_at"]
    assert item["due_shard"]["S"].startswith("due#")
    assert int(item["due_at_epoch"]["N"]) == int((NOW + timedelta(minutes=70)).timestamp())
    assert int(item["expires_at"]["N"]) == int((NOW + timedelta(minutes=10, days=90)).timestamp())
    head = cloud.item("integration#acme-ads", "family#revenue")
    assert head is not None
    assert head["version"]["N"] == "2"
    claim = cloud.item(f"alert#{first['alert_id']}", "alert")
    assert claim is not None
    assert claim["incident_id"]["S"] == iid
    pointer = cloud.item(f"incident#{iid}", "incident")
    assert pointer is not None
    assert pointer["ref_sk"]["S"] == f"family#revenue#incident#{iid}"
    assert store.claimed_by(first["alert_id"]) == iid
    assert store.claimed_by("ewma-" + "0" * 32) is None
    stored = store.get(iid)
    assert stored is not None
    assert stored.record == record
    assert stored.outbox == ()

    received = cloud.receive("revenue")
    bodies = [json.loads(m["Body"]) for m in received]
    assert [(b["event"], b["reason"]) for b in bodies] == [("opened", "new"), ("escalated", "priority")]
    check_messages(bodies)
    for message, body in zip(received, bodies, strict=True):
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes == {"dedup_key": body["dedup_key"], "team": "revenue", "priority": body["priority"]}
    assert all(cloud.receive(team) == [] for team in TEAMS if team != "revenue")


def test_given_stale_versions_or_a_taken_claim_when_saved_then_the_transaction_writes_nothing(
    cloud: Aws,
) -> None:
    store = DynamoIncidents(cloud.table)
    alert = make_alert("ngr")
    record, message = new_incident(alert, RULES.route(alert), "revenue", NOW)
    store.save(record, 0, [message], claim_alert_id=alert["alert_id"], group_version=0)
    iid = record["incident_id"]
    again = {**record, "count": 99}
    with pytest.raises(IncidentConflict):  # the incident exists already
        store.save(again, 0, [], claim_alert_id="ewma-" + "1" * 32)
    assert store.claimed_by("ewma-" + "1" * 32) is None  # the claim was not written without its incident
    newer = {**record, "version": 2, "count": 2}
    with pytest.raises(IncidentConflict):  # the alert is claimed already
        store.save(newer, 1, [], claim_alert_id=alert["alert_id"])
    with pytest.raises(IncidentConflict):  # the group moved on
        store.save(newer, 1, [], claim_alert_id="ewma-" + "2" * 32, group_version=0)
    with pytest.raises(ValueError, match="expected_version"):
        store.save({**record, "version": 5}, 1, [])
    stored = store.get(iid)
    assert stored is not None
    assert stored.record == record
    assert len(stored.outbox) == 1
    assert store.claimed_by("ewma-" + "2" * 32) is None
    store.save(newer, 1, [], claim_alert_id="ewma-" + "2" * 32, group_version=1)
    assert store.candidates("acme-ads", "revenue").version == 2
    assert store.claimed_by("ewma-" + "2" * 32) == iid


def test_given_an_outbox_when_saved_and_cleared_then_the_due_index_moves_between_outbox_and_due(
    cloud: Aws,
) -> None:
    store = DynamoIncidents(cloud.table)
    alert = make_alert("ngr", severity="critical")
    record, message = new_incident(alert, RULES.route(alert), "revenue", NOW)  # P2: due 14:05
    store.save(record, 0, [message], claim_alert_id=alert["alert_id"], group_version=0)
    later = NOW + timedelta(hours=2)
    assert [s.record["incident_id"] for s in store.pending_outboxes(NOW)] == [record["incident_id"]]
    assert list(store.due(later)) == []  # not watched while its messages are unsent
    store.clear_outbox({**record, "version": 7})  # a stale writer: no effect
    assert len(list(store.pending_outboxes(NOW))) == 1
    store.clear_outbox(record)
    assert list(store.pending_outboxes(later)) == []
    assert list(store.due(NOW + timedelta(minutes=59))) == []
    [due] = store.due(NOW + timedelta(minutes=60))
    assert due.record == record
    assert due.outbox == ()
    acked = store.acknowledge(record["incident_id"], NOW + timedelta(minutes=5))
    assert acked["status"] == "acknowledged"
    assert list(store.due(later)) == []
    item = cloud.item("integration#acme-ads", f"family#revenue#incident#{record['incident_id']}")
    assert item is not None
    assert "due_shard" not in item
    assert "due_at_epoch" not in item
    with pytest.raises(IncidentNotFound):
        store.resolve("inc-" + "0" * 24, NOW)


def test_given_the_sla_check_on_dynamodb_when_p1_breaches_then_it_leaves_the_due_index(cloud: Aws) -> None:
    ports, _store = dynamo_ports(cloud)
    iid = triage_alert(make_alert("ngr", severity="critical"), RULES, ports, SETTINGS).incident_id
    first = check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=60))
    second = check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=75))
    third = check_sla(RULES, ports, SETTINGS, NOW + timedelta(minutes=80))
    assert (first.escalated, second.breached, third.checked) == (1, 1, 0)
    item = cloud.item("integration#acme-ads", f"family#revenue#incident#{iid}")
    assert item is not None
    assert "due_shard" not in item
    bodies = [json.loads(m["Body"]) for m in cloud.receive("revenue")]
    assert [b["reason"] for b in bodies] == ["new", "sla", "sla_breached"]
    check_messages(bodies)


def test_given_resolved_and_lookalike_families_when_candidates_are_read_then_only_the_open_family_counts(
    cloud: Aws,
) -> None:
    store = DynamoIncidents(cloud.table)
    made = {}
    for family, metric in (("revenue", "ngr"), ("rev", "deposits"), ("revenue-extra", "ftds")):
        alert = make_alert(metric)
        record, _ = new_incident(alert, RULES.route(alert), family, NOW)
        store.save(record, 0, [], claim_alert_id=alert["alert_id"], group_version=0)
        made[family] = record["incident_id"]
    group = store.candidates("acme-ads", "revenue")
    assert group.version == 1
    assert [s.record["incident_id"] for s in group.incidents] == [made["revenue"]]
    store.resolve(made["revenue"], NOW + timedelta(minutes=1))
    assert store.candidates("acme-ads", "revenue").incidents == ()
    assert store.candidates("globex-traffic", "revenue").version == 0


def test_given_dynamodb_when_acknowledged_and_resolved_by_someone_then_the_item_keeps_who_and_why(
    cloud: Aws,
) -> None:
    store = DynamoIncidents(cloud.table)
    alert = make_alert("ngr", severity="critical")
    record, _ = new_incident(alert, RULES.route(alert), "revenue", NOW)
    store.save(record, 0, [], claim_alert_id=alert["alert_id"], group_version=0)
    iid = record["incident_id"]
    assert (record["acknowledged_by"], record["resolved_by"], record["resolution_reason"]) == (
        None,
        None,
        None,
    )
    acked = store.acknowledge(iid, NOW + timedelta(minutes=5), by="arn:aws:iam::123456789012:user/alice")
    assert acked["acknowledged_by"] == "arn:aws:iam::123456789012:user/alice"
    assert store.acknowledge(iid, NOW + timedelta(minutes=6), by="bob")["acknowledged_by"].endswith("/alice")
    done = store.resolve(iid, NOW + timedelta(minutes=9), by="bob")
    assert (done["resolved_by"], done["resolution_reason"]) == ("bob", "operator")
    item = cloud.item("integration#acme-ads", f"family#revenue#incident#{iid}")
    assert item is not None
    kept = json.loads(item["record"]["S"])
    assert (kept["acknowledged_by"], kept["resolved_by"], kept["resolution_reason"]) == (
        "arn:aws:iam::123456789012:user/alice",
        "bob",
        "operator",
    )
    assert store.resolve(iid, NOW + timedelta(minutes=10), by="carol")["resolved_by"] == "bob"


def test_given_an_item_stored_before_the_fields_existed_when_read_then_they_are_none(cloud: Aws) -> None:
    store = DynamoIncidents(cloud.table)
    alert = make_alert("ngr")
    record, _ = new_incident(alert, RULES.route(alert), "revenue", NOW)
    for name in ("acknowledged_by", "resolved_by", "resolution_reason"):
        del record[name]
    store.save(record, 0, [], claim_alert_id=alert["alert_id"], group_version=0)
    stored = store.get(record["incident_id"])
    assert stored is not None
    assert (stored.record["acknowledged_by"], stored.record["resolved_by"]) == (None, None)
    [listed] = store.incidents_opened(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert listed["resolution_reason"] is None
    [candidate] = store.candidates("acme-ads", "revenue").incidents
    assert candidate.record["acknowledged_by"] is None
    assert store.acknowledge(record["incident_id"], NOW, by="alice")["acknowledged_by"] == "alice"


def test_given_a_missing_data_incident_on_dynamodb_when_data_resumes_then_it_is_resolved_once(
    cloud: Aws,
) -> None:
    clock = Clock()
    ports, store = dynamo_ports(cloud, clock)
    opened = triage_alert(warning(), RULES, ports, SETTINGS)
    assert opened.team == "integrations"
    clock.advance(minutes=70)
    done = triage_alert(resolution(), RULES, ports, SETTINGS)
    again = triage_alert(resolution(), RULES, ports, SETTINGS)
    assert (done.status, done.messages_sent, again.status, again.messages_sent) == (
        "resolved",
        1,
        "duplicate",
        0,
    )
    item = cloud.item("integration#acme-ads", f"family#sync#incident#{opened.incident_id}")
    assert item is not None
    assert item["status"]["S"] == "resolved"
    assert "outbox" not in item
    assert "due_shard" not in item
    record = json.loads(item["record"]["S"])
    assert (record["resolved_by"], record["resolution_reason"], record["version"]) == (
        "freshness-check",
        "data_resumed",
        2,
    )
    bodies = [json.loads(m["Body"]) for m in cloud.receive("integrations")]
    assert [(b["event"], b["reason"]) for b in bodies] == [("opened", "new"), ("resolved", "data_resumed")]
    check_messages(bodies)
    assert store.candidates("acme-ads", "sync").incidents == ()


def test_given_incidents_over_several_days_when_listed_by_day_then_the_range_is_half_open(cloud: Aws) -> None:
    store = DynamoIncidents(cloud.table)
    opened = []
    for n in range(4):  # 13:05 on day 0, 01:05 and 13:05 on day 1, 01:05 on day 2
        at = NOW + timedelta(hours=12 * n)
        alert = make_alert("ngr", period=T0 + timedelta(days=n))
        record, _ = new_incident(alert, RULES.route(alert), "revenue", at)
        store.save(record, 0, [], claim_alert_id=alert["alert_id"])
        opened.append(record["incident_id"])
    found = list(store.incidents_opened(NOW + timedelta(hours=1), NOW + timedelta(hours=36)))
    assert [r["incident_id"] for r in found] == opened[1:3]  # the end (day 2, 01:05) is excluded
    assert [r["opened_at"] for r in found] == [iso(NOW + timedelta(hours=12)), iso(NOW + timedelta(hours=24))]
    everything = list(store.incidents_opened(NOW - timedelta(days=1), NOW + timedelta(days=3)))
    assert [r["incident_id"] for r in everything] == opened


def test_given_a_fifo_team_queue_when_sending_then_the_dedup_key_deduplicates(cloud: Aws) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="team-revenue.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    outbox = SqsTeamOutbox({"revenue": url})
    alert = make_alert("ngr")
    record, message = new_incident(alert, RULES.route(alert), "revenue", NOW)
    outbox.send([message])
    outbox.send([message])  # a resend after a crash: SQS drops it
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert len(got) == 1
    assert got[0]["Attributes"]["MessageGroupId"] == record["incident_id"]
    with pytest.raises(RuntimeError, match="no outbound queue for team 'support-ops'"):
        outbox.send([{**message, "team": "support-ops"}])


def test_given_more_than_ten_messages_when_sent_then_they_go_in_batches_per_team(cloud: Aws) -> None:
    alert = make_alert("ngr")
    _record, message = new_incident(alert, RULES.route(alert), "revenue", NOW)
    messages = [{**message, "dedup_key": f"k{n}", "team": TEAMS[n % 2]} for n in range(23)]
    SqsTeamOutbox(cloud.queues).send(messages)
    assert len(cloud.receive(TEAMS[0])) == 12
    assert len(cloud.receive(TEAMS[1])) == 11


def test_given_rules_in_s3_and_ssm_when_read_then_the_cache_loads_them(cloud: Aws) -> None:
    doc = json.loads(json.dumps({"version": 1, "teams": list(TEAMS), "sla_minutes": {"P1": 5, "P2": 10, "P3": 20, "P4": 40},
                                 "rules": [], "default": {"team": "support-ops", "priority": "P2"}}))  # fmt: skip
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=cloud.bucket, Key="rules/v1.json", Body=json.dumps(doc)
    )
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/kpi/rules", Value=json.dumps({**doc, "default": {"team": "revenue", "priority": "P4"}}),
        Type="SecureString",
    )  # fmt: skip
    source = AwsRulesSource()
    assert RulesCache("s3://ops-config/rules/v1.json", source).get().default.team == "support-ops"
    assert RulesCache("ssm:/kpi/rules", source).get().default.priority == "P4"
    with pytest.raises(ValueError, match="neither"):
        source.read("ftp://x/y")


# --- the handler ---------------------------------------------------------------------------------------


class FixedRules:
    def get(self) -> Any:
        return RULES


def test_given_a_batch_with_malformed_records_when_handled_then_only_they_fail_and_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ports, store, outbox = memory_ports()
    runtime = handler.TriageRuntime(ports, FixedRules(), SETTINGS)
    good = [make_alert("ngr", severity="critical"), make_alert("clicks")]
    event = sqs_event(
        json.dumps(good[0]),
        "{not json",
        json.dumps(make_alert("tickets") | {"integration_id": "../../etc"}),
        json.dumps(good[1]),
        json.dumps(make_alert("signups") | {"period_start": None}),
    )
    response = handler.handle(event, None, runtime)
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    ids = [r["messageId"] for r in event["Records"]]
    assert failed == [ids[1], ids[2], ids[4]]
    assert set(store.claims) == {a["alert_id"] for a in good}
    assert [m["team"] for m in outbox.sent] == ["revenue", "acquisition"]
    malformed = [r for r in caplog.records if r.getMessage().startswith("malformed alert")]
    assert [(r.message_id, r.field) for r in malformed] == [
        (ids[1], "(body)"), (ids[2], "integration_id"), (ids[4], "period_start")
    ]  # fmt: skip
    handler.metrics.clear_metrics()


def test_given_a_redelivered_batch_when_handled_then_nothing_is_opened_or_sent_twice() -> None:
    ports, store, outbox = memory_ports()
    runtime = handler.TriageRuntime(ports, FixedRules(), SETTINGS)
    seen: list[Any] = []
    handler.observers.append(seen.append)
    try:
        event = sqs_event(json.dumps(make_alert("ngr")), json.dumps(make_alert("ngr", severity="info")))
        assert handler.handle(event, None, runtime)["batchItemFailures"] == []
        assert handler.handle(event, None, runtime)["batchItemFailures"] == []
    finally:
        handler.observers.remove(seen.append)
        handler.metrics.clear_metrics()
    assert [o.status for o in seen] == ["opened", "ignored", "duplicate", "ignored"]
    assert len(outbox.sent) == 1
    assert len(store.records) == 1


@pytest.mark.parametrize(
    "event", [{"detail-type": "Scheduled Event", "source": "aws.events"}, {"action": "sla_check"}]
)
def test_given_a_schedule_event_when_handled_then_the_sla_check_runs(event: dict[str, Any]) -> None:
    clock = Clock()
    ports, _store, _outbox = memory_ports(clock)
    runtime = handler.TriageRuntime(ports, FixedRules(), SETTINGS)
    triage_alert(make_alert("ngr", severity="critical"), RULES, ports, SETTINGS)
    clock.advance(hours=1)
    result = handler.handle(event, None, runtime)
    assert result["escalated"] == 1
    assert result["at"] == clock.now.isoformat()
    replay = handler.handle(
        {"action": "sla_check", "as_of": (clock.now + timedelta(minutes=15)).isoformat()}, None, runtime
    )
    assert replay["breached"] == 1
    with pytest.raises(handler.NotATriageEvent, match="UTC offset"):
        handler.handle({"action": "sla_check", "as_of": "2026-10-15T12:00:00"}, None, runtime)
    with pytest.raises(handler.NotATriageEvent, match="expects an SQS batch"):
        handler.handle({"hello": "world"}, None, runtime)
    handler.metrics.clear_metrics()


def test_given_the_aws_wiring_when_the_lambda_handler_runs_then_it_reads_its_environment(
    cloud: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = json.loads(resources.files("kpi_sentinel.triage").joinpath("rules.json").read_text())
    rules["default"]["priority"] = "P4"
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=cloud.bucket, Key="rules.json", Body=json.dumps(rules)
    )
    monkeypatch.setenv("INCIDENTS_TABLE", cloud.table)
    monkeypatch.setenv("ROUTING_RULES", f"s3://{cloud.bucket}/rules.json")
    monkeypatch.setenv("INCIDENT_WINDOW_MINUTES", "120")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    partial = {t: u for t, u in cloud.queues.items() if t != "support-ops"}
    monkeypatch.setenv("TEAM_QUEUES", json.dumps(partial))
    with pytest.raises(ValueError, match="'support-ops'"):
        handler._aws_ports()
    monkeypatch.setenv("TEAM_QUEUES", json.dumps(cloud.queues))
    runtime = handler._aws_ports()
    assert runtime.settings.window == timedelta(hours=2)
    assert runtime.rules.get().source == f"s3://{cloud.bucket}/rules.json"
    context = type("Context", (), {"function_name": "SupportTriage", "memory_limit_in_mb": 256,
                                   "invoked_function_arn": "arn", "aws_request_id": "req"})()  # fmt: skip
    response = handler.lambda_handler(sqs_event(json.dumps(make_alert("ngr")), "[]"), context)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [str(uuid.UUID(int=1))]
    [body] = [json.loads(m["Body"]) for m in cloud.receive("revenue")]
    assert body["priority"] == "P4"  # routed by the rules from S3, not the packaged ones
    handler._aws_ports.cache_clear()
    monkeypatch.delenv("INCIDENTS_TABLE")
    with pytest.raises(RuntimeError, match="INCIDENTS_TABLE"):
        handler._aws_ports()


def test_given_the_triage_handler_when_imported_then_no_numeric_library_nor_boto3_is_loaded() -> None:
    import subprocess
    import sys

    code = "import json, sys; import kpi_sentinel.handlers.triage; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert not loaded & {"numpy", "pandas", "sklearn", "scipy", "joblib", "matplotlib", "boto3"}
