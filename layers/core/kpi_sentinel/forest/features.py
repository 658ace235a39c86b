"""Feature rows for the isolation forest, built from the history store the scorer writes.

One row per period, one feature per metric total of the integration (its counts and money metrics,
its derived ratios and rates). A feature is the period's deviation from the scorer's seasonal
baseline for that period, in a variance-stabilising transform:

* counts and money: ``slog(observed) - slog(expected)`` with ``slog(x) = sign(x) * log1p(|x|)`` (log1p
  for counts; also defined for a negative NGR);
* ratios and rates (conversion, high-priority rate): ``(observed - expected) / typical``, where
  ``typical`` is the training window's median expected value (a relative change of the ratio).

Working on deviations from the seasonal baseline rather than on raw levels is what lets a forest over
90 days of hourly data see a night-time crater at all: raw levels are dominated by the hour of day.
Each feature is then robust-scaled (median, IQR) on the training window, so one huge day does not
set the scale. What the forest adds to the EWMA is the *joint* view: clicks flat while conversions
crater is one isolated point in this space even when no single series is past its threshold.

Rows the scorer marked ``warmup`` are usable once they have an expectation (a series warms up for two
seasons before it may alert, but from its second season on its residuals are what the forest learns
from); the first season's, with no baseline yet, are not. ``late`` rows are not periods of
their own; ``calendar`` rows (known campaigns, holidays) are kept out of training and their alerts are
suppressed.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from kpi_sentinel.config import IntegrationConfig, RateSpec, RatioSpec

FeatureKind = Literal["level", "ratio"]
FloatArray = npt.NDArray[np.float64]
USABLE_STATUSES = ("scored", "calendar")
IQR_TO_SIGMA = 1.349  # the IQR of a normal distribution in standard deviations
MIN_SCALE = 1e-3  # a feature that never moves in training gets this scale, not zero


class HistoryError(ValueError):
    """A history object that cannot be read; the message names the object and the row."""


@dataclass(frozen=True)
class FeatureFrame:
    """Per period: observed and expected value of each feature metric, and whether it is a known event."""

    periods: pd.DatetimeIndex
    observed: pd.DataFrame  # index: periods, columns: feature names
    expected: pd.DataFrame
    calendar: npt.NDArray[np.bool_]
    kinds: Mapping[str, FeatureKind]
    alerted: npt.NDArray[np.bool_] | None = None  # the EWMA raised a warning or worse in the period
    late_rows: int = 0
    unusable_rows: int = 0

    @property
    def names(self) -> list[str]:
        return list(self.observed.columns)

    def __len__(self) -> int:
        return len(self.periods)

    def between(self, start: datetime, end: datetime) -> FeatureFrame:
        """The periods in ``[start, end)``."""
        mask = np.asarray((self.periods >= pd.Timestamp(start)) & (self.periods < pd.Timestamp(end)))
        return self.subset(mask)

    def subset(self, mask: npt.NDArray[np.bool_]) -> FeatureFrame:
        return FeatureFrame(
            periods=self.periods[mask],
            observed=self.observed.loc[mask],
            expected=self.expected.loc[mask],
            calendar=self.calendar[mask],
            kinds=self.kinds,
            alerted=None if self.alerted is None else self.alerted[mask],
        )


HISTORY_FIELDS = ("period_start", "metric", "dimension", "observed", "expected", "status")


def _csv_rows(key: str, body: bytes, what: str) -> tuple[list[str], Iterator[list[str]]]:
    """A gzip CSV object's header and its rows, each checked to have the header's width."""
    try:
        reader = csv.reader(io.StringIO(gzip.decompress(body).decode("utf-8")))
        header = next(reader, None) or []
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise HistoryError(f"{key}: not a gzip UTF-8 CSV {what} object ({exc})") from exc

    def rows() -> Iterator[list[str]]:
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise HistoryError(f"{key}: row {line} has {len(row)} fields, the header {len(header)}")
            yield row

    return header, rows()


def read_history(objects: Iterable[tuple[str, bytes]]) -> pd.DataFrame:
    """The metric-total rows of history objects (``(key, gzip CSV body)``), as one frame.

    Slice rows (a dimension value) are not features and are dropped while reading: they are most of
    the rows, and keeping them would make reading 90 days several times slower.
    """
    columns: dict[str, list[str]] = {name: [] for name in HISTORY_FIELDS if name != "dimension"}
    alerted: set[str] = set()
    for key, body in objects:
        header, rows = _csv_rows(key, body, "history")
        missing = [name for name in HISTORY_FIELDS if name not in header]
        if missing:
            raise HistoryError(f"{key}: history object lacks column(s) {', '.join(missing)}")
        at = {name: header.index(name) for name in HISTORY_FIELDS}
        dimension = at["dimension"]
        severity = header.index("alert_severity") if "alert_severity" in header else None
        for row in rows:
            if severity is not None and row[severity] in ("warning", "critical"):
                alerted.add(row[at["period_start"]])
            if row[dimension]:
                continue
            for name, values in columns.items():
                values.append(row[at[name]])
    frame = pd.DataFrame(columns)
    frame["dimension"] = ""
    frame["alerted"] = frame["period_start"].isin(alerted)
    return frame


DAILY_COLUMNS = ("period_start", "metric", "observed", "expected", "status", "alerted")


def daily_body(rows: pd.DataFrame) -> bytes:
    """One closed day of :func:`read_history` rows as the retrainer's compacted object (gzip CSV)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(DAILY_COLUMNS)
    alerted = rows["alerted"] if "alerted" in rows.columns else pd.Series(False, index=rows.index)
    for record in zip(
        rows["period_start"], rows["metric"], rows["observed"], rows["expected"], rows["status"],
        alerted.map(lambda a: "1" if a else ""), strict=True,
    ):  # fmt: skip
        writer.writerow(record)
    return gzip.compress(text.getvalue().encode(), compresslevel=6, mtime=0)


def read_daily(key: str, body: bytes) -> pd.DataFrame:
    """A compacted day back into :func:`read_history` rows."""
    header, rows = _csv_rows(key, body, "daily")
    if tuple(header) != DAILY_COLUMNS:
        raise HistoryError(f"{key}: daily object header is {header}, expected {list(DAILY_COLUMNS)}")
    columns: dict[str, list[str]] = {name: [] for name in DAILY_COLUMNS}
    for row in rows:
        for name, value in zip(DAILY_COLUMNS, row, strict=True):
            columns[name].append(value)
    flags = columns.pop("alerted")
    frame = pd.DataFrame(columns)
    frame["alerted"] = [flag == "1" for flag in flags]
    frame["dimension"] = ""
    return frame


def feature_kinds(config: IntegrationConfig | None, metrics: Iterable[str]) -> dict[str, FeatureKind]:
    """Which history metrics are features, and of which kind (ratios and rates vs levels)."""
    ratio_names = {s.name for s in config.specs() if isinstance(s, RatioSpec | RateSpec)} if config else set()
    known = {s.name for s in config.specs()} if config else set()
    if config is not None and config.shape == "events":
        known.add(config.count_metric)
    kinds: dict[str, FeatureKind] = {}
    for metric in sorted(set(metrics)):
        if config is not None and metric not in known:
            continue
        kinds[metric] = "ratio" if metric in ratio_names else "level"
    return kinds


def feature_frame(history: pd.DataFrame, config: IntegrationConfig | None) -> FeatureFrame:
    """Pivot the history's metric totals into one row per period (see the module docstring)."""
    if history.empty:
        empty = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
        return FeatureFrame(empty.index, empty, empty.copy(), np.zeros(0, dtype=bool), {})  # type: ignore[arg-type]
    totals = history[history["dimension"].fillna("") == ""]
    late = int((totals["status"] == "late").sum())
    expected_known = pd.to_numeric(totals["expected"], errors="coerce").notna()
    usable = totals[
        totals["status"].isin(USABLE_STATUSES) | ((totals["status"] == "warmup") & expected_known)
    ]
    unusable = len(totals) - late - len(usable)
    kinds = feature_kinds(config, usable["metric"].unique())
    usable = usable[usable["metric"].isin(list(kinds))]
    if usable.empty:
        empty = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
        return FeatureFrame(
            periods=empty.index,  # type: ignore[arg-type]
            observed=empty,
            expected=empty.copy(),
            calendar=np.zeros(0, dtype=bool),
            kinds=kinds,
            alerted=np.zeros(0, dtype=bool),
            late_rows=late,
            unusable_rows=unusable,
        )
    try:
        periods = pd.to_datetime(usable["period_start"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise HistoryError(f"history has a period_start that is not an ISO 8601 time: {exc}") from exc
    usable = usable.assign(
        period=periods,
        observed_value=pd.to_numeric(usable["observed"], errors="coerce"),
        expected_value=pd.to_numeric(usable["expected"], errors="coerce"),
        is_calendar=usable["status"] == "calendar",
        is_alerted=usable["alerted"] if "alerted" in usable.columns else False,
    )
    # A period scored twice (a redelivered sync under another key) keeps its last row.
    usable = usable.drop_duplicates(subset=["period", "metric"], keep="last")
    observed = usable.pivot(index="period", columns="metric", values="observed_value").sort_index()
    expected = usable.pivot(index="period", columns="metric", values="expected_value").sort_index()
    names = [n for n in kinds if n in observed.columns]
    by_period = usable.groupby("period")
    calendar = by_period["is_calendar"].any().reindex(observed.index, fill_value=False)
    alerted = by_period["is_alerted"].any().reindex(observed.index, fill_value=False)
    return FeatureFrame(
        periods=pd.DatetimeIndex(observed.index),
        observed=observed[names],
        expected=expected[names],
        calendar=calendar.to_numpy(dtype=bool),
        kinds={n: kinds[n] for n in names},
        alerted=alerted.to_numpy(dtype=bool),
        late_rows=late,
        unusable_rows=unusable,
    )


def slog(x: FloatArray) -> FloatArray:
    """Signed log1p: log1p for counts, and defined for negative money (NGR) too."""
    result: FloatArray = np.sign(x) * np.log1p(np.abs(x))
    return result


def inverse_slog(y: FloatArray) -> FloatArray:
    result: FloatArray = np.sign(y) * np.expm1(np.abs(y))
    return result


@dataclass
class FeatureSpace:
    """The transform fitted on a training window: raw deviation -> robust z-score per feature."""

    names: list[str]
    kinds: dict[str, FeatureKind]
    typical: dict[str, float] = field(default_factory=dict)  # ratios: median expected value
    center: dict[str, float] = field(default_factory=dict)  # median deviation
    scale: dict[str, float] = field(default_factory=dict)  # IQR / 1.349, at least MIN_SCALE

    @classmethod
    def fit(cls, frame: FeatureFrame) -> FeatureSpace:
        space = cls(names=frame.names, kinds=dict(frame.kinds))
        for name in space.names:
            if space.kinds[name] == "ratio":
                typical = float(np.nanmedian(np.abs(frame.expected[name].to_numpy(dtype=float))))
                space.typical[name] = typical if math.isfinite(typical) and typical > 0 else 1.0
        raw = space.deviations(frame)
        for j, name in enumerate(space.names):
            column = raw[:, j][np.isfinite(raw[:, j])]
            if column.size == 0:
                space.center[name], space.scale[name] = 0.0, 1.0
                continue
            q1, median, q3 = np.percentile(column, [25, 50, 75])
            spread = (q3 - q1) / IQR_TO_SIGMA
            if spread < MIN_SCALE:  # mostly constant: fall back to the standard deviation
                spread = float(np.std(column))
            space.center[name] = float(median)
            space.scale[name] = max(float(spread), MIN_SCALE)
        return space

    def deviations(self, frame: FeatureFrame) -> FloatArray:
        """Each period's deviation from its baseline, per feature (NaN where a value is missing)."""
        out = np.full((len(frame), len(self.names)), np.nan)
        for j, name in enumerate(self.names):
            if name not in frame.observed.columns:
                continue
            obs = frame.observed[name].to_numpy(dtype=float)
            exp = frame.expected[name].to_numpy(dtype=float)
            if self.kinds[name] == "ratio":
                out[:, j] = (obs - exp) / self.typical[name]
            else:
                out[:, j] = slog(obs) - slog(exp)
        return out

    def transform(self, frame: FeatureFrame) -> FloatArray:
        """Robust z-scores; a missing value becomes 0 (typical), so a row is never dropped silently."""
        raw = self.deviations(frame)
        center = np.array([self.center[n] for n in self.names])
        scale = np.array([self.scale[n] for n in self.names])
        z: FloatArray = (raw - center) / scale
        return np.nan_to_num(z, nan=0.0, posinf=50.0, neginf=-50.0)

    def band(self, name: str, expected: float, width: float) -> tuple[float, float]:
        """The values of ``name`` within ``width`` robust standard deviations of typical, in its unit."""
        lo = self.center[name] - width * self.scale[name]
        hi = self.center[name] + width * self.scale[name]
        if self.kinds[name] == "ratio":
            t = self.typical[name]
            return expected + lo * t, expected + hi * t
        base = float(slog(np.array([expected]))[0])
        lower, upper = inverse_slog(np.array([base + lo, base + hi]))
        return float(lower), float(upper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "kinds": self.kinds,
            "typical": self.typical,
            "center": self.center,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSpace:
        return cls(
            names=list(raw["names"]),
            kinds=dict(raw["kinds"]),
            typical={k: float(v) for k, v in raw["typical"].items()},
            center={k: float(v) for k, v in raw["center"].items()},
            scale={k: float(v) for k, v in raw["scale"].items()},
        )


def usable_days(frame: FeatureFrame) -> int:
    """Distinct UTC dates with at least one usable (non-calendar) period."""
    if len(frame) == 0:
        return 0
    return int(pd.Series(frame.periods[~frame.calendar].date).nunique())


def history_dates(start: datetime, end: datetime) -> Sequence[str]:
    """The ``date=`` partitions that hold periods in ``[start, end)``."""
    days = pd.date_range(start.date(), (end - pd.Timedelta(microseconds=1)).date(), freq="D")
    return [d.strftime("%Y-%m-%d") for d in days]
