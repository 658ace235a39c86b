"""Reading sync files: key contract, formats, row validation.

Every row of a readable file ends as a :class:`ValidRow` or a :class:`Rejection` naming the row, the
field and what was expected. A file that cannot be read at all raises :class:`UnreadableSync`, which
the scorer turns into a quarantine report.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from kpi_sentinel.config import IntegrationConfig

INTEGRATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FORMATS = {".csv": "csv", ".csv.gz": "csv", ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".parquet": "parquet"}
_SAFE_PATH = re.compile(r"[A-Za-z0-9._=/-]+")
NO_VALUE = "(none)"
SAMPLE_ROWS = 200
RAW_EXCERPT = 200


class KeyContractError(ValueError):
    """An S3 key outside ``syncs/<integration_id>/<name>.<ext>``; it is never used as a path."""


class UnreadableSync(ValueError):
    """A file that cannot be scored at all (corrupt, wrong format, no timestamp column, too large)."""

    def __init__(self, reason: str, row: int | None = None, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.row = row
        self.field = field


@dataclass(frozen=True)
class SyncKey:
    key: str
    integration_id: str
    name: str  # the part after syncs/<integration_id>/, safe to reuse under quarantine/
    format: str
    compressed: bool


def parse_sync_key(key: str) -> SyncKey:
    """Check a key against the contract.

    >>> parse_sync_key("syncs/acme-ads/2026/09/01/00.csv.gz").integration_id
    'acme-ads'
    >>> parse_sync_key("syncs/../etc/passwd.csv")
    Traceback (most recent call last):
    ...
    kpi_sentinel.parsing.KeyContractError: key 'syncs/../etc/passwd.csv' breaks the sync key contract: ...
    """
    prefix, _, rest = key.partition("/")
    integration_id, _, name = rest.partition("/")
    problem = None
    if prefix != "syncs":
        problem = "it must start with 'syncs/'"
    elif not INTEGRATION_ID.fullmatch(integration_id):
        problem = "the integration id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}"
    elif not name or not _SAFE_PATH.fullmatch(name) or any(p in ("", ".", "..") for p in name.split("/")):
        problem = "the file name may use letters, digits and ._=/- with no empty, '.' or '..' parts"
    elif len(key) > 512:
        problem = "it is longer than 512 characters"
    if problem:
        raise KeyContractError(
            f"key {key[:200]!r} breaks the sync key contract: {problem} "
            "(expected syncs/<integration_id>/<name>.csv|.csv.gz|.jsonl|.jsonl.gz|.parquet)"
        )
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return SyncKey(key, integration_id, name, FORMATS[suffix], suffix.endswith(".gz"))
    raise KeyContractError(
        f"key {key[:200]!r} breaks the sync key contract: unsupported file type "
        f"(expected one of {', '.join(sorted(FORMATS))})"
    )


@dataclass(frozen=True)
class Rejection:
    row: int | None
    field: str | None
    reason: str
    raw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason, "raw": self.raw}


@dataclass(frozen=True)
class ValidRow:
    row: int  # 1-based data row number (the header is row 0 for CSV)
    timestamp: datetime
    dimensions: Mapping[str, str]
    values: Mapping[str, float]
    tags: tuple[str, ...] = ()


@dataclass
class RawTable:
    """Rows as read, before validation; ``rows`` pairs the row number with the record."""

    columns: list[str]
    rows: list[tuple[int, Mapping[str, Any]]]
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.rows) + len(self.rejections)

    def sample(self) -> list[Mapping[str, Any]]:
        return [record for _, record in self.rows[:SAMPLE_ROWS]]


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:RAW_EXCERPT]


def decompress(body: bytes, limit: int) -> bytes:
    """Gunzip with a bound on the output, so a small bomb cannot exhaust memory.

    Every member of a multi-member stream is read (``cat a.gz b.gz`` is a valid gzip file).
    """
    out = bytearray()
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise UnreadableSync(f"not a valid gzip stream: {exc}") from exc
        if len(out) > limit:
            raise UnreadableSync(f"decompresses to more than {limit} bytes, above the size bound")
        if not inflater.eof:
            raise UnreadableSync("the gzip stream is truncated")
        rest = inflater.unused_data.lstrip(b"\x00")  # zero padding after the last member is allowed
        if not rest:
            return bytes(out)


def read_table(body: bytes, sync: SyncKey, max_bytes: int) -> RawTable:
    """Read a sync body into rows; raises :class:`UnreadableSync` for a file that cannot be read."""
    if sync.compressed:
        body = decompress(body, max_bytes * 10)
    if sync.format == "csv":
        return _read_csv(body)
    if sync.format == "jsonl":
        return _read_jsonl(body)
    return _read_parquet(body)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableSync(f"not UTF-8 text (byte {exc.start})") from exc


def _read_csv(body: bytes) -> RawTable:
    text = _text(body)
    if "\x00" in text:
        raise UnreadableSync("contains NUL bytes: not a CSV text file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableSync("empty file: no header row") from None
    except csv.Error as exc:
        raise UnreadableSync(f"header row is not valid CSV: {exc}", row=0) from exc
    columns = [c.strip() for c in header]
    if len(set(columns)) != len(columns) or any(not c for c in columns):
        raise UnreadableSync(f"header has empty or duplicate column names: {columns}", row=0)
    table = RawTable(columns=columns, rows=[])
    row_number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row_number += 1
            table.rejections.append(Rejection(row_number, None, f"not valid CSV: {exc}"))
            continue
        row_number += 1
        if not cells or all(not c.strip() for c in cells):
            table.rejections.append(Rejection(row_number, None, "empty row"))
            continue
        if len(cells) != len(columns):
            table.rejections.append(
                Rejection(
                    row_number,
                    None,
                    f"has {len(cells)} fields, the header has {len(columns)}",
                    _excerpt(",".join(cells)),
                )
            )
            continue
        table.rows.append((row_number, dict(zip(columns, cells, strict=True))))
    return table


def _read_jsonl(body: bytes) -> RawTable:
    text = _text(body)
    columns: dict[str, None] = {}
    table = RawTable(columns=[], rows=[])
    # JSON text never holds a raw CR or LF, but it may hold U+2028, U+0085...: split on CR/LF only.
    lines = re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()  # the line break that ends the last line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            table.rejections.append(Rejection(number, None, "empty line"))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            table.rejections.append(Rejection(number, None, f"not valid JSON: {exc.msg}", _excerpt(line)))
            continue
        if not isinstance(record, dict):
            table.rejections.append(Rejection(number, None, "expected a JSON object", _excerpt(line)))
            continue
        for name in record:
            columns.setdefault(str(name), None)
        table.rows.append((number, record))
    if lines and not table.rows:
        raise UnreadableSync("no line is a JSON object: not a JSON Lines file")
    table.columns = list(columns)
    return table


def _read_parquet(body: bytes) -> RawTable:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the deployment's layers
        raise UnreadableSync("Parquet syncs are not supported by this deployment (no pyarrow)") from exc
    try:
        # One thread: Arrow's reader pool can abort the process at interpreter exit (apache/arrow#34314),
        # and a sync file is small enough to decode on one core.
        table = pq.read_table(pa.BufferReader(body), use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableSync(f"not a readable Parquet file: {exc}") from exc
    records = table.to_pylist()
    return RawTable(columns=list(table.column_names), rows=list(enumerate(records, start=1)))


def parse_timestamp(value: Any, zone: tzinfo = UTC) -> datetime:
    """ISO 8601 text, epoch seconds (or milliseconds), a datetime or a date; naive times are in ``zone``.

    >>> parse_timestamp("2026-09-01T10:00:00Z").isoformat()
    '2026-09-01T10:00:00+00:00'
    >>> parse_timestamp(1788256800).isoformat()
    '2026-09-01T10:00:00+00:00'
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        moment = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, tz=UTC)
    elif isinstance(value, date):  # e.g. a Parquet date32 column
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
            return parse_timestamp(float(text), zone)
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError("empty")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def parse_number(value: Any) -> float:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("missing value")
        number = float(value)  # float() itself accepts surrounding white space
    elif isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    elif isinstance(value, int | float | Decimal):  # Decimal: a Parquet decimal128 money column
        number = float(value)
    elif value is None:
        raise ValueError("missing value")
    else:
        raise ValueError("not a number")
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _dimension(value: Any) -> str:
    if value is None:
        return NO_VALUE
    text = str(value).strip()
    return text[:256] if text else NO_VALUE


def validate_rows(
    table: RawTable, config: IntegrationConfig, source: str
) -> tuple[list[ValidRow], list[Rejection]]:
    """Turn raw records into valid rows, rejecting each bad one with its row, field and reason."""
    if config.timestamp_field not in table.columns:
        raise UnreadableSync(
            f"no usable timestamp column: expected {config.timestamp_field!r}, found {table.columns}",
            field=config.timestamp_field,
        )
    zone: tzinfo = UTC if config.timezone == "UTC" else ZoneInfo(config.timezone)
    present = set(table.columns)
    metric_fields = [m.name for m in config.metrics if m.name in present] if config.shape == "metrics" else []
    dimension_fields = [d for d in config.dimensions if d in present]
    tags_field = config.tags_field if config.tags_field in present else None
    valid: list[ValidRow] = []
    rejected = list(table.rejections)
    for number, record in table.rows:
        raw_ts = record.get(config.timestamp_field)
        try:
            moment = parse_timestamp(raw_ts, zone)
        except (ValueError, TypeError, OverflowError, OSError):
            rejected.append(
                Rejection(number, config.timestamp_field, "expected an ISO 8601 timestamp", _excerpt(raw_ts))
            )
            continue
        values: dict[str, float] = {}
        problem: Rejection | None = None
        for name in metric_fields:
            try:
                values[name] = parse_number(record.get(name))
            except (ValueError, TypeError) as exc:
                problem = Rejection(number, name, f"expected a number ({exc})", _excerpt(record.get(name)))
                break
        if problem:
            rejected.append(problem)
            continue
        tags: tuple[str, ...] = ()
        if tags_field:
            raw_tags = record.get(tags_field)
            if isinstance(raw_tags, list):
                tags = tuple(_dimension(t) for t in raw_tags if str(t).strip())
            elif raw_tags not in (None, ""):
                tags = tuple(t.strip()[:256] for t in str(raw_tags).split(config.tags_separator) if t.strip())
        valid.append(
            ValidRow(
                row=number,
                timestamp=moment,
                dimensions={d: _dimension(record.get(d)) for d in dimension_fields},
                values=values,
                tags=tuple(dict.fromkeys(tags)),
            )
        )
    return valid, rejected


def infer_granularity(timestamps: Sequence[datetime]) -> int:
    """5 min, hour or day from the smallest gap between distinct timestamps (or their alignment).

    >>> from datetime import timedelta
    >>> t0 = datetime(2026, 9, 1, tzinfo=UTC)
    >>> infer_granularity([t0, t0 + timedelta(hours=1), t0 + timedelta(hours=3)])
    3600
    >>> infer_granularity([t0 + timedelta(minutes=35)])
    300
    """
    distinct = sorted({int(t.timestamp()) for t in timestamps})
    gaps = [b - a for a, b in itertools.pairwise(distinct) if b > a]
    if gaps:
        smallest = min(gaps)
        return 300 if smallest < 3600 else 3600 if smallest < 86400 else 86400
    if not distinct:
        return 3600
    # One period only: go by alignment. Midnight is ambiguous and read as hourly; daily integrations
    # that send one row per file should say `granularity: day` in their config.
    return 300 if distinct[0] % 3600 else 3600


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
