"""``isolation_forest`` alerts (schema v1): which features moved, and one sentence a person can act on.

A flagged period becomes one alert per integration and period (its id does not depend on which
feature leads, so a retrained model re-flagging the same period gives the same id). The alert's
``metric`` is the feature furthest from its training distribution; ``features`` lists every feature
the model scored; ``contributors`` rank the features by that distance (``dimension`` is ``feature``).

Floors: a flagged period alerts only when at least one feature that moved clears its metric's floors
(``min_abs_change``, and ``min_volume`` on the larger of observed and expected, or on the ratio's
denominator), as the EWMA does: the rarest corner of a 5-minute series is often a few units of money
in a quiet period, and support should not hear about it.

Example summary: "Conversion 0.5% vs 2.1% typical while clicks are normal (isolation forest over 90
days: rarer than 99% of training periods)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from kpi_sentinel.alert_ids import SCHEMA_VERSION, alert_id
from kpi_sentinel.alerts import display_name, format_value, percent_change
from kpi_sentinel.config import IntegrationConfig, RateSpec, RatioSpec, default_direction
from kpi_sentinel.forest.features import FeatureFrame
from kpi_sentinel.forest.model import ForestModel, contributions

DETECTOR = "isolation_forest"
MOVED_Z = 3.0  # a feature this many robust standard deviations from typical has moved
NORMAL_Z = 1.5  # within this it is "normal" in the summary
BAND_WIDTH = 3.0  # expected_lower / expected_upper: typical +- this many robust standard deviations
CRITICAL_CHANGE = 30.0  # percent
TOP_CONTRIBUTORS = 5


@dataclass(frozen=True)
class FlaggedAlert:
    alert: dict[str, Any]
    calendar: bool  # the period is a known event: the alert is built but suppressed


def _name(metric: str, first: bool) -> str:
    name = display_name(metric)
    return name if first or name.isupper() else name.lower()


def _bad_direction(config: IntegrationConfig | None, metric: str) -> str:
    spec = config.metric(metric) if config else None
    return spec.bad_direction if spec else default_direction(metric)


def summary(
    ranked: list[tuple[str, float]],
    observed: dict[str, float],
    expected: dict[str, float],
    kinds: dict[str, str],
    training_days: int,
    percentile: float,
) -> str:
    moved = [(n, z) for n, z in ranked if abs(z) >= MOVED_Z][:2] or ranked[:1]
    parts = []
    for i, (name, _z) in enumerate(moved):
        ratio = kinds.get(name) == "ratio"
        parts.append(
            f"{_name(name, i == 0)} {format_value(observed[name], ratio)} vs "
            f"{format_value(expected[name], ratio)} typical"
        )
    normal = [n for n, z in ranked if abs(z) < NORMAL_Z and kinds.get(n) == "level"][:2]
    sentence = "; ".join(parts)
    if normal:
        names = " and ".join(_name(n, False) for n in normal)
        sentence += (
            f" while {names} {'is' if len(normal) == 1 and not normal[0].endswith('s') else 'are'} normal"
        )
    rarer = 100 - percentile
    return (
        f"{sentence} (isolation forest over {training_days} days: rarer than {rarer:g}% of training periods)"
    )


def flagged_alerts(
    model: ForestModel,
    frame: FeatureFrame,
    config: IntegrationConfig | None,
    integration_id: str,
    granularity: int,
    model_key: str,
    window_days: int,
) -> list[FlaggedAlert]:
    """Alerts for the periods of ``frame`` whose forest score is below the model's threshold."""
    if len(frame) == 0:
        return []
    scores = model.scores(frame)
    z_rows = model.space.transform(frame)
    out: list[FlaggedAlert] = []
    version = str(model.metadata.get("version", ""))
    # The days the model actually learned from (usable days of its window), not the window's length.
    training_days = int(model.metadata.get("training_days") or window_days)
    for i in (int(k) for k in np.flatnonzero(scores < model.threshold)):
        start = frame.periods[i].to_pydatetime()
        ranked = contributions(model, z_rows[i])
        # Every model feature, also one the scored periods lack (a config narrowed since the retrain).
        observed = {n: _value(frame.observed, n, i) for n in model.features}
        expected = {n: _value(frame.expected, n, i) for n in model.features}
        top, top_z = ranked[0]
        direction = "up" if top_z > 0 else "down"
        bad = _bad_direction(config, top)
        moved = [(n, z) for n, z in ranked if abs(z) >= MOVED_Z] or ranked[:1]
        if not any(clears_floors(config, n, observed, expected) for n, _ in moved):
            continue
        in_bad_direction = any(
            _bad_direction(config, n) in ("both", "up" if z > 0 else "down") for n, z in moved
        )
        change = percent_change(observed[top], expected[top])
        if not in_bad_direction:
            severity = "info"
        elif scores[i] < model.min_training_score and (change is None or abs(change) >= CRITICAL_CHANGE):
            severity = "critical"  # rarer than every training period, and a large move
        else:
            severity = "warning"
        lower, upper = model.space.band(top, expected[top], BAND_WIDTH)
        pool = sum(abs(z) for _, z in moved) or 1.0
        found = [
            {
                "dimension": "feature",
                "value": name,
                "share": round(abs(z) / pool, 4) if (name, z) in moved else 0.0,
                "delta": _round(observed[name] - expected[name]),
                "observed": _round(observed[name]),
                "expected": _round(expected[name]),
                "score": round(z, 4),
            }
            for name, z in ranked[:TOP_CONTRIBUTORS]
            if math.isfinite(observed[name]) and math.isfinite(expected[name])
        ]
        alert = {
            "schema_version": SCHEMA_VERSION,
            "alert_id": alert_id(integration_id, DETECTOR, "features", "", "", start.isoformat()),
            "integration_id": integration_id,
            "detector": DETECTOR,
            "metric": top,
            "features": list(model.features),
            "dimension": None,
            "dimension_value": None,
            "period_start": start.isoformat(),
            "period_end": (start + timedelta(seconds=granularity)).isoformat(),
            "granularity_seconds": granularity,
            "observed": _round(observed[top]),
            "expected": _round(expected[top]),
            "expected_lower": _round(lower),
            "expected_upper": _round(upper),
            "deviation": {
                "absolute": _round(observed[top] - expected[top]),
                "percent": None if change is None else round(change, 2),
            },
            "score": round(top_z, 4),
            "sustained_score": None,
            "threshold": round(-model.threshold, 6),
            "anomaly_score": round(-float(scores[i]), 6),
            "model_version": version,
            "direction": direction,
            "bad_direction": bad,
            "severity": severity,
            "contributors": found,
            "summary": summary(
                ranked, observed, expected, dict(model.space.kinds), training_days, model.percentile
            ),
            "baseline": f"{training_days}-day isolation forest",
            "tier": config.tier if config else "standard",
            "segment": config.segment if config else "default",
            "source_key": model_key,
        }
        out.append(FlaggedAlert(alert, bool(frame.calendar[i])))
    return out


def clears_floors(
    config: IntegrationConfig | None, name: str, observed: dict[str, float], expected: dict[str, float]
) -> bool:
    """Whether feature ``name``'s move is big enough to tell anyone about (see the module docstring)."""
    spec = config.metric(name) if config else None
    if spec is None:
        return True
    seen, typical = observed.get(name, math.nan), expected.get(name, math.nan)
    if not (math.isfinite(seen) and math.isfinite(typical)):
        return True  # nothing to measure the floors on: the model's verdict stands
    if abs(seen - typical) < spec.min_abs_change:
        return False
    if isinstance(spec, RatioSpec):
        volume = observed.get(spec.denominator, math.nan)
        return not math.isfinite(volume) or volume >= spec.min_volume
    if isinstance(spec, RateSpec):
        return True  # the rate's event volume is not a feature: the change floor alone applies
    return max(abs(seen), abs(typical)) >= spec.min_volume


def _value(table: Any, name: str, row: int) -> float:
    return float(table[name].iloc[row]) if name in table.columns else math.nan


def _round(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else 0.0
