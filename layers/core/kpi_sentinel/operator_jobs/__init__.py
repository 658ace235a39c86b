"""Scheduled jobs that close the operators' loop (issue 6).

* :mod:`~kpi_sentinel.operator_jobs.freshness` — every 5 minutes: a ``missing_data`` alert when an
  integration's expected sync has not arrived within its cadence plus a grace period, an escalation to
  critical once, and a resolution when data arrives again.
* :mod:`~kpi_sentinel.operator_jobs.tuning` — nightly: per integration and metric, the threshold that
  keeps every labelled true positive the scorer catches now while meeting a precision floor, chosen by
  :mod:`~kpi_sentinel.operator_jobs.thresholds` from operators' labels and the history's scores.

Neither imports numpy, pandas or scikit-learn: they run with the core and Powertools layers only.
"""
