"""The local stack is built from template.yaml and holds every resource of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kpi_sentinel.local.stack import LocalStack, load_template, repo_root


def test_every_template_resource_exists_locally(stack: LocalStack) -> None:
    # Given the stack created from template.yaml (moto plus what moto's CloudFormation skips)
    template = load_template(repo_root() / "template.yaml")
    # Then every resource of the template is there, functions included (run by the local runner)
    assert set(stack.types) == set(template["Resources"])
    assert stack.missing() == []
    assert set(stack.functions) == {
        lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    }


def test_a_resource_removed_behind_the_stacks_back_is_reported_missing(stack: LocalStack) -> None:
    # Given the support-triage subscription and the ingest queue policy are removed
    stack.client("sns").unsubscribe(SubscriptionArn=stack.physical["SupportTriageSubscription"])
    stack.client("sqs").set_queue_attributes(
        QueueUrl=stack.queue_url("IngestQueue"), Attributes={"Policy": ""}
    )
    try:
        # Then the check names both
        missing = stack.missing()
        assert any(m.startswith("SupportTriageSubscription") for m in missing)
        assert any(m.startswith("IngestQueuePolicy") for m in missing)
    finally:
        stack.repair()
    assert stack.missing() == []


def test_skipped_types_are_created_with_the_templates_properties(stack: LocalStack) -> None:
    sns, sqs, dynamodb = stack.client("sns"), stack.client("sqs"), stack.client("dynamodb")
    # The support-triage subscription filters on severity (and lets the freshness check's resolutions
    # in) and delivers raw JSON
    attributes = sns.get_subscription_attributes(SubscriptionArn=stack.physical["SupportTriageSubscription"])[
        "Attributes"
    ]
    assert json.loads(attributes["FilterPolicy"]) == {
        "$or": [{"severity": ["warning", "critical"]}, {"severity": ["info"], "detector": ["missing_data"]}]
    }
    assert attributes["RawMessageDelivery"] == "true"
    # The ingest queue accepts S3 notifications and redrives poison messages to its DLQ
    queue = sqs.get_queue_attributes(QueueUrl=stack.queue_url("IngestQueue"), AttributeNames=["All"])[
        "Attributes"
    ]
    assert "s3.amazonaws.com" in queue["Policy"]
    assert json.loads(queue["RedrivePolicy"])["deadLetterTargetArn"] == stack.attribute("IngestDLQ", "Arn")
    # State tables expire items through TTL
    ttl = dynamodb.describe_time_to_live(TableName=stack.physical["StateTable"])["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


def test_the_scorer_gets_the_environment_the_template_gives_it(stack: LocalStack) -> None:
    env = stack.functions["EwmaScorerFunction"].environment
    assert env["INGEST_BUCKET"] == stack.physical["IngestBucket"]
    assert env["STATE_TABLE"] == stack.physical["StateTable"]
    assert env["ALERTS_TOPIC_ARN"] == stack.physical["AlertsTopic"]
    assert stack.functions["EwmaScorerFunction"].sqs_sources == [("IngestQueue", 10)]


def test_the_state_table_lists_active_integrations_for_the_planner(stack: LocalStack) -> None:
    table = stack.client("dynamodb").describe_table(TableName=stack.physical["StateTable"])["Table"]
    index = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}["ActiveIntegrations"]
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["active_shard", "integration_id"]
    assert index["Projection"] == {
        "ProjectionType": "INCLUDE",
        "NonKeyAttributes": ["last_sync_at", "tier", "granularity"],
    }


def test_retraining_gets_its_queue_schedules_and_signing_secret(stack: LocalStack) -> None:
    planner, retrainer = (
        stack.functions["RetrainPlannerFunction"],
        stack.functions["IforestRetrainerFunction"],
    )
    # The planner's schedules are listed with the event each rule delivers
    assert planner.schedules == {
        "NightlyRetrain": {"mode": "retrain"},
        "BusinessTierScoring": {"mode": "score", "tier": "business"},
    }
    assert planner.environment["RETRAIN_QUEUE_URL"] == stack.queue_url("RetrainQueue")
    assert planner.environment["SCORING_QUEUE_URL"] == stack.queue_url("ScoringQueue")
    assert planner.sqs_sources == []
    # The retrainer consumes both job queues, each redriving a failing job after 3 receives
    assert retrainer.sqs_sources == [("RetrainQueue", 5), ("ScoringQueue", 5)]
    scoring = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url("ScoringQueue"), AttributeNames=["All"]
    )["Attributes"]
    assert json.loads(scoring["RedrivePolicy"])["deadLetterTargetArn"] == stack.attribute("ScoringDLQ", "Arn")
    assert retrainer.schedules == {}
    queue = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url("RetrainQueue"), AttributeNames=["All"]
    )["Attributes"]
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": stack.attribute("RetrainDLQ", "Arn"),
        "maxReceiveCount": 3,
    }
    assert queue["VisibilityTimeout"] == "5400"
    # The signing secret resolves to its ARN and holds a 64-character key
    arn = retrainer.environment["MODEL_SIGNING_SECRET_ARN"]
    assert arn == stack.physical["ModelSigningSecret"]
    assert arn.startswith("arn:aws:secretsmanager:")
    key = stack.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    assert len(key) == 64
    assert key.isalnum()
    # Tuning parameters arrive as their template defaults
    assert {k: retrainer.environment[k] for k in ("TRAINING_DAYS", "MODEL_RETENTION_DAYS")} == {
        "TRAINING_DAYS": "90",
        "MODEL_RETENTION_DAYS": "30",
    }


def test_a_deleted_signing_secret_is_reported_missing_and_restored(stack: LocalStack) -> None:
    secretsmanager = stack.client("secretsmanager")
    arn = stack.physical["ModelSigningSecret"]
    key = secretsmanager.get_secret_value(SecretId=arn)["SecretString"]
    # Given the secret is deleted behind the stack's back
    secretsmanager.delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    try:
        # Then the check names it
        assert any(m.startswith("ModelSigningSecret") for m in stack.missing())
    finally:
        stack.repair()
    # And the repair brings back the same key: stored models still verify
    assert stack.missing() == []
    assert secretsmanager.get_secret_value(SecretId=arn)["SecretString"] == key


def test_trigger_delivers_what_the_schedule_rule_would(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[tuple[dict[str, Any], Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        received.append((event, context))
        return {"planned": 3}

    monkeypatch.setattr(stack, "handler", lambda function_id: handler)
    # When the nightly rule fires, the handler gets the rule's Input and its result comes back
    assert stack.trigger("RetrainPlannerFunction", "NightlyRetrain") == {"planned": 3}
    event, context = received[-1]
    assert event == {"mode": "retrain"}
    assert context.function_name == "RetrainPlannerFunction"
    # A rule without an Input delivers EventBridge's Scheduled Event envelope
    monkeypatch.setitem(stack.functions["RetrainPlannerFunction"].schedules, "Hourly", {})
    stack.trigger("RetrainPlannerFunction", "Hourly")
    event, _ = received[-1]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"].endswith("Z")
    # A schedule the function does not have is an error that names the ones it has
    with pytest.raises(KeyError, match="NightlyRetrain"):
        stack.trigger("RetrainPlannerFunction", "Weekly")
