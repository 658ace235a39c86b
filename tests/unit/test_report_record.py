"""Recording alerts from the kpi-report queue: one object per batch and date, idempotent, poison isolated."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from kpi_sentinel.adapters.memory import MemoryObjects
from kpi_sentinel.handlers import report as handler
from kpi_sentinel.ports import ReportPorts
from kpi_sentinel.report.data import read_recorded_alerts
from kpi_sentinel.report.record import (
    MalformedAlert,
    alerts_key,
    parse_alert_message,
    record_alerts,
    validate_alert,
)

from tests.unit.report_fixture import A1, A2, A3, AS_OF, DATA, DAY, G2, make_alert

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _ports(objects: MemoryObjects) -> ReportPorts:
    return ReportPorts(objects=objects, data_bucket=DATA, incidents=None, feedback=None, clock=lambda: AS_OF)


def _record(message_id: str, body: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:KpiReportQueue",
        "awsRegion": "us-east-1",
    }


def _batch(*bodies: str) -> dict[str, Any]:
    return {"Records": [_record(f"m{n}", body) for n, body in enumerate(bodies, start=1)]}


def _lines(objects: MemoryObjects, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(objects.get(DATA, key)).decode().splitlines()]


def test_given_a_batch_when_recorded_then_one_gzip_jsonl_object_per_period_start_date_holds_its_alerts() -> (
    None
):
    # Given alerts of the report day and one of the day after in one batch
    tomorrow = make_alert("acme-ads", "ngr", 25, "warning")  # 2026-11-25T01:00
    objects = MemoryObjects()

    # When the handler records the batch
    response = handler.handle(_batch(*(json.dumps(a) for a in (A1, A2, tomorrow))), None, _ports(objects))

    # Then nothing failed, and each date has one object named by its alerts' ids
    assert response == {"batchItemFailures": []}
    assert objects.keys(DATA) == sorted(
        [
            alerts_key(DAY, [A1["alert_id"], A2["alert_id"]]),
            alerts_key(DAY + timedelta(days=1), [tomorrow["alert_id"]]),
        ]
    )
    day_key = alerts_key(DAY, [A1["alert_id"], A2["alert_id"]])
    assert day_key.startswith("alerts/date=2026-11-24/")
    assert day_key.endswith(".jsonl.gz")
    assert {a["alert_id"] for a in _lines(objects, day_key)} == {A1["alert_id"], A2["alert_id"]}
    assert _lines(objects, day_key)[0] in (A1, A2)  # the alert as published, every field kept


def test_given_a_redelivered_batch_when_recorded_again_then_the_same_object_is_rewritten_with_the_same_bytes() -> (
    None
):
    objects = MemoryObjects()
    event = _batch(json.dumps(A1), json.dumps(A2))
    handler.handle(event, None, _ports(objects))
    first = dict(objects.objects)

    # When SQS delivers the same messages again, in another order
    handler.handle(_batch(json.dumps(A2), json.dumps(A1)), None, _ports(objects))

    # Then the bucket holds exactly what it held: same key, same bytes
    assert objects.objects == first


def test_given_a_regrouped_redelivery_when_read_then_each_alert_is_counted_once() -> None:
    # Given A1 recorded once alone and once in another batch with A2
    objects = MemoryObjects()
    handler.handle(_batch(json.dumps(A1)), None, _ports(objects))
    handler.handle(_batch(json.dumps(A1), json.dumps(A2)), None, _ports(objects))
    assert len(objects.keys(DATA, "alerts/")) == 2

    # When the report reads the day
    alerts, problems = read_recorded_alerts(objects, DATA, [DAY])

    # Then A1 is there once
    assert sorted(a["alert_id"] for a in alerts) == sorted([A1["alert_id"], A2["alert_id"]])
    assert problems == []


def test_given_the_sample_batch_with_a_poison_message_when_handled_then_only_it_fails_and_the_rest_is_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given events/report-alerts-batch.json: two good alerts and one whose integration id is a path
    event = json.loads((EVENTS / "report-alerts-batch.json").read_text())
    objects = MemoryObjects()

    # When the handler runs
    with caplog.at_level("WARNING"):
        response = handler.handle(event, None, _ports(objects))

    # Then the poison message is the one batch item failure (SQS retries it, then the DLQ takes it)
    poison = event["Records"][2]["messageId"]
    assert response == {"batchItemFailures": [{"itemIdentifier": poison}]}
    # and the two good alerts are recorded
    alerts, _ = read_recorded_alerts(objects, DATA, [DAY])
    assert sorted(a["alert_id"] for a in alerts) == sorted([A1["alert_id"], G2["alert_id"]])
    # and the log names the message and the field
    logged = [r for r in caplog.records if r.getMessage() == "malformed alert message"]
    assert len(logged) == 1
    assert logged[0].message_id == poison  # type: ignore[attr-defined]
    assert logged[0].field == "integration_id"  # type: ignore[attr-defined]


def test_given_a_batch_of_only_malformed_messages_when_handled_then_the_invocation_fails_and_nothing_is_written() -> (
    None
):
    objects = MemoryObjects()
    with pytest.raises(BatchProcessingError):
        handler.handle(_batch("not json", "{}"), None, _ports(objects))
    assert objects.keys(DATA) == []


def _without(field: str) -> dict[str, Any]:
    alert = copy.deepcopy(A1)
    del alert[field]
    return alert


def _with(field: str, value: Any) -> dict[str, Any]:
    alert = copy.deepcopy(A1)
    alert[field] = value
    return alert


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("{not json", "(message)", "is not JSON"),
        ("[1, 2]", "(message)", "must be a JSON object"),
        (json.dumps(_without("alert_id")), "alert_id", "is missing"),
        (json.dumps(_with("alert_id", "../x")), "alert_id", "is not <detector>-<32 hex>"),
        (json.dumps(_without("integration_id")), "integration_id", "is missing"),
        (json.dumps(_with("integration_id", "../../etc")), "integration_id", "not a valid integration id"),
        (json.dumps(_without("period_start")), "period_start", "is missing"),
        (json.dumps(_with("period_start", "yesterday")), "period_start", "not an ISO 8601 time"),
        (json.dumps(_with("period_start", "2026-11-24T10:00:00")), "period_start", "needs a UTC offset"),
        (json.dumps(_with("severity", "panic")), "severity", "must be one of info, warning, critical"),
        (json.dumps(_with("observed", "12")), "observed", "must be a finite number"),
        (json.dumps(_with("deviation", {"percent": "x"})), "deviation.percent", "number or null"),
        (json.dumps(_with("contributors", [{"dimension": "source"}])), "contributors[0]", "numeric share"),
        (json.dumps(_with("metric", "")), "metric", "non-empty string"),
    ],
)
def test_given_a_malformed_message_when_parsed_then_the_error_names_the_field(
    body: str, field: str, words: str
) -> None:
    with pytest.raises(MalformedAlert) as raised:
        parse_alert_message(body)
    assert raised.value.field == field
    assert words in str(raised.value)
    assert f"'{field}'" in str(raised.value)


def test_given_an_sns_envelope_when_parsed_then_its_message_is_the_alert() -> None:
    # Raw delivery switched off by mistake must not send every alert to the DLQ.
    envelope = {"Type": "Notification", "MessageId": "x", "Message": json.dumps(A3)}
    assert parse_alert_message(json.dumps(envelope)) == A3


def test_given_an_alert_with_fields_the_report_does_not_read_when_validated_then_they_are_kept() -> None:
    alert = _with("anomaly_score", 0.71)
    assert validate_alert(copy.deepcopy(alert)) == alert


def test_given_the_same_alert_twice_in_a_batch_when_recorded_then_it_is_written_once() -> None:
    objects = MemoryObjects()
    written = record_alerts(objects, DATA, [A1, A1, A2])
    assert [w.alerts for w in written] == [2]
    assert len(_lines(objects, written[0].key)) == 2


class RefusingObjects(MemoryObjects):
    """A bucket that refuses writes (S3 throttling or an outage)."""

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        raise ConnectionError("S3 is unreachable")


def test_given_the_bucket_refuses_the_write_when_a_batch_is_handled_then_the_invocation_fails_whole() -> None:
    # Then SQS redelivers every message of the batch: nothing is lost, and rewriting is harmless.
    with pytest.raises(ConnectionError, match="S3 is unreachable"):
        handler.handle(_batch(json.dumps(A1), "not json"), None, _ports(RefusingObjects()))
