"""What the report reads from the data bucket: recorded alerts, metric history and suppressed alerts.

An object that cannot be read (not gzip, a line that is not an alert, a row with the wrong width) does
not stop the report: it becomes a :class:`Problem` that the report prints, naming the object and the
line or row, and the rest is used. Errors of the store itself (S3 unreachable) propagate: a report
built from part of the data without saying so would be worse than none.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kpi_sentinel.history import total_rows
from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import ListingStore
from kpi_sentinel.report.record import ALERTS_PREFIX, MalformedAlert, validate_alert

READ_THREADS = 16
PLOTTED_STATUSES = ("scored", "calendar")
# The history columns the report reads (a subset of kpi_sentinel.sync.HISTORY_COLUMNS, looked up by
# name so that columns added later do not matter).
HISTORY_FIELDS = (
    "period_start", "metric", "dimension", "observed", "expected", "expected_lower", "expected_upper", "status",
)  # fmt: skip
_SUPPRESSED_KEY = re.compile(r"suppressed/date=(\d{4}-\d{2}-\d{2})/integration=([^/]+)/[^/]+\.jsonl\.gz")


@dataclass(frozen=True)
class Problem:
    """Something the report could not use; ``source`` is the object key (or the store) it came from."""

    source: str
    reason: str


@dataclass(frozen=True)
class HistoryPoint:
    """One scored period of a metric's total (NaN where the scorer left a value empty)."""

    period_start: datetime
    observed: float
    expected: float
    lower: float
    upper: float
    calendar: bool  # a known event (campaign, holiday): scored, not learned, its alerts suppressed


@dataclass(frozen=True)
class SuppressedAlert:
    integration_id: str
    alert_id: str
    cause: str  # snooze | calendar | other
    by: str  # what suppressed it, as the scorer wrote it


def report_days(start: date, end: date) -> list[date]:
    """The dates from ``start`` to ``end``, both included.

    >>> [d.isoformat() for d in report_days(date(2026, 2, 27), date(2026, 3, 1))]
    ['2026-02-27', '2026-02-28', '2026-03-01']
    """
    if end < start:
        raise ValueError(f"report end {end.isoformat()} is before its start {start.isoformat()}")
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def _fetch(objects: ListingStore, bucket: str, keys: Sequence[str]) -> Iterator[tuple[str, bytes | None]]:
    """``(key, body)`` in the order of ``keys``; None for an object deleted since it was listed."""

    def get(key: str) -> tuple[str, bytes | None]:
        try:
            return key, objects.get(bucket, key)
        except FileNotFoundError:
            return key, None

    if len(keys) <= 1:
        yield from map(get, keys)
        return
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(keys))) as pool:
        yield from pool.map(get, keys)


def _text(body: bytes) -> str:
    try:
        return gzip.decompress(body).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a gzip UTF-8 object ({exc})") from exc


def _json_lines(key: str, body: bytes, problems: list[Problem]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of a gzip JSON lines object; unreadable lines become problems."""
    try:
        text = _text(body)
    except ValueError as exc:
        problems.append(Problem(key, str(exc)))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(key, f"line {number} is not JSON: {exc.msg}"))


def read_recorded_alerts(
    objects: ListingStore, bucket: str, days: Sequence[date]
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Every recorded alert of the days, once per ``alert_id`` (the first in key order wins)."""
    problems: list[Problem] = []
    keys = [k for day in days for k in objects.list(bucket, f"{ALERTS_PREFIX}date={day.isoformat()}/")]
    alerts: dict[str, dict[str, Any]] = {}
    for key, body in _fetch(objects, bucket, keys):
        if body is None:
            problems.append(Problem(key, "deleted between listing and reading"))
            continue
        for number, raw in _json_lines(key, body, problems):
            try:
                alert = validate_alert(raw)
            except MalformedAlert as exc:
                problems.append(Problem(key, f"line {number}: {exc}"))
                continue
            alerts.setdefault(alert["alert_id"], alert)
    return list(alerts.values()), problems


def _cause(by: str) -> str:
    head = by.split(" ", 1)[0]
    return head if head in ("snooze", "calendar") else "other"


def read_suppressed(
    objects: ListingStore, bucket: str, days: Sequence[date]
) -> tuple[list[SuppressedAlert], list[Problem]]:
    """Alerts the scorer suppressed on the days, once per (integration, alert id)."""
    problems: list[Problem] = []
    owners: dict[str, str] = {}  # key -> the integration its key names
    for day in days:
        for key in objects.list(bucket, f"suppressed/date={day.isoformat()}/"):
            match = _SUPPRESSED_KEY.fullmatch(key)
            if match is None or not INTEGRATION_ID.fullmatch(match.group(2)):
                problems.append(
                    Problem(key, "not a suppressed/date=<date>/integration=<id>/<name>.jsonl.gz key")
                )
                continue
            owners[key] = match.group(2)
    found: dict[tuple[str, str], SuppressedAlert] = {}
    for key, body in _fetch(objects, bucket, list(owners)):
        if body is None:
            problems.append(Problem(key, "deleted between listing and reading"))
            continue
        integration_id = owners[key]
        for number, raw in _json_lines(key, body, problems):
            alert = raw.get("alert") if isinstance(raw, dict) else None
            by = raw.get("by") if isinstance(raw, dict) else None
            if (
                not isinstance(alert, dict)
                or not isinstance(alert.get("alert_id"), str)
                or not isinstance(by, str)
            ):
                problems.append(
                    Problem(key, f"line {number}: not an object with 'alert' (with 'alert_id') and 'by'")
                )
                continue
            if alert.get("integration_id") != integration_id:
                problems.append(
                    Problem(
                        key,
                        f"line {number}: alert of {alert.get('integration_id')!r:.80} under this integration",
                    )
                )
                continue
            cause = _cause(by)
            if cause == "other":
                problems.append(Problem(key, f"line {number}: unknown suppression cause {by!r:.80}"))
            found.setdefault(
                (integration_id, alert["alert_id"]),
                SuppressedAlert(integration_id, alert["alert_id"], cause, by),
            )
    return list(found.values()), problems


def _float(text: str) -> float:
    return float(text) if text else math.nan


def read_metric_history(
    objects: ListingStore, bucket: str, integration_id: str, days: Sequence[date]
) -> tuple[dict[str, list[HistoryPoint]], list[Problem]]:
    """Each metric total's scored (and known-event) periods of the days, in time order.

    Several syncs may have written the same period (a redelivered sync under a new version, a late
    file): the row of the last object in key order is kept, as the forest's features do.
    """
    problems: list[Problem] = []
    keys = [
        k
        for day in days
        for k in objects.list(bucket, f"history/integration={integration_id}/date={day.isoformat()}/")
    ]
    latest: dict[tuple[str, str], HistoryPoint] = {}
    for key, body in _fetch(objects, bucket, keys):
        if body is None:
            problems.append(Problem(key, "deleted between listing and reading"))
            continue
        try:
            for number, row in total_rows(body, HISTORY_FIELDS):
                if row["status"] not in PLOTTED_STATUSES:
                    continue
                try:
                    start = datetime.fromisoformat(row["period_start"])
                    if start.tzinfo is None:
                        raise ValueError("no UTC offset")
                    point = HistoryPoint(
                        period_start=start.astimezone(UTC),
                        observed=_float(row["observed"]),
                        expected=_float(row["expected"]),
                        lower=_float(row["expected_lower"]),
                        upper=_float(row["expected_upper"]),
                        calendar=row["status"] == "calendar",
                    )
                except ValueError as exc:
                    problems.append(Problem(key, f"row {number} skipped: {exc}"))
                    continue
                latest[(row["metric"], point.period_start.isoformat())] = point
        except ValueError as exc:  # the object as a whole (or from that row on) is unreadable
            problems.append(Problem(key, str(exc)))
    series: dict[str, list[HistoryPoint]] = {}
    for (metric, _), point in sorted(latest.items(), key=lambda item: (item[0][0], item[1].period_start)):
        series.setdefault(metric, []).append(point)
    return series, problems
