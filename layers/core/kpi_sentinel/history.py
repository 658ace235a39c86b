"""The history store's objects as the readers that must stay light see them (no numpy, no pandas).

The scorer writes one gzip CSV per sync and date under ``history/integration=<id>/date=<d>/``
(:func:`kpi_sentinel.sync._write_history`); the KPI report plots its metric totals and threshold
tuning reads their scores. (The retrainer reads the same objects into pandas in
:mod:`kpi_sentinel.forest.features`.)
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator, Sequence

HISTORY_COLUMNS = (
    "period_start", "integration_id", "metric", "dimension", "dimension_value", "observed", "expected",
    "expected_lower", "expected_upper", "score", "status", "alert_severity", "sync_key", "sustained",
)  # fmt: skip
# Columns added after the first objects were written: readers must take their absence as empty.
LATER_COLUMNS = ("sustained",)


def total_rows(body: bytes, fields: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(row number, {field: text})`` for the metric-total rows (no dimension) of one history object.

    Raises ValueError when the object is not gzip UTF-8, lacks one of ``fields`` (``dimension`` is
    always needed), or has a row of another width than its header; the rows before that one have
    been yielded.

    >>> body = gzip.compress(b"period_start,metric,dimension,score\\nT1,ngr,,1.5\\nT1,ngr,source,9\\n")
    >>> list(total_rows(body, ("metric", "score")))
    [(2, {'metric': 'ngr', 'score': '1.5'})]
    """
    return history_rows(body, fields, totals_only=True)


def history_rows(
    body: bytes, fields: Sequence[str], totals_only: bool = False
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(row number, {field: text})`` for every row of one history object (only the metric totals'
    with ``totals_only``); errors as :func:`total_rows`, except that a field of
    :data:`LATER_COLUMNS` an older object lacks reads as empty text.

    >>> body = gzip.compress(b"period_start,metric,dimension,score\\nT1,ngr,,1.5\\nT1,ngr,source,9\\n")
    >>> [row["score"] for _, row in history_rows(body, ("score",))]
    ['1.5', '9']
    """
    try:
        text = gzip.decompress(body).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a gzip UTF-8 object ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None) or []
    missing = [name for name in (*fields, "dimension") if name not in header and name not in LATER_COLUMNS]
    if missing:
        raise ValueError(f"history object lacks column(s) {', '.join(dict.fromkeys(missing))}")
    at = {name: header.index(name) for name in fields if name in header}
    absent = {name: "" for name in fields if name not in header}
    dimension = header.index("dimension")
    for number, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"row {number} has {len(row)} fields, the header {len(header)}; "
                "the object's rows from there on are skipped"
            )
        if not (totals_only and row[dimension]):
            yield number, {**absent, **{name: row[index] for name, index in at.items()}}
