"""Reading sync files: the key contract, the formats, row validation, timestamps and granularity."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kpi_sentinel.config import IntegrationConfig, MetricSpec
from kpi_sentinel.parsing import (
    KeyContractError,
    RawTable,
    UnreadableSync,
    infer_granularity,
    parse_sync_key,
    parse_timestamp,
    read_table,
    validate_rows,
)

MAX_BYTES = 10 * 1024 * 1024
T0 = datetime(2026, 9, 1, tzinfo=UTC)
TEN_AM = datetime(2026, 9, 1, 10, tzinfo=UTC)
CONFIG = IntegrationConfig(
    integration_id="acme-ads",
    dimensions=("source",),
    metrics=(MetricSpec("clicks"), MetricSpec("ngr", "down")),
)
CSV_TEXT = (
    "timestamp,source,clicks,ngr\n"
    "2026-09-01T00:00:00Z,google-cpc,120,250.50\n"
    "2026-09-01T00:00:00Z,telegram-push,300,410.00\n"
    "2026-09-01T01:00:00Z,google-cpc,130,260.25\n"
)
RECORDS = [
    {"timestamp": "2026-09-01T00:00:00Z", "source": "google-cpc", "clicks": 120, "ngr": 250.5},
    {"timestamp": "2026-09-01T00:00:00Z", "source": "telegram-push", "clicks": 300, "ngr": 410.0},
    {"timestamp": "2026-09-01T01:00:00Z", "source": "google-cpc", "clicks": 130, "ngr": 260.25},
]
EXPECTED_ROWS = [
    (1, T0, "google-cpc", 120.0, 250.5),
    (2, T0, "telegram-push", 300.0, 410.0),
    (3, T0 + timedelta(hours=1), "google-cpc", 130.0, 260.25),
]


def _read(body: bytes, name: str, max_bytes: int = MAX_BYTES) -> RawTable:
    return read_table(body, parse_sync_key(f"syncs/acme-ads/{name}"), max_bytes)


def _jsonl(records: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _summary(valid: list) -> list[tuple[int, datetime, str, float, float]]:
    return [(r.row, r.timestamp, r.dimensions["source"], r.values["clicks"], r.values["ngr"]) for r in valid]


# --- the key contract ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fmt", "compressed"),
    [
        ("syncs/acme-ads/2026/09/01/00.csv", "csv", False),
        ("syncs/acme-ads/2026/09/01/00.csv.gz", "csv", True),
        ("syncs/acme_ads/hourly.jsonl", "jsonl", False),
        ("syncs/ACME1/dt=2026-09-01/part-0.jsonl.gz", "jsonl", True),
        ("syncs/a/export.parquet", "parquet", False),
    ],
)
def test_given_a_key_inside_the_contract_when_parsed_then_its_parts_and_format_are_known(
    key: str, fmt: str, compressed: bool
) -> None:
    sync = parse_sync_key(key)

    assert (sync.key, sync.format, sync.compressed) == (key, fmt, compressed)
    assert f"syncs/{sync.integration_id}/{sync.name}" == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("syncs/acme-ads/../../etc/passwd.csv", "'..' parts"),
        ("syncs/acme-ads/2026/./x.csv", "'..' parts"),
        ("syncs/acme-ads/2026//x.csv", "no empty"),
        ("syncs/../etc/passwd.csv", "integration id must match"),
        ("/syncs/acme-ads/x.csv", "must start with 'syncs/'"),
        ("/etc/passwd.csv", "must start with 'syncs/'"),
        ("uploads/acme-ads/x.csv", "must start with 'syncs/'"),
        ("Syncs/acme-ads/x.csv", "must start with 'syncs/'"),
        ("syncs/-acme/x.csv", "integration id must match"),
        ("syncs/acme ads/x.csv", "integration id must match"),
        ("syncs/" + "a" * 65 + "/x.csv", "integration id must match"),
        ("syncs/acme-ads/x y.csv", "letters, digits"),
        ("syncs/acme-ads/x.csv\n", "letters, digits"),
        ("syncs/acme-ads/", "letters, digits"),
        ("syncs/acme-ads/" + "d/" * 250 + "x.csv", "longer than 512 characters"),
        ("syncs/acme-ads/x.txt", "unsupported file type"),
        ("syncs/acme-ads/x.csv.zip", "unsupported file type"),
        ("syncs/acme-ads/x.gz", "unsupported file type"),
    ],
)
def test_given_a_key_outside_the_contract_when_parsed_then_it_is_rejected_naming_the_problem(
    key: str, problem: str
) -> None:
    with pytest.raises(KeyContractError, match="breaks the sync key contract") as raised:
        parse_sync_key(key)

    assert problem in str(raised.value)


def test_given_a_huge_key_when_rejected_then_the_message_stays_short() -> None:
    with pytest.raises(KeyContractError) as raised:
        parse_sync_key("x" * 100_000)

    assert len(str(raised.value)) < 600


_SEGMENTS = st.sampled_from(
    ["syncs", "acme-ads", "..", ".", "", "a", "x.csv", "y.jsonl.gz", "%2e%2e", "\\", "..x.csv", "/"]
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(_SEGMENTS, max_size=7).map("/".join)))
def test_property_parse_sync_key_raises_only_the_contract_error_and_never_accepts_traversal(key: str) -> None:
    try:
        sync = parse_sync_key(key)
    except KeyContractError:
        return
    # Given any text, when it is accepted, then it is inside the contract.
    assert key.startswith("syncs/")
    assert ".." not in key.split("/")
    assert "." not in key.split("/")
    assert "" not in key.split("/")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", sync.integration_id)
    assert len(key) <= 512


# --- formats -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("h.csv", CSV_TEXT.encode()),
        ("h.csv", CSV_TEXT.replace("\n", "\r\n").encode()),
        ("h.csv", b"\xef\xbb\xbf" + CSV_TEXT.encode()),  # a BOM from a spreadsheet export
        ("h.csv.gz", gzip.compress(CSV_TEXT.encode())),
        ("h.jsonl", _jsonl(RECORDS)),
        ("h.jsonl.gz", gzip.compress(_jsonl(RECORDS))),
        ("h.parquet", _parquet(pa.Table.from_pylist(RECORDS))),
    ],
    ids=["csv", "csv-crlf", "csv-bom", "csv.gz", "jsonl", "jsonl.gz", "parquet"],
)
def test_given_the_same_rows_in_each_format_when_read_then_the_same_valid_rows_come_out(
    name: str, body: bytes
) -> None:
    table = _read(body, name)
    valid, rejected = validate_rows(table, CONFIG, name)

    assert table.columns == ["timestamp", "source", "clicks", "ngr"]
    assert rejected == []
    assert _summary(valid) == EXPECTED_ROWS


def test_given_a_multi_member_gzip_when_read_then_no_member_is_dropped() -> None:
    # `cat part1.csv.gz part2.csv.gz` is a valid gzip file; reading only the first member loses rows.
    head, tail = CSV_TEXT.split("2026-09-01T01")
    body = gzip.compress(head.encode()) + gzip.compress(("2026-09-01T01" + tail).encode())

    table = _read(body, "h.csv.gz")

    assert table.rows_in == 3


def test_given_a_parquet_file_with_typed_columns_when_read_then_timestamps_dates_and_decimals_work() -> None:
    typed = pa.table(
        {
            "timestamp": pa.array([T0, T0 + timedelta(hours=1)], pa.timestamp("s", tz="UTC")),
            "source": ["google-cpc", None],
            "clicks": pa.array([120, 130], pa.int64()),
            "ngr": pa.array([Decimal("250.50"), Decimal("260.25")], pa.decimal128(12, 2)),
        }
    )
    daily = pa.table(
        {"date": pa.array([date(2026, 9, 1), date(2026, 9, 2)], pa.date32()), "clicks": [1, 2], "ngr": [3, 4]}
    )

    valid, rejected = validate_rows(_read(_parquet(typed), "t.parquet"), CONFIG, "t.parquet")
    days, day_rejected = validate_rows(
        _read(_parquet(daily), "d.parquet"), IntegrationConfig("acme-ads", timestamp_field="date"), "d"
    )

    assert rejected == []
    assert day_rejected == []
    assert _summary(valid) == [
        (1, T0, "google-cpc", 120.0, 250.5),
        (2, T0 + timedelta(hours=1), "(none)", 130.0, 260.25),
    ]
    assert [r.timestamp for r in days] == [T0, T0 + timedelta(days=1)]


def test_given_jsonl_with_unicode_line_separators_inside_values_when_read_then_records_stay_whole() -> None:
    record = {"timestamp": "2026-09-01T00:00:00Z", "source": "promo\u2028line\x85two", "clicks": 1, "ngr": 2}
    body = (json.dumps(record, ensure_ascii=False) + "\r\n" + json.dumps(record, ensure_ascii=False)).encode()

    table = _read(body, "u.jsonl")
    valid, rejected = validate_rows(table, CONFIG, "u.jsonl")

    assert rejected == []
    assert [r.dimensions["source"] for r in valid] == ["promo\u2028line\x85two"] * 2


# --- bad rows, one by one ------------------------------------------------------------------------------------


def test_given_a_csv_with_bad_rows_when_validated_then_each_is_rejected_with_row_field_and_reason() -> None:
    body = (
        b"timestamp,source,clicks,ngr\n"
        b"2026-09-01T00:00:00Z,google-cpc,120,250.5\n"  # 1 good
        b"2026-09-01T01:00:00Z,google-cpc,ten,250.5\n"  # 2 non-numeric
        b"2026-09-01T02:00:00Z,google-cpc,,250.5\n"  # 3 missing value
        b"2026-09-01T03:00:00Z,google-cpc,120,NaN\n"  # 4 NaN
        b"2026-09-01T04:00:00Z,google-cpc,inf,1\n"  # 5 inf
        b"yesterday,google-cpc,120,1\n"  # 6 bad timestamp
        b"2026-09-01T06:00:00Z,google-cpc,120\n"  # 7 too few fields
        b"2026-09-01T07:00:00Z,google-cpc,120,1,extra\n"  # 8 too many fields
        b",,,\n"  # 9 empty row
        b"2026-09-01T09:00:00Z,,7,-12.5\n"  # 10 good (no source, negative NGR)
    )

    table = _read(body, "bad.csv")
    valid, rejected = validate_rows(table, CONFIG, "bad.csv")

    assert [(r.row, r.dimensions["source"]) for r in valid] == [(1, "google-cpc"), (10, "(none)")]
    found = [(r.row, r.field, r.reason) for r in rejected]
    assert sorted(row for row, _, _ in found) == [2, 3, 4, 5, 6, 7, 8, 9]
    by_row = {row: (field, reason) for row, field, reason in found}
    assert by_row[2][0] == "clicks"
    assert "expected a number" in by_row[2][1]
    assert by_row[3] == ("clicks", "expected a number (missing value)")
    assert by_row[4] == ("ngr", "expected a number (not a finite number)")
    assert by_row[5] == ("clicks", "expected a number (not a finite number)")
    assert by_row[6] == ("timestamp", "expected an ISO 8601 timestamp")
    assert by_row[7] == (None, "has 3 fields, the header has 4")
    assert by_row[8] == (None, "has 5 fields, the header has 4")
    assert by_row[9] == (None, "empty row")
    assert {r.row: r.raw for r in rejected}[2] == "ten"
    assert table.rows_in == len(valid) + len(rejected) == 10


def test_given_jsonl_with_bad_lines_when_validated_then_each_is_rejected_with_its_line_number() -> None:
    lines = [
        json.dumps(RECORDS[0]),  # 1 good
        "{not json",  # 2
        "[1, 2, 3]",  # 3 not an object
        "",  # 4 empty line
        json.dumps({"timestamp": "2026-09-01T01:00:00Z", "source": "x", "ngr": 1}),  # 5 no clicks
        json.dumps({"timestamp": "2026-09-01T01:00:00Z", "source": "x", "clicks": "12", "ngr": True}),  # 6
        '{"timestamp": "2026-09-01T01:00:00Z", "source": "x", "clicks": NaN, "ngr": 1}',  # 7
        json.dumps({"timestamp": 1788256800, "source": "x", "clicks": "12", "ngr": 1.5}),  # 8 good
    ]

    table = _read("\n".join(lines).encode(), "bad.jsonl")
    valid, rejected = validate_rows(table, CONFIG, "bad.jsonl")

    assert [(r.row, r.timestamp, r.values["clicks"]) for r in valid] == [(1, T0, 120.0), (8, TEN_AM, 12.0)]
    by_row = {r.row: (r.field, r.reason) for r in rejected}
    assert sorted(by_row) == [2, 3, 4, 5, 6, 7]
    assert by_row[2][0] is None
    assert by_row[2][1].startswith("not valid JSON")
    assert by_row[3] == (None, "expected a JSON object")
    assert by_row[4] == (None, "empty line")
    assert by_row[5] == ("clicks", "expected a number (missing value)")
    assert by_row[6] == ("ngr", "expected a number (a boolean is not a number)")
    assert by_row[7] == ("clicks", "expected a number (not a finite number)")


# --- unreadable files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "reason"),
    [
        ("x.csv.gz", b"this is not gzip", "not a valid gzip stream"),
        ("x.csv.gz", gzip.compress(CSV_TEXT.encode() * 50)[:-30], "truncated"),
        ("x.csv.gz", gzip.compress(CSV_TEXT.encode() * 50)[:40], "truncated"),
        ("x.csv.gz", gzip.compress(CSV_TEXT.encode()) + b"trailing junk", "not a valid gzip stream"),
        ("x.csv.gz", b"", "truncated"),
        ("x.csv", "timestamp,source\n2026-09-01,caf\u00e9\n".encode("latin-1"), "not UTF-8"),
        ("x.jsonl", b'{"timestamp": "\xff"}\n', "not UTF-8"),
        ("x.csv", b"timestamp,clicks\n2026-09-01T00:00:00Z,1\x00\n", "NUL bytes"),
        ("x.csv", b"", "empty file"),
        ("x.csv", b"timestamp,clicks,clicks\n2026-09-01T00:00:00Z,1,2\n", "duplicate column names"),
        ("x.csv", b"timestamp,,clicks\n2026-09-01T00:00:00Z,1,2\n", "empty or duplicate column names"),
        ("x.jsonl", b"not json\n[1, 2]\n\n", "no line is a JSON object"),
        ("x.parquet", b"PAR1 but not really parquet", "not a readable Parquet file"),
        ("x.parquet", _parquet(pa.Table.from_pylist(RECORDS))[:-20], "not a readable Parquet file"),
    ],
    ids=[
        "not-gzip",
        "gzip-cut-at-end",
        "gzip-cut-in-middle",
        "gzip-trailing-junk",
        "gzip-empty",
        "latin-1-csv",
        "latin-1-jsonl",
        "nul-bytes",
        "empty-csv",
        "duplicate-header",
        "blank-header",
        "jsonl-without-objects",
        "not-parquet",
        "truncated-parquet",
    ],
)
def test_given_an_unreadable_file_when_read_then_unreadable_sync_names_the_problem(
    name: str, body: bytes, reason: str
) -> None:
    with pytest.raises(UnreadableSync, match=reason):
        _read(body, name)


def test_given_a_gzip_bomb_when_read_then_it_stops_at_the_bound_instead_of_inflating() -> None:
    bomb = gzip.compress(b"0" * 2_000_000)  # about 2 kB that inflate to 2 MB
    assert len(bomb) < 10_000

    with pytest.raises(UnreadableSync, match="above the size bound") as raised:
        _read(bomb, "bomb.csv.gz", max_bytes=10_000)  # decompressed output is bounded at 10× the limit

    assert "100000 bytes" in str(raised.value)


def test_given_a_header_problem_when_unreadable_then_the_header_row_is_named() -> None:
    with pytest.raises(UnreadableSync) as raised:
        _read(b"timestamp,clicks,clicks\n", "x.csv")

    assert raised.value.row == 0


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("x.csv", b"when,source,clicks,ngr\n2026-09-01T00:00:00Z,a,1,2\n"),
        ("x.jsonl", b'{"when": "2026-09-01T00:00:00Z", "clicks": 1}\n'),
        ("x.jsonl", b""),
    ],
)
def test_given_no_timestamp_column_when_validated_then_unreadable_sync_names_the_field(
    name: str, body: bytes
) -> None:
    table = _read(body, name)

    with pytest.raises(UnreadableSync, match="'timestamp'") as raised:
        validate_rows(table, CONFIG, name)

    assert raised.value.field == "timestamp"


# --- timestamps ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-09-01T10:00:00Z",
        "2026-09-01T10:00:00.000Z",
        "2026-09-01T12:00:00+02:00",
        "2026-09-01T05:00:00-05:00",
        "2026-09-01T10:00:00+00:00",
        "2026-09-01 10:00:00",  # naive: UTC
        "2026-09-01T10:00",
        " 2026-09-01T10:00:00Z ",
        1788256800,  # epoch seconds
        1788256800.0,
        "1788256800",
        1788256800000,  # epoch milliseconds
        "1788256800000",
        datetime(2026, 9, 1, 10),  # naive datetime
        datetime(2026, 9, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")),
    ],
)
def test_given_a_supported_timestamp_when_parsed_then_it_is_the_same_utc_instant(value: object) -> None:
    moment = parse_timestamp(value)

    assert moment == TEN_AM
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", ["2026-09-01", date(2026, 9, 1)])
def test_given_a_date_only_when_parsed_then_it_is_midnight_utc(value: object) -> None:
    assert parse_timestamp(value) == T0


def test_given_naive_times_and_an_integration_timezone_then_they_are_read_in_that_zone() -> None:
    table = _read(b"timestamp,clicks\n2026-09-01 12:00:00,1\n2026-09-01T12:00:00Z,1\n", "tz.csv")
    config = IntegrationConfig("acme-ads", metrics=(MetricSpec("clicks"),), timezone="Europe/Berlin")

    valid, _ = validate_rows(table, config, "tz.csv")

    assert [r.timestamp for r in valid] == [TEN_AM, datetime(2026, 9, 1, 12, tzinfo=UTC)]


@pytest.mark.parametrize(
    "value", ["", "   ", "yesterday", "2026-13-01", "2026-09-01T25:00", None, True, float("nan")]
)
def test_given_something_that_is_not_a_time_when_parsed_then_it_raises(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_timestamp(value)


# --- granularity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offsets_minutes", "granularity"),
    [
        ([0, 5, 10], 300),
        ([0, 5, 5, 5], 300),  # repeated timestamps (one row per dimension) are one period
        ([0, 60, 180, 120], 3600),  # unsorted, with a gap
        ([0, 60 * 24, 60 * 24 * 3], 86400),
        ([0, 60 * 24, 60 * 25], 3600),  # the smallest gap decides
        ([0, 15], 300),
        ([0, 90], 3600),
        ([35], 300),  # a single period off the hour
        ([0], 3600),  # a single period on the hour (midnight is read as hourly)
        ([], 3600),
    ],
)
def test_given_timestamps_when_inferring_granularity_then_the_smallest_gap_decides(
    offsets_minutes: list[int], granularity: int
) -> None:
    assert infer_granularity([T0 + timedelta(minutes=m) for m in offsets_minutes]) == granularity


# --- property: every row ends somewhere ------------------------------------------------------------------


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
_GOOD_TIME = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.isoformat() + "Z"
)
_BAD_TIME = st.sampled_from(["", "soon", "2026-02-30T00:00:00Z", "12:00", "NaN"])
_GOOD_NUMBER = st.one_of(
    st.integers(-(10**9), 10**9).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
)
_BAD_NUMBER = st.sampled_from(["", " ", "abc", "nan", "inf", "-Infinity", "1,5", "0x10", "1e999"])


@st.composite
def _row(draw: st.DrawFn) -> tuple[list[str], bool]:
    good_time, good_clicks, good_ngr = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    cells = [
        draw(_GOOD_TIME if good_time else _BAD_TIME),
        draw(_TEXT),
        draw(_GOOD_NUMBER if good_clicks else _BAD_NUMBER),
        draw(_GOOD_NUMBER if good_ngr else _BAD_NUMBER),
    ]
    shape = draw(st.sampled_from(["ok", "ok", "ok", "short", "long"]))
    if shape == "short":
        cells = cells[: draw(st.integers(1, 3))]
    elif shape == "long":
        cells = cells + draw(st.lists(_TEXT, min_size=1, max_size=2))
    return cells, good_time and good_clicks and good_ngr and shape == "ok"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row(), max_size=25), st.booleans())
def test_property_every_csv_row_is_either_valid_or_rejected_with_a_row_number(
    rows: list[tuple[list[str], bool]], compressed: bool
) -> None:
    out = io.StringIO()
    writer = csv.writer(out)  # CRLF rows: the writer then quotes a lone CR inside a cell too
    writer.writerow(["timestamp", "source", "clicks", "ngr"])
    writer.writerows(cells for cells, _ in rows)
    body = out.getvalue().encode()
    name = "p.csv.gz" if compressed else "p.csv"

    table = _read(gzip.compress(body) if compressed else body, name)
    valid, rejected = validate_rows(table, CONFIG, name)

    assert table.rows_in == len(valid) + len(rejected) == len(rows)
    assert all(isinstance(r.row, int) and r.row >= 1 for r in rejected)
    assert sorted([v.row for v in valid] + [r.row for r in rejected]) == list(range(1, len(rows) + 1))
    assert [v.row for v in valid] == [n for n, (_, good) in enumerate(rows, start=1) if good]
