"""Writing alerts for people: JSON lines, spreadsheet-safe CSV and an escaped HTML page."""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ALERT_CSV_COLUMNS = (
    "alert_id", "integration_id", "detector", "severity", "metric", "dimension", "dimension_value",
    "period_start", "observed", "expected", "deviation_percent", "score", "direction", "top_contributor",
    "top_contributor_share", "summary",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula is prefixed with a quote; numbers pass through.

    >>> spreadsheet_safe('=HYPERLINK("http://x")')
    '\\'=HYPERLINK("http://x")'
    >>> spreadsheet_safe(-3.5)
    -3.5
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def alert_row(alert: Mapping[str, Any]) -> list[Any]:
    top = alert["contributors"][0] if alert.get("contributors") else None
    return [
        alert["alert_id"], alert["integration_id"], alert["detector"], alert["severity"], alert["metric"],
        alert.get("dimension") or "", alert.get("dimension_value") or "", alert["period_start"],
        alert["observed"], alert["expected"], alert["deviation"]["percent"], alert["score"], alert["direction"],
        f"{top['dimension']}={top['value']}" if top else "", top["share"] if top else "", alert["summary"],
    ]  # fmt: skip


def write_alerts(alerts: Sequence[Mapping[str, Any]], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "alerts.jsonl"
    with jsonl.open("w", encoding="utf-8") as out:
        for alert in alerts:
            out.write(json.dumps(alert, sort_keys=True) + "\n")
    table = folder / "alerts.csv"
    with table.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(ALERT_CSV_COLUMNS)
        for alert in alerts:
            writer.writerow([spreadsheet_safe(v) for v in alert_row(alert)])
    return jsonl, table


def html_cell(value: Any) -> str:
    """A value as escaped cell text: a mapping as ``key: value`` pairs, a list one item per line.

    >>> html_cell({"scored": 3, "quarantined": 1})
    'scored: 3; quarantined: 1'
    >>> html_cell(["a<b", "c"])
    'a&lt;b<br>c'
    """
    if isinstance(value, Mapping):
        return html.escape("; ".join(f"{k}: {v}" for k, v in value.items())) or "none"
    if isinstance(value, list | tuple):
        return "<br>".join(html.escape(str(item)) for item in value) or "none"
    return html.escape(str(value))


def html_page(title: str, sections: Iterable[tuple[str, Sequence[str], Sequence[Sequence[Any]]]]) -> str:
    """A self-contained page of tables; every value is HTML-escaped."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.critical{color:#b00020;font-weight:600}.warning{color:#b26a00}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, columns, rows in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><table><tr>")
        parts.extend(f"<th>{html.escape(str(c))}</th>" for c in columns)
        parts.append("</tr>")
        for row in rows:
            cells = "".join(
                f"<td class='{html.escape(str(v))}'>{html.escape(str(v))}</td>"
                if v in ("critical", "warning")
                else f"<td>{html_cell(v)}</td>"
                for v in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
