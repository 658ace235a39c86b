"""Nightly isolation forest on the local stack: schedule -> planner -> RetrainQueue -> iforest_retrainer ->
models in S3 -> alerts on the SNS topic and its queues; then idempotency and a tampered model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kpi_sentinel.forest import retrain
from kpi_sentinel.forest.retrain import JobOutcome
from kpi_sentinel.handlers import retrainer
from kpi_sentinel.local.stack import LocalStack, lambda_context
from kpi_sentinel.synthetic import SyncFile, demo_dataset

from tests.integration.conftest import EVENTS, read_queue
from tests.integration.test_scorer_flow import upload

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "layers/core/kpi_sentinel/schemas/alert-v1.json").read_text()
)
PLANNER, RETRAINER = "RetrainPlannerFunction", "IforestRetrainerFunction"
INTEGRATION = "forest-acme"
DAYS_UPLOADED = 20


@pytest.fixture(scope="module")
def dataset_end(stack: LocalStack) -> Any:
    """The last 20 days of the demo's acme-ads data (its funnel break on the last day), scored."""
    dataset = demo_dataset(days=60)
    first = dataset.end - timedelta(days=DAYS_UPLOADED)
    files = [
        SyncFile(
            f.key.replace("syncs/acme-ads/", f"syncs/{INTEGRATION}/"), f.body, f.period_start, INTEGRATION
        )
        for f in dataset.files
        if f.integration_id == "acme-ads" and f.period_start >= first
    ]
    upload(stack, files)
    # 20 days minus the scorer's warm-up leave about 11 usable days: train on 7 or more.
    stack.functions[RETRAINER].environment["MIN_TRAINING_DAYS"] = "7"
    retrainer._aws_ports.cache_clear()
    funnel = next(i for i in dataset.incidents if i.kind == "funnel_break")
    return dataset.end, funnel


@pytest.fixture
def outcomes() -> Iterator[list[JobOutcome]]:
    seen: list[JobOutcome] = []
    retrainer.observers.append(seen.append)
    yield seen
    retrainer.observers.remove(seen.append)


def forest_alerts(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    return [a for a in read_queue(stack, queue) if a["detector"] == "isolation_forest"]


def objects(stack: LocalStack, prefix: str) -> dict[str, bytes]:
    s3, bucket = stack.client("s3"), stack.physical["DataBucket"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_nightly_schedule_trains_stores_and_alerts_on_the_funnel_break(
    stack: LocalStack, dataset_end: Any, outcomes: list[JobOutcome]
) -> None:
    end, funnel = dataset_end
    # Given the scorer has written 20 days of history, when the nightly schedule fires for that night
    planned = stack.trigger(PLANNER, "NightlyRetrain", {"as_of": end.isoformat()})
    assert planned["mode"] == "retrain"
    assert planned["enqueued"] >= 1
    stack.drain(RETRAINER)
    # Then the integration's job trained a model and stored it with its metadata and the latest pointer
    (outcome,) = [o for o in outcomes if o.integration_id == INTEGRATION]
    assert outcome.status == "trained", outcome.reason
    version = planned["run_id"]
    stored = objects(stack, f"models/{INTEGRATION}/iforest/")
    prefix = f"models/{INTEGRATION}/iforest/"
    assert {f"{prefix}{version}.joblib", f"{prefix}{version}.json", f"{prefix}latest.json"} <= set(stored)
    metadata = json.loads(stored[f"{prefix}{version}.json"])
    assert metadata["features"] == outcome.features
    assert len(metadata["features"]) == 7
    assert metadata["training_rows"] == outcome.training_rows > 100
    assert {"scikit-learn", "numpy", "joblib", "python"} <= set(metadata["library_versions"])
    assert len(metadata["sha256"]) == 64
    assert len(metadata["hmac"]) == 64
    assert json.loads(stored[f"{prefix}latest.json"])["version"] == version
    assert json.loads(stored[f"{prefix}runs/{version}-retrain.json"])["status"] == "trained"
    # And the funnel break (clicks normal, the funnel -55%) reached both queues as isolation_forest alerts
    report = [a for a in forest_alerts(stack, "KpiReportQueue") if a["integration_id"] == INTEGRATION]
    triage = [a for a in forest_alerts(stack, "SupportTriageQueue") if a["integration_id"] == INTEGRATION]
    inside = [a for a in report if funnel.start.isoformat() <= a["period_start"] <= funnel.end.isoformat()]
    assert len(inside) >= 3, [a["summary"] for a in report]
    assert outcome.alerts_published == len(report)
    for alert in report:
        jsonschema.validate(alert, SCHEMA)
    first = min(inside, key=lambda a: a["period_start"])
    assert first["metric"] in {"signups", "signup_rate", "conversion"}
    assert first["direction"] == "down"
    assert "typical" in first["summary"]
    assert "clicks" in first["summary"]
    assert {a["alert_id"] for a in triage} == {a["alert_id"] for a in report if a["severity"] != "info"}


def test_a_rerun_of_the_same_night_publishes_nothing_twice(
    stack: LocalStack, dataset_end: Any, outcomes: list[JobOutcome]
) -> None:
    end, _ = dataset_end
    before = objects(stack, f"models/{INTEGRATION}/iforest/")
    # When the same night's schedule fires again (a retry, or an operator rerun)
    planned = stack.trigger(PLANNER, "NightlyRetrain", {"as_of": end.isoformat()})
    stack.drain(RETRAINER)
    # Then the same model is stored again byte for byte, and no alert is published a second time
    (outcome,) = [o for o in outcomes if o.integration_id == INTEGRATION]
    assert outcome.status == "trained"
    assert outcome.alerts_published == 0
    assert outcome.alerts_already_published >= 3
    after = objects(stack, f"models/{INTEGRATION}/iforest/")
    model = f"models/{INTEGRATION}/iforest/{planned['run_id']}.joblib"
    assert after[model] == before[model]
    assert forest_alerts(stack, "KpiReportQueue") == []


def _count(stack: LocalStack, queue: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_score_jobs_go_to_their_own_queue_and_score_with_the_latest_model(
    stack: LocalStack, dataset_end: Any, outcomes: list[JobOutcome]
) -> None:
    end, _ = dataset_end
    # When the scoring schedule fires (for every tier here: the demo integration is standard tier)
    planned = stack.trigger(PLANNER, "BusinessTierScoring", {"as_of": end.isoformat(), "tier": None})
    # Then its jobs wait on the ScoringQueue, not behind the retrain queue
    assert planned["mode"] == "score"
    assert planned["enqueued"] >= 1
    assert _count(stack, "ScoringQueue") == planned["enqueued"]
    assert _count(stack, "RetrainQueue") == 0
    stack.drain(RETRAINER)
    # And the retrainer scored the integration with the model trained that night, retraining nothing
    (outcome,) = [o for o in outcomes if o.integration_id == INTEGRATION]
    assert outcome.status == "scored", outcome.reason
    assert _count(stack, "ScoringQueue") == 0


def job_event(stack: LocalStack, end: Any) -> dict[str, Any]:
    text = (EVENTS / "retrain-jobs.json").read_text()
    for name, value in {
        "INTEGRATION_ID": INTEGRATION,
        "RUN_ID": end.strftime("%Y%m%dT%H%MZ"),
        "AS_OF": end.isoformat(),
    }.items():
        text = text.replace("${" + name + "}", value)
    return json.loads(text)  # type: ignore[no-any-return]


def test_a_tampered_model_is_refused_and_a_bad_job_fails_alone(
    stack: LocalStack, dataset_end: Any, outcomes: list[JobOutcome]
) -> None:
    end, _ = dataset_end
    s3, bucket = stack.client("s3"), stack.physical["DataBucket"]
    version = end.strftime("%Y%m%dT%H%MZ")
    key = f"models/{INTEGRATION}/iforest/{version}.joblib"
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    retrain._MODELS.clear()  # a cold container: nothing verified in memory
    # When the business-tier scoring job (events/retrain-jobs.json) runs, beside a job with a bad id
    event = job_event(stack, end)
    response = stack.handler(RETRAINER)(event, lambda_context(RETRAINER))
    # Then the bad job alone is reported failed, and the tampered model is refused, not loaded
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    (outcome,) = outcomes
    assert outcome.status == "refused"
    assert "SHA-256" in (outcome.reason or "")
    assert outcome.alerts_published == 0
    record = objects(stack, f"models/{INTEGRATION}/iforest/runs/{version}-score.json")
    assert json.loads(next(iter(record.values())))["status"] == "refused"
