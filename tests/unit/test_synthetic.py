"""The synthetic demo dataset: reproducible, well-formed, and carrying the incidents it announces."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from kpi_sentinel.synthetic import DemoDataset, Incident, SyncFile, demo_dataset, write_dataset

ACME = "acme-ads"
GLOBEX = "globex-traffic"
INITECH = "initech-support"
EXTENSIONS = {ACME: ".csv", GLOBEX: ".jsonl.gz", INITECH: ".csv.gz"}
KEY_PATTERN = re.compile(
    r"^syncs/(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,63})/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})"
    r"(?P<ext>\.csv|\.jsonl\.gz|\.csv\.gz)$"
)
ACME_COLUMNS = ["timestamp", "source", "clicks", "signups", "ftds", "deposits", "ngr"]
GLOBEX_FIELDS = {"timestamp", "campaign", "clicks", "signups", "ftds"}
INITECH_COLUMNS = ["created_at", "ticket_id", "queue", "priority", "tags"]
QUEUES = {"payments", "account", "technical", "general"}
PRIORITIES = {"low", "normal", "high", "urgent"}
TAGS = {"withdrawal", "kyc", "login", "bonus", "app-crash", "deposit"}
WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def dataset() -> DemoDataset:
    return demo_dataset()


def _text(sync: SyncFile) -> str:
    body = gzip.decompress(sync.body) if sync.key.endswith(".gz") else sync.body
    return body.decode("utf-8")


def _rows(sync: SyncFile) -> list[dict[str, str]]:
    text = _text(sync)
    if ".jsonl" in sync.key:
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text)))


def _files_of(dataset: DemoDataset, integration_id: str) -> dict[datetime, SyncFile]:
    return {f.period_start: f for f in dataset.files if f.integration_id == integration_id}


def _hours(incident: Incident, shift: timedelta = timedelta(0)) -> Iterator[datetime]:
    moment = incident.start
    while moment <= incident.end:
        yield moment + shift
        moment += timedelta(hours=1)


def _incident(dataset: DemoDataset, kind: str) -> Incident:
    (found,) = [inc for inc in dataset.incidents if inc.kind == kind]
    return found


def _sum(
    dataset: DemoDataset, integration_id: str, hours: Iterator[datetime], dim: str, value: str, metric: str
) -> float:
    files = _files_of(dataset, integration_id)
    return sum(float(row[metric]) for hour in hours for row in _rows(files[hour]) if row[dim] == value)


def _payments_tickets(dataset: DemoDataset, hours: Iterator[datetime]) -> list[dict[str, str]]:
    files = _files_of(dataset, INITECH)
    return [row for hour in hours for row in _rows(files[hour]) if row["queue"] == "payments"]


# --- determinism ---------------------------------------------------------------------------------------


def test_given_the_same_seed_when_generating_twice_then_every_file_is_byte_identical(
    dataset: DemoDataset,
) -> None:
    again = demo_dataset()

    assert [(f.key, f.body, f.period_start) for f in again.files] == [
        (f.key, f.body, f.period_start) for f in dataset.files
    ]
    assert again.incidents == dataset.incidents


def test_given_different_seeds_when_generating_then_bodies_differ_for_every_integration() -> None:
    first = demo_dataset(days=3, seed=1)
    second = demo_dataset(days=3, seed=2)

    for integration_id in EXTENSIONS:
        bodies_1 = [f.body for f in first.files if f.integration_id == integration_id]
        bodies_2 = [f.body for f in second.files if f.integration_id == integration_id]
        assert bodies_1 != bodies_2, integration_id


def test_given_gzip_files_when_inspecting_the_header_then_mtime_is_zero(dataset: DemoDataset) -> None:
    gz = [f for f in dataset.files if f.key.endswith(".gz")]

    assert gz
    assert all(f.body[:2] == b"\x1f\x8b" and f.body[4:8] == b"\x00\x00\x00\x00" for f in gz)


# --- layout ----------------------------------------------------------------------------------------------


def test_given_the_default_dataset_when_listing_files_then_one_file_per_integration_per_hour(
    dataset: DemoDataset,
) -> None:
    assert dataset.start == datetime(2026, 9, 1, tzinfo=UTC)
    assert dataset.end == dataset.start + timedelta(days=60)
    assert dataset.granularity_seconds == 3600
    assert len(dataset.files) == 60 * 24 * 3
    expected_hours = [dataset.start + timedelta(hours=i) for i in range(60 * 24)]
    for integration_id in EXTENSIONS:
        assert sorted(_files_of(dataset, integration_id)) == expected_hours
    assert len({f.key for f in dataset.files}) == len(dataset.files)


def test_given_any_file_when_reading_its_key_then_it_names_integration_hour_and_extension(
    dataset: DemoDataset,
) -> None:
    for sync in dataset.files:
        match = KEY_PATTERN.match(sync.key)
        assert match, sync.key
        assert match["id"] == sync.integration_id
        assert match["ext"] == EXTENSIONS[sync.integration_id]
        assert sync.period_start.tzinfo is not None
        assert sync.period_start.utcoffset() == timedelta(0)
        stamp = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=UTC)
        assert stamp == sync.period_start


def test_given_the_file_list_when_checking_its_order_then_it_is_sorted_by_period_then_key(
    dataset: DemoDataset,
) -> None:
    order = [(f.period_start, f.key) for f in dataset.files]

    assert order == sorted(order)


# --- file contents -----------------------------------------------------------------------------------------


def test_given_acme_csv_files_when_parsing_then_one_row_per_source_with_documented_columns(
    dataset: DemoDataset,
) -> None:
    sources: set[str] = set()
    for hour, sync in _files_of(dataset, ACME).items():
        reader = csv.DictReader(io.StringIO(_text(sync)))
        rows = list(reader)
        assert reader.fieldnames == ACME_COLUMNS
        assert 4 <= len(rows) <= 6
        assert len({row["source"] for row in rows}) == len(rows)
        sources.update(row["source"] for row in rows)
        for row in rows:
            assert row["timestamp"] == hour.strftime("%Y-%m-%dT%H:%M:%SZ")
            clicks, signups, ftds = int(row["clicks"]), int(row["signups"]), int(row["ftds"])
            assert 0 <= ftds <= signups <= clicks
            assert int(row["deposits"]) >= ftds
            assert re.fullmatch(r"-?\d+\.\d{2}", row["ngr"]), row["ngr"]
    assert {"google-cpc", "telegram-push"} <= sources


def test_given_globex_jsonl_files_when_parsing_then_every_line_is_an_object_with_documented_fields(
    dataset: DemoDataset,
) -> None:
    for hour, sync in _files_of(dataset, GLOBEX).items():
        lines = _text(sync).splitlines()
        assert 3 <= len(lines) <= 4
        for line in lines:
            row = json.loads(line)
            assert set(row) == GLOBEX_FIELDS
            assert row["timestamp"] == hour.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert all(isinstance(row[m], int) and row[m] >= 0 for m in ("clicks", "signups", "ftds"))
            assert row["signups"] <= row["clicks"]


def test_given_initech_ticket_files_when_parsing_then_every_ticket_belongs_to_its_hour(
    dataset: DemoDataset,
) -> None:
    ticket_ids: set[str] = set()
    for hour, sync in _files_of(dataset, INITECH).items():
        reader = csv.DictReader(io.StringIO(_text(sync)))
        rows = list(reader)
        assert reader.fieldnames == INITECH_COLUMNS
        for row in rows:
            created = datetime.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert hour <= created < hour + timedelta(hours=1)
            assert row["queue"] in QUEUES
            assert row["priority"] in PRIORITIES
            tags = row["tags"].split(" | ") if row["tags"] else []
            assert len(tags) <= 3
            assert len(set(tags)) == len(tags)
            assert set(tags) <= TAGS
            ticket_ids.add(row["ticket_id"])
    assert len(ticket_ids) > 10_000


def test_given_an_hour_without_tickets_when_listing_files_then_a_header_only_file_still_arrives(
    dataset: DemoDataset,
) -> None:
    empty = [f for f in _files_of(dataset, INITECH).values() if _text(f) == ",".join(INITECH_COLUMNS) + "\n"]

    assert empty, "the default dataset should contain at least one hour without tickets"


def test_given_acme_traffic_when_comparing_periods_then_nights_and_weekends_are_lower(
    dataset: DemoDataset,
) -> None:
    clicks: dict[tuple[bool, int], list[int]] = {}
    for hour, sync in _files_of(dataset, ACME).items():
        total = sum(int(row["clicks"]) for row in _rows(sync))
        clicks.setdefault((hour.weekday() >= 5, hour.hour), []).append(total)
    mean = {key: sum(values) / len(values) for key, values in clicks.items()}
    weekday_peak = max(value for (weekend, _), value in mean.items() if not weekend)
    weekday_trough = min(value for (weekend, _), value in mean.items() if not weekend)
    weekday_total = sum(value for (weekend, _), value in mean.items() if not weekend)
    weekend_total = sum(value for (weekend, _), value in mean.items() if weekend)

    assert weekday_trough < 0.35 * weekday_peak
    assert 0.6 < weekend_total / weekday_total < 0.9


def test_given_acme_sources_when_summing_ngr_then_telegram_push_is_a_big_share(dataset: DemoDataset) -> None:
    per_source: dict[str, float] = {}
    for sync in _files_of(dataset, ACME).values():
        for row in _rows(sync):
            per_source[row["source"]] = per_source.get(row["source"], 0.0) + float(row["ngr"])

    assert 0.35 <= per_source["telegram-push"] / sum(per_source.values()) <= 0.45


# --- incidents -------------------------------------------------------------------------------------------


def test_given_the_default_dataset_when_listing_incidents_then_all_four_kinds_are_present(
    dataset: DemoDataset,
) -> None:
    by_kind = {inc.kind: inc for inc in dataset.incidents}

    assert set(by_kind) == {"source_crater", "click_spike", "ticket_surge", "funnel_break"}
    crater, spike, surge = by_kind["source_crater"], by_kind["click_spike"], by_kind["ticket_surge"]
    assert (crater.integration_id, crater.metric, crater.dimension, crater.dimension_value) == (
        ACME,
        "ngr",
        "source",
        "telegram-push",
    )
    assert (spike.integration_id, spike.metric, spike.dimension) == (GLOBEX, "clicks", "campaign")
    assert (surge.integration_id, surge.metric, surge.dimension, surge.dimension_value) == (
        INITECH,
        "tickets",
        "queue",
        "payments",
    )
    funnel = by_kind["funnel_break"]
    assert (funnel.integration_id, funnel.metric, funnel.dimension) == (ACME, "signup_rate", None)
    assert funnel.start.date() == (dataset.end - timedelta(days=1)).date()  # the nightly retrain's day
    assert [len(list(_hours(inc))) for inc in (crater, spike, surge, funnel)] == [6, 4, 5, 5]
    assert all(inc.description and "\n" not in inc.description for inc in dataset.incidents)


def test_given_incidents_when_placed_then_after_warmup_weekday_daytime_and_not_overlapping(
    dataset: DemoDataset,
) -> None:
    incidents = sorted(dataset.incidents, key=lambda inc: inc.start)
    for inc in incidents:
        assert inc.start >= dataset.start + timedelta(days=21)
        assert inc.end < dataset.end
        assert inc.start.utcoffset() == timedelta(0)
        for hour in _hours(inc):
            assert hour.weekday() < 5
            assert 10 <= hour.hour < 18
    for earlier, later in pairwise(incidents):
        assert earlier.end < later.start


def test_given_the_source_crater_when_comparing_with_a_week_earlier_then_ngr_fell_below_30_percent(
    dataset: DemoDataset,
) -> None:
    crater = _incident(dataset, "source_crater")

    def total(metric: str, shift: timedelta) -> float:
        return _sum(dataset, ACME, _hours(crater, shift), "source", "telegram-push", metric)

    assert total("ngr", timedelta(0)) < 0.30 * total("ngr", -WEEK)
    assert total("clicks", timedelta(0)) < 0.30 * total("clicks", -WEEK)
    assert total("ftds", timedelta(0)) < 0.30 * total("ftds", -WEEK)
    other = _sum(dataset, ACME, _hours(crater), "source", "google-cpc", "ngr")
    assert other > 0.5 * _sum(dataset, ACME, _hours(crater, -WEEK), "source", "google-cpc", "ngr")


def test_given_the_click_spike_when_comparing_with_a_week_earlier_then_clicks_jump_but_signups_do_not(
    dataset: DemoDataset,
) -> None:
    spike = _incident(dataset, "click_spike")
    campaign = spike.dimension_value
    assert campaign is not None

    def total(metric: str, shift: timedelta) -> float:
        return _sum(dataset, GLOBEX, _hours(spike, shift), "campaign", campaign, metric)

    assert total("clicks", timedelta(0)) >= 3 * total("clicks", -WEEK)
    assert total("signups", timedelta(0)) < 2 * total("signups", -WEEK)
    ftds_before = sum(total("ftds", -k * WEEK) for k in (1, 2, 3)) / 3  # few ftds: average three weeks
    assert total("ftds", timedelta(0)) < 3 * max(ftds_before, 1.0)


def test_given_the_ticket_surge_when_comparing_with_earlier_weeks_then_payments_tickets_multiply(
    dataset: DemoDataset,
) -> None:
    surge = _incident(dataset, "ticket_surge")
    during = _payments_tickets(dataset, _hours(surge))
    baseline = [_payments_tickets(dataset, _hours(surge, -k * WEEK)) for k in (1, 2, 3)]
    baseline_mean = sum(len(rows) for rows in baseline) / len(baseline)
    before = [row for rows in baseline for row in rows]

    def share(rows: list[dict[str, str]], predicate: str) -> float:
        if predicate == "withdrawal":
            return sum("withdrawal" in row["tags"].split(" | ") for row in rows) / len(rows)
        return sum(row["priority"] in {"high", "urgent"} for row in rows) / len(rows)

    assert len(during) >= 2.5 * baseline_mean
    assert share(during, "withdrawal") > 0.5
    assert share(during, "withdrawal") > share(before, "withdrawal") + 0.2
    assert share(during, "high/urgent") > share(before, "high/urgent") + 0.1


def test_given_a_dataset_shorter_than_the_warmup_when_generating_then_it_has_files_but_no_incidents() -> None:
    short = demo_dataset(days=10, seed=3)

    assert short.incidents == []
    assert len(short.files) == 10 * 24 * 3


def test_given_a_shorter_dataset_when_generating_then_incidents_still_respect_the_placement_rules() -> None:
    data = demo_dataset(days=30, seed=3, start=datetime(2027, 1, 4, 6, tzinfo=UTC))
    incidents = sorted(data.incidents, key=lambda inc: inc.start)

    assert incidents
    for inc in incidents:
        assert inc.start >= data.start + timedelta(days=21)
        assert inc.end < data.end
        assert all(hour.weekday() < 5 and 10 <= hour.hour < 18 for hour in _hours(inc))
    for earlier, later in pairwise(incidents):
        assert earlier.end < later.start


@pytest.mark.parametrize(
    ("days", "start"),
    [
        (0, None),
        (5, datetime(2026, 9, 1)),  # naive
        (5, datetime(2026, 9, 1, 0, 30, tzinfo=UTC)),  # not on the hour
    ],
)
def test_given_invalid_arguments_when_generating_then_value_error(days: int, start: datetime | None) -> None:
    with pytest.raises(ValueError, match="must"):
        demo_dataset(days=days, start=start)


# --- writing -----------------------------------------------------------------------------------------------


def test_given_a_dataset_when_writing_it_then_files_and_incidents_json_land_in_the_folder(
    tmp_path: Path,
) -> None:
    data = demo_dataset(days=30, seed=11)

    write_dataset(data, tmp_path)

    for sync in data.files:
        assert (tmp_path / sync.key).read_bytes() == sync.body
    incidents = json.loads((tmp_path / "incidents.json").read_text(encoding="utf-8"))
    assert [item["kind"] for item in incidents] == [inc.kind for inc in data.incidents]
    for item, inc in zip(incidents, data.incidents, strict=True):
        assert item["start"] == inc.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert datetime.fromisoformat(item["end"]) == inc.end
        assert item["dimension_value"] == inc.dimension_value
