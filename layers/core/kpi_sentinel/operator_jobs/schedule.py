"""What a scheduled operator job is asked to do: the moment it runs for.

The input is an EventBridge ``Scheduled Event`` envelope (the moment is its ``time``), or a plain
object ``{"as_of": "<ISO 8601 with offset>"}`` to replay a past moment (the local runner, backfills),
or ``{}`` for now. Other fields are read by each job (see its handler).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


class BadJobEvent(ValueError):
    """An invocation event a scheduled job cannot run; the message names the field."""


def _moment(value: Any, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadJobEvent(f"field {field!r} is not an ISO 8601 time: {value!r:.80}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise BadJobEvent(f"field {field!r} needs a UTC offset: {value!r:.80}")
    return moment.astimezone(UTC)


def as_of(event: Mapping[str, Any], now: datetime) -> datetime:
    """The moment the job runs for (UTC): the schedule's ``time``, a replayed ``as_of``, else ``now``.

    >>> as_of({"detail-type": "Scheduled Event", "time": "2026-11-25T02:00:00Z"}, datetime.now(UTC))
    datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.timezone.utc)
    >>> as_of({"as_of": "2026-11-25T03:00:00+01:00"}, datetime.now(UTC)).isoformat()
    '2026-11-25T02:00:00+00:00'
    """
    if not isinstance(event, Mapping):
        raise BadJobEvent(f"the event must be a JSON object, got {type(event).__name__}")
    if event.get("as_of") is not None:
        return _moment(event["as_of"], "as_of")
    if event.get("detail-type") == "Scheduled Event":
        if event.get("time") is None:
            raise BadJobEvent("scheduled event field 'time' is missing")
        return _moment(event["time"], "time")
    return now.astimezone(UTC)
