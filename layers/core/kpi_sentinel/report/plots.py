"""One small PNG per metric: observed total, expected band, flagged periods coloured by severity.

matplotlib is imported inside :func:`metric_plot` only (0.7 s of import, and a font cache to build):
the alert-recording path of the report function never pays for it. The object-oriented API (a
``Figure`` on an Agg canvas, no pyplot) keeps no global state between plots. Every text drawn comes
from data, so math-text parsing is switched off: a metric called ``a$b`` is printed as it is.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kpi_sentinel.report.data import HistoryPoint

SEVERITY_COLOURS = {"critical": "#b00020", "warning": "#e08a00", "info": "#1f6fb2"}
FIGURE_INCHES = (6.4, 2.2)
DPI = 80


def _matplotlib_home() -> None:
    """matplotlib writes its font cache under MPLCONFIGDIR; on Lambda only /tmp is writable."""
    if "MPLCONFIGDIR" not in os.environ:
        folder = os.path.join(tempfile.gettempdir(), "matplotlib")
        os.makedirs(folder, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = folder


def _date_numbers(moments: Sequence[datetime]) -> Any:
    """matplotlib's date numbers: its stubs type plot arguments as numbers, not datetimes."""
    from matplotlib.dates import date2num

    return date2num(list(moments))  # type: ignore[no-untyped-call]


def split_flagged(
    points: Sequence[HistoryPoint], flagged: Sequence[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(dots, spans)``: alerts drawn at their period's observed value, and alerts about a longer
    period than the plotted ones (an hourly roll-up of 5-minute data: its observed value is an hour's
    sum, on another scale), drawn as a band over their period. Alerts without a finite observed
    value are left out."""
    times = sorted({p.period_start for p in points})
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    spacing = min(gaps) if gaps else None
    dots: list[Mapping[str, Any]] = []
    spans: list[Mapping[str, Any]] = []
    for alert in flagged:
        length = alert.get("granularity_seconds")
        if spacing is not None and isinstance(length, int) and length > spacing:
            spans.append(alert)
        elif math.isfinite(float(alert["observed"])):
            dots.append(alert)
    return dots, spans


def metric_plot(
    title: str,
    points: Sequence[HistoryPoint],
    flagged: Sequence[Mapping[str, Any]],
    span: tuple[datetime, datetime],
) -> bytes:
    """A PNG (6.4 x 2.2 in at 80 dpi, about 10-25 KB) of one metric total over ``span`` (the report's range).

    ``flagged`` are alerts on this metric's total; each is drawn at its period start and observed
    value, in its severity's colour, or as a band over its period when it is about a longer period
    than the plotted ones (:func:`split_flagged`). Known-event periods (campaigns, holidays) are
    marked in grey.
    """
    _matplotlib_home()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    times = _date_numbers([p.period_start for p in points])
    axes.fill_between(
        times, [p.lower for p in points], [p.upper for p in points],
        color="#9ecae1", alpha=0.45, linewidth=0, label="expected band",
    )  # fmt: skip
    axes.plot(
        times, [p.expected for p in points], color="#4a90c2", linewidth=0.8, linestyle="--", label="expected"
    )
    axes.plot(times, [p.observed for p in points], color="#222222", linewidth=1.1, label="observed")
    known = [p for p in points if p.calendar]
    if known:
        axes.scatter(
            _date_numbers([p.period_start for p in known]), [p.observed for p in known],
            s=10, color="#888888", marker="x", linewidths=0.8, label="known event", zorder=3,
        )  # fmt: skip
    dots, spans = split_flagged(points, flagged)
    for severity in reversed(tuple(SEVERITY_COLOURS)):
        for n, alert in enumerate(a for a in spans if a.get("severity") == severity):
            start, end = (
                datetime.fromisoformat(alert[k]).astimezone(UTC) for k in ("period_start", "period_end")
            )
            axes.axvspan(
                *_date_numbers([start, end]), color=SEVERITY_COLOURS[severity], alpha=0.2, linewidth=0,
                label=None if n else f"{severity} (hour)", zorder=1,
            )  # fmt: skip
        mine = [a for a in dots if a.get("severity") == severity]
        if mine:
            axes.scatter(
                _date_numbers([datetime.fromisoformat(a["period_start"]).astimezone(UTC) for a in mine]),
                [float(a["observed"]) for a in mine],
                s=22, color=SEVERITY_COLOURS[severity], edgecolors="white", linewidths=0.6,
                label=severity, zorder=4,
            )  # fmt: skip
    axes.set_xlim(*_date_numbers(span))  # every plot of a report on the same time axis
    locator = AutoDateLocator(tz=UTC, maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    # No offset text: for a one-day range it would name the day after (the axis ends at its midnight).
    formatter = ConciseDateFormatter(locator, tz=UTC, show_offset=False)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(formatter)
    axes.set_xlabel("UTC", fontsize=7, loc="right", labelpad=1)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.25, linewidth=0.5)
    axes.set_title(title, fontsize=9, loc="left", parse_math=False)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
