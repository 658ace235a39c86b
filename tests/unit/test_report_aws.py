"""The report's boto3 side on moto in-process (no server, no network): feedback labels, the CLI, the handler.

The local-stack integration tests (tests/integration/) drive the deployed template; these check the
adapters and entry points the report adds, against moto's S3 and DynamoDB directly.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from kpi_sentinel import cli
from kpi_sentinel.adapters import aws
from kpi_sentinel.adapters.aws import DynamoFeedback
from kpi_sentinel.handlers import report as handler
from moto import mock_aws

from tests.unit.aws_tables import create_table, offline_aws
from tests.unit.report_fixture import A1, DATA, G2, LABELS, fixture_day

CONTROL = "control-table"
EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    offline_aws(monkeypatch, "us-east-1")
    handler._aws_ports.cache_clear()
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=DATA)
        create_table("ControlTable", CONTROL, "us-east-1")
        yield
    aws.client.cache_clear()
    handler._aws_ports.cache_clear()


def _upload_fixture() -> None:
    """The fixture day's bucket and labels, in moto."""
    fixture = fixture_day()
    s3 = boto3.client("s3")
    for (bucket, key), body in fixture.objects.objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    feedback = DynamoFeedback(CONTROL)
    for (integration, alert), label in LABELS.items():
        feedback.put_label(integration, alert, label)


def test_given_labels_in_the_control_table_when_read_then_only_the_asked_integrations_labels_come_back(
    moto: None,
) -> None:
    feedback = DynamoFeedback(CONTROL)
    ids = [f"ewma-{n:032x}" for n in range(150)]  # two BatchGetItem calls
    feedback.put_label("acme-ads", ids[0], "true_positive")
    feedback.put_label("acme-ads", ids[120], "false_positive")
    feedback.put_label("acme-ads", ids[149], "expected")
    feedback.put_label("globex-traffic", ids[1], "true_positive")  # another integration's label
    assert feedback.labels("acme-ads", ids) == {
        ids[0]: "true_positive",
        ids[120]: "false_positive",
        ids[149]: "expected",
    }
    assert feedback.labels("acme-ads", []) == {}


def test_given_a_bucket_when_the_cli_builds_a_report_to_a_folder_then_it_matches_the_memory_build(
    moto: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload_fixture()
    code = cli.main(
        [
            "report",
            "--bucket",
            DATA,
            "--start",
            "2026-11-24",
            "--control-table",
            CONTROL,
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["alerts"]["total"] == 6
    assert summary["precision"]["precision"] == 0.5
    assert summary["incidents"] == {"available": False}  # no --incidents-table
    assert summary["suppressed"]["total"] == 6
    assert summary["integrations"]["acme-ads"]["plotted_metrics"] == ["ngr", "signups", "clicks"]
    err = capsys.readouterr().err
    assert "report 2026-11-24: 6 alerts, 3 integrations, 0 data problem(s); incidents unavailable" in err
    # nothing was written to the bucket
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=DATA, Prefix="reports/")


def test_given_a_bucket_when_the_cli_builds_a_range_without_out_then_it_is_stored_in_the_bucket(
    moto: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload_fixture()
    assert cli.main(["report", "--bucket", DATA, "--start", "2026-11-23", "--end", "2026-11-24"]) == 0
    listed = boto3.client("s3").list_objects_v2(Bucket=DATA, Prefix="reports/")
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert keys == [
        f"reports/2026-11-23_2026-11-24/{n}" for n in ("alerts.csv", "index.html", "summary.json")
    ]
    head = boto3.client("s3").head_object(Bucket=DATA, Key="reports/2026-11-23_2026-11-24/index.html")
    assert head["ContentType"] == "text/html; charset=utf-8"
    assert f"s3://{DATA}/reports/2026-11-23_2026-11-24/index.html" in capsys.readouterr().out


def test_given_a_backwards_range_when_the_cli_runs_then_it_says_so(
    moto: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", "--bucket", DATA, "--start", "2026-11-24", "--end", "2026-11-01"]) == 2
    assert "--end 2026-11-01 is before --start 2026-11-24" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["report", "--bucket", DATA, "--start", "24.11.2026"])
    assert "not a date YYYY-MM-DD: '24.11.2026'" in capsys.readouterr().err


def _context() -> Any:
    return SimpleNamespace(
        function_name="kpi-report",
        memory_limit_in_mb=1024,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:kpi-report",
        aws_request_id="req-1",
    )


def test_given_the_deployed_environment_when_lambda_handler_records_and_then_builds_then_both_land_in_s3(
    moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_BUCKET", DATA)
    monkeypatch.setenv("CONTROL_TABLE", CONTROL)
    monkeypatch.delenv("INCIDENTS_TABLE", raising=False)
    batch = json.loads((EVENTS / "report-alerts-batch.json").read_text())

    response = handler.lambda_handler(batch, _context())

    assert response == {"batchItemFailures": [{"itemIdentifier": batch["Records"][2]["messageId"]}]}
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=DATA, Prefix="alerts/")["Contents"]]
    assert len(keys) == 1
    assert keys[0].startswith("alerts/date=2026-11-24/")

    outcome = handler.lambda_handler(
        json.loads((EVENTS / "report-daily-schedule.json").read_text()), _context()
    )

    assert (outcome["report"], outcome["alerts"]) == ("2026-11-24", 2)
    summary = json.loads(s3.get_object(Bucket=DATA, Key="reports/2026-11-24/summary.json")["Body"].read())
    assert summary["alerts"]["by_integration"] == {"acme-ads": 1, "globex-traffic": 1}
    table = s3.get_object(Bucket=DATA, Key="reports/2026-11-24/alerts.csv")["Body"].read().decode()
    assert [row["alert_id"] for row in csv.DictReader(io.StringIO(table))] == [A1["alert_id"], G2["alert_id"]]
