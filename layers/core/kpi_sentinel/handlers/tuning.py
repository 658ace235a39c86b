"""The threshold_tuning Lambda's wiring: nightly, per integration and metric, thresholds from labels.

The use case is :func:`kpi_sentinel.operator_jobs.tuning.tune` (its docstring has the rules; the
choice itself is :mod:`kpi_sentinel.operator_jobs.thresholds`).

Input: the EventBridge schedule's ``Scheduled Event`` envelope (the run is for its ``time``), or
``{"as_of": "<ISO 8601 with offset>"}`` to replay a night, optionally with ``"integrations": [ids]``
to tune only those, or ``{}`` for now.

Environment:

* ``STATE_TABLE`` (required) — the ActiveIntegrations index (read only);
* ``CONTROL_TABLE`` (required) — labels (``feedback#``), operators' overrides (``override#``) and the
  config (read); tuned thresholds (``tuned#<metric>``) and their audit entries (``audit#``) (written);
* ``DATA_BUCKET`` (required) — the history (``history/``, read) and the run records
  (``tuning/<integration>/runs/<run id>.json``, written);
* ``TUNING_WINDOW_DAYS`` (28), ``TUNING_PRECISION_FLOOR`` (0.5), ``TUNING_MIN_LABELS`` (5),
  ``TUNING_MIN_TRUE_POSITIVES`` (1), ``TUNING_MIN_FALSE_POSITIVES`` (1), ``TUNING_MIN_THRESHOLD``
  (2.5), ``TUNING_MAX_THRESHOLD`` (8.0) — see :class:`~kpi_sentinel.operator_jobs.tuning.TuningSettings`;
* ``TIME_BUDGET_MARGIN_SECONDS`` (60) — no integration is started with less than this left.

Metrics: ``ThresholdsTuned`` (metrics whose threshold changed), ``TuningSkipped`` (metrics skipped with
a reason, and integrations with labels but none usable), ``TuningUnfinished`` (integrations left for
the next night by the time budget). No numpy, pandas or scikit-learn are imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from kpi_sentinel.operator_jobs.schedule import BadJobEvent, as_of
from kpi_sentinel.operator_jobs.tuning import TuningSettings, tune
from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import TuningPorts

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "kpi-sentinel"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KpiSentinel"))
copy_config_to_registered_loggers(source_logger=logger, include={"kpi_sentinel"})

REQUIRED = ("STATE_TABLE", "CONTROL_TABLE", "DATA_BUCKET")


@cache
def _aws_ports() -> tuple[TuningPorts, TuningSettings]:
    from kpi_sentinel.adapters.aws import DynamoActiveIndex, DynamoTuning, S3Objects

    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"threshold_tuning is missing environment variable(s): {', '.join(missing)}")
    ports = TuningPorts(
        index=DynamoActiveIndex(os.environ["STATE_TABLE"]),
        store=DynamoTuning(os.environ["CONTROL_TABLE"]),
        objects=S3Objects(),
        clock=lambda: datetime.now(UTC),
    )
    return ports, TuningSettings.from_env(os.environ)


def _integrations(event: Mapping[str, Any]) -> list[str] | None:
    raw = event.get("integrations")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(i, str) and INTEGRATION_ID.fullmatch(i) for i in raw):
        raise BadJobEvent(f"field 'integrations' must be a list of integration ids, got {raw!r:.200}")
    return raw


def handle(
    event: Mapping[str, Any],
    ports: TuningPorts | None = None,
    settings: TuningSettings | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """One tuning run; returns its outcome (counts and the changes made)."""
    if ports is None or settings is None:
        ports, settings = _aws_ports()
    moment = as_of(event, ports.clock())
    outcome = tune(moment, ports, settings, _integrations(event), should_stop)
    metrics.add_metric("ThresholdsTuned", MetricUnit.Count, outcome.thresholds_tuned)
    metrics.add_metric(
        "TuningSkipped", MetricUnit.Count, outcome.metrics_skipped + outcome.integrations_skipped
    )
    metrics.add_metric("TuningUnfinished", MetricUnit.Count, outcome.unfinished)
    logger.info("thresholds tuned", extra=asdict(outcome))
    return asdict(outcome)


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    margin_ms = float(os.environ.get("TIME_BUDGET_MARGIN_SECONDS", "60")) * 1000
    return handle(event, should_stop=lambda: context.get_remaining_time_in_millis() < margin_ms)
