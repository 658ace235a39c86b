"""What an alert is known by, without the scorer's numpy: its id, its schema version, what snoozes it.

:mod:`kpi_sentinel.alerts` builds the EWMA's alerts with these; the jobs that must stay light (the
freshness check, threshold tuning) use them directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = "1"


def alert_id(integration_id: str, detector: str, metric: str, dimension: str, value: str, start: str) -> str:
    """Deterministic: the same integration, detector, series and period always give the same id.

    >>> alert_id("acme-ads", "ewma", "ngr", "", "", "2026-10-15T12:00:00+00:00")
    'ewma-62b9241ce6e02396835c0e2529ff34d5'
    """
    text = "\x1f".join((integration_id, detector, metric, dimension, value, start))
    return f"{detector}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def snooze_matches(snooze: Mapping[str, Any], alert: Mapping[str, Any]) -> bool:
    """A snooze covers its integration, optionally narrowed to a metric and/or a dimension value.

    A snooze on a dimension value also covers a total alert whose top contributor is that value.
    """
    if snooze.get("integration_id") != alert["integration_id"]:
        return False
    if snooze.get("metric") and snooze["metric"] != alert["metric"]:
        return False
    dimension = snooze.get("dimension")
    if snooze.get("dimension_value"):
        value = snooze["dimension_value"]
        own = value == alert["dimension_value"] and (not dimension or dimension == alert["dimension"])
        in_contributors = any(
            c["value"] == value and (not dimension or c["dimension"] == dimension)
            for c in alert["contributors"][:1]
        )
        return bool(own or in_contributors)
    return not (dimension and dimension != alert["dimension"])
