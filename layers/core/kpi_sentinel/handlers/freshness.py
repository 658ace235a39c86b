"""The freshness_check Lambda's wiring: every 5 minutes, ``missing_data`` alerts and their resolutions.

The use case is :func:`kpi_sentinel.operator_jobs.freshness.check` (its docstring has the rules:
cadence, grace, escalation, suppression, ids, the active window).

Input: the EventBridge schedule's ``Scheduled Event`` envelope (the check runs for its ``time``), or
``{"as_of": "<ISO 8601 with offset>"}`` to replay a moment (the local runner), or ``{}`` for now.

Environment:

* ``STATE_TABLE`` (required) — the ActiveIntegrations index (read) and the announced outages,
  items whose key starts ``freshness#`` (read, written, deleted);
* ``CONTROL_TABLE`` (required) — integration configs, snoozes and calendar (read);
* ``ALERTS_TOPIC_ARN`` (required) — where the alerts are published;
* ``ACTIVE_WITHIN_DAYS`` (7), ``GRACE_MIN_SECONDS`` (900), ``GRACE_CADENCES`` (1),
  ``CRITICAL_CADENCES`` (6), ``CRITICAL_MAX_SECONDS`` (86400) — see
  :class:`~kpi_sentinel.operator_jobs.freshness.FreshnessSettings`;
* ``CONTROL_CACHE_SECONDS`` (60) — how long a warm container keeps an integration's control items.

Metrics: ``MissingDataAlerts`` (announcements and escalations published), ``SyncsResumed``
(resolutions published), ``MissingDataSuppressed`` (late but snoozed or in maintenance).
No numpy, pandas or scikit-learn are imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from kpi_sentinel.operator_jobs.freshness import FreshnessSettings, check
from kpi_sentinel.operator_jobs.schedule import as_of
from kpi_sentinel.ports import FreshnessPorts

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})

REQUIRED = ("STATE_TABLE", "CONTROL_TABLE", "ALERTS_TOPIC_ARN")


@cache
def _aws_ports() -> tuple[FreshnessPorts, FreshnessSettings]:
    from kpi_sentinel.adapters.aws import DynamoActiveIndex, DynamoControl, DynamoFreshness, SnsPublisher

    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"freshness_check is missing environment variable(s): {', '.join(missing)}")
    ports = FreshnessPorts(
        index=DynamoActiveIndex(os.environ["STATE_TABLE"]),
        control=DynamoControl(
            os.environ["CONTROL_TABLE"], float(os.environ.get("CONTROL_CACHE_SECONDS", "60"))
        ),
        state=DynamoFreshness(os.environ["STATE_TABLE"]),
        publisher=SnsPublisher(os.environ["ALERTS_TOPIC_ARN"]),
        clock=lambda: datetime.now(UTC),
    )
    return ports, FreshnessSettings.from_env(os.environ)


def handle(
    event: Mapping[str, Any], ports: FreshnessPorts | None = None, settings: FreshnessSettings | None = None
) -> dict[str, Any]:
    """One check; returns the outcome (counts, the alert ids published, problems met)."""
    if ports is None:
        ports, settings = _aws_ports()
    moment = as_of(event, ports.clock())
    outcome = check(moment, ports, settings or FreshnessSettings())
    metrics.add_metric("MissingDataAlerts", MetricUnit.Count, outcome.alerts_published + outcome.escalated)
    metrics.add_metric("SyncsResumed", MetricUnit.Count, outcome.resolved)
    metrics.add_metric("MissingDataSuppressed", MetricUnit.Count, outcome.suppressed)
    for problem in outcome.problems:
        logger.warning("freshness problem", extra={"problem": problem})
    logger.info("freshness checked", extra={k: v for k, v in asdict(outcome).items() if k != "problems"})
    return asdict(outcome)


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event)
