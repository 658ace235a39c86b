"""Alert ids and snooze matching without :mod:`kpi_sentinel.alerts` (which imports the scorer's numpy).

:func:`alert_id` is the same function as :func:`kpi_sentinel.alerts.alert_id` (a unit test holds them
equal): the jobs compute the ids the scorer gives its alerts, and give their own alerts ids of the
same shape.
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


def snooze_covers(snooze: Mapping[str, Any], integration_id: str, metric: str) -> bool:
    """Whether ``snooze`` covers an alert about ``metric``'s total (no dimension) of the integration.

    The rule of :func:`kpi_sentinel.alerts.snooze_matches` for such an alert: the snooze's integration,
    and its metric when it names one; a snooze narrowed to a dimension or a dimension value covers
    only slices.

    >>> snooze_covers({"integration_id": "a", "metric": "sync"}, "a", "sync")
    True
    >>> snooze_covers({"integration_id": "a", "metric": "ngr"}, "a", "sync")
    False
    """
    if snooze.get("integration_id") != integration_id:
        return False
    if snooze.get("metric") and snooze["metric"] != metric:
        return False
    return not (snooze.get("dimension") or snooze.get("dimension_value"))
