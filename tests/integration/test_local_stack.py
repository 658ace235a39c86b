"""The local stack is built from template.yaml and holds every resource of it."""

from __future__ import annotations

import json

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
    # The support-triage subscription filters on severity and delivers raw JSON
    attributes = sns.get_subscription_attributes(SubscriptionArn=stack.physical["SupportTriageSubscription"])[
        "Attributes"
    ]
    assert json.loads(attributes["FilterPolicy"]) == {"severity": ["warning", "critical"]}
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
