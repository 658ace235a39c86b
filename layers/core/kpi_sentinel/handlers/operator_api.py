"""The operator_api Lambda's wiring: HTTP API (payload v2) requests -> :mod:`kpi_sentinel.operator.api`.

The routes, status codes and error bodies are documented there and in the committed OpenAPI document
(``kpi_sentinel/operator/openapi.json``). The caller is the HTTP API authorizer's identity (IAM:
``userArn``; JWT: ``sub``), scoped by the control table's ``scope#<principal>`` items.

Environment: ``CONTROL_TABLE`` (snoozes, calendar, labels, overrides, audit, scopes) and
``DATA_BUCKET`` (recorded alerts) are required; ``INCIDENTS_TABLE`` is optional (without it the
incident routes answer 503); ``SCOPE_CACHE_SECONDS`` (30) bounds how long a revoked scope keeps
working in a warm container. Metrics: ``OperatorChanges`` (successful non-GET requests),
``OperatorDenied`` (401 and 403), ``OperatorInvalid`` (422).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from kpi_sentinel.operator.api import resolve
from kpi_sentinel.ports import OperatorPorts

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})


@cache
def _aws_ports() -> OperatorPorts:
    from kpi_sentinel.adapters.aws import DynamoIncidents, DynamoOperatorStore, DynamoScopes, S3Objects

    missing = [name for name in ("CONTROL_TABLE", "DATA_BUCKET") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"operator_api is missing environment variable(s): {', '.join(missing)}")
    control = os.environ["CONTROL_TABLE"]
    incidents = os.environ.get("INCIDENTS_TABLE")
    return OperatorPorts(
        store=DynamoOperatorStore(control),
        scopes=DynamoScopes(control, float(os.environ.get("SCOPE_CACHE_SECONDS", "30"))),
        incidents=DynamoIncidents(incidents) if incidents else None,
        objects=S3Objects(),
        data_bucket=os.environ["DATA_BUCKET"],
        clock=lambda: datetime.now(UTC),
    )


def handle(event: dict[str, Any], context: Any, ports: OperatorPorts | None = None) -> dict[str, Any]:
    response = resolve(event, context, ports if ports is not None else _aws_ports())
    status = int(response.get("statusCode", 500))
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method", "")).upper()
    if status < 300 and method not in ("GET", "HEAD", "OPTIONS"):
        metrics.add_metric("OperatorChanges", MetricUnit.Count, 1)
    elif status in (401, 403):
        metrics.add_metric("OperatorDenied", MetricUnit.Count, 1)
    elif status == 422:
        metrics.add_metric("OperatorInvalid", MetricUnit.Count, 1)
    return response


@metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
