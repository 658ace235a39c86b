"""The iforest_retrainer Lambda's wiring: SQS batch of jobs -> run_job per job, partial batch failures.

A job that fails (S3 or DynamoDB trouble) is reported as a batch item failure and retried by SQS; after
3 receives it lands in RetrainDLQ. A job that cannot run at all (bad message) fails the same way, so
it reaches the DLQ with its error in the logs. A refused model is not a failure: the job succeeds with
status ``refused`` (counted in ``ModelsRefused``) and the integration keeps the EWMA alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from kpi_sentinel.forest.retrain import BadJob, ForestSettings, Job, JobOutcome, run_job
from kpi_sentinel.ports import ForestPorts

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})
processor = BatchProcessor(event_type=EventType.SQS)
# In-process listeners for each job's outcome (the local runner's demo summary uses this).
observers: list[Callable[[JobOutcome], None]] = []


@cache
def _signing_key() -> bytes:
    from kpi_sentinel.adapters.aws import secret_value

    arn = os.environ.get("MODEL_SIGNING_SECRET_ARN")
    if not arn:
        raise RuntimeError("iforest_retrainer is missing environment variable MODEL_SIGNING_SECRET_ARN")
    return secret_value(arn)


@cache
def _aws_ports() -> tuple[ForestPorts, ForestSettings]:
    from kpi_sentinel.adapters.aws import DynamoControl, DynamoLedger, DynamoState, S3Objects, SnsPublisher

    missing = [n for n in ("STATE_TABLE", "CONTROL_TABLE", "ALERTS_TOPIC_ARN") if not os.environ.get(n)]
    if missing:
        raise RuntimeError(f"iforest_retrainer is missing environment variable(s): {', '.join(missing)}")
    ports = ForestPorts(
        objects=S3Objects(),
        state=DynamoState(os.environ["STATE_TABLE"]),
        control=DynamoControl(
            os.environ["CONTROL_TABLE"], float(os.environ.get("CONTROL_CACHE_SECONDS", "30"))
        ),
        ledger=DynamoLedger(os.environ["STATE_TABLE"]),
        publisher=SnsPublisher(os.environ["ALERTS_TOPIC_ARN"]),
        clock=lambda: datetime.now(UTC),
        signing_key=_signing_key,
    )
    return ports, ForestSettings.from_env(os.environ)


def record_outcome(outcome: JobOutcome) -> None:
    metrics.add_metric(f"ForestJobs_{outcome.status}", MetricUnit.Count, 1)
    if outcome.status == "refused":
        metrics.add_metric("ModelsRefused", MetricUnit.Count, 1)
    metrics.add_metric("ForestAlertsPublished", MetricUnit.Count, outcome.alerts_published)
    metrics.add_metric("ForestJobTime", MetricUnit.Milliseconds, outcome.seconds * 1000)
    logger.info("forest job done", extra={k: v for k, v in outcome.record().items() if k != "alert_ids"})


def handle_record(record: SQSRecord, ports: ForestPorts, settings: ForestSettings) -> JobOutcome:
    try:
        raw = json.loads(record.body)
    except json.JSONDecodeError as exc:
        raise BadJob(f"job message is not JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise BadJob("job message is not a JSON object")
    job = Job.from_dict(raw)
    logger.set_correlation_id(f"{job.integration_id}/{job.run_id}/{job.mode}")
    outcome = run_job(job, ports, settings)
    try:
        record_outcome(outcome)
    except Exception:  # the job's effects are done: a metrics hiccup must not make SQS redeliver it
        logger.exception("could not record the outcome of a finished job")
    for observer in observers:
        observer(outcome)
    return outcome


def handle(
    event: dict[str, Any],
    context: Any,
    ports: ForestPorts | None = None,
    settings: ForestSettings | None = None,
) -> dict[str, Any]:
    if ports is None or settings is None:
        ports, settings = _aws_ports()

    def one(record: SQSRecord) -> JobOutcome:
        return handle_record(record, ports, settings)

    return dict(
        process_partial_response(event=event, record_handler=one, processor=processor, context=context)
    )


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
