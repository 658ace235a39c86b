"""Use case: record the alerts of one kpi-report queue batch in the data bucket.

Every alert the system publishes (info, warning and critical) reaches the kpi-report queue through
the alerts topic with raw delivery, one alert JSON per message. A batch is written as one gzip JSON
lines object per UTC date of the alerts' period start (see :mod:`kpi_sentinel.report` for the key).

A message is checked before anything is written: one that is not JSON, not an alert object, or lacks
a field the report relies on (or carries a value of the wrong kind there) raises
:class:`MalformedAlert` naming the field. The handler turns that into a batch item failure, so the
message is retried and then reaches the queue's DLQ while the rest of its batch is recorded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import ObjectStore

ALERT_ID = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{32}")  # as in schemas/alert-v1.json
SEVERITIES = ("info", "warning", "critical")
ALERTS_PREFIX = "alerts/"


class MalformedAlert(ValueError):
    """A kpi-report message that is not a usable schema-v1 alert; ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"alert field '{field}' {reason}")
        self.field = field


@dataclass(frozen=True)
class RecordedObject:
    key: str
    day: date
    alerts: int


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(raw: Mapping[str, Any], name: str, *, empty: bool = False, optional: bool = False) -> None:
    if name not in raw:
        raise MalformedAlert(name, "is missing")
    value = raw[name]
    if value is None and optional:
        return
    if not isinstance(value, str) or (not empty and not value):
        kind = "a string or null" if optional else "a non-empty string" if not empty else "a string"
        raise MalformedAlert(name, f"must be {kind}, got {value!r:.80}")


def period_start_of(raw: Mapping[str, Any]) -> datetime:
    """The alert's period start as an aware UTC datetime (MalformedAlert when it is not one)."""
    value = raw.get("period_start")
    if not isinstance(value, str):
        raise MalformedAlert(
            "period_start", "is missing" if value is None else f"must be a string: {value!r:.80}"
        )
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedAlert("period_start", f"is not an ISO 8601 time: {value!r:.80}") from None
    if start.tzinfo is None:
        raise MalformedAlert("period_start", f"needs a UTC offset: {value!r:.80}")
    return start.astimezone(UTC)


def validate_alert(raw: Any) -> dict[str, Any]:
    """The alert itself when it has every field the report reads, in the schema's types.

    Checked: ``alert_id`` and ``integration_id`` (the schema's patterns), ``period_start`` (ISO 8601
    with an offset), ``detector``, ``metric``, ``severity`` (info, warning, critical), ``dimension``
    and ``dimension_value`` (string or null), ``observed``, ``expected`` and ``score`` (finite
    numbers), ``deviation.percent`` (number or null), ``direction``, ``summary`` and ``contributors``
    (objects with ``dimension``, ``value`` and a numeric ``share``). Fields the report does not read
    are kept as they are and not checked: schema v1 only grows.
    """
    if not isinstance(raw, dict):
        raise MalformedAlert("(message)", f"must be a JSON object, got {type(raw).__name__}")
    _text(raw, "alert_id")
    if not ALERT_ID.fullmatch(raw["alert_id"]):
        raise MalformedAlert("alert_id", f"is not <detector>-<32 hex>: {raw['alert_id']!r:.80}")
    _text(raw, "integration_id")
    if not INTEGRATION_ID.fullmatch(raw["integration_id"]):
        raise MalformedAlert(
            "integration_id", f"is not a valid integration id: {raw['integration_id']!r:.80}"
        )
    period_start_of(raw)
    for name in ("detector", "metric", "direction"):
        _text(raw, name)
    _text(raw, "summary", empty=True)
    if raw.get("severity") not in SEVERITIES:
        raise MalformedAlert(
            "severity", f"must be one of {', '.join(SEVERITIES)}, got {raw.get('severity')!r:.80}"
        )
    for name in ("dimension", "dimension_value"):
        _text(raw, name, optional=True)
    for name in ("observed", "expected", "score"):
        if not _number(raw.get(name)):
            raise MalformedAlert(name, f"must be a finite number, got {raw.get(name)!r:.80}")
    deviation = raw.get("deviation")
    if not isinstance(deviation, dict) or "percent" not in deviation:
        raise MalformedAlert("deviation", "must be an object with 'percent'")
    if deviation["percent"] is not None and not _number(deviation["percent"]):
        raise MalformedAlert(
            "deviation.percent", f"must be a number or null, got {deviation['percent']!r:.80}"
        )
    contributors = raw.get("contributors")
    if not isinstance(contributors, list):
        raise MalformedAlert("contributors", "must be a list")
    for n, item in enumerate(contributors):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("dimension"), str)
            and isinstance(item.get("value"), str)
            and _number(item.get("share"))
        ):
            raise MalformedAlert(
                f"contributors[{n}]", "must have string dimension and value and a numeric share"
            )
    return raw


def parse_alert_message(body: str) -> dict[str, Any]:
    """One queue message body as a checked alert.

    Raw delivery (the body is the alert) is the contract; an SNS envelope (raw delivery switched off)
    is unwrapped rather than sent to the DLQ, since its ``Message`` is the same alert.
    """
    try:
        raw = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedAlert("(message)", f"is not JSON: {exc.msg} at character {exc.pos}") from None
    if isinstance(raw, dict) and raw.get("Type") == "Notification" and isinstance(raw.get("Message"), str):
        return parse_alert_message(raw["Message"])
    return validate_alert(raw)


def alerts_key(day: date, alert_ids: Iterable[str]) -> str:
    """``alerts/date=<day>/<24 hex>.jsonl.gz``: the same set of alert ids always gives the same key.

    >>> alerts_key(date(2026, 11, 24), ["b", "a", "a"])
    'alerts/date=2026-11-24/7e18f737311b2dc3b2f269dd.jsonl.gz'
    """
    digest = hashlib.sha256("\n".join(sorted(set(alert_ids))).encode()).hexdigest()[:24]
    return f"{ALERTS_PREFIX}date={day.isoformat()}/{digest}.jsonl.gz"


def alerts_body(alerts: Sequence[Mapping[str, Any]]) -> bytes:
    """Gzip JSON lines in alert id order, gzip without a timestamp: equal alerts give equal bytes."""
    lines = [
        json.dumps(a, sort_keys=True, separators=(",", ":"))
        for a in sorted(alerts, key=lambda a: a["alert_id"])
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)


def record_alerts(
    objects: ObjectStore, bucket: str, alerts: Sequence[Mapping[str, Any]]
) -> list[RecordedObject]:
    """Write checked alerts as one object per period-start date; an alert id seen twice is written once."""
    by_day: dict[date, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for alert in alerts:
        by_day[period_start_of(alert).date()].setdefault(alert["alert_id"], alert)
    written = []
    for day, unique in sorted(by_day.items()):
        key = alerts_key(day, unique)
        objects.put(bucket, key, alerts_body(list(unique.values())), "application/gzip")
        written.append(RecordedObject(key, day, len(unique)))
    return written
