"""process_sync with the in-memory ports: reconciliation, exactly-once effect, quarantine, late data, history."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kpi_sentinel.adapters.memory import MemoryControl, MemoryObjects, MemoryPublisher, MemoryState
from kpi_sentinel.demo import caught
from kpi_sentinel.ports import ScorerPorts, StateConflict
from kpi_sentinel.scoring import IntegrationState
from kpi_sentinel.sync import HISTORY_COLUMNS, ScorerSettings, SyncOutcome, SyncRef, process_sync
from kpi_sentinel.synthetic import DemoDataset, demo_dataset

INGEST, DATA = "ingest-bucket", "data-bucket"
SETTINGS = ScorerSettings(ingest_bucket=INGEST, data_bucket=DATA)
NOW = datetime(2026, 10, 1, tzinfo=UTC)
T0 = datetime(2026, 9, 1, tzinfo=UTC)
CRATER_HOUR = 4 * 24 + 14  # 2026-09-05 14:00, the daily peak
SHOP_CONFIG = {
    "integration_id": "shop",
    "granularity": "hour",
    "season_length": 24,
    "warmup": 3,
    "dimensions": ["source"],
    "metrics": [{"name": "orders", "bad_direction": "down", "min_abs_change": 5, "min_volume": 10}],
}


class FlakyPublisher(MemoryPublisher):
    """Fails the next publish when armed, as a Lambda timing out between commit and publish would."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def publish(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("SNS unavailable")
        super().publish(alerts)


class RacingState(MemoryState):
    """When armed, another writer commits the integration's state just before our next commit."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.conflicts = 0

    def commit(
        self,
        integration_id: str,
        expected_version: int,
        blob: bytes,
        sync_id: str,
        outbox: Sequence[Mapping[str, Any]],
        index: Mapping[str, Any] | None = None,
    ) -> None:
        if self.armed:
            self.armed = False
            current = self.items[integration_id]
            super().commit(integration_id, current.version, current.blob or b"", "other-writer#1", [])
        try:
            super().commit(integration_id, expected_version, blob, sync_id, outbox, index)
        except StateConflict:
            self.conflicts += 1
            raise


@dataclass
class World:
    objects: MemoryObjects
    state: MemoryState
    control: MemoryControl
    publisher: MemoryPublisher

    @property
    def ports(self) -> ScorerPorts:
        return ScorerPorts(self.objects, self.state, self.control, self.publisher, lambda: NOW)

    def drop(self, key: str, body: bytes, version: str = "v1") -> SyncRef:
        self.objects.put(INGEST, key, body, "text/csv")
        return SyncRef(INGEST, key, size=len(body), version=version)

    def deliver(self, ref: SyncRef, settings: ScorerSettings = SETTINGS) -> SyncOutcome:
        return process_sync(ref, self.ports, settings)

    def json(self, key: str) -> dict[str, Any]:
        return json.loads(self.objects.get(INGEST, key))

    def state_of(self, integration_id: str) -> IntegrationState:
        blob = self.state.items[integration_id].blob
        assert blob is not None
        return IntegrationState.from_bytes(blob)


def _world(state: MemoryState | None = None, publisher: MemoryPublisher | None = None) -> World:
    world = World(MemoryObjects(), state or MemoryState(), MemoryControl(), publisher or MemoryPublisher())
    world.control.configs["shop"] = SHOP_CONFIG
    return world


def _iso(hour: int) -> str:
    return (T0 + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shop_csv(hours: range, crater: int | None = None, extra: Sequence[str] = ()) -> bytes:
    """Orders per hour from two sources with a daily profile; at ``crater`` both drop by 90%."""
    rng = np.random.default_rng(hours.start)
    lines = ["timestamp,source,orders"]
    for hour in hours:
        profile = 0.3 + 0.7 * (1 + math.cos(2 * math.pi * (hour % 24 - 14) / 24)) / 2
        for source, level in (("web", 200.0), ("app", 100.0)):
            orders = int(rng.poisson(level * profile))
            lines.append(f"{_iso(hour)},{source},{orders // 10 if hour == crater else orders}")
    return ("\n".join([*lines, *extra]) + "\n").encode()


HISTORY = _shop_csv(range(4 * 24))  # 2026-09-01 .. 09-04, hourly
TODAY = _shop_csv(range(4 * 24, CRATER_HOUR + 1), crater=CRATER_HOUR)  # 09-05 00:00 .. 14:00


def _crater_alerts(alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [a for a in alerts if a["period_start"] == (T0 + timedelta(hours=CRATER_HOUR)).isoformat()]


def _history_frames(world: World) -> dict[str, pd.DataFrame]:
    keys = world.objects.keys(DATA, "history/")
    return {key: pd.read_csv(io.BytesIO(world.objects.get(DATA, key)), compression="gzip") for key in keys}


# --- the demo month -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_month() -> tuple[DemoDataset, list[SyncOutcome], World]:
    dataset = demo_dataset(days=30)
    world = World(MemoryObjects(), MemoryState(), MemoryControl(), MemoryPublisher())
    outcomes = []
    for number, sync in enumerate(dataset.files):
        outcomes.append(world.deliver(world.drop(sync.key, sync.body, version=f"v{number}")))
    return dataset, outcomes, world


def _data_rows(key: str, body: bytes) -> int:
    text = (gzip.decompress(body) if key.endswith(".gz") else body).decode()
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) if ".jsonl" in key else len(lines) - 1


def test_given_a_month_of_demo_syncs_then_every_row_of_every_sync_reconciles(
    demo_month: tuple[DemoDataset, list[SyncOutcome], World],
) -> None:
    dataset, outcomes, world = demo_month

    assert {o.status for o in outcomes} == {"scored"}
    for sync, outcome in zip(dataset.files, outcomes, strict=True):
        assert outcome.rows_in == outcome.rows_scored + outcome.rows_rejected, sync.key
        assert outcome.rows_in == _data_rows(sync.key, sync.body), sync.key
    assert world.objects.keys(INGEST, "quarantine/") == []


def test_given_a_month_of_demo_syncs_then_each_injected_incident_is_caught_in_its_window(
    demo_month: tuple[DemoDataset, list[SyncOutcome], World],
) -> None:
    dataset, _, world = demo_month
    alerts = list(world.publisher.published)

    assert [i.kind for i in dataset.incidents] == ["click_spike", "source_crater", "ticket_surge"]
    for incident in dataset.incidents:
        hit = caught(incident, alerts)
        assert hit is not None, f"missed {incident.description}"
        assert hit["severity"] in ("warning", "critical")


# --- exactly-once effect ----------------------------------------------------------------------------------


def test_given_a_redelivered_sync_then_it_is_a_duplicate_that_changes_and_publishes_nothing() -> None:
    world = _world()
    world.deliver(world.drop("syncs/shop/history.csv", HISTORY))
    ref = world.drop("syncs/shop/2026/09/05/14.csv", TODAY)
    first = world.deliver(ref)
    version, objects, published = (
        world.state.items["shop"].version,
        dict(world.objects.objects),
        len(world.publisher.published),
    )

    again = world.deliver(ref)

    assert first.status == "scored"
    assert _crater_alerts(first.alerts)
    assert (again.status, again.alerts_published, again.rows_scored) == ("duplicate", 0, 0)
    assert world.state.items["shop"].version == version
    assert world.objects.objects == objects
    assert len(world.publisher.published) == published


def test_given_a_commit_that_races_another_writer_then_the_sync_is_retried_and_folded_in_once() -> None:
    calm, racing_state = _world(), RacingState()
    racing = _world(state=racing_state)
    for world in (calm, racing):
        world.deliver(world.drop("syncs/shop/history.csv", HISTORY))
    racing_state.armed = True

    outcomes = [world.deliver(world.drop("syncs/shop/2026/09/05/14.csv", TODAY)) for world in (calm, racing)]

    assert (outcomes[0].commit_attempts, outcomes[1].commit_attempts, racing_state.conflicts) == (1, 2, 1)
    assert outcomes[1].status == "scored"
    assert racing.state.items["shop"].version == calm.state.items["shop"].version + 1  # + the other writer
    assert racing.state.items["shop"].blob == calm.state.items["shop"].blob  # the same state, folded in once
    assert racing.state_of("shop").processed.count("syncs/shop/2026/09/05/14.csv#v1") == 1
    assert [a["alert_id"] for a in racing.publisher.published] == [
        a["alert_id"] for a in calm.publisher.published
    ]


def test_given_a_crash_after_commit_then_the_redelivery_publishes_the_outbox_exactly_once() -> None:
    publisher = FlakyPublisher()
    world = _world(publisher=publisher)
    world.deliver(world.drop("syncs/shop/history.csv", HISTORY))
    before = list(publisher.published)
    ref = world.drop("syncs/shop/2026/09/05/14.csv", TODAY)
    publisher.armed = True

    with pytest.raises(RuntimeError, match="SNS unavailable"):
        world.deliver(ref)  # the message goes back to the queue
    pending = world.state.items["shop"].outbox[ref.sync_id]
    redelivered = world.deliver(ref)
    once_more = world.deliver(ref)

    assert _crater_alerts(pending)
    assert (redelivered.status, redelivered.alerts_published) == ("duplicate", len(pending))
    assert (once_more.status, once_more.alerts_published) == ("duplicate", 0)
    assert world.state.items["shop"].outbox == {}
    assert publisher.published[len(before) :] == pending
    ids = [a["alert_id"] for a in publisher.published]
    assert len(ids) == len(set(ids))


# --- quarantine -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "reason", "row", "field"),
    [
        ("2026/09/05/15.csv.gz", b"this is not gzip", "not a valid gzip stream", None, None),
        ("2026/09/05/15.csv", b"timestamp,orders,orders\n2026-09-05T15:00:00Z,1,2\n", "duplicate", 0, None),
        (
            "2026/09/05/15.csv",
            b"when,source,orders\n2026-09-05T15:00:00Z,web,1\n",
            "'timestamp'",
            None,
            "timestamp",
        ),
        ("2026/09/05/15.parquet", b"PAR1 garbage", "not a readable Parquet file", None, None),
    ],
)
def test_given_an_unreadable_sync_then_it_is_quarantined_with_a_report_and_no_exception(
    name: str, body: bytes, reason: str, row: int | None, field: str | None
) -> None:
    world = _world()
    world.deliver(world.drop("syncs/shop/history.csv", HISTORY))
    version = world.state.items["shop"].version
    key = f"syncs/shop/{name}"

    outcome = world.deliver(world.drop(key, body))

    assert outcome.status == "quarantined"
    assert reason in (outcome.reason or "")
    assert world.objects.get(INGEST, f"quarantine/shop/{name}") == body
    assert outcome.report_key == f"quarantine/shop/{name}.report.json"
    report = world.json(outcome.report_key)
    assert report["file"] == key
    assert report["quarantined_copy"] == f"quarantine/shop/{name}"
    assert (report["row"], report["field"]) == (row, field)
    assert reason in report["reason"]
    assert world.state.items["shop"].version == version  # the state never saw it


@pytest.mark.parametrize(
    "key",
    [
        "syncs/../../etc/passwd.csv",
        "syncs/shop/../../../etc/cron.d/x.csv",
        "/etc/passwd.csv",
        "quarantine/shop/x.csv",
        "syncs/sh op/x.csv",
        "syncs/shop/x.exe",
        "syncs/shop/a\nb.csv",
    ],
)
def test_given_a_key_outside_the_contract_then_it_is_recorded_by_digest_and_never_used_as_a_path(
    key: str,
) -> None:
    world = _world()

    outcome = world.deliver(SyncRef(INGEST, key, size=10, version="v1"))  # nothing is even read

    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    assert outcome.status == "rejected_key"
    assert "sync key contract" in (outcome.reason or "")
    assert outcome.report_key == f"quarantine/_invalid-keys/{digest}.json"
    assert world.objects.keys(INGEST) == [outcome.report_key]
    report = world.json(outcome.report_key)
    assert (report["key"], report["status"]) == (key, "rejected_key")
    assert world.state.items == {}


def test_given_a_sync_above_the_size_limit_then_it_is_quarantined_naming_its_size() -> None:
    world = _world()
    small = ScorerSettings(INGEST, DATA, max_sync_bytes=1000)
    announced = world.drop("syncs/shop/big.csv", HISTORY)  # the notification carries the size
    unannounced = SyncRef(INGEST, "syncs/shop/big2.csv", size=None, version="v1")
    world.objects.put(INGEST, unannounced.key, HISTORY, "text/csv")

    outcomes = [world.deliver(announced, small), world.deliver(unannounced, small)]

    for outcome in outcomes:
        assert outcome.status == "quarantined"
        assert f"file is {len(HISTORY):,} bytes, above the 1,000-byte limit" in (outcome.reason or "")
    assert world.objects.get(INGEST, "quarantine/shop/big.csv") == HISTORY
    assert world.state.items == {}


# --- rejected rows and late periods -----------------------------------------------------------------------


def test_given_bad_rows_then_the_rest_is_scored_and_a_report_lists_each_bad_row() -> None:
    world = _world()
    body = _shop_csv(
        range(3), extra=["2026-09-01T03:00:00Z,web,lots", "someday,app,12", "2026-09-01T03:00:00Z,web"]
    )

    outcome = world.deliver(world.drop("syncs/shop/2026/09/01/typos.csv", body))

    assert (outcome.status, outcome.rows_in, outcome.rows_scored, outcome.rows_rejected) == (
        "scored",
        9,
        6,
        3,
    )
    assert outcome.report_key == "quarantine/shop/2026/09/01/typos.csv.rejected-rows.json"
    report = world.json(outcome.report_key)
    assert (report["rows_in"], report["rows_scored"], report["rows_rejected"]) == (9, 6, 3)
    rejected = sorted(report["rejected"], key=lambda r: r["row"])
    assert [(r["row"], r["field"]) for r in rejected] == [(7, "orders"), (8, "timestamp"), (9, None)]
    assert [r["raw"] for r in rejected] == ["lots", "someday", "2026-09-01T03:00:00Z,web"]
    assert report["reasons"] == {"expected a number (could not convert string to float": 1,
                                 "expected an ISO 8601 timestamp": 1, "has 2 fields, the header has 3": 1}  # fmt: skip


def test_given_periods_already_scored_then_their_rows_are_rejected_as_late_and_kept_in_history() -> None:
    world = _world()
    world.deliver(world.drop("syncs/shop/history.csv", HISTORY))  # up to 2026-09-04 23:00
    resend = _shop_csv(range(90, 97))  # 09-04 18:00 .. 09-05 00:00: six old hours and a new one

    outcome = world.deliver(world.drop("syncs/shop/resend.csv", resend))

    assert (outcome.rows_in, outcome.rows_scored, outcome.rows_rejected) == (14, 2, 12)
    assert (outcome.late_periods, outcome.periods_scored) == (6, 1)
    report = world.json(outcome.report_key or "")
    assert all(r["reason"].startswith("late_period") for r in report["rejected"])
    assert [r["row"] for r in report["rejected"]] == list(range(1, 13))
    assert (
        "period 2026-09-04T18:00:00+00:00 is at or before the last scored period"
        in report["rejected"][0]["reason"]
    )
    history = pd.concat(_history_frames(world).values())
    late = history[history["status"] == "late"]
    assert sorted(late["period_start"].unique()) == [f"2026-09-04T{h}:00:00+00:00" for h in range(18, 24)]
    assert world.state_of("shop").last_period == int((T0 + timedelta(hours=96)).timestamp()) // 3600


# --- snoozes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("until", "suppressed"), [(NOW + timedelta(days=1), True), (NOW - timedelta(seconds=1), False)]
)
def test_given_a_snooze_then_matching_alerts_are_suppressed_and_counted_until_it_expires(
    until: datetime, suppressed: bool
) -> None:
    plain, snoozed = _world(), _world()
    snoozed.control.snoozes = [{"integration_id": "shop", "metric": "orders", "until": until.timestamp()}]
    for world in (plain, snoozed):
        world.deliver(world.drop("syncs/shop/history.csv", HISTORY))

    expected, outcome = (
        world.deliver(world.drop("syncs/shop/today.csv", TODAY)) for world in (plain, snoozed)
    )

    assert _crater_alerts(expected.alerts)
    if suppressed:
        assert (outcome.alerts_published, outcome.alerts_suppressed) == (0, expected.alerts_published)
        assert not _crater_alerts(snoozed.publisher.published)
        # What the snooze suppressed is kept for the report, once per alert, with its cause
        records = _suppressed_records(snoozed)
        assert sorted(r["alert"]["alert_id"] for r in records) == sorted(
            a["alert_id"] for a in expected.alerts
        )
        assert {r["by"].split()[0] for r in records} == {"snooze"}
    else:
        assert (outcome.alerts_published, outcome.alerts_suppressed) == (expected.alerts_published, 0)


def _suppressed_records(world: Any) -> list[dict[str, Any]]:
    records = []
    for (_bucket, key), body in world.objects.objects.items():
        if key.startswith("suppressed/"):
            assert key.startswith("suppressed/date=")
            assert "/integration=shop/" in key
            records += [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
    return records


# --- history --------------------------------------------------------------------------------------------------


def test_given_scored_syncs_then_history_is_partitioned_by_integration_and_date_and_reads_back() -> None:
    world = _world()
    world.deliver(world.drop("syncs/shop/history.csv", HISTORY))
    today = world.deliver(world.drop("syncs/shop/today.csv", TODAY))

    frames = _history_frames(world)

    dates = sorted({key.split("/")[2] for key in frames})
    assert dates == [f"date=2026-09-0{d}" for d in range(1, 6)]
    for key, frame in frames.items():
        assert key.startswith("history/integration=shop/date=")
        assert key.endswith(".csv.gz")
        assert list(frame.columns) == list(HISTORY_COLUMNS)
        assert (frame["period_start"].str[:10] == key.split("/")[2].removeprefix("date=")).all()
        assert set(frame["integration_id"]) == {"shop"}
        assert set(frame["status"]) <= {"scored", "warmup"}
    history = pd.concat(frames.values(), ignore_index=True)
    assert len(history) == (CRATER_HOUR + 1) * 3  # total + web + app for every hour scored
    assert (history[history["period_start"].str.startswith("2026-09-01")]["status"] == "warmup").all()
    crater_row = history[
        (history["period_start"] == (T0 + timedelta(hours=CRATER_HOUR)).isoformat())
        & history["dimension"].isna()
    ]
    assert list(crater_row["alert_severity"]) == [_crater_alerts(today.alerts)[0]["severity"]]
    assert crater_row["observed"].iloc[0] < 0.3 * crater_row["expected"].iloc[0]


# --- the hourly roll-up of a 5-minute integration ---------------------------------------------------------------

TICK_CONFIG = {
    "integration_id": "tick",
    "granularity": "5min",
    "season_length": 288,
    "metrics": [{"name": "ftds", "bad_direction": "down", "min_volume": 10}],
}
TICK_CRATER = T0 + timedelta(days=6, hours=6)  # 2026-09-07 06:00; FTDs -85% from 06:05 to 06:55


def _tick_csv(days: range) -> bytes:
    """1-3 FTDs per 5 minutes with a daily profile; the crater hour as above."""
    rng = np.random.default_rng(days.start)
    lines = ["timestamp,ftds"]
    for k in range(days.start * 288, days.stop * 288):
        when = T0 + timedelta(minutes=5 * k)
        profile = 1.0 + 0.5 * math.sin(2 * math.pi * (k % 288) / 288)
        crater = TICK_CRATER < when < TICK_CRATER + timedelta(hours=1)
        lines.append(f"{when:%Y-%m-%dT%H:%M:%SZ},{rng.poisson(1.5 * profile * (0.15 if crater else 1.0))}")
    return ("\n".join(lines) + "\n").encode()


def _tick_world() -> World:
    world = _world()
    world.control.configs["tick"] = TICK_CONFIG
    world.deliver(world.drop("syncs/tick/week.csv", _tick_csv(range(6))))
    return world


def test_given_a_five_minute_crater_too_small_per_period_then_its_hour_alerts_and_history_keeps_5_minutes() -> (
    None
):
    world = _tick_world()

    today = world.deliver(world.drop("syncs/tick/today.csv", _tick_csv(range(6, 7))))

    hourly = [a for a in world.publisher.published if a["granularity_seconds"] == 3600]
    assert [(a["metric"], a["period_start"], a["direction"]) for a in hourly] == [
        ("ftds", TICK_CRATER.isoformat(), "down")
    ]
    assert today.alerts == hourly  # the 5-minute view has nothing: FTDs per period are under the floor
    history = pd.concat(_history_frames(world).values(), ignore_index=True)
    assert len(history) == 7 * 288  # one row per 5-minute period of the one series; no hourly rows
    assert history["alert_severity"].isna().all()
    state = world.state_of("tick")
    assert state.rollup is not None
    assert state.rollup.last_period == int((T0 + timedelta(days=7)).timestamp()) // 3600 - 1


def test_given_a_known_event_inside_the_hour_then_the_hourly_alert_is_suppressed_by_the_calendar() -> None:
    world = _tick_world()
    start = TICK_CRATER + timedelta(minutes=20)
    world.control.calendar = [
        {"event_id": "e1", "integration_id": "tick", "kind": "campaign", "name": "promo",
         "start": start.timestamp(), "end": (start + timedelta(minutes=10)).timestamp()},
    ]  # fmt: skip

    outcome = world.deliver(world.drop("syncs/tick/today.csv", _tick_csv(range(6, 7))))

    assert (outcome.alerts_published, outcome.alerts_suppressed) == (0, 1)
    assert not world.publisher.published
