"""Alerts on the local stack from the SNS topic to the teams and to the report.

SNS publish (the scorer's publisher) -> SupportTriageQueue -> support_triage -> incidents table and the
team queues (schemas/incident-v1.json), a redelivered alert sending nothing, the SLA schedule
escalating what nobody acknowledged -> KpiReportQueue -> kpi_report -> recorded alerts -> the report
built through the function (events/report-build-range.json) into reports/ in the data bucket, with
hostile alert content rendered inert.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kpi_sentinel.adapters.aws import DynamoIncidents, SnsPublisher
from kpi_sentinel.local.stack import LocalStack, lambda_context

from tests.integration.conftest import EVENTS, read_queue

SCHEMAS = Path(__file__).resolve().parents[2] / "layers/core/kpi_sentinel/schemas"
INCIDENT_SCHEMA = json.loads((SCHEMAS / "incident-v1.json").read_text())
TRIAGE, REPORT = "SupportTriageFunction", "KpiReportFunction"
HOSTILE_VALUE = "<script>alert(1)</script>"
HOSTILE_CELL = '=HYPERLINK("http://x")'


def sample_alerts() -> list[dict[str, Any]]:
    """The alerts of events/report-alerts-batch.json (its third record repeats the first)."""
    records = json.loads((EVENTS / "report-alerts-batch.json").read_text())["Records"]
    return [json.loads(r["body"]) for r in records[:2]]


def hostile(alert: dict[str, Any]) -> dict[str, Any]:
    """A slice alert whose dimension value and summary are attacks on the report's readers."""
    evil = copy.deepcopy(alert)
    evil.update(
        alert_id="ewma-" + "e" * 32,
        dimension="source",
        dimension_value=HOSTILE_VALUE,
        severity="warning",
        summary=HOSTILE_CELL,
        contributors=[],
    )
    return evil


def publish(stack: LocalStack, alerts: list[dict[str, Any]]) -> None:
    stack.handler(TRIAGE)  # the runner's environment (endpoint, credentials) for the publisher's client
    SnsPublisher(stack.physical["AlertsTopic"]).publish(alerts)


def team_messages(stack: LocalStack) -> dict[str, list[dict[str, Any]]]:
    queues = {"revenue": "RevenueTeamQueue", "acquisition": "AcquisitionTeamQueue"}
    queues |= {"support-ops": "SupportOpsTeamQueue", "integrations": "IntegrationsTeamQueue"}
    return {team: read_queue(stack, queue) for team, queue in queues.items()}


@pytest.fixture(scope="module")
def triaged(stack: LocalStack) -> dict[str, Any]:
    # Alerts other tests of the session published wait on both queues: they are not this test's.
    read_queue(stack, "SupportTriageQueue")
    read_queue(stack, "KpiReportQueue")
    alerts = [*sample_alerts()]
    alerts.append(hostile(alerts[0]))
    publish(stack, alerts)
    delivered = stack.drain(TRIAGE)
    return {"alerts": alerts, "delivered": delivered, "messages": team_messages(stack)}


def test_alerts_become_incidents_on_their_teams_queues(stack: LocalStack, triaged: dict[str, Any]) -> None:
    # Given three warning/critical alerts published on the topic, when support_triage drains its queue
    assert triaged["delivered"] == 3
    messages = triaged["messages"]
    # Then the NGR crater (revenue family, critical) opened a revenue incident, and so did the FTD crater
    revenue = messages["revenue"]
    assert [m["event"] for m in revenue] == ["opened", "opened"]
    for message in revenue:
        jsonschema.validate(message, INCIDENT_SCHEMA)
    by_metric = {m["alert"]["metric"]: m for m in revenue}
    ngr = by_metric["ngr"]
    assert ngr["priority"] == "P2"  # critical, standard tier
    assert ngr["incident"]["status"] == "open"
    assert ngr["alert"]["summary"].startswith("NGR dropped 40%")
    assert ngr["dedup_key"].startswith(ngr["incident"]["incident_id"] + ":opened:")
    # And the hostile slice alert of acme-ads' NGR joined the NGR incident (same family, the total
    # overlaps every slice) instead of opening another one
    stored = DynamoIncidents(stack.physical["IncidentsTable"]).get(ngr["incident"]["incident_id"])
    assert stored is not None
    assert stored.record["count"] == 2
    assert sum(len(m) for m in messages.values()) == 2


def test_a_redelivered_alert_sends_nothing_again(stack: LocalStack, triaged: dict[str, Any]) -> None:
    publish(stack, triaged["alerts"][:1])
    assert stack.drain(TRIAGE) == 1
    assert sum(len(m) for m in team_messages(stack).values()) == 0


def test_a_malformed_alert_reaches_the_dead_letter_queue_alone(
    stack: LocalStack, triaged: dict[str, Any]
) -> None:
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.queue_url("SupportTriageQueue"), MessageBody='{"alert_id": "x"}')
    publish(stack, triaged["alerts"][1:2])  # a good one beside it: already triaged, a no-op
    stack.drain(TRIAGE)
    dead = read_queue(stack, "SupportTriageDLQ")
    assert dead == [{"alert_id": "x"}]


def test_the_sla_schedule_escalates_what_nobody_acknowledged(
    stack: LocalStack, triaged: dict[str, Any]
) -> None:
    store = DynamoIncidents(stack.physical["IncidentsTable"])
    revenue = {m["alert"]["metric"]: m["incident"] for m in triaged["messages"]["revenue"]}
    # Given the FTD incident was acknowledged within its SLA and the NGR one was not
    opened = datetime.fromisoformat(revenue["ftds"]["opened_at"])
    store.acknowledge(revenue["ftds"]["incident_id"], opened + timedelta(minutes=5))
    # When the SLA schedule (its input is events/schedule-sla-check.json) fires three hours later
    # (P2: 60 minutes to acknowledge)
    assert stack.functions[TRIAGE].schedules["SlaCheck"] == json.loads(
        (EVENTS / "schedule-sla-check.json").read_text()
    )
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    done = stack.trigger(TRIAGE, "SlaCheck", {"as_of": later})
    # Then only the NGR incident escalated, one level up, once
    assert done["escalated"] == 1
    (message,) = team_messages(stack)["revenue"]
    jsonschema.validate(message, INCIDENT_SCHEMA)
    assert message["event"] == "escalated"
    assert message["reason"] == "sla"
    assert message["priority"] == "P1"
    assert message["incident"]["incident_id"] == revenue["ngr"]["incident_id"]
    again = stack.trigger(TRIAGE, "SlaCheck", {"as_of": later})
    assert again["escalated"] == 0
    assert sum(len(m) for m in team_messages(stack).values()) == 0


def test_the_report_records_every_alert_and_renders_them_inert(
    stack: LocalStack, triaged: dict[str, Any]
) -> None:
    # Given the same alerts reached the kpi-report queue, when kpi_report drains it
    assert stack.drain(REPORT) >= 3
    # And the report is built for the alerts' day up to today (incidents open on the day triage saw them)
    request = json.loads((EVENTS / "report-build-range.json").read_text())
    request["end"] = datetime.now(UTC).date().isoformat()
    built = stack.handler(REPORT)(request, lambda_context(REPORT))
    # Then reports/<start>_<end>/ holds the page, the CSV and the summary
    s3, bucket = stack.client("s3"), stack.physical["DataBucket"]

    def read(name: str) -> str:
        return str(s3.get_object(Bucket=bucket, Key=built["prefix"] + name)["Body"].read().decode())

    page, table, summary = read("index.html"), read("alerts.csv"), json.loads(read("summary.json"))
    assert built["prefix"] == f"reports/{request['start']}_{request['end']}/"
    assert summary["alerts"]["total"] == 3
    assert "NGR dropped 40% vs the 7-day baseline" in page
    # The incidents triage opened, with the SLA figures from the acknowledgement and the escalation
    assert summary["incidents"]["opened"] == 2
    sla = summary["incidents"]["sla"]
    assert sla["acknowledged_within_sla"] == 1
    assert sla["adherence"] == 0.5
    # Hostile content is inert: no live script tag, the formula neutralised for spreadsheets
    assert HOSTILE_VALUE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    cells = [row for row in csv.reader(io.StringIO(table)) if row and row[0] == "ewma-" + "e" * 32]
    assert cells
    assert "'" + HOSTILE_CELL in cells[0]
    assert HOSTILE_CELL not in [c for c in cells[0] if not c.startswith("'")]
