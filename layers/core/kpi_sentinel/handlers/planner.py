"""The retrain_planner Lambda's wiring: a schedule's input -> one job per active integration.

Two EventBridge schedules invoke it (see template.yaml): the nightly retrain ``{"mode": "retrain"}``,
whose jobs go to the retrain queue, and the business-tier scoring ``{"mode": "score", "tier":
"business"}``, whose jobs go to the scoring queue (the retrainer consumes it with capacity of its own,
so scoring never waits behind the night's backlog). An ``as_of`` time in the input
replays a past night (the local runner's demo uses it). No numpy, pandas or scikit-learn are imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from kpi_sentinel.forest.planner import PlanRequest, plan
from kpi_sentinel.ports import PlannerPorts

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))


QUEUE_VARIABLES = {"retrain": "RETRAIN_QUEUE_URL", "score": "SCORING_QUEUE_URL"}  # job mode -> queue


def _settings(env: Mapping[str, str], mode: str) -> tuple[str, str, float]:
    missing = [name for name in ("STATE_TABLE", QUEUE_VARIABLES[mode]) if not env.get(name)]
    if missing:
        raise RuntimeError(f"retrain_planner is missing environment variable(s): {', '.join(missing)}")
    return env["STATE_TABLE"], env[QUEUE_VARIABLES[mode]], float(env.get("ACTIVE_WITHIN_DAYS", "7"))


@cache
def _aws_ports(mode: str) -> tuple[PlannerPorts, float]:
    from kpi_sentinel.adapters.aws import DynamoActiveIndex, SqsJobQueue

    table, queue_url, active_days = _settings(os.environ, mode)
    ports = PlannerPorts(
        index=DynamoActiveIndex(table), queue=SqsJobQueue(queue_url), clock=lambda: datetime.now(UTC)
    )
    return ports, active_days


def handle(
    event: Mapping[str, Any], ports: PlannerPorts | None = None, active_days: float = 7.0
) -> dict[str, Any]:
    request = PlanRequest.from_event(event)
    if ports is None:
        ports, active_days = _aws_ports(request.mode)
    outcome = plan(request, ports, active_days)
    metrics.add_metric(f"JobsEnqueued_{outcome.mode}", MetricUnit.Count, outcome.enqueued)
    logger.info("jobs enqueued", extra=asdict(outcome))
    return asdict(outcome)


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event)
