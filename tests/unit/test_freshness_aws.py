"""The freshness check's DynamoDB adapter on in-process moto, and a whole check through the AWS adapters
(the ActiveIntegrations index, the control table, the outage items) with alerts landing in SQS via SNS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from kpi_sentinel.adapters import aws
from kpi_sentinel.adapters.aws import (
    DynamoActiveIndex,
    DynamoControl,
    DynamoFreshness,
    DynamoState,
    SnsPublisher,
)
from kpi_sentinel.handlers import freshness as handler
from kpi_sentinel.operator_jobs.freshness import FreshnessSettings, check
from kpi_sentinel.ports import FreshnessPorts, Outage, StateConflict
from moto import mock_aws

from tests.unit.aws_tables import create_table, offline_aws

REGION = "eu-west-1"
STATE, CONTROL = "state-table", "control-table"
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The two tables, and a queue subscribed to the alerts topic (raw delivery); yields the queue URL."""
    offline_aws(monkeypatch, REGION)
    handler._aws_ports.cache_clear()
    with mock_aws():
        create_table("StateTable", STATE, REGION)
        create_table("ControlTable", CONTROL, REGION)
        topic = boto3.client("sns").create_topic(Name="alerts")["TopicArn"]
        sqs = boto3.client("sqs")
        url = sqs.create_queue(QueueName="alerts-copy")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns").subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
        )
        monkeypatch.setenv("STATE_TABLE", STATE)
        monkeypatch.setenv("CONTROL_TABLE", CONTROL)
        monkeypatch.setenv("ALERTS_TOPIC_ARN", topic)
        yield url
    aws.client.cache_clear()
    handler._aws_ports.cache_clear()


def _received(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        found.extend(json.loads(m["Body"]) for m in got)
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return found


def _synced(integration_id: str, at: datetime, granularity: int = 3600) -> None:
    """The scorer's commit, with ``last_sync_at`` moved to ``at`` (the adapter stamps the wall clock)."""
    state = DynamoState(STATE)
    stored = state.load(integration_id)
    state.commit(
        integration_id, stored.version, b"blob", f"s-{at.isoformat()}", [], {"granularity": granularity}
    )
    boto3.client("dynamodb").update_item(
        TableName=STATE,
        Key={"pk": {"S": f"integration#{integration_id}"}, "sk": {"S": "state"}},
        UpdateExpression="SET last_sync_at = :at",
        ExpressionAttributeValues={":at": {"N": str(int(at.timestamp()))}},
    )


def test_given_outages_when_saved_read_and_closed_then_versions_guard_every_write(moto: str) -> None:
    store = DynamoFreshness(STATE)
    outage = Outage(
        "acme-ads", T0.timestamp(), 3600, ("missing_data-" + "0" * 32,), "warning", 1.0, version=1
    )
    store.save(outage, 0)
    store.save(Outage("globex", T0.timestamp(), 300, (), "critical", 2.0, "business", "eu", 1), 0)
    assert sorted(store.open_outages(), key=lambda o: o.integration_id) == [
        outage,
        Outage("globex", T0.timestamp(), 300, (), "critical", 2.0, "business", "eu", 1),
    ]
    with pytest.raises(StateConflict):
        store.save(outage, 0)  # another run stored it first
    escalated = Outage("acme-ads", T0.timestamp(), 3600, ("a", "b"), "critical", 1.0, version=2)
    store.save(escalated, 1)
    with pytest.raises(StateConflict):
        store.close("acme-ads", 1)
    store.close("acme-ads", 2)
    assert [o.integration_id for o in store.open_outages()] == ["globex"]
    item = boto3.client("dynamodb").get_item(
        TableName=STATE, Key={"pk": {"S": aws._outage_pk("globex")}, "sk": {"S": "outage#globex"}}
    )["Item"]
    assert item["pk"]["S"].startswith("freshness#shard#")
    assert int(item["expires_at"]["N"]) == int(T0.timestamp()) + 90 * 86400


def test_given_the_aws_adapters_when_an_integration_stops_and_resumes_then_one_alert_and_one_resolution_arrive(
    moto: str,
) -> None:
    _synced("acme-ads", T0)
    _synced("quiet-but-fine", T0 + timedelta(hours=2))
    DynamoControl(CONTROL).put_config("acme-ads", {"segment": "casino-eu"})
    moment = T0 + timedelta(hours=2, minutes=5)
    handler.handle({"as_of": moment.isoformat()})
    handler.handle({"as_of": (moment + timedelta(minutes=5)).isoformat()})
    [alert] = _received(moto)
    assert alert["summary"] == "No sync from acme-ads for 2 h 5 min (expected every hour)"
    assert alert["segment"] == "casino-eu"
    _synced("acme-ads", T0 + timedelta(hours=3))
    result = handler.handle({"as_of": (T0 + timedelta(hours=3, minutes=5)).isoformat()})
    [resolution] = _received(moto)
    assert resolution["resolves"] == alert["alert_id"]
    assert result["resolved"] == 1
    assert list(DynamoFreshness(STATE).open_outages()) == []


def test_given_a_snooze_in_the_control_table_when_late_then_the_aws_check_publishes_nothing(
    moto: str,
) -> None:
    _synced("acme-ads", T0)
    DynamoControl(CONTROL).put_snooze(
        {
            "integration_id": "acme-ads",
            "snooze_id": "s1",
            "metric": "sync",
            "until": (T0 + timedelta(days=1)).timestamp(),
        }
    )
    ports = FreshnessPorts(
        DynamoActiveIndex(STATE),
        DynamoControl(CONTROL),
        DynamoFreshness(STATE),
        SnsPublisher(boto3.client("sns").list_topics()["Topics"][0]["TopicArn"]),
        lambda: T0,
    )
    outcome = check(T0 + timedelta(hours=3), ports, FreshnessSettings())
    assert (outcome.suppressed, outcome.alerts_published) == (1, 0)
    assert _received(moto) == []
