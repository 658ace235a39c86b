"""The retrainer compacts closed history days: later jobs read one object per day and see the same rows."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, datetime, timedelta

import pandas as pd
from kpi_sentinel.adapters.memory import (
    MemoryControl,
    MemoryLedger,
    MemoryObjects,
    MemoryPublisher,
    MemoryState,
)
from kpi_sentinel.forest.retrain import ForestSettings, daily_prefix, read_window
from kpi_sentinel.ports import ForestPorts
from kpi_sentinel.sync import HISTORY_COLUMNS

BUCKET = "data"
IID = "compact-me"
START = datetime(2026, 10, 1, tzinfo=UTC)
SETTINGS = ForestSettings(BUCKET)


def _object(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    writer.writerows(rows)
    return gzip.compress(text.getvalue().encode(), mtime=0)


def _row(moment: datetime, metric: str, value: float, dimension: str = "", severity: str = "") -> list[str]:
    start = moment.isoformat()
    values = [start, IID, metric, dimension, "x" if dimension else "", f"{value}", f"{value * 0.9}"]
    return [*values, "", "", "1.0", "scored", severity, "syncs/k.csv", ""]


def _world(days: int) -> tuple[ForestPorts, MemoryObjects]:
    """Hourly history for ``days`` days, one object per hour as the scorer writes it."""
    objects = MemoryObjects()
    for hour in range(days * 24):
        moment = START + timedelta(hours=hour)
        rows = [_row(moment, "clicks", 100 + hour % 24), _row(moment, "clicks", 10, "source")]
        if hour == 30:
            rows.append(_row(moment, "ftds", 3, "source", "warning"))  # a slice alert marks the period
        key = f"history/integration={IID}/date={moment:%Y-%m-%d}/{hour:06d}.csv.gz"
        objects.put(BUCKET, key, _object(rows), "application/gzip")
    ports = ForestPorts(
        objects,
        MemoryState(),
        MemoryControl(),
        MemoryLedger(),
        MemoryPublisher(),
        lambda: START,
        lambda: b"k",
    )
    return ports, objects


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["period_start", "metric", "observed", "expected", "status", "alerted"]
    return frame[columns].sort_values(["period_start", "metric"]).reset_index(drop=True)


def test_given_closed_days_when_read_twice_then_the_second_read_uses_one_object_per_day_and_sees_the_same_rows() -> (
    None
):
    ports, objects = _world(days=5)
    end = START + timedelta(days=5)
    first, read_first = read_window(ports, SETTINGS, IID, START, end)
    assert read_first == 5 * 24
    # days 1-4 are closed (day 5 has history); day 5 is still open and stays raw
    assert objects.keys(BUCKET, daily_prefix(IID)) == [
        f"{daily_prefix(IID)}date=2026-10-0{d}.csv.gz" for d in range(1, 5)
    ]
    second, read_second = read_window(ports, SETTINGS, IID, START, end)
    assert read_second == 4 + 24
    pd.testing.assert_frame_equal(_sorted(first), _sorted(second))
    assert second["alerted"].sum() == 1  # the slice alert's period survives compaction
    assert (second["dimension"] == "").all()


def test_given_history_after_the_window_when_read_then_the_last_day_is_closed_too() -> None:
    ports, objects = _world(days=3)
    read_window(ports, SETTINGS, IID, START, START + timedelta(days=2))
    assert len(objects.keys(BUCKET, daily_prefix(IID))) == 2


def test_given_compacted_days_older_than_the_training_window_when_read_then_they_are_deleted() -> None:
    ports, objects = _world(days=4)
    one_day = ForestSettings(BUCKET, training_days=1)  # a window of the last day plus one training day
    read_window(ports, one_day, IID, START, START + timedelta(days=4))
    read_window(ports, one_day, IID, START + timedelta(days=2), START + timedelta(days=4))
    assert objects.keys(BUCKET, daily_prefix(IID)) == [f"{daily_prefix(IID)}date=2026-10-03.csv.gz"]


def test_given_a_score_jobs_short_read_then_the_compacted_training_days_are_kept() -> None:
    ports, objects = _world(days=4)
    end = START + timedelta(days=4)
    read_window(ports, SETTINGS, IID, START, end)  # the nightly retrain compacts days 1-3
    read_window(ports, SETTINGS, IID, end - timedelta(hours=2), end)  # a business-tier score job
    assert len(objects.keys(BUCKET, daily_prefix(IID))) == 3
    _, read = read_window(ports, SETTINGS, IID, START, end)  # the next retrain still reads them
    assert read == 3 + 24


def test_given_a_day_without_history_inside_the_window_when_closed_then_it_is_compacted_empty() -> None:
    ports, objects = _world(days=3)
    for key in objects.keys(BUCKET, f"history/integration={IID}/date=2026-10-02/"):
        objects.objects.pop((BUCKET, key))
    frame, _ = read_window(ports, SETTINGS, IID, START, START + timedelta(days=3))
    assert f"{daily_prefix(IID)}date=2026-10-02.csv.gz" in objects.keys(BUCKET, daily_prefix(IID))
    again, read = read_window(ports, SETTINGS, IID, START, START + timedelta(days=3))
    assert read == 2 + 24
    pd.testing.assert_frame_equal(_sorted(frame), _sorted(again))
