"""freshness_check: every 5 minutes, missing_data alerts for integrations whose syncs stopped."""

from kpi_sentinel.handlers.freshness import lambda_handler

__all__ = ["lambda_handler"]
