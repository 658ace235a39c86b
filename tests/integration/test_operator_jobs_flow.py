"""The operator jobs on the local stack, through their schedules.

freshness_check: an integration whose hourly syncs stop gets one ``missing_data`` alert once its
cadence and grace have passed (none before, none again on the next runs), on both alert queues, and
one resolution when syncs resume. support_triage opens an incident for the integrations team from the
alert, and the resolution, delivered to support_triage, resolves it and tells the team (once). threshold_tuning: the nightly run reads the labels and history of
the active integrations and leaves one without enough labels untouched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from kpi_sentinel.adapters.aws import DynamoFeedback, DynamoIncidents
from kpi_sentinel.local.stack import LocalStack, lambda_context
from kpi_sentinel.synthetic import SyncFile, demo_dataset

from tests.integration.conftest import EVENTS, read_queue
from tests.integration.test_forest_flow import SCHEMA
from tests.integration.test_scorer_flow import upload
from tests.integration.test_triage_report_flow import INCIDENT_SCHEMA

FRESHNESS, TUNING, TRIAGE = "FreshnessCheckFunction", "ThresholdTuningFunction", "SupportTriageFunction"
INTEGRATION = "fresh-acme"


def files_of(days: int) -> list[SyncFile]:
    dataset = demo_dataset(days=days)
    return [
        SyncFile(
            f.key.replace("syncs/acme-ads/", f"syncs/{INTEGRATION}/"), f.body, f.period_start, INTEGRATION
        )
        for f in dataset.files
        if f.integration_id == "acme-ads"
    ]


@pytest.fixture(scope="module")
def synced(stack: LocalStack) -> list[SyncFile]:
    files = files_of(3)
    upload(stack, files[:-1])  # the last hour is held back: it arrives after the outage
    return files


def mine(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    return [a for a in read_queue(stack, queue) if a["integration_id"] == INTEGRATION]


def team_news(stack: LocalStack) -> list[dict[str, Any]]:
    """This integration's incident messages on the integrations team's queue (schema incident-v1)."""
    found = [
        m
        for m in read_queue(stack, "IntegrationsTeamQueue")
        if m["incident"]["integration_id"] == INTEGRATION
    ]
    for message in found:
        jsonschema.validate(message, INCIDENT_SCHEMA)
    return found


def to_triage(stack: LocalStack, alert: dict[str, Any]) -> None:
    """Put ``alert`` on SupportTriageQueue as the alerts topic's subscription delivers it (raw JSON)."""
    attributes = {
        name: {"DataType": "String", "StringValue": str(alert[name])}
        for name in ("severity", "integration_id", "detector", "metric", "schema_version")
    }
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url("SupportTriageQueue"),
        MessageBody=json.dumps(alert),
        MessageAttributes=attributes,
    )


def check(stack: LocalStack, at: datetime) -> dict[str, Any]:
    return stack.trigger(FRESHNESS, "FreshnessCheck", {"time": at.strftime("%Y-%m-%dT%H:%M:%SZ")})


def test_a_stopped_integration_raises_one_missing_data_alert_and_one_resolution(
    stack: LocalStack, synced: list[SyncFile]
) -> None:
    read_queue(stack, "KpiReportQueue")  # what other tests left there is not this test's
    read_queue(stack, "SupportTriageQueue")
    read_queue(stack, "IntegrationsTeamQueue")
    now = datetime.now(UTC)
    # Given an hourly integration whose last sync committed just now: within its cadence and grace
    check(stack, now + timedelta(minutes=90))
    assert mine(stack, "KpiReportQueue") == []
    # When three hours pass without a sync, the schedule's run raises one missing_data alert
    check(stack, now + timedelta(hours=3))
    (alert,) = mine(stack, "KpiReportQueue")
    jsonschema.validate(alert, SCHEMA)
    assert alert["detector"] == "missing_data"
    assert alert["severity"] == "warning"
    assert alert["metric"] == "sync"
    assert INTEGRATION in alert["summary"]
    # And support_triage, draining its queue, opens an incident for the integrations team (only this
    # integration's alert is kept on the queue: the session's other integrations are late at that hour
    # too, and their incidents would show in the other tests' reports)
    (delivered,) = mine(stack, "SupportTriageQueue")
    assert delivered == alert
    to_triage(stack, alert)
    assert stack.drain(TRIAGE) == 1
    (opened,) = team_news(stack)
    assert (opened["event"], opened["reason"], opened["team"]) == ("opened", "new", "integrations")
    assert opened["alert"]["alert_id"] == alert["alert_id"]
    incident_id = opened["incident"]["incident_id"]
    # And the next runs do not repeat it
    check(stack, now + timedelta(hours=3, minutes=5))
    assert mine(stack, "KpiReportQueue") == []
    # When the held-back sync arrives (it commits at the real time: the checks above ran on a moved
    # clock), the next run after it publishes one resolution (info)
    upload(stack, synced[-1:])
    check(stack, datetime.now(UTC) + timedelta(minutes=5))
    (resolution,) = mine(stack, "KpiReportQueue")
    assert resolution["severity"] == "info"
    assert resolution["resolves"] == alert["alert_id"]
    assert "resumed" in resolution["summary"]
    # And the subscription's filter (template.yaml) lets the resolution into SupportTriageQueue
    (delivered,) = mine(stack, "SupportTriageQueue")
    assert delivered == resolution
    to_triage(stack, resolution)
    assert stack.drain(TRIAGE) == 1
    # Then the incident is resolved by the freshness check and the team hears it once
    (closed,) = team_news(stack)
    assert (closed["event"], closed["reason"]) == ("resolved", "data_resumed")
    assert closed["dedup_key"].startswith(f"{incident_id}:resolved:data_resumed:")
    assert closed["alert"]["alert_id"] == resolution["alert_id"]
    stored = DynamoIncidents(stack.physical["IncidentsTable"]).get(incident_id)
    assert stored is not None
    record = stored.record
    assert (record["status"], record["resolved_by"], record["resolution_reason"]) == (
        "resolved",
        "freshness-check",
        "data_resumed",
    )
    assert stored.outbox == ()
    # And a redelivered resolution changes nothing and sends nothing
    to_triage(stack, resolution)
    assert stack.drain(TRIAGE) == 1
    assert team_news(stack) == []
    again = DynamoIncidents(stack.physical["IncidentsTable"]).get(incident_id)
    assert again is not None
    assert again.record == record
    # The session's other tests report on today's incidents: this one leaves its incident behind
    table, dynamodb = stack.physical["IncidentsTable"], stack.client("dynamodb")
    for key in (
        {"pk": f"integration#{INTEGRATION}", "sk": f"family#{record['family']}#incident#{incident_id}"},
        {"pk": f"incident#{incident_id}", "sk": "incident"},
    ):
        dynamodb.delete_item(TableName=table, Key={k: {"S": v} for k, v in key.items()})
    assert DynamoIncidents(table).get(incident_id) is None


def test_the_nightly_tuning_leaves_an_integration_with_too_few_labels_untouched(
    stack: LocalStack, synced: list[SyncFile]
) -> None:
    # Given one operator label on the integration (too few to retune anything)
    DynamoFeedback(stack.physical["ControlTable"]).put_label(
        INTEGRATION, "ewma-" + "0" * 32, "false_positive"
    )
    # When the tuning schedule fires (events/schedule-threshold-tuning.json is its envelope)
    event = json.loads((EVENTS / "schedule-threshold-tuning.json").read_text())
    event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    outcome = stack.handler(TUNING)({**event, "integrations": [INTEGRATION]}, lambda_context(TUNING))
    # Then it read the integration, tuned nothing and said why
    assert outcome["integrations"] == 1
    assert outcome["thresholds_tuned"] == 0
    assert outcome["recorded"] == outcome["integrations_skipped"] == 1
    s3, bucket = stack.client("s3"), stack.physical["DataBucket"]
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"tuning/{INTEGRATION}/runs/")["Contents"]
    ]
    record = json.loads(s3.get_object(Bucket=bucket, Key=keys[-1])["Body"].read())
    # The run record says why: one label, fewer than the five a metric needs
    assert record["status"] == "skipped"
    assert record["labels"] == 1
    assert "fewer than the 5 needed" in record["reason"]
