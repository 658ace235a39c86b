"""The KPI report: every alert recorded as it is published, and a daily report built from the records.

What the data bucket holds for it (all keys by UTC date of the period start):

* ``alerts/date=<YYYY-MM-DD>/<24 hex>.jsonl.gz`` — the alerts (schema v1, all severities) of one
  SQS batch of the kpi-report queue whose period starts on that date, one JSON object a line. The
  name is a SHA-256 of the object's sorted alert ids, so a redelivered batch rewrites the same
  object; a batch regrouped by redelivery writes another object, and readers deduplicate by
  ``alert_id``. Written by :mod:`kpi_sentinel.report.record`.
* ``history/integration=<id>/date=<YYYY-MM-DD>/*.csv.gz`` — the scorer's scored periods (columns
  ``kpi_sentinel.sync.HISTORY_COLUMNS``); the report plots each metric's total with its band.
* ``suppressed/date=<YYYY-MM-DD>/integration=<id>/<16 hex>.jsonl.gz`` — alerts the scorer did not
  publish, one ``{"alert": <alert>, "by": "snooze <id>" | "calendar <kind> '<name>'"}`` a line.
* ``reports/<YYYY-MM-DD>/`` (one day) or ``reports/<start>_<end>/`` (a range) — the report itself:
  ``index.html`` (self-contained), ``alerts.csv`` and ``summary.json``.

Incidents come from support triage through :class:`kpi_sentinel.ports.IncidentReader` as dicts with
``incident_id, integration_id, family, team, priority ("P1".."P4"), sla_minutes, status
("open"|"acknowledged"|"resolved"), opened_at, last_seen_at, acknowledged_at, resolved_at, due_at``
(ISO 8601 UTC, the last three possibly None), ``severity, count, alert_ids, dimensions, metrics,
summary, first_summary, escalations, version`` and ``acknowledged_by`` (who acknowledged it; None or
absent when nobody did or it was not recorded). Labels come from operators' feedback through
:class:`kpi_sentinel.ports.FeedbackReader`.

This package's ``__init__`` imports nothing: the alert-recording path of the handler stays free of
numpy and matplotlib, which only :mod:`kpi_sentinel.report.build` needs.
"""
