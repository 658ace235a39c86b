"""iforest_retrainer: retrains (or only scores with) an integration's isolation forest per queued job."""

from kpi_sentinel.handlers.retrainer import lambda_handler

__all__ = ["lambda_handler"]
