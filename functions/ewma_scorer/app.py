"""ewma_scorer: scores every sync file dropped in the ingest bucket (SQS batch of S3 notifications)."""

from kpi_sentinel.handlers.scorer import lambda_handler

__all__ = ["lambda_handler"]
