"""Known events from the calendar: scored, never learned, their alerts suppressed and counted."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from kpi_sentinel.adapters.memory import MemoryControl, MemoryObjects, MemoryPublisher, MemoryState
from kpi_sentinel.calendar import KnownEventSpan, calendar_periods, parse_events
from kpi_sentinel.detectors.ewma import SeasonalEWMA
from kpi_sentinel.ports import ScorerPorts
from kpi_sentinel.scoring import IntegrationState
from kpi_sentinel.sync import ScorerSettings, SyncRef, process_sync

INGEST, DATA = "ingest", "data"
SETTINGS = ScorerSettings(ingest_bucket=INGEST, data_bucket=DATA)
T0 = datetime(2026, 9, 1, tzinfo=UTC)
CONFIG = {
    "integration_id": "shop",
    "granularity": "hour",
    "season_length": 24,
    "warmup": 3,
    "metrics": [{"name": "orders", "bad_direction": "both", "min_abs_change": 5, "min_volume": 10}],
}
CAMPAIGN_HOURS = range(5 * 24 + 10, 5 * 24 + 14)  # 2026-09-06 10:00 .. 13:59


def _csv(hours: range, uplift: range = range(0)) -> bytes:
    rng = np.random.default_rng(hours.start)
    lines = ["timestamp,orders"]
    for hour in hours:
        level = 200.0 * (0.4 + 0.6 * np.sin(np.pi * (hour % 24) / 24))
        orders = int(rng.poisson(level * (3.0 if hour in uplift else 1.0)))
        lines.append(f"{(T0 + timedelta(hours=hour)).strftime('%Y-%m-%dT%H:%M:%SZ')},{orders}")
    return ("\n".join(lines) + "\n").encode()


def _run(calendar: list[dict[str, object]]) -> tuple[MemoryObjects, MemoryState, MemoryPublisher, list[int]]:
    objects, state, control, publisher = MemoryObjects(), MemoryState(), MemoryControl(), MemoryPublisher()
    control.configs["shop"] = CONFIG
    control.calendar = calendar
    ports = ScorerPorts(objects, state, control, publisher, lambda: T0 + timedelta(days=30))
    suppressed = []
    for n, (key, body) in enumerate(
        [
            ("syncs/shop/history.csv", _csv(range(5 * 24))),
            ("syncs/shop/campaign-day.csv", _csv(range(5 * 24, 6 * 24), uplift=CAMPAIGN_HOURS)),
        ]
    ):
        objects.put(INGEST, key, body, "text/csv")
        outcome = process_sync(SyncRef(INGEST, key, len(body), f"v{n}"), ports, SETTINGS)
        assert outcome.status == "scored"
        suppressed.append(outcome.alerts_suppressed)
    return objects, state, publisher, suppressed


CAMPAIGN = {
    "event_id": "autumn-sale",
    "integration_id": "shop",
    "kind": "campaign",
    "name": "Autumn sale",
    "start": (T0 + timedelta(hours=CAMPAIGN_HOURS.start)).isoformat(),
    "end": (T0 + timedelta(hours=CAMPAIGN_HOURS.stop)).isoformat(),
}


def test_given_no_calendar_then_the_campaign_uplift_alerts() -> None:
    _, _, publisher, suppressed = _run([])

    starts = {a["period_start"] for a in publisher.published}
    assert (T0 + timedelta(hours=CAMPAIGN_HOURS.start)).isoformat() in starts
    assert suppressed == [0, 0]


def test_given_the_campaign_in_the_calendar_then_its_alerts_are_suppressed_and_counted() -> None:
    _, _, publisher, suppressed = _run([CAMPAIGN])

    inside = [
        a
        for a in publisher.published
        if CAMPAIGN["start"] <= a["period_start"] < CAMPAIGN["end"]  # type: ignore[operator]
    ]
    assert inside == []
    assert suppressed[1] >= 1


def test_given_a_global_calendar_event_then_it_covers_every_integration() -> None:
    _, _, publisher, suppressed = _run([{**CAMPAIGN, "integration_id": "*"}])

    assert suppressed[1] >= 1
    assert all(not CAMPAIGN["start"] <= a["period_start"] < CAMPAIGN["end"] for a in publisher.published)  # type: ignore[operator]


def test_given_the_campaign_in_the_calendar_then_its_periods_never_move_a_baseline() -> None:
    _, with_calendar, _, _ = _run([CAMPAIGN])
    _, without, _, _ = _run([])
    learned = IntegrationState.from_bytes(without.items["shop"].blob or b"").detector
    kept_out = IntegrationState.from_bytes(with_calendar.items["shop"].blob or b"").detector
    assert isinstance(learned, SeasonalEWMA)
    assert isinstance(kept_out, SeasonalEWMA)
    phases = [h % 24 for h in CAMPAIGN_HOURS]

    # Without the calendar the uplift (clipped at the band) is learned into those phases' baselines;
    # with it they still hold the value learned from the days before.
    assert np.all(kept_out.baseline_[phases, 0] < learned.baseline_[phases, 0])
    before = range(CAMPAIGN_HOURS.start % 24)  # the campaign day's hours before it began
    np.testing.assert_allclose(kept_out.baseline_[before, 0], learned.baseline_[before, 0], rtol=1e-5)


def test_given_the_campaign_in_the_calendar_then_history_marks_its_periods_as_calendar() -> None:
    objects, _, _, _ = _run([CAMPAIGN])
    frames = [
        pd.read_csv(io.BytesIO(gzip.decompress(objects.get(DATA, k))))
        for k in objects.keys(DATA, "history/integration=shop/date=2026-09-06/")
    ]
    history = pd.concat(frames)

    calendar_rows = history[history["status"] == "calendar"]
    assert sorted(calendar_rows["period_start"].unique()) == [
        (T0 + timedelta(hours=h)).isoformat() for h in CAMPAIGN_HOURS
    ]


def test_given_learn_false_then_the_detector_scores_but_its_state_is_unchanged() -> None:
    detector = SeasonalEWMA(season_length=2, warmup=1, transform="identity").resize(2)
    for t, y in enumerate([10.0, 20.0, 11.0, 19.0, 10.0, 21.0]):
        detector.step(t, np.array([y, y]))
    before = [a.copy() for a in (detector.baseline_, detector.mean_, detector.var_, detector.count_)]

    result = detector.step(6, np.array([30.0, 30.0]), learn=np.array([False, True]))

    assert bool(result.ready[0])
    assert result.score[0] > 3
    assert result.score[0] == result.score[1]
    np.testing.assert_array_equal(detector.baseline_[:, 0], before[0][:, 0])
    assert detector.mean_[0] == before[1][0]
    assert detector.var_[0] == before[2][0]
    assert detector.count_[0] == before[3][0]
    assert detector.count_[1] == before[3][1] + 1
    assert detector.last_index_[0] == 5
    assert detector.last_index_[1] == 6


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"event_id": "x", "end": 10}, "field 'start' is required"),
        ({"event_id": "x", "start": 10, "end": 10}, "field 'end' must be after 'start'"),
        ({"event_id": "x", "start": "2026-09-01T00:00:00", "end": 10}, "no UTC offset"),
    ],
)
def test_given_a_broken_calendar_entry_then_the_error_names_the_event_and_field(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_events([raw])


def test_given_a_broken_calendar_then_the_sync_is_still_scored_without_it() -> None:
    _, _, publisher, suppressed = _run([{"event_id": "broken", "start": 10, "end": 5}])

    assert suppressed == [0, 0]
    assert publisher.published


def test_calendar_periods_are_those_that_overlap_an_event() -> None:
    half_hour_in = KnownEventSpan("e", "*", "maintenance", "db", 3600 + 1800, 2 * 3600 + 1)

    assert sorted(calendar_periods(range(4), 3600, [half_hour_in])) == [1, 2]
    assert calendar_periods(range(4), 3600, []) == {}
