"""threshold_tuning: nightly, per integration and metric, the alert threshold retuned from labels."""

from kpi_sentinel.handlers.tuning import lambda_handler

__all__ = ["lambda_handler"]
