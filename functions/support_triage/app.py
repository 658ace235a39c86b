"""support_triage: alerts become prioritised incidents on per-team queues; the SLA check escalates."""

from kpi_sentinel.handlers.triage import lambda_handler

__all__ = ["lambda_handler"]
