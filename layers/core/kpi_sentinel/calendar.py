"""Known events (holidays, planned campaigns, maintenance) from the operators' calendar.

A period that overlaps a known event of its integration (or a global one) is still scored and kept
in the history, but it never moves a baseline, and an alert on it is suppressed (counted and logged
like a snoozed one): the uplift of a planned campaign is not an anomaly, and next week's baseline
must not learn it either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GLOBAL = "*"


@dataclass(frozen=True)
class KnownEventSpan:
    """``[start, end)`` in epoch seconds; ``integration_id`` ``"*"`` covers every integration."""

    event_id: str
    integration_id: str
    kind: str
    name: str
    start: float
    end: float

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> KnownEventSpan:
        """From a stored item; ``start``/``end`` are epoch seconds or ISO 8601 with a UTC offset."""
        where = f"calendar event {raw.get('event_id', '?')!r}"
        try:
            start, end = _epoch(raw["start"]), _epoch(raw["end"])
        except KeyError as exc:
            raise ValueError(f"{where}: field {exc.args[0]!r} is required") from None
        if end <= start:
            raise ValueError(f"{where}: field 'end' must be after 'start'")
        return cls(
            event_id=str(raw.get("event_id", "")),
            integration_id=str(raw.get("integration_id") or GLOBAL),
            kind=str(raw.get("kind", "event")),
            name=str(raw.get("name", "")),
            start=start,
            end=end,
        )

    def overlaps(self, start: float, end: float) -> bool:
        return self.start < end and start < self.end


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"calendar time {value!r} has no UTC offset")
    return moment.timestamp()


def parse_events(raw: Iterable[Mapping[str, Any]]) -> list[KnownEventSpan]:
    return [KnownEventSpan.from_dict(item) for item in raw]


def calendar_periods(
    periods: Iterable[int], granularity: int, events: Sequence[KnownEventSpan]
) -> dict[int, KnownEventSpan]:
    """The periods (of ``periods``) that overlap a known event, with the first such event.

    >>> e = KnownEventSpan("x", "*", "holiday", "New Year", 7200.0, 10800.0)
    >>> sorted(calendar_periods(range(5), 3600, [e]))
    [2]
    """
    if not events:
        return {}
    found: dict[int, KnownEventSpan] = {}
    for period in periods:
        start = period * granularity
        for event in events:
            if event.overlaps(start, start + granularity):
                found[period] = event
                break
    return found
