"""Request and response bodies of the operator API (pydantic v2): the contract the OpenAPI shows.

Every request body forbids unknown fields, so a misspelt field (``untill``) is an error that names
it instead of being ignored. Texts are stripped and must not be empty or hold control characters;
times must carry a UTC offset and lie between 2000 and 2200. What needs more than one field or the
clock (``until`` xor ``duration_minutes``, ``end`` after ``start``, a snooze in the future) is checked
by :mod:`kpi_sentinel.operator.service`, which answers the same way (422, naming the field).

Numbers are strict: ``true`` or ``"90"`` where a number is due is a 422, not 1 or 90. Floors and
thresholds are bounded to what means something (and what DynamoDB can store: no number is kept
below 1e-130 or above 1e126): a floor is 0 or between :data:`MIN_FLOOR` and :data:`MAX_FLOOR`, a
threshold between :data:`MIN_THRESHOLD` and :data:`MAX_THRESHOLD` standard deviations.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_SNOOZE_MINUTES = 90 * 24 * 60  # a snooze lasts at most 90 days
MIN_THRESHOLD = 0.1  # standard deviations
MAX_THRESHOLD = 100.0
MIN_FLOOR = 1e-9  # a floor is 0 or at least this ...
MAX_FLOOR = 1e15  # ... and at most this (in the metric's own unit)


def _sane_time(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError("must be between 2000-01-01 and 2200-01-01")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _floor(value: float | None) -> float | None:
    if value is not None and 0 < value < MIN_FLOOR:
        raise ValueError(f"must be 0 or at least {MIN_FLOOR:g}")
    return value


_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=_NO_CONTROL)
]
Moment = Annotated[AwareDatetime, AfterValidator(_sane_time)]
Label = Literal["true_positive", "false_positive", "expected"]
EventKind = Literal["campaign", "holiday", "maintenance"]
Direction = Literal["down", "up", "both"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- snoozes --------------------------------------------------------------------------------------------


class SnoozeRequest(_Request):
    """A snooze of an integration's alerts, optionally narrowed to a metric and/or a dimension value.

    Give exactly one of ``until`` and ``duration_minutes``. The caller's identity is recorded as
    ``who``; it is never taken from the body.
    """

    metric: Name | None = Field(None, description="Only this metric's alerts (default: every metric).")
    dimension: Name | None = Field(None, description="Only alerts on this dimension's slices.")
    dimension_value: Name | None = Field(
        None, description="Only this slice (and total alerts whose top contributor it is)."
    )
    until: Moment | None = Field(None, description="End of the snooze: ISO 8601 with a UTC offset.")
    duration_minutes: int | None = Field(
        None, ge=1, le=MAX_SNOOZE_MINUTES, strict=True, description="Or: minutes from now."
    )
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=_NO_CONTROL)
    ] = Field(description="Why (required): shown next to every alert it suppresses.")


class Snooze(BaseModel):
    snooze_id: str
    integration_id: str
    metric: str | None
    dimension: str | None
    dimension_value: str | None
    until: datetime
    reason: str
    who: str
    created_at: str


class SnoozeList(BaseModel):
    integration_id: str
    snoozes: list[Snooze]


# --- feedback -------------------------------------------------------------------------------------------


class LabelRequest(_Request):
    label: Label
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = ""


class AlertLabel(BaseModel):
    alert_id: str
    integration_id: str
    label: str
    note: str
    who: str
    at: str


class LabelledAlert(BaseModel):
    """A recorded alert (the fields an operator needs to judge it) and its label, if any."""

    alert_id: str
    detector: str
    metric: str
    dimension: str | None
    dimension_value: str | None
    period_start: str
    severity: str
    direction: str
    observed: float
    expected: float
    score: float
    summary: str
    label: AlertLabel | None


class AlertList(BaseModel):
    integration_id: str
    date: str
    alerts: list[LabelledAlert]
    unreadable_objects: int = Field(
        description="Objects or lines of the day's recorded alerts that could not be read (logged)."
    )


# --- calendar -------------------------------------------------------------------------------------------


class CalendarRequest(_Request):
    """A known event: periods overlapping ``[start, end)`` are scored, never learned, and not alerted."""

    kind: EventKind
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_NO_CONTROL)
    ]
    start: Moment
    end: Moment


class CalendarEvent(BaseModel):
    event_id: str
    integration_id: str = Field(description='The integration, or "*" for a global event.')
    kind: str
    name: str
    start: datetime
    end: datetime
    who: str
    created_at: str


class CalendarList(BaseModel):
    events: list[CalendarEvent]


# --- overrides ------------------------------------------------------------------------------------------


class OverrideRequest(_Request):
    """A metric's override: the fields given replace the config's; the others are not overridden.

    ``expected_version`` (optional) makes the change conditional: 409 when the stored override is at
    another version (0: there must be none yet).
    """

    threshold: Annotated[float | None, AfterValidator(_finite)] = Field(
        None,
        ge=MIN_THRESHOLD,
        le=MAX_THRESHOLD,
        strict=True,
        description="Alert threshold in standard deviations.",
    )
    bad_direction: Direction | None = None
    min_abs_change: Annotated[float | None, AfterValidator(_finite), AfterValidator(_floor)] = Field(
        None, ge=0, le=MAX_FLOOR, strict=True, description=f"0, or from {MIN_FLOOR:g} to {MAX_FLOOR:g}."
    )
    min_volume: Annotated[float | None, AfterValidator(_finite), AfterValidator(_floor)] = Field(
        None, ge=0, le=MAX_FLOOR, strict=True, description=f"0, or from {MIN_FLOOR:g} to {MAX_FLOOR:g}."
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""
    expected_version: int | None = Field(None, ge=0, le=2**53, strict=True)


class Override(BaseModel):
    metric: str
    threshold: float | None
    bad_direction: str | None
    min_abs_change: float | None
    min_volume: float | None
    version: int
    updated_by: str
    updated_at: str
    reason: str


class OverrideList(BaseModel):
    integration_id: str
    overrides: list[Override]


class AuditEntry(BaseModel):
    audit_id: str
    kind: str
    subject: str
    who: str
    at: str
    old: Any = None
    new: Any = None
    reason: str


class AuditList(BaseModel):
    integration_id: str
    entries: list[AuditEntry]
    next_before: str | None = Field(
        description="Pass as ``before`` for the next (older) page; null on the last page."
    )


# --- incidents ------------------------------------------------------------------------------------------


class Incident(BaseModel):
    """An incident record (schemas/incident-v1.json); fields not listed here are passed through."""

    model_config = ConfigDict(extra="allow")

    incident_id: str
    integration_id: str
    family: str
    team: str
    priority: str
    status: str
    severity: str
    opened_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None = Field(
        None, description="Who acknowledged it (the caller's identity); null until then or when unknown."
    )
    resolved_at: str | None
    resolved_by: str | None = Field(
        None,
        description="Who resolved it: the caller's identity, or freshness-check when the integration's "
        "data resumed; null until then or when unknown.",
    )
    resolution_reason: str | None = Field(
        None,
        description="operator (resolved through this API) or data_resumed (syncs resumed after a "
        "missing_data outage); null until resolved or when unknown.",
    )
    due_at: str
    summary: str
    count: int


class IncidentList(BaseModel):
    incidents: list[Incident]


# --- callers and errors ---------------------------------------------------------------------------------


class WhoAmI(BaseModel):
    who: str
    source: str = Field(description="iam or jwt: the authorizer that identified the caller.")
    integrations: list[str] = Field(description='The caller\'s scope ("*": every integration).')


class ErrorBody(BaseModel):
    statusCode: int  # the name Powertools' own error bodies use
    message: str
