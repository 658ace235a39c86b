"""operator_api: snoozes, feedback labels, calendar, threshold overrides and incidents over HTTP."""

from kpi_sentinel.handlers.operator_api import lambda_handler

__all__ = ["lambda_handler"]
