"""Use case: build the KPI report of a day (or a range of days) and write it.

Which integrations the report covers, and why not "every integration with history": listing
``history/integration=`` would walk one prefix per integration (50,000 of them) to find the few with
something to say. The report covers instead the integrations that appear in the range's recorded
alerts, in its suppressed alerts (listed per date: ``suppressed/date=<d>/``, as large as the day's
suppressions, not as the fleet), in the incidents opened in the range, plus any given explicitly
(``integrations``: e.g. an analyst asking for one integration's quiet week). An integration with
none of these gets no section: it had nothing flagged and nothing suppressed.

Limits (``ReportSettings``), so that a bad day for many integrations still builds in one Lambda
invocation and gives a page a person can read:

* plots for at most ``max_plotted_integrations`` integrations (40): those given explicitly first, then
  the most severe (critical, then warning, then any alert counts); the others get their tables and a
  line saying their history was not plotted;
* at most ``max_plots_per_integration`` metrics (6) per integration: the metrics with alerts first
  (most severe, then most alerts), then the others by name; the metrics left out are named;
* at most ``max_alert_rows`` alerts (200) per integration in the HTML tables, the most severe first,
  with the number left out; ``alerts.csv`` always holds every alert.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from kpi_sentinel.alerts import display_name
from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import ReportPorts
from kpi_sentinel.report.data import (
    HistoryPoint,
    Problem,
    SuppressedAlert,
    read_metric_history,
    read_recorded_alerts,
    read_suppressed,
    report_days,
)
from kpi_sentinel.report.model import (
    REPORT_FILES,
    IntegrationReport,
    MetricPlot,
    ReportResult,
    ReportSettings,
)
from kpi_sentinel.report.plots import metric_plot
from kpi_sentinel.report.render import render_files
from kpi_sentinel.report.stats import (
    BadIncident,
    Incident,
    PrecisionStats,
    SuppressedCounts,
    alert_order,
    severity_rank,
    top_contributors,
)

log = logging.getLogger(__name__)

__all__ = ["ReportResult", "ReportSettings", "build_report", "write_report"]


def _read_incidents(
    ports: ReportPorts, days: Sequence[date], as_of: datetime
) -> tuple[list[Incident] | None, list[Problem]]:
    if ports.incidents is None:
        return None, []
    start = datetime.combine(days[0], time(), UTC)
    end = datetime.combine(days[-1] + timedelta(days=1), time(), UTC)
    incidents: dict[str, Incident] = {}
    problems: list[Problem] = []
    for raw in ports.incidents.incidents_opened(start, end):
        try:
            incident = Incident.from_dict(raw, as_of)
        except BadIncident as exc:
            problems.append(Problem("incidents", str(exc)))
            continue
        incidents[incident.incident_id] = incident
    return sorted(incidents.values(), key=lambda i: (i.opened_at, i.incident_id)), problems


def _metrics_to_plot(
    history: Mapping[str, list[HistoryPoint]], alerts: Sequence[Mapping[str, Any]], limit: int
) -> tuple[list[str], list[str]]:
    """(plotted, left out): metrics with alerts first, most severe and most alerted, then by name."""
    worst: dict[str, int] = {}
    alerted: Counter[str] = Counter()
    for alert in alerts:
        metric = alert["metric"]
        alerted[metric] += 1
        worst[metric] = min(worst.get(metric, 9), severity_rank(alert))
    order = sorted(history, key=lambda m: (worst.get(m, 9), -alerted[m], m))
    return order[:limit], order[limit:]


def _plots(
    ports: ReportPorts,
    integration_id: str,
    days: Sequence[date],
    alerts: Sequence[Mapping[str, Any]],
    settings: ReportSettings,
    problems: list[Problem],
) -> tuple[list[MetricPlot], list[str], str]:
    history, found = read_metric_history(ports.objects, ports.data_bucket, integration_id, days)
    problems.extend(found)
    if not history:
        return [], [], "no scored history in the report's range"
    plotted, left_out = _metrics_to_plot(history, alerts, settings.max_plots_per_integration)
    span = (
        datetime.combine(days[0], time(), UTC),
        datetime.combine(days[-1] + timedelta(days=1), time(), UTC),
    )
    plots = []
    for metric in plotted:
        flagged = [a for a in alerts if a["metric"] == metric and not a.get("dimension")]
        title = f"{integration_id} · {display_name(metric)} ({metric})"
        try:
            png = metric_plot(title, history[metric], flagged, span)
        except Exception as exc:  # one unplottable series must not cost the whole report
            log.exception("plot failed", extra={"integration": integration_id, "metric": metric})
            problems.append(Problem(f"plot {integration_id}/{metric}", f"could not be drawn: {exc}"))
            continue
        plots.append(MetricPlot(metric, png, len(history[metric]), len(flagged)))
    return plots, left_out, ""


def build_report(
    ports: ReportPorts,
    start: date,
    end: date,
    integrations: Sequence[str] = (),
    settings: ReportSettings | None = None,
) -> ReportResult:
    """Read alerts, history, suppressions, incidents and labels of ``[start, end]`` and render the report.

    ``integrations`` are covered in addition to those found in the data (see the module docstring);
    an id that is not a valid integration id raises ValueError. The result carries the rendered
    files; :func:`write_report` stores them.
    """
    settings = settings or ReportSettings()
    bad = [i for i in integrations if not INTEGRATION_ID.fullmatch(i)]
    if bad:
        raise ValueError(f"not a valid integration id: {', '.join(repr(b) for b in bad)}")
    days = report_days(start, end)
    generated_at = ports.clock()
    problems: list[Problem] = []
    alerts, found = read_recorded_alerts(ports.objects, ports.data_bucket, days)
    problems.extend(found)
    suppressed, found = read_suppressed(ports.objects, ports.data_bucket, days)
    problems.extend(found)
    incidents, found = _read_incidents(ports, days, generated_at)
    problems.extend(found)

    requested = set(integrations)
    covered = requested | {a["integration_id"] for a in alerts} | {s.integration_id for s in suppressed}
    for incident in incidents or []:
        if INTEGRATION_ID.fullmatch(incident.integration_id):
            covered.add(incident.integration_id)
        else:
            problems.append(
                Problem(
                    "incidents",
                    f"incident {incident.incident_id}: integration_id {incident.integration_id!r:.80} "
                    "is not a valid integration id; counted in the overall figures only",
                )
            )
    by_integration = _Grouped(alerts, suppressed, incidents or ())
    sections = [_section(iid, iid in requested, by_integration, ports, settings) for iid in sorted(covered)]
    # Plots for the integrations that matter most, requested ones first.
    sections.sort(key=IntegrationReport.rank)
    plot_order = sorted(sections, key=lambda s: (not s.requested, s.rank()))
    chosen = {s.integration_id for s in plot_order[: settings.max_plotted_integrations]}
    finished = []
    for section in sections:
        if section.integration_id not in chosen:
            note = (
                f"history not plotted: plots are drawn for the {settings.max_plotted_integrations} "
                "integrations with the most severe alerts"
            )
            finished.append(replace(section, history_note=note))
            continue
        plots, left_out, note = _plots(
            ports, section.integration_id, days, section.alerts, settings, problems
        )
        finished.append(
            replace(section, plots=tuple(plots), unplotted_metrics=tuple(left_out), history_note=note)
        )

    result = ReportResult(
        start=start,
        end=end,
        generated_at=generated_at,
        integrations=tuple(finished),
        alerts=tuple(sorted(alerts, key=alert_order)),
        incidents=None if incidents is None else tuple(incidents),
        labels_available=ports.feedback is not None,
        suppressed=SuppressedCounts.of(suppressed),
        problems=tuple(problems),
        settings=settings,
    )
    for problem in problems:
        log.warning("report data problem", extra={"source": problem.source, "reason": problem.reason})
    return replace(result, files=render_files(result))


class _Grouped:
    """Alerts, suppressions and incidents by integration, grouped once (thousands of integrations)."""

    def __init__(
        self,
        alerts: Sequence[dict[str, Any]],
        suppressed: Sequence[SuppressedAlert],
        incidents: Sequence[Incident],
    ) -> None:
        self.alerts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.suppressed: dict[str, list[SuppressedAlert]] = defaultdict(list)
        self.incidents: dict[str, list[Incident]] = defaultdict(list)
        for alert in alerts:
            self.alerts[alert["integration_id"]].append(alert)
        for item in suppressed:
            self.suppressed[item.integration_id].append(item)
        for incident in incidents:
            self.incidents[incident.integration_id].append(incident)


def _section(
    integration_id: str,
    requested: bool,
    grouped: _Grouped,
    ports: ReportPorts,
    settings: ReportSettings,
) -> IntegrationReport:
    own = sorted(grouped.alerts.get(integration_id, ()), key=alert_order)
    ids = [a["alert_id"] for a in own]
    labels = ports.feedback.labels(integration_id, ids) if ports.feedback is not None and ids else {}
    return IntegrationReport(
        integration_id=integration_id,
        requested=requested,
        alerts=tuple(own),
        labels=labels,
        contributors=tuple(top_contributors(own, settings.top_contributors)),
        incidents=tuple(grouped.incidents.get(integration_id, ())),
        precision=PrecisionStats.of(ids, labels) if ports.feedback is not None else None,
        suppressed=SuppressedCounts.of(grouped.suppressed.get(integration_id, ())),
        plots=(),
        unplotted_metrics=(),
        history_note="",
    )


def write_report(
    result: ReportResult, ports: ReportPorts | None = None, folder: Path | None = None
) -> list[str]:
    """Store the report's files under ``reports/<name>/`` in the data bucket and/or in ``folder``.

    Returns where each file went (``s3://bucket/key`` or a path). The bucket's objects are
    overwritten by a rebuild of the same range, so a rerun of the schedule is harmless.
    """
    if ports is None and folder is None:
        raise ValueError("write_report needs a data bucket (ports) or a folder")
    written = []
    for name, content_type in REPORT_FILES.items():
        body = result.files[name]
        if ports is not None:
            key = result.prefix + name
            ports.objects.put(ports.data_bucket, key, body, content_type)
            written.append(f"s3://{ports.data_bucket}/{key}")
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_bytes(body)
            written.append(str(path))
    return written
