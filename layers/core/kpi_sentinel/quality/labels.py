"""The benchmark's vocabulary: labelled anomaly windows, known events and generated scenarios.

A *window* says "this span of this integration is anomalous in these series": an alert on one of
its series inside it catches it. A *known event* (holiday, planned campaign) is what an operator
would have registered in the calendar: it moves the data but is not an anomaly, and any alert in it
is a false alarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Kinds of labelled windows. The EWMA detector is meant to catch all but ``missing_data`` (the
# freshness check's job) and ``level_shift`` (its onset is worth an alert, its new level is not).
ANOMALY_KINDS = (
    "spike",
    "dip",
    "source_crater",
    "drift",
    "suspicious_traffic",
    "conversion_crater",
    "ticket_surge",
    "missing_data",
    "level_shift",
)
EWMA_TARGETED = tuple(k for k in ANOMALY_KINDS if k not in ("missing_data", "level_shift"))
KNOWN_EVENT_KINDS = ("holiday", "campaign")


@dataclass(frozen=True)
class Window:
    """An anomalous span ``[start, end)`` of one integration (UTC, aligned to period starts).

    An alert matches when its metric is one of ``metrics`` and, if ``value`` is set, the alert is on
    the total or on the slice ``dimension = value``; without ``value`` any slice matches.
    """

    integration_id: str
    kind: str
    start: datetime
    end: datetime
    metrics: tuple[str, ...]
    dimension: str | None = None
    value: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "metrics": list(self.metrics),
            "dimension": self.dimension,
            "value": self.value,
            "note": self.note,
        }


@dataclass(frozen=True)
class KnownEvent:
    """A holiday or planned campaign ``[start, end)``; ``integration_id`` None means every integration."""

    integration_id: str | None
    kind: str
    start: datetime
    end: datetime
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "name": self.name,
        }


@dataclass(frozen=True)
class SyncDrop:
    """One file as an integration would drop it: ``key`` is ``syncs/<integration_id>/<name>.<ext>``."""

    key: str
    body: bytes


@dataclass
class Scenario:
    """One generated integration: its files in drop order, its config and its labels."""

    integration_id: str
    archetype: str  # ads | tickets | revenue
    granularity_seconds: int
    season_length: int
    seasonality: str  # weekly | daily
    start: datetime
    end: datetime  # exclusive: the last period starts one granularity before
    syncs: list[SyncDrop]
    windows: list[Window]
    known_events: list[KnownEvent]
    config: Mapping[str, Any] | None = None  # an operator's explicit config; None = inferred
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    seed: int
    scenarios: list[Scenario]

    @property
    def windows(self) -> list[Window]:
        return [w for s in self.scenarios for w in s.windows]

    @property
    def known_events(self) -> list[KnownEvent]:
        return [e for s in self.scenarios for e in s.known_events]
