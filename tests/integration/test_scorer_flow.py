"""The real ewma_scorer handler on the local stack, driven by events/ and by S3 notifications."""

from __future__ import annotations

import gzip
import io
import json
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from kpi_sentinel.adapters.aws import DynamoControl, DynamoState, S3Objects, SnsPublisher
from kpi_sentinel.demo import caught
from kpi_sentinel.handlers import scorer
from kpi_sentinel.local.stack import LocalStack
from kpi_sentinel.ports import ScorerPorts
from kpi_sentinel.scoring import IntegrationState
from kpi_sentinel.sync import ScorerSettings, SyncOutcome, SyncRef, process_sync
from kpi_sentinel.synthetic import SyncFile, demo_dataset

from tests.integration.conftest import SCORER, invoke, load_event, read_queue

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "layers/core/kpi_sentinel/schemas/alert-v1.json"


@pytest.fixture
def outcomes() -> Iterator[list[SyncOutcome]]:
    seen: list[SyncOutcome] = []
    scorer.observers.append(seen.append)
    yield seen
    scorer.observers.remove(seen.append)


def acme_files(days: int, integration: str) -> list[SyncFile]:
    """acme-ads synthetic syncs, renamed to an integration of the test's own."""
    files = [f for f in demo_dataset(days=days).files if f.integration_id == "acme-ads"]
    return [
        SyncFile(
            f.key.replace("syncs/acme-ads/", f"syncs/{integration}/"), f.body, f.period_start, integration
        )
        for f in files
    ]


def upload(stack: LocalStack, files: list[SyncFile]) -> None:
    s3, bucket = stack.client("s3"), stack.physical["IngestBucket"]
    for n, sync in enumerate(files, start=1):
        s3.put_object(Bucket=bucket, Key=sync.key, Body=sync.body)
        if n % 50 == 0:
            stack.drain(SCORER)
    stack.drain(SCORER)


def state_of(stack: LocalStack, integration: str) -> tuple[IntegrationState, int]:
    stored = DynamoState(stack.physical["StateTable"]).load(integration)
    assert stored.blob is not None
    return IntegrationState.from_bytes(stored.blob), stored.version


def test_sample_event_scores_the_sync_it_names(stack: LocalStack, outcomes: list[SyncOutcome]) -> None:
    # Given the object named by events/ingest-sync.json is in the ingest bucket
    body = (
        "timestamp,source,clicks,ngr\n2026-10-16T11:00:00Z,google,100,50.5\n2026-10-16T11:00:00Z,email,20,x\n"
    )
    stack.client("s3").put_object(
        Bucket=stack.physical["IngestBucket"], Key="syncs/acme-ads/2026/10/16/11.csv", Body=body
    )
    # (S3's own notification of that put is dropped: the sample event stands in for it)
    stack.client("sqs").purge_queue(QueueUrl=stack.queue_url("IngestQueue"))
    # When the scorer receives the sample event
    response = invoke(stack, load_event("ingest-sync.json", stack))
    # Then the record succeeds, the rows reconcile and the bad row is reported by row and field
    assert response == {"batchItemFailures": []}
    (outcome,) = outcomes
    assert outcome.status == "scored"
    assert (outcome.rows_in, outcome.rows_scored, outcome.rows_rejected) == (2, 1, 1)
    report = json.loads(
        stack.client("s3")
        .get_object(Bucket=stack.physical["IngestBucket"], Key=outcome.report_key)["Body"]
        .read()
    )
    assert report["rejected"][0]["row"] == 2
    assert report["rejected"][0]["field"] == "ngr"


def test_s3_test_event_is_acknowledged_and_ignored(stack: LocalStack, outcomes: list[SyncOutcome]) -> None:
    assert invoke(stack, load_event("s3-test-event.json", stack)) == {"batchItemFailures": []}
    assert outcomes == []


def test_a_poison_message_fails_alone_and_reaches_the_dlq(stack: LocalStack) -> None:
    # Given a batch with one good notification and one message that is not a notification
    stack.client("s3").put_object(
        Bucket=stack.physical["IngestBucket"],
        Key="syncs/acme-ads/2026/10/16/12.csv",
        Body="timestamp,source,clicks\n2026-10-16T12:00:00Z,google,90\n",
    )
    stack.drain(SCORER)
    response = invoke(stack, load_event("ingest-mixed-batch.json", stack))
    # Then only the poison message is reported as failed
    assert response == {"batchItemFailures": [{"itemIdentifier": "7a1b2c3d-0000-4000-8000-000000000002"}]}
    # And on the real queue it is retried a bounded number of times, then dead-lettered
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.queue_url("IngestQueue"), MessageBody="not json at all")
    for _ in range(8):
        stack.drain(SCORER)
    dead = stack.client("sqs").receive_message(QueueUrl=stack.queue_url("IngestDLQ"), MaxNumberOfMessages=10)
    assert [m["Body"] for m in dead.get("Messages", [])] == ["not json at all"]
    stack.client("sqs").purge_queue(QueueUrl=stack.queue_url("IngestDLQ"))


def test_crater_alert_flows_to_both_queues_and_redelivery_publishes_nothing(
    stack: LocalStack, outcomes: list[SyncOutcome]
) -> None:
    read_queue(stack, "SupportTriageQueue")
    read_queue(stack, "KpiReportQueue")
    dataset = demo_dataset(days=30)
    crater = next(i for i in dataset.incidents if i.kind == "source_crater")
    # Given 30 days of hourly acme-ads syncs dropped into the ingest bucket, one per hour
    files = acme_files(30, "flow-ads")
    upload(stack, files)
    # Then every file was scored and every row accounted for
    assert len(outcomes) == len(files)
    assert all(o.status == "scored" and o.rows_in == o.rows_scored + o.rows_rejected for o in outcomes)
    report = read_queue(stack, "KpiReportQueue")
    triage = read_queue(stack, "SupportTriageQueue")
    # And the crater's alert reached both queues, schema-valid, with the crater source as the culprit
    schema = json.loads(SCHEMA_FILE.read_text())
    for alert in report:
        jsonschema.validate(alert, schema)
    hit = caught(crater.__class__(**{**crater.__dict__, "integration_id": "flow-ads"}), report)
    assert hit is not None
    assert hit["alert_id"] in {a["alert_id"] for a in triage}
    assert "telegram-push" in hit["summary"]
    # And support triage only received warning-and-above (filter policy), the report queue everything
    assert {a["severity"] for a in triage} <= {"warning", "critical"}
    assert len(report) == sum(o.alerts_published for o in outcomes)
    assert len(triage) == sum(1 for a in report if a["severity"] != "info")

    # When the notification of the hour that raised the crater alert is delivered again (same object,
    # same sequencer; below daily data a break may need a second period to be confirmed)
    state_before, version_before = state_of(stack, "flow-ads")
    crater_key = next(f.key for f in files if f.period_start.isoformat() == hit["period_start"])
    crater_outcome = next(o for o in outcomes if o.key == crater_key)
    assert crater_outcome.alerts_published >= 1
    outcomes.clear()
    message = {"Records": [{"s3": {"bucket": {"name": stack.physical["IngestBucket"]},
                                   "object": {"key": crater_key, "sequencer": sequencer_of(state_before, crater_key)}}}]}  # fmt: skip
    stack.client("sqs").send_message(QueueUrl=stack.queue_url("IngestQueue"), MessageBody=json.dumps(message))
    stack.drain(SCORER)
    # Then it is a duplicate: no state change, nothing published twice
    assert [o.status for o in outcomes] == ["duplicate"]
    assert state_of(stack, "flow-ads")[1] == version_before
    assert read_queue(stack, "KpiReportQueue") == []

    # And the history store holds every scored period, partitioned by integration and date
    keys = [
        o["Key"]
        for page in stack.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=stack.physical["DataBucket"], Prefix="history/integration=flow-ads/")
        for o in page.get("Contents", [])
    ]
    assert {k.split("/")[2] for k in keys} == {
        f"date={d}" for d in {f.period_start.date().isoformat() for f in files}
    }
    frames = [
        pd.read_csv(io.BytesIO(stack.client("s3").get_object(Bucket=stack.physical["DataBucket"], Key=k)["Body"].read()),
                    compression="gzip")
        for k in keys[:48]
    ]  # fmt: skip
    history = pd.concat(frames)
    assert {"period_start", "metric", "observed", "expected", "score", "status"} <= set(history.columns)
    assert set(history["status"]) <= {"scored", "warmup", "late"}


def sequencer_of(state: IntegrationState, key: str) -> str:
    return next(s for s in state.processed if s.startswith(key + "#")).split("#", 1)[1]


def aws_ports(stack: LocalStack) -> tuple[ScorerPorts, ScorerSettings]:
    env = stack.functions[SCORER].environment
    ports = ScorerPorts(
        objects=S3Objects(),
        state=DynamoState(env["STATE_TABLE"]),
        control=DynamoControl(env["CONTROL_TABLE"], cache_seconds=0),
        publisher=SnsPublisher(env["ALERTS_TOPIC_ARN"]),
        clock=lambda: datetime.now(UTC),
    )
    return ports, ScorerSettings(ingest_bucket=env["INGEST_BUCKET"], data_bucket=env["DATA_BUCKET"])


def test_concurrent_syncs_of_one_integration_lose_no_update(stack: LocalStack) -> None:
    # Given 8 syncs of one integration, uploaded, and 4 workers that all read the state at once
    files = acme_files(2, "race-ads")[:8]
    s3 = stack.client("s3")
    for f in files:
        s3.put_object(Bucket=stack.physical["IngestBucket"], Key=f.key, Body=f.body)
    ports, settings = aws_ports(stack)
    barrier = threading.Barrier(4)
    real_load = ports.state.load
    first_loads = threading.local()

    def load_together(integration_id: str):  # type: ignore[no-untyped-def]
        stored = real_load(integration_id)
        if not getattr(first_loads, "done", False):
            first_loads.done = True
            barrier.wait(timeout=30)  # everyone holds the same version before anyone commits
        return stored

    object.__setattr__(ports.state, "load", load_together)
    refs = [SyncRef(stack.physical["IngestBucket"], f.key, len(f.body), f"v{n}") for n, f in enumerate(files)]
    # When they are processed concurrently
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda ref: process_sync(ref, ports, settings), refs))
    # Then optimistic concurrency made the losers retry, and every sync's update is in the state
    assert max(r.commit_attempts for r in results) > 1
    state, version = state_of(stack, "race-ads")
    assert {ref.sync_id for ref in refs} <= set(state.processed)
    assert version == len(refs)
    # And every row is accounted for: scored, or rejected as late if a later hour committed first
    assert sum(r.rows_in for r in results) == sum(r.rows_scored + r.rows_rejected for r in results)


def test_snooze_suppresses_and_is_counted(stack: LocalStack, outcomes: list[SyncOutcome]) -> None:
    # Given a snooze on the integration's NGR until tomorrow
    DynamoControl(stack.physical["ControlTable"]).put_snooze(
        {"integration_id": "snooze-ads", "snooze_id": "s1", "metric": "ngr",
         "until": (datetime.now(UTC) + timedelta(days=1)).timestamp(), "reason": "test"}
    )  # fmt: skip
    read_queue(stack, "KpiReportQueue")
    # When 30 days with the crater are scored
    upload(stack, acme_files(30, "snooze-ads"))
    published = read_queue(stack, "KpiReportQueue")
    # Then no NGR alert was published, and the suppressed ones were counted
    assert all(a["metric"] != "ngr" for a in published if a["integration_id"] == "snooze-ads")
    assert sum(o.alerts_suppressed for o in outcomes) >= 1


def test_unreadable_files_and_bad_keys_are_quarantined_not_retried(
    stack: LocalStack, outcomes: list[SyncOutcome]
) -> None:
    s3, bucket = stack.client("s3"), stack.physical["IngestBucket"]
    # Given a corrupt gzip, a file without a timestamp column, and a key outside the contract
    s3.put_object(Bucket=bucket, Key="syncs/q-ads/broken.csv.gz", Body=b"not gzip at all")
    s3.put_object(
        Bucket=bucket, Key="syncs/q-ads/no-time.csv", Body=gzip.decompress(gzip.compress(b"a,b\n1,2\n"))
    )
    s3.put_object(Bucket=bucket, Key="syncs/bad id!/x.csv", Body=b"timestamp,clicks\n")
    stack.drain(SCORER)
    # Then each is handled once, without a retry, and reported
    statuses = {o.key: o.status for o in outcomes}
    assert statuses == {
        "syncs/q-ads/broken.csv.gz": "quarantined",
        "syncs/q-ads/no-time.csv": "quarantined",
        "syncs/bad id!/x.csv": "rejected_key",
    }
    report = json.loads(
        s3.get_object(Bucket=bucket, Key="quarantine/q-ads/no-time.csv.report.json")["Body"].read()
    )
    assert report["file"] == "syncs/q-ads/no-time.csv"
    assert "timestamp" in report["reason"]
    assert (
        s3.get_object(Bucket=bucket, Key="quarantine/q-ads/broken.csv.gz")["Body"].read()
        == b"not gzip at all"
    )
    invalid = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="quarantine/_invalid-keys/")["Contents"]
    ]
    assert len(invalid) == 1
    assert "bad id!" not in invalid[0]
    assert stack.client("sqs").receive_message(QueueUrl=stack.queue_url("IngestDLQ")).get("Messages") is None


def test_a_calendar_event_in_the_control_table_suppresses_its_alerts(
    stack: LocalStack, outcomes: list[SyncOutcome]
) -> None:
    # Given the acme crater registered as planned maintenance in the global calendar
    crater = next(i for i in demo_dataset(days=30).incidents if i.kind == "source_crater")
    DynamoControl(stack.physical["ControlTable"]).put_event(
        {"event_id": "maint-1", "integration_id": "*", "kind": "maintenance", "name": "planned outage",
         "start": crater.start.timestamp(), "end": (crater.end + timedelta(hours=1)).timestamp()}
    )  # fmt: skip
    try:
        read_queue(stack, "KpiReportQueue")
        # When 30 days with the crater are scored
        upload(stack, acme_files(30, "calendar-ads"))
        published = read_queue(stack, "KpiReportQueue")
    finally:
        stack.client("dynamodb").delete_item(
            TableName=stack.physical["ControlTable"],
            Key={"pk": {"S": "integration#*"}, "sk": {"S": "calendar#maint-1"}},
        )
    # Then nothing inside the event was published, the suppressions were counted ...
    mine = [a for a in published if a["integration_id"] == "calendar-ads"]
    assert mine, "the rest of the month still alerts"
    assert not [a for a in mine if crater.start.isoformat() <= a["period_start"] <= crater.end.isoformat()]
    assert sum(o.alerts_suppressed for o in outcomes if o.integration_id == "calendar-ads") >= 1
    # ... and the history marks those periods as calendar
    s3, data = stack.client("s3"), stack.physical["DataBucket"]
    prefix = f"history/integration=calendar-ads/date={crater.start.date().isoformat()}/"
    frames = [
        pd.read_csv(io.BytesIO(s3.get_object(Bucket=data, Key=o["Key"])["Body"].read()), compression="gzip")
        for o in s3.list_objects_v2(Bucket=data, Prefix=prefix)["Contents"]
    ]
    assert (pd.concat(frames)["status"] == "calendar").any()


def five_minute_files(integration: str, days: int, crater: datetime) -> list[SyncFile]:
    """One file a day of 5-minute FTD counts (1-3 a period, daily profile); FTDs -85% in the hour
    from ``crater`` + 5 minutes."""
    rng = np.random.default_rng(7)
    start = crater.replace(hour=0) - timedelta(days=days - 1)
    files = []
    for day in range(days):
        first = start + timedelta(days=day)
        lines = ["timestamp,ftds"]
        for k in range(288):
            when = first + timedelta(minutes=5 * k)
            profile = 1.0 + 0.5 * math.sin(2 * math.pi * k / 288)
            low = crater < when < crater + timedelta(hours=1)
            lines.append(f"{when:%Y-%m-%dT%H:%M:%SZ},{rng.poisson(1.5 * profile * (0.15 if low else 1.0))}")
        body = ("\n".join(lines) + "\n").encode()
        files.append(SyncFile(f"syncs/{integration}/{first:%Y-%m-%d}.csv", body, first, integration))
    return files


def test_a_five_minute_crater_under_the_floor_alerts_from_the_hourly_rollup_to_both_queues(
    stack: LocalStack, outcomes: list[SyncOutcome]
) -> None:
    # Given a 5-minute integration whose FTDs per period are under its volume floor
    config = {"integration_id": "tick-ads", "granularity": "5min", "season_length": 288,
              "metrics": [{"name": "ftds", "bad_direction": "down", "min_volume": 10}]}  # fmt: skip
    DynamoControl(stack.physical["ControlTable"]).put_config("tick-ads", config)
    read_queue(stack, "SupportTriageQueue")
    read_queue(stack, "KpiReportQueue")
    crater = datetime(2026, 9, 7, 6, tzinfo=UTC)
    # When a week of it is dropped, a file a day, with FTDs cratering from 06:05 to 06:55 on the last
    upload(stack, five_minute_files("tick-ads", 7, crater))
    # Then the hour's alert reached both queues, schema-valid, about the hour
    report = [a for a in read_queue(stack, "KpiReportQueue") if a["integration_id"] == "tick-ads"]
    triage = [a for a in read_queue(stack, "SupportTriageQueue") if a["integration_id"] == "tick-ads"]
    schema = json.loads(SCHEMA_FILE.read_text())
    for alert in report:
        jsonschema.validate(alert, schema)
    hourly = [a for a in report if a["period_start"] == crater.isoformat() and a["metric"] == "ftds"]
    assert [(a["granularity_seconds"], a["direction"], a["period_end"]) for a in hourly] == [
        (3600, "down", (crater + timedelta(hours=1)).isoformat())
    ]
    assert "in the hour vs the 1-day baseline" in hourly[0]["summary"]
    assert hourly[0]["alert_id"] in {a["alert_id"] for a in triage}
    assert all(o.status == "scored" for o in outcomes if o.integration_id == "tick-ads")
    # And the stored state carries the roll-up, with the day's last hour scored
    state, _ = state_of(stack, "tick-ads")
    assert state.rollup is not None
    assert state.rollup.last_period == int((crater + timedelta(hours=18)).timestamp()) // 3600 - 1
