"""The ewma_scorer Lambda's wiring: SQS batch of S3 notifications -> process_sync per object.

The function module (``functions/ewma_scorer/app.py``) only re-exports :func:`lambda_handler`, so the
handler and its adapters can be driven by tests with in-memory ports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from kpi_sentinel.ports import ScorerPorts
from kpi_sentinel.sync import ScorerSettings, SyncOutcome, SyncRef, process_sync

# Explicit defaults: the local runner imports this module before it sets the function's environment.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
# The use cases log through the standard library; give them the handler's JSON format and correlation id.
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})
processor = BatchProcessor(event_type=EventType.SQS)
# In-process listeners for each sync's outcome (the local runner's demo summary uses this).
observers: list[Callable[[SyncOutcome], None]] = []


class NotAnS3Notification(ValueError):
    """An ingest-queue message that is neither an S3 notification nor S3's test event."""


@dataclass(frozen=True)
class ScorerConfig:
    settings: ScorerSettings
    state_table: str
    control_table: str
    alerts_topic_arn: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ScorerConfig:
        missing = [
            name
            for name in ("INGEST_BUCKET", "DATA_BUCKET", "STATE_TABLE", "CONTROL_TABLE", "ALERTS_TOPIC_ARN")
            if not env.get(name)
        ]
        if missing:
            raise RuntimeError(f"ewma_scorer is missing environment variable(s): {', '.join(missing)}")
        return cls(
            settings=ScorerSettings(
                ingest_bucket=env["INGEST_BUCKET"],
                data_bucket=env["DATA_BUCKET"],
                max_sync_bytes=int(env.get("MAX_SYNC_BYTES", str(50 * 1024 * 1024))),
            ),
            state_table=env["STATE_TABLE"],
            control_table=env["CONTROL_TABLE"],
            alerts_topic_arn=env["ALERTS_TOPIC_ARN"],
        )


@cache
def _aws_ports() -> tuple[ScorerPorts, ScorerSettings]:
    from kpi_sentinel.adapters.aws import DynamoState, DynamoTunedControl, S3Objects, SnsPublisher

    config = ScorerConfig.from_env(os.environ)
    ports = ScorerPorts(
        objects=S3Objects(),
        state=DynamoState(config.state_table),
        # Operator overrides, and the nightly tuning's thresholds where no operator set one.
        control=DynamoTunedControl(
            config.control_table, float(os.environ.get("CONTROL_CACHE_SECONDS", "30"))
        ),
        publisher=SnsPublisher(config.alerts_topic_arn),
        clock=lambda: datetime.now(UTC),
    )
    return ports, config.settings


def sync_refs(body: str) -> list[SyncRef]:
    """The objects named by one ingest-queue message (S3's test event names none)."""
    try:
        message = json.loads(body)
    except json.JSONDecodeError as exc:
        raise NotAnS3Notification(f"message body is not JSON: {exc.msg}") from exc
    if isinstance(message, dict) and message.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(message, dict) or not isinstance(message.get("Records"), list):
        raise NotAnS3Notification("message body has no 'Records' list")
    refs = []
    for record in message["Records"]:
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        if "key" not in obj or "name" not in s3.get("bucket", {}):
            raise NotAnS3Notification("record has no s3.bucket.name or s3.object.key")
        refs.append(
            SyncRef(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(obj["key"]),  # S3 URL-encodes keys in notifications
                size=obj.get("size"),
                version=obj.get("sequencer") or obj.get("versionId") or obj.get("eTag", ""),
            )
        )
    return refs


def record_outcome(outcome: SyncOutcome) -> None:
    metrics.add_metric("SyncsProcessed", MetricUnit.Count, 1)
    metrics.add_metric("RowsScored", MetricUnit.Count, outcome.rows_scored)
    metrics.add_metric("RowsRejected", MetricUnit.Count, outcome.rows_rejected)
    metrics.add_metric("AlertsPublished", MetricUnit.Count, outcome.alerts_published)
    metrics.add_metric("AlertsSuppressed", MetricUnit.Count, outcome.alerts_suppressed)
    metrics.add_metric("SyncProcessingTime", MetricUnit.Milliseconds, outcome.seconds * 1000)
    if outcome.status != "scored":
        metrics.add_metric(f"Syncs_{outcome.status}", MetricUnit.Count, 1)
    logger.info("sync processed", extra={k: v for k, v in vars(outcome).items() if k != "alerts"})


def handle_record(record: SQSRecord, ports: ScorerPorts, settings: ScorerSettings) -> list[SyncOutcome]:
    outcomes = []
    for ref in sync_refs(record.body):
        logger.set_correlation_id(ref.key)
        outcome = process_sync(ref, ports, settings)
        try:
            record_outcome(outcome)
        except Exception:  # the sync is committed: a metrics hiccup must not make SQS redeliver it
            logger.exception("could not record the outcome of a committed sync")
        for observer in observers:
            observer(outcome)
        outcomes.append(outcome)
    return outcomes


def handle(
    event: dict[str, Any],
    context: Any,
    ports: ScorerPorts | None = None,
    settings: ScorerSettings | None = None,
) -> dict[str, Any]:
    if ports is None or settings is None:
        ports, settings = _aws_ports()

    def one(record: SQSRecord) -> list[SyncOutcome]:
        return handle_record(record, ports, settings)

    response = process_partial_response(event=event, record_handler=one, processor=processor, context=context)
    return dict(response)


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
