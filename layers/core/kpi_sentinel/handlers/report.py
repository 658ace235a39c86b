"""The kpi_report Lambda's wiring: one function, three kinds of event.

* An SQS batch from the kpi-report queue (every published alert, raw SNS delivery): the alerts are
  recorded under ``alerts/`` in the data bucket (:mod:`kpi_sentinel.report.record`). A malformed
  message is a batch item failure — logged with its messageId and the field at fault — so it is
  retried and then lands in the queue's DLQ; the rest of the batch is recorded. If writing fails, the
  whole invocation fails and SQS redelivers the batch (rewriting an object is harmless).
* The daily EventBridge schedule (a ``Scheduled Event`` envelope with ``time``): the report of the
  UTC day before ``time``.
* ``{"action": "build_report", "start": "YYYY-MM-DD", "end": "YYYY-MM-DD", "integrations": [...]}``:
  the report of any range of at most ``MAX_RANGE_DAYS`` days (``end`` defaults to ``start``; without
  both, the UTC day before now; ``integrations`` is optional). A schedule with this as its input
  works too.

Environment: ``DATA_BUCKET`` and ``CONTROL_TABLE`` (operators' feedback labels) are required;
``INCIDENTS_TABLE`` is optional — without it the report says incidents and SLA adherence are
unavailable. Metrics: ``AlertsRecorded``, ``AlertsMalformed``, ``ReportsBuilt``.

Recording imports neither numpy nor matplotlib: building a report imports them when it runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import ReportPorts
from kpi_sentinel.report.record import MalformedAlert, parse_alert_message, record_alerts

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})
processor = BatchProcessor(event_type=EventType.SQS)

MAX_RANGE_DAYS = 31  # a month of reports fits one invocation; longer ranges: the CLI


class BadReportRequest(ValueError):
    """An invocation event that is neither an SQS batch, a schedule nor a build_report request."""


@dataclass(frozen=True)
class ReportRequest:
    start: date
    end: date
    integrations: tuple[str, ...] = ()

    @classmethod
    def from_event(cls, event: Mapping[str, Any], now: datetime) -> ReportRequest:
        """The range an invocation asks for; BadReportRequest names the field that is wrong."""
        if event.get("detail-type") == "Scheduled Event":
            try:
                fired = datetime.fromisoformat(str(event["time"]))
            except (KeyError, ValueError):
                raise BadReportRequest(
                    f"scheduled event field 'time' is not an ISO 8601 time: {event.get('time')!r}"
                ) from None
            if fired.tzinfo is None:
                raise BadReportRequest(f"scheduled event field 'time' needs a UTC offset: {event['time']!r}")
            day = fired.astimezone(UTC).date() - timedelta(days=1)
            return cls(day, day)
        if event.get("action") != "build_report":
            raise BadReportRequest(
                "event is not an SQS batch ('Records'), a Scheduled Event or "
                f"{{'action': 'build_report', ...}}; got keys {sorted(event)[:10]}"
            )
        yesterday = now.astimezone(UTC).date() - timedelta(days=1)
        start = _date(event, "start", yesterday)
        end = _date(event, "end", start if "start" in event else yesterday)
        if end < start:
            raise BadReportRequest(f"field 'end' {end.isoformat()} is before 'start' {start.isoformat()}")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise BadReportRequest(
                f"range {start.isoformat()}..{end.isoformat()} is longer than {MAX_RANGE_DAYS} days "
                "(build longer ranges with `kpi-sentinel report`)"
            )
        integrations = event.get("integrations") or []
        if not isinstance(integrations, list) or not all(
            isinstance(i, str) and INTEGRATION_ID.fullmatch(i) for i in integrations
        ):
            raise BadReportRequest(
                f"field 'integrations' must be a list of integration ids, got {integrations!r:.200}"
            )
        return cls(start, end, tuple(integrations))


def _date(event: Mapping[str, Any], name: str, default: date) -> date:
    if event.get(name) is None:
        return default
    try:
        return date.fromisoformat(str(event[name]))
    except ValueError:
        raise BadReportRequest(f"field {name!r} must be a date YYYY-MM-DD, got {event[name]!r:.80}") from None


@cache
def _aws_ports() -> ReportPorts:
    from kpi_sentinel.adapters.aws import DynamoFeedback, DynamoIncidents, S3Objects

    missing = [name for name in ("DATA_BUCKET", "CONTROL_TABLE") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"kpi_report is missing environment variable(s): {', '.join(missing)}")
    table = os.environ.get("INCIDENTS_TABLE")
    return ReportPorts(
        objects=S3Objects(),
        data_bucket=os.environ["DATA_BUCKET"],
        incidents=DynamoIncidents(table) if table else None,  # support triage's store, read side
        feedback=DynamoFeedback(os.environ["CONTROL_TABLE"]),
        clock=lambda: datetime.now(UTC),
    )


def parse_record(record: SQSRecord) -> dict[str, Any]:
    """One queue message as a checked alert; a malformed one is logged and fails alone."""
    try:
        return parse_alert_message(record.body)
    except MalformedAlert as exc:
        logger.warning(
            "malformed alert message",
            extra={"message_id": record.message_id, "field": exc.field, "reason": str(exc)},
        )
        metrics.add_metric("AlertsMalformed", MetricUnit.Count, 1)
        raise


def record_batch(event: Mapping[str, Any], context: Any, ports: ReportPorts) -> dict[str, Any]:
    """Check every message, then write the good ones; the response names the malformed ones."""
    with processor(records=list(event["Records"]), handler=parse_record, lambda_context=context):
        results = processor.process()
    alerts = [result for status, result, _ in results if status == "success"]
    written = record_alerts(ports.objects, ports.data_bucket, alerts)
    recorded = sum(w.alerts for w in written)
    metrics.add_metric("AlertsRecorded", MetricUnit.Count, recorded)
    logger.info(
        "alerts recorded",
        extra={
            "recorded": recorded,
            "objects": [w.key for w in written],
            "failed": len(processor.fail_messages),
        },
    )
    return dict(processor.response())


def build(request: ReportRequest, ports: ReportPorts) -> dict[str, Any]:
    from kpi_sentinel.report.build import build_report, write_report

    result = build_report(ports, request.start, request.end, request.integrations)
    written = write_report(result, ports)
    metrics.add_metric("ReportsBuilt", MetricUnit.Count, 1)
    outcome = {
        "report": result.name,
        "prefix": result.prefix,
        "written": written,
        "alerts": len(result.alerts),
        "integrations": len(result.integrations),
        "problems": len(result.problems),
    }
    logger.info("report built", extra=outcome)
    return outcome


def handle(event: Mapping[str, Any], context: Any, ports: ReportPorts | None = None) -> dict[str, Any]:
    if ports is None:
        ports = _aws_ports()
    if "Records" in event:
        return record_batch(event, context, ports)
    return build(ReportRequest.from_event(event, ports.clock()), ports)


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
