"""The threshold choice: recall first, under a precision floor, within bounds (pure; no I/O).

**The model.** A metric's alerts are judged by their period's *strength* (the EWMA z-score of the
metric's total or slice as the history records it, ``|score|``, or its slow chart's ``|sustained|``
when that alerts the period: see :attr:`kpi_sentinel.operator_jobs.tuning.Period.strength`): at
threshold ``t`` a labelled alert *fires* when its strength ``>= t``. Labels: ``true_positive`` and ``false_positive`` count; ``expected`` (a real move that
was known, e.g. a campaign) counts for neither — it belongs in the calendar, not in the threshold.
This is a model: the scorer also needs confirmation over consecutive periods below twice the
threshold, and groups slices that move with their alerting total into the total's alert.

* ``recall(t)`` = labelled true positives that fire at ``t`` / all labelled true positives;
* ``precision(t)`` = true positives / (true positives + false positives) firing at ``t``, where below the
  current threshold every *unlabelled* scored period that would newly fire counts as a false positive
  (nobody has ever been shown it: lowering the threshold is paid for with the alerts it adds).
  Unlabelled periods at or above the current threshold are left out (operators label a sample).

**The rule.** Among the thresholds in ``[lower, upper]`` that keep every labelled true positive the
current threshold catches (``recall(t) >= recall(current)``: never above the smallest of them, so
recall does not drop) and meet the precision floor (a threshold at which nothing fires meets it: it
raises no false alarm), choose the one of highest recall, then the one
closest to the current threshold, then the higher one. If the current threshold is one of the best,
nothing changes (so a rerun on the same evidence changes nothing). If none qualifies, nothing
changes and the reason says why. A current threshold outside the bounds (an operator's config
threshold, or bounds narrowed since it was tuned) is left alone.

Candidates are the bounds, the current threshold, every labelled and unlabelled ``|score|`` in the
bounds and the midpoints between neighbours, rounded to :data:`DECIMALS` decimals *before* they are
evaluated, so what is stored is exactly what was judged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

DECIMALS = 2


@dataclass(frozen=True)
class Labelled:
    """One labelled alert of the metric: its period's ``|score|`` and whether it was a true positive."""

    strength: float
    positive: bool


@dataclass(frozen=True)
class Bounds:
    lower: float = 2.5
    upper: float = 8.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and 0 < self.lower <= self.upper):
            raise ValueError(
                f"threshold bounds must satisfy 0 < lower <= upper, got {self.lower}, {self.upper}"
            )


@dataclass(frozen=True)
class Quality:
    """How a threshold does on the labelled evidence."""

    threshold: float
    true_positives: int
    false_positives: int  # labelled false positives firing, plus the unlabelled periods it would add
    added_unlabelled: int  # unlabelled periods below the current threshold that would fire
    precision: float | None  # None when nothing fires
    recall: float | None  # None without labelled true positives

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    current: float
    threshold: float  # the chosen one; equal to ``current`` when nothing changes
    changed: bool
    reason: str
    before: Quality
    after: Quality


def evaluate(
    threshold: float, current: float, labelled: Sequence[Labelled], unlabelled: Sequence[float]
) -> Quality:
    """>>> q = evaluate(4.0, 4.0, [Labelled(5.0, True), Labelled(4.5, False), Labelled(3.0, True)], [3.5])
    >>> (q.true_positives, q.false_positives, q.precision, q.recall)
    (1, 1, 0.5, 0.5)
    >>> evaluate(3.0, 4.0, [Labelled(5.0, True), Labelled(3.0, True)], [3.5, 4.2]).false_positives
    1
    """
    tp = sum(1 for item in labelled if item.positive and item.strength >= threshold)
    fp = sum(1 for item in labelled if not item.positive and item.strength >= threshold)
    added = sum(1 for s in unlabelled if threshold <= s < current)
    positives = sum(1 for item in labelled if item.positive)
    fired = tp + fp + added
    return Quality(
        threshold=threshold,
        true_positives=tp,
        false_positives=fp + added,
        added_unlabelled=added,
        precision=round(tp / fired, 4) if fired else None,
        recall=round(tp / positives, 4) if positives else None,
    )


def candidates(current: float, strengths: Sequence[float], bounds: Bounds) -> list[float]:
    """The thresholds worth judging (see the module docstring), rounded, in increasing order.

    >>> candidates(3.5, [3.6, 3.8, 5.2], Bounds(2.5, 8.0))
    [2.5, 3.0, 3.5, 3.55, 3.6, 3.7, 3.8, 4.5, 5.2, 6.6, 8.0]
    """
    inside = sorted({s for s in strengths if bounds.lower <= s <= bounds.upper and math.isfinite(s)})
    points = {bounds.lower, bounds.upper, *inside}
    if bounds.lower <= current <= bounds.upper:
        points.add(current)
    edges = sorted(points)
    points.update((a + b) / 2 for a, b in itertools.pairwise(edges))
    rounded = {round(p, DECIMALS) for p in points}
    return sorted(p for p in rounded if bounds.lower <= p <= bounds.upper)


def choose(
    current: float,
    labelled: Sequence[Labelled],
    unlabelled: Sequence[float],
    bounds: Bounds,
    precision_floor: float,
) -> Choice:
    """The threshold to use for one metric, by the rule of the module docstring.

    >>> fp, tp = [3.6, 3.8, 4.1, 4.4], [5.2, 6.0, 7.5]
    >>> labels = [Labelled(s, False) for s in fp] + [Labelled(s, True) for s in tp]
    >>> choose(3.5, labels, [], Bounds(), 0.5).threshold
    3.7
    >>> choose(3.5, labels, [], Bounds(), 0.9).threshold
    4.8
    """
    if not 0 <= precision_floor <= 1:
        raise ValueError(f"precision floor must be in [0, 1], got {precision_floor}")
    before = evaluate(current, current, labelled, unlabelled)

    def unchanged(reason: str) -> Choice:
        return Choice(current, current, False, reason, before, before)

    if not bounds.lower <= current <= bounds.upper:
        return unchanged(
            f"current threshold {current:g} is outside the tuning bounds [{bounds.lower:g}, "
            f"{bounds.upper:g}]: left alone"
        )
    if not any(item.positive for item in labelled):
        return unchanged("no labelled true positive to keep")
    floor_recall = before.recall or 0.0
    feasible: list[Quality] = []
    for t in candidates(current, [*(i.strength for i in labelled), *unlabelled], bounds):
        quality = evaluate(t, current, labelled, unlabelled)
        recall = quality.recall or 0.0
        if recall + 1e-12 < floor_recall:
            continue  # would lose a true positive the current threshold catches
        if quality.precision is not None and quality.precision + 1e-12 < precision_floor:
            continue  # (a threshold at which nothing fires raises no false alarm: it meets any floor)
        feasible.append(quality)
    if not feasible:
        return unchanged(
            f"no threshold in [{bounds.lower:g}, {bounds.upper:g}] reaches precision {precision_floor:g} "
            f"without losing a labelled true positive (precision now {_share(before.precision)})"
        )
    best = max(feasible, key=lambda q: (q.recall or 0.0, -abs(q.threshold - current), q.threshold))
    if any(q.threshold == current for q in feasible) and (best.recall or 0.0) <= floor_recall + 1e-12:
        return unchanged(
            f"current threshold {current:g} already keeps recall {_share(before.recall)} at precision "
            f"{_share(before.precision)} (floor {precision_floor:g})"
        )
    if abs(best.threshold - current) < 10**-DECIMALS / 2:
        return unchanged(f"current threshold {current:g} is already the best")
    verb = "raised" if best.threshold > current else "lowered"
    reason = (
        f"{verb} from {current:g} to {best.threshold:g}: recall {_share(before.recall)} -> "
        f"{_share(best.recall)}, precision {_share(before.precision)} -> {_share(best.precision)} "
        f"(floor {precision_floor:g})"
    )
    return Choice(current, best.threshold, True, reason, before, best)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
