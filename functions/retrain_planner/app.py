"""retrain_planner: on a schedule, enqueues one isolation-forest job per active integration."""

from kpi_sentinel.handlers.planner import lambda_handler

__all__ = ["lambda_handler"]
