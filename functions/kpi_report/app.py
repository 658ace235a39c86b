"""kpi_report: records every published alert and builds the daily KPI report (HTML, CSV, JSON) in S3."""

from kpi_sentinel.handlers.report import lambda_handler

__all__ = ["lambda_handler"]
