"""Support triage: alerts (schema v1) become prioritised incidents on per-team queues.

* :mod:`~kpi_sentinel.triage.routing` — the rules file: which team owns an alert, its priority and SLA;
  which metric family it belongs to.
* :mod:`~kpi_sentinel.triage.incidents` — alerts of one integration and family whose slices overlap
  within a window become one incident; repeats update it, escalations are recorded; the freshness
  check's resolution of a ``missing_data`` outage resolves the incidents of its alerts (``resolved``,
  reason ``data_resumed``); who acknowledged and resolved an incident is kept on it.
* :mod:`~kpi_sentinel.triage.messages` — the outbound message (``schemas/incident-v1.json``: events
  ``opened``, ``escalated``, ``resolved``) and the team -> queue mapping.
* :mod:`~kpi_sentinel.triage.sla` — the scheduled check that escalates unacknowledged incidents past due.
"""
