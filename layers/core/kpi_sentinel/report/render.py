"""The report's files: ``index.html``, ``alerts.csv`` and ``summary.json``.

``index.html`` is one self-contained page: inline CSS, plots embedded as ``data:image/png;base64`` URIs,
no script, no external reference (no fonts, no links out). Every value that comes from data — ids,
metric names, slice values, summaries, team names — is HTML-escaped where it is written (text and
attribute values alike). ``alerts.csv`` has every alert, with each cell a spreadsheet would run as a
formula prefixed by a quote. ``summary.json`` has the numbers for machines.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kpi_sentinel.alerts import display_name
from kpi_sentinel.outputs import ALERT_CSV_COLUMNS, alert_row, html_cell, spreadsheet_safe
from kpi_sentinel.report.model import IntegrationReport, ReportResult
from kpi_sentinel.report.stats import (
    SEVERITY_ORDER,
    Contributor,
    Incident,
    PrecisionStats,
    SlaStats,
    SuppressedCounts,
    counts_by,
    top_contributors,
)

CSS = (
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;"
    "padding:1.5em 2em;color:#1f2328;background:#fff}"
    "h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;margin:1.6em 0 .4em;padding-top:.6em;"
    "border-top:2px solid #d0d7de}h3{font-size:1.05em;margin:1.2em 0 .3em}"
    ".meta{color:#57606a;margin:.2em 0 1em}"
    ".cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}"
    ".card{border:1px solid #d0d7de;border-radius:6px;padding:.6em 1em;min-width:12em}"
    ".card .big{font-size:1.5em;font-weight:600}.card .small{color:#57606a;font-size:.9em}"
    "table{border-collapse:collapse;margin:.4em 0 1em;font-size:.92em}"
    "td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".critical{color:#b00020;font-weight:600}.warning{color:#9a5b00;font-weight:600}.info{color:#1f6fb2}"
    ".plots{display:flex;flex-wrap:wrap;gap:.4em}.plots img{border:1px solid #eaeef2;max-width:100%;height:auto}"
    ".note{color:#57606a;font-style:italic}.problems td{color:#8a4600}"
    "nav ul{columns:3;padding-left:1.2em}"
)


def e(value: Any) -> str:
    """Escaped text (attribute-safe: quotes are escaped too)."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> str:
    """
    >>> number(1234.5), number(0.03125), number(None), number(-2.0)
    ('1,234', '0.03125', '–', '-2')
    """
    if value is None:
        return "–"
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def when(moment: datetime | str | None) -> str:
    """A UTC time as ``2026-11-24 10:05`` (the tables say UTC in their headings).

    >>> when("2026-11-24T10:05:00+00:00"), when(None)
    ('2026-11-24 10:05', '–')
    """
    if moment is None:
        return "–"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def slice_of(alert: Mapping[str, Any]) -> str:
    if alert.get("dimension"):
        return f"{alert['dimension']}={alert.get('dimension_value') or ''}"
    return "total"


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table whose cells are already-escaped HTML (each row a sequence of ``<td>`` contents)."""
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    attribute = f' class="{e(css)}"' if css else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def td(text: Any, css: str = "") -> str:
    """A cell of escaped text (``html_cell``: mappings as pairs, lists one item per line)."""
    attribute = f' class="{e(css)}"' if css else ""
    return f"<td{attribute}>{html_cell(text)}</td>"


def _severity_cell(severity: str) -> str:
    return td(severity, severity if severity in SEVERITY_ORDER else "")


def _card(title: str, big: str, small: str) -> str:
    return (
        f'<div class="card"><div class="small">{e(title)}</div><div class="big">{e(big)}</div>'
        f'<div class="small">{e(small)}</div></div>'
    )


def _sla_text(sla: SlaStats | None) -> tuple[str, str]:
    if sla is None:
        return "unavailable", "no incident store configured"
    if sla.adherence is None:
        return "–", f"{sla.incidents} incident(s), none acknowledged or overdue with an SLA"
    median = sla.median_minutes_to_acknowledge
    return (
        percent(sla.adherence),
        f"{sla.met} of {sla.met + sla.missed + sla.overdue} acknowledged within SLA; "
        f"{sla.open_overdue} open overdue; median ack " + ("–" if median is None else f"{median:.0f} min"),
    )


def _precision_text(precision: PrecisionStats | None) -> tuple[str, str]:
    if precision is None:
        return "unavailable", "no label store configured"
    if precision.precision is None:
        return "no labels", f"{precision.expected} labelled expected, {precision.unlabelled} unlabelled"
    return (
        percent(precision.precision),
        f"{precision.true_positive} true / {precision.false_positive} false positive; "
        f"{precision.expected} expected; {precision.unlabelled} unlabelled",
    )


def _suppressed_text(counts: SuppressedCounts) -> str:
    text = f"{counts.snooze} by snoozes, {counts.calendar} by the calendar"
    return text + (f", {counts.other} by another cause" if counts.other else "")


def _alerts_table(section: IntegrationReport, limit: int) -> str:
    rows = []
    for alert in section.alerts[:limit]:
        deviation = alert["deviation"].get("percent")
        rows.append(
            [
                _severity_cell(alert["severity"]),
                td(alert["detector"]),
                td(alert["metric"]),
                td(slice_of(alert)),
                td(when(alert["period_start"])),
                td(f"{number(alert['observed'])} vs {number(alert['expected'])}", "num"),
                td("–" if deviation is None else f"{float(deviation):+.1f}%", "num"),
                td(section.labels.get(alert["alert_id"], "")),
                td(alert["summary"]),
            ]
        )
    columns = ("severity", "detector", "metric", "slice", "period start (UTC)", "observed vs expected",
               "deviation", "label", "summary")  # fmt: skip
    table = _table(columns, rows)
    left = len(section.alerts) - limit
    if left > 0:
        table += f'<p class="note">{e(left)} less severe alert(s) not shown here; alerts.csv lists every alert.</p>'
    return table


def _contributors_table(contributors: Sequence[Contributor]) -> str:
    if not contributors:
        return '<p class="note">No alert named contributors.</p>'
    rows = [[td(c.label), td(f"{c.share:.2f}", "num"), td(c.alerts, "num")] for c in contributors]
    return _table(("dimension=value", "summed share of the change", "alerts"), rows)


def _incidents_table(incidents: Sequence[Incident]) -> str:
    if not incidents:
        return '<p class="note">No incident opened in this range.</p>'
    rows = [
        [
            td(i.incident_id), td(i.team), td(i.priority), _severity_cell(i.severity), td(i.status),
            td(when(i.opened_at)), td(when(i.due_at)), td(when(i.acknowledged_at)),
            td(i.acknowledged_by or "–"), td(when(i.resolved_at)), td(i.sla_state.replace("_", " ")),
            td(i.count, "num"), td(i.summary),
        ]
        for i in incidents
    ]  # fmt: skip
    columns = ("incident", "team", "priority", "severity", "status", "opened (UTC)", "due", "acknowledged",
               "acknowledged by", "resolved", "SLA", "alerts", "summary")  # fmt: skip
    return _table(columns, rows)


def _section_html(section: IntegrationReport, result: ReportResult) -> str:
    iid = section.integration_id
    counts = section.severity_counts
    parts = [f'<section id="integration-{e(iid)}"><h2>{e(iid)}</h2>']
    sla_big, sla_small = _sla_text(section.sla if result.incidents is not None else None)
    precision_big, precision_small = _precision_text(section.precision)
    parts.append(
        f'<p class="meta">{e(len(section.alerts))} alert(s): {e(counts["critical"])} critical, '
        f"{e(counts['warning'])} warning, {e(counts['info'])} info. "
        f"{e(len(section.incidents))} incident(s) opened; SLA adherence {e(sla_big)} ({e(sla_small)}). "
        f"Precision {e(precision_big)} ({e(precision_small)}). "
        f"Suppressed: {e(_suppressed_text(section.suppressed))}.</p>"
    )
    if section.plots:
        parts.append('<div class="plots">')
        for plot in section.plots:
            data = base64.b64encode(plot.png).decode("ascii")
            alt = f"{iid} {display_name(plot.metric)}: observed, expected band, {plot.flagged} flagged period(s)"
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{e(alt)}" width="512" height="176">')
        parts.append("</div>")
    if section.unplotted_metrics:
        parts.append(
            f'<p class="note">Not plotted (at most {e(result.settings.max_plots_per_integration)} metrics '
            f"per integration): {e(', '.join(section.unplotted_metrics))}.</p>"
        )
    if section.history_note:
        note = section.history_note
        parts.append(f'<p class="note">{e(note[:1].upper() + note[1:])}.</p>')
    parts.append("<h3>Alerts</h3>")
    parts.append(
        _alerts_table(section, result.settings.max_alert_rows)
        if section.alerts
        else '<p class="note">No alert in this range.</p>'
    )
    parts.append("<h3>Top contributors</h3>")
    parts.append(_contributors_table(section.contributors))
    parts.append("<h3>Incidents</h3>")
    parts.append(
        _incidents_table(section.incidents)
        if result.incidents is not None
        else '<p class="note">Incidents unavailable: no incident store configured.</p>'
    )
    parts.append("</section>")
    return "".join(parts)


def _overview(result: ReportResult) -> str:
    counts = counts_by(result.alerts, "severity")
    sla_big, sla_small = _sla_text(result.sla)
    precision_big, precision_small = _precision_text(result.precision)
    parts = ['<section id="overview"><h2>Overview</h2><div class="cards">']
    parts.append(
        _card(
            "alerts",
            str(len(result.alerts)),
            f"{counts['critical']} critical, {counts['warning']} warning, {counts['info']} info",
        )
    )
    incidents = "unavailable" if result.incidents is None else str(len(result.incidents))
    open_overdue = "" if result.sla is None else f"{result.sla.open_overdue} still open past their SLA"
    parts.append(_card("incidents opened", incidents, open_overdue))
    parts.append(_card("SLA adherence", sla_big, sla_small))
    parts.append(_card("alert precision", precision_big, precision_small))
    parts.append(
        _card("alerts suppressed", str(result.suppressed.total), _suppressed_text(result.suppressed))
    )
    parts.append("</div>")
    if result.integrations:
        rows = []
        for section in result.integrations:
            c = section.severity_counts
            rows.append(
                [
                    f'<td><a href="#integration-{e(section.integration_id)}">{e(section.integration_id)}</a></td>',
                    td(c["critical"], "num critical" if c["critical"] else "num"),
                    td(c["warning"], "num"), td(c["info"], "num"),
                    td(len(section.incidents) if result.incidents is not None else "–", "num"),
                    td(_sla_text(section.sla if result.incidents is not None else None)[0], "num"),
                    td(_precision_text(section.precision)[0], "num"),
                    td(section.suppressed.snooze, "num"), td(section.suppressed.calendar, "num"),
                ]
            )  # fmt: skip
        columns = ("integration", "critical", "warning", "info", "incidents", "SLA adherence", "precision",
                   "snoozed", "calendar")  # fmt: skip
        parts.append("<h3>By integration</h3>" + _table(columns, rows))
    else:
        parts.append('<p class="note">No alert, suppression or incident in this range.</p>')
    detectors = counts_by(result.alerts, "detector")
    if detectors:
        parts.append("<h3>By detector</h3>")
        parts.append(_table(("detector", "alerts"), [[td(k), td(v, "num")] for k, v in detectors.items()]))
    parts.append("<h3>Top contributors, all integrations</h3>")
    parts.append(_contributors_table(top_contributors(result.alerts, result.settings.top_contributors)))
    if result.problems:
        parts.append("<h3>Data the report could not use</h3>")
        rows = [[td(p.source), td(p.reason)] for p in result.problems]
        parts.append(_table(("source", "problem"), rows, "problems"))
    parts.append("</section>")
    return "".join(parts)


def render_html(result: ReportResult) -> str:
    title = f"KPI report {result.name.replace('_', ' to ')}"
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Periods starting {e(result.start.isoformat())} 00:00 to {e(result.end.isoformat())} '
        f"24:00 UTC. Generated {e(when(result.generated_at))} UTC. "
        f"{e(len(result.integrations))} integration(s).</p>",
        _overview(result),
    ]
    if result.integrations:
        links = "".join(
            f'<li><a href="#integration-{e(s.integration_id)}">{e(s.integration_id)}</a></li>'
            for s in result.integrations
        )
        parts.append(f"<nav><h2>Integrations</h2><ul>{links}</ul></nav>")
    parts.extend(_section_html(section, result) for section in result.integrations)
    parts.append("</body></html>\n")
    return "".join(parts)


def render_csv(result: ReportResult) -> str:
    """Every alert of the report, ``ALERT_CSV_COLUMNS`` plus the operator's label, formulas neutralised."""
    labels = {a: label for s in result.integrations for a, label in s.labels.items()}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*ALERT_CSV_COLUMNS, "label"])
    for alert in result.alerts:
        writer.writerow([spreadsheet_safe(v) for v in (*alert_row(alert), labels.get(alert["alert_id"], ""))])
    return text.getvalue()


def _incident_counts(incidents: Sequence[Incident]) -> dict[str, Any]:
    return {
        "opened": len(incidents),
        "by_status": dict(sorted(Counter(i.status for i in incidents).items())),
        "by_priority": dict(sorted(Counter(i.priority for i in incidents).items())),
        "sla": SlaStats.of(incidents).to_dict(),
    }


def _suppressed_dict(counts: SuppressedCounts) -> dict[str, int]:
    return {
        "total": counts.total,
        "snooze": counts.snooze,
        "calendar": counts.calendar,
        "other": counts.other,
    }


def summary(result: ReportResult) -> dict[str, Any]:
    """The report's numbers (what ``summary.json`` holds)."""
    precision = result.precision
    return {
        "report": {
            "name": result.name,
            "start": result.start.isoformat(),
            "end": result.end.isoformat(),
            "generated_at": result.generated_at.isoformat(),
            "integrations": [s.integration_id for s in result.integrations],
        },
        "alerts": {
            "total": len(result.alerts),
            "by_severity": counts_by(result.alerts, "severity"),
            "by_detector": counts_by(result.alerts, "detector"),
            "by_integration": {s.integration_id: len(s.alerts) for s in result.integrations},
        },
        "top_contributors": [
            {"dimension": c.dimension, "value": c.value, "share": c.share, "alerts": c.alerts}
            for c in top_contributors(result.alerts, result.settings.top_contributors)
        ],
        "incidents": (
            {"available": False}
            if result.incidents is None
            else {"available": True, **_incident_counts(result.incidents)}
        ),
        "precision": {"available": False}
        if precision is None
        else {"available": True, **precision.to_dict()},
        "suppressed": {
            **_suppressed_dict(result.suppressed),
            "by_integration": {
                s.integration_id: _suppressed_dict(s.suppressed)
                for s in result.integrations
                if s.suppressed.total
            },
        },
        "integrations": {
            s.integration_id: {
                "alerts": len(s.alerts),
                "by_severity": s.severity_counts,
                "by_detector": counts_by(s.alerts, "detector"),
                "incidents": None if result.incidents is None else _incident_counts(s.incidents),
                "precision": None if s.precision is None else s.precision.to_dict(),
                "suppressed": _suppressed_dict(s.suppressed),
                "plotted_metrics": [p.metric for p in s.plots],
                "unplotted_metrics": list(s.unplotted_metrics),
                "history_note": s.history_note,
            }
            for s in result.integrations
        },
        "problems": [{"source": p.source, "reason": p.reason} for p in result.problems],
    }


def render_files(result: ReportResult) -> dict[str, bytes]:
    return {
        "index.html": render_html(result).encode("utf-8"),
        "alerts.csv": render_csv(result).encode("utf-8"),
        "summary.json": (json.dumps(summary(result), indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
    }
