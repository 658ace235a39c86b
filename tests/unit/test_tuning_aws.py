"""Threshold tuning's DynamoDB adapter and the scorer's tuned control store on in-process moto, and one
nightly run through the AWS adapters (index, control table, history in S3) via the handler."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest
from kpi_sentinel.adapters import aws
from kpi_sentinel.adapters.aws import DynamoOperatorStore, DynamoTunedControl, DynamoTuning
from kpi_sentinel.handlers import tuning as handler
from kpi_sentinel.operator_jobs.tuning import record_key
from kpi_sentinel.ports import StateConflict, TunedThreshold
from moto import mock_aws

from tests.unit.aws_tables import create_table, offline_aws
from tests.unit.test_freshness_aws import CONTROL, REGION, STATE, _synced
from tests.unit.test_tuning import AS_OF, DATA, IID, World, _labelled_fixture

AUDIT = {
    "audit_id": "2026-11-25T02:03:00+00:00#0123456789abcdef",
    "kind": "threshold_tuned",
    "subject": "ngr",
    "who": "threshold-tuning",
    "at": "2026-11-25T02:03:00+00:00",
    "old": {"threshold": 3.5},
    "new": {"threshold": 3.7},
    "reason": "raised from 3.5 to 3.7",
    "run_id": "20261125T0200Z",
    "evidence": {"labels": {"true_positive": 3, "false_positive": 4, "expected": 1}},
}


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    offline_aws(monkeypatch, REGION)
    handler._aws_ports.cache_clear()
    with mock_aws():
        create_table("StateTable", STATE, REGION)
        create_table("ControlTable", CONTROL, REGION)
        boto3.client("s3").create_bucket(
            Bucket=DATA, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        for name, value in (("STATE_TABLE", STATE), ("CONTROL_TABLE", CONTROL), ("DATA_BUCKET", DATA)):
            monkeypatch.setenv(name, value)
        yield
    aws.client.cache_clear()
    handler._aws_ports.cache_clear()


def _put(item: dict[str, dict[str, str]]) -> None:
    boto3.client("dynamodb").put_item(TableName=CONTROL, Item=item)


def test_given_control_items_when_read_for_tuning_then_labels_overrides_tuned_and_config_come_back(
    moto: None,
) -> None:
    pk = {"S": f"integration#{IID}"}
    _put(
        {
            "pk": pk,
            "sk": {"S": "feedback#ewma-" + "1" * 32},
            "label": {"S": "true_positive"},
            "note": {"S": "x"},
        }
    )
    _put({"pk": pk, "sk": {"S": "feedback#ewma-" + "2" * 32}, "label": {"S": "false_positive"}})
    _put(
        {
            "pk": {"S": "integration#globex"},
            "sk": {"S": "feedback#ewma-" + "3" * 32},
            "label": {"S": "expected"},
        }
    )
    _put({"pk": pk, "sk": {"S": "override#ngr"}, "threshold": {"N": "6"}, "version": {"N": "1"}})
    _put({"pk": pk, "sk": {"S": "override#ftds"}, "min_volume": {"N": "5"}, "version": {"N": "1"}})
    _put({"pk": pk, "sk": {"S": "config"}, "config": {"S": json.dumps({"threshold": 4.0})}})
    store = DynamoTuning(CONTROL)
    tuned = TunedThreshold("clicks", 4.2, 3.5, "2026-11-25T02:03:00+00:00", "20261125T0200Z", 1)
    store.save_tuned(IID, tuned, AUDIT)
    inputs = store.inputs(IID)
    assert dict(inputs.labels) == {"ewma-" + "1" * 32: "true_positive", "ewma-" + "2" * 32: "false_positive"}
    assert dict(inputs.overrides) == {"ngr": 6.0}  # an override of floors only is not a threshold
    assert dict(inputs.tuned) == {"clicks": tuned}
    assert inputs.config == {"threshold": 4.0}
    assert store.labels("nobody") == {}


def test_given_a_tuned_threshold_when_saved_then_the_audit_entry_reads_like_the_operator_apis(
    moto: None,
) -> None:
    store = DynamoTuning(CONTROL)
    tuned = TunedThreshold("ngr", 3.7, 3.5, "2026-11-25T02:03:00+00:00", "20261125T0200Z", 1)
    store.save_tuned(IID, tuned, AUDIT)
    with pytest.raises(StateConflict):
        store.save_tuned(IID, tuned, {**AUDIT, "audit_id": "2026-11-25T02:04:00+00:00#x"})  # stale version
    with pytest.raises(StateConflict):
        store.save_tuned(IID, TunedThreshold("ngr", 4.0, 3.7, "t", "r", 2), AUDIT)  # audit id taken
    [entry] = DynamoOperatorStore(CONTROL).audit(IID, 10)
    assert entry["audit_id"] == AUDIT["audit_id"]
    assert (entry["kind"], entry["subject"], entry["who"]) == ("threshold_tuned", "ngr", "threshold-tuning")
    assert (entry["old"], entry["new"]) == ({"threshold": 3.5}, {"threshold": 3.7})
    item = boto3.client("dynamodb").get_item(
        TableName=CONTROL, Key={"pk": {"S": f"integration#{IID}"}, "sk": {"S": f"audit#{AUDIT['audit_id']}"}}
    )["Item"]
    assert json.loads(item["evidence"]["S"]) == AUDIT["evidence"]
    assert store.inputs(IID).tuned["ngr"] == tuned


def test_given_tuned_thresholds_when_the_scorer_reads_its_overrides_then_an_operators_threshold_wins(
    moto: None,
) -> None:
    store = DynamoTuning(CONTROL)
    for n, metric in enumerate(("ngr", "ftds", "clicks")):
        tuned = TunedThreshold(metric, 4.5, 3.5, "t", "r", 1)
        store.save_tuned(IID, tuned, {**AUDIT, "audit_id": f"t#{n}", "subject": metric})
    pk = {"S": f"integration#{IID}"}
    _put({"pk": pk, "sk": {"S": "override#ftds"}, "threshold": {"N": "6"}, "version": {"N": "1"}})
    _put({"pk": pk, "sk": {"S": "override#ngr"}, "min_volume": {"N": "5"}, "version": {"N": "1"}})
    _put(
        {
            "pk": pk,
            "sk": {"S": "config"},
            "config": {"S": json.dumps({"metrics": [{"name": "clicks", "threshold": 3.0}]})},
        }
    )
    assert DynamoTunedControl(CONTROL).metric_overrides(IID) == {
        "ngr": {"min_volume": 5.0, "threshold": 4.5},
        "ftds": {"threshold": 6.0},
    }
    assert DynamoTunedControl(CONTROL).metric_overrides("globex") == {}


def test_given_labels_and_history_in_aws_when_the_nightly_handler_runs_then_the_threshold_is_tuned_and_recorded(
    moto: None,
) -> None:
    world = World()
    _labelled_fixture(world)
    s3 = boto3.client("s3")
    for (bucket, key), body in world.objects.objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    for (integration, alert), label in world.store.labels_by_alert.items():
        _put(
            {
                "pk": {"S": f"integration#{integration}"},
                "sk": {"S": f"feedback#{alert}"},
                "label": {"S": label},
            }
        )
    _synced(IID, AS_OF - timedelta(minutes=10))
    result = handler.handle({"as_of": AS_OF.isoformat()})
    assert result["changes"] == [{"integration_id": IID, "metric": "ngr", "old": 3.5, "new": 3.7}]
    assert DynamoTuning(CONTROL).inputs(IID).tuned["ngr"].threshold == 3.7
    record = json.loads(s3.get_object(Bucket=DATA, Key=record_key(IID, "20261125T0200Z"))["Body"].read())
    assert record["status"] == "tuned"
    assert handler.handle({"as_of": AS_OF.isoformat()})["thresholds_tuned"] == 0
    assert len(DynamoOperatorStore(CONTROL).audit(IID, 10)) == 1
