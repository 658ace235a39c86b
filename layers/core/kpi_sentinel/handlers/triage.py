"""The support_triage Lambda's wiring: alerts -> incidents on team queues, and the SLA check.

One handler serves two event sources:

* **SupportTriageQueue** (SQS, raw SNS delivery: each body is one schema-v1 alert) -> :func:`triage_alert`
  per record, with partial batch failures. Warning and critical alerts open or update incidents; the
  freshness check's ``info`` resolution of a ``missing_data`` outage resolves the incidents of its
  alerts (a ``resolved`` message to each team); other info alerts are ignored. A malformed alert (not JSON, a missing or bad field, a bad
  integration id) is logged with its ``messageId`` and the field, counted in ``AlertsMalformed`` and
  reported as a batch item failure, so after the queue's retries it lands in SupportTriageDLQ; the rest
  of the batch succeeds.
* **the SLA schedule** (EventBridge, every 5 minutes) -> :func:`check_sla`: a ``Scheduled Event``
  envelope, or ``{"action": "sla_check"}`` (with an optional ``"as_of"`` ISO time to replay a moment).

Environment: ``INCIDENTS_TABLE``, ``TEAM_QUEUES`` (JSON object team -> queue URL; every team of the
rules needs one), ``ROUTING_RULES`` (optional ``s3://<bucket>/<key>`` or ``ssm:/<name>``; the packaged
rules otherwise), ``ROUTING_RULES_CACHE_SECONDS`` (300), ``INCIDENT_WINDOW_MINUTES`` (360) and
``POWERTOOLS_*``. Metrics: ``IncidentsOpened``, ``IncidentsUpdated``, ``AlertsDeduplicated``,
``Escalations``, ``SlaBreaches``, ``AlertsIgnored`` (info), ``AlertsMalformed``, ``IncidentMessagesSent``,
``ResolutionAlerts`` (resolutions that closed incidents) and ``IncidentsResolved`` (incidents they closed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from kpi_sentinel.triage.incidents import BadAlert, TriageOutcome, TriagePorts, TriageSettings, triage_alert
from kpi_sentinel.triage.messages import parse_team_queues, queues_checker
from kpi_sentinel.triage.routing import RoutingRules, RulesCache
from kpi_sentinel.triage.sla import SlaCheckFailed, SlaOutcome, check_sla

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})
processor = BatchProcessor(event_type=EventType.SQS)
# In-process listeners for each alert's outcome (the local runner's demo summary may use this).
observers: list[Callable[[TriageOutcome], None]] = []


class NotATriageEvent(ValueError):
    """An invocation that is neither an SQS batch nor an SLA check."""


class RulesProvider(Protocol):
    def get(self) -> RoutingRules: ...


@dataclass(frozen=True)
class TriageRuntime:
    ports: TriagePorts
    rules: RulesProvider
    settings: TriageSettings


@cache
def _aws_ports() -> TriageRuntime:
    from kpi_sentinel.adapters.aws import AwsRulesSource, DynamoIncidents, SqsTeamOutbox

    missing = [name for name in ("INCIDENTS_TABLE", "TEAM_QUEUES") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"support_triage is missing environment variable(s): {', '.join(missing)}")
    queues = parse_team_queues(os.environ["TEAM_QUEUES"])
    location = os.environ.get("ROUTING_RULES") or None
    rules = RulesCache(
        location,
        AwsRulesSource() if location else None,
        ttl_seconds=float(os.environ.get("ROUTING_RULES_CACHE_SECONDS", "300")),
        check=queues_checker(queues),
    )
    rules.get()  # a deployment whose rules do not load, or lack a team's queue, fails at once
    ports = TriagePorts(
        incidents=DynamoIncidents(os.environ["INCIDENTS_TABLE"]),
        outbox=SqsTeamOutbox(queues),
        clock=lambda: datetime.now(UTC),
    )
    return TriageRuntime(ports=ports, rules=rules, settings=TriageSettings.from_env(os.environ))


def is_sla_check(event: Mapping[str, Any]) -> bool:
    return event.get("detail-type") == "Scheduled Event" or event.get("action") == "sla_check"


def record_outcome(outcome: TriageOutcome) -> None:
    name = {
        "opened": "IncidentsOpened",
        "updated": "IncidentsUpdated",
        "duplicate": "AlertsDeduplicated",
        "ignored": "AlertsIgnored",
        "resolved": "ResolutionAlerts",
    }[outcome.status]
    metrics.add_metric(name, MetricUnit.Count, 1)
    if outcome.escalation:
        metrics.add_metric("Escalations", MetricUnit.Count, 1)
    if outcome.resolved_incidents:
        metrics.add_metric("IncidentsResolved", MetricUnit.Count, len(outcome.resolved_incidents))
    metrics.add_metric("IncidentMessagesSent", MetricUnit.Count, outcome.messages_sent)
    logger.info(
        "incidents resolved" if outcome.status == "resolved" else "alert triaged", extra=asdict(outcome)
    )


def handle_record(record: SQSRecord, rules: RoutingRules, runtime: TriageRuntime) -> TriageOutcome:
    try:
        try:
            raw = json.loads(record.body)
        except json.JSONDecodeError as exc:
            raise BadAlert("(body)", f"message body is not JSON: {exc.msg}") from exc
        outcome = triage_alert(raw, rules, runtime.ports, runtime.settings)
    except BadAlert as exc:
        logger.error(
            "malformed alert: it will reach the DLQ after the queue's retries",
            extra={
                "message_id": record.message_id,
                "field": exc.field,
                "alert_id": exc.alert_id,
                "reason": str(exc),
            },
        )
        metrics.add_metric("AlertsMalformed", MetricUnit.Count, 1)
        raise
    try:
        record_outcome(outcome)
    except Exception:  # the alert is triaged: a metrics hiccup must not make SQS redeliver it
        logger.exception("could not record the outcome of a triaged alert")
    for observer in observers:
        observer(outcome)
    return outcome


def run_sla_check(event: Mapping[str, Any], runtime: TriageRuntime) -> dict[str, Any]:
    now = None
    if event.get("as_of") is not None:
        now = datetime.fromisoformat(str(event["as_of"]))
        if now.tzinfo is None or now.utcoffset() is None:
            raise NotATriageEvent(f"as_of {event['as_of']!r} has no UTC offset")
    try:
        outcome = check_sla(runtime.rules.get(), runtime.ports, runtime.settings, now)
    except SlaCheckFailed as exc:
        _sla_metrics(exc.outcome)
        raise
    _sla_metrics(outcome)
    logger.info("SLA check done", extra=asdict(outcome))
    return asdict(outcome)


def _sla_metrics(outcome: SlaOutcome) -> None:
    metrics.add_metric("Escalations", MetricUnit.Count, outcome.escalated + outcome.breached)
    metrics.add_metric("SlaBreaches", MetricUnit.Count, outcome.breached)
    metrics.add_metric("IncidentMessagesSent", MetricUnit.Count, outcome.messages_sent + outcome.resent)


def handle(event: dict[str, Any], context: Any, runtime: TriageRuntime | None = None) -> dict[str, Any]:
    if runtime is None:
        runtime = _aws_ports()
    if is_sla_check(event):
        return run_sla_check(event, runtime)
    if not isinstance(event.get("Records"), list):
        raise NotATriageEvent(
            f"support_triage expects an SQS batch or an SLA check, got an event with keys {sorted(event)[:10]}"
        )
    rules = runtime.rules.get()  # once per batch: every record of it routes by the same rules

    def one(record: SQSRecord) -> TriageOutcome:
        return handle_record(record, rules, runtime)

    return dict(
        process_partial_response(event=event, record_handler=one, processor=processor, context=context)
    )


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
