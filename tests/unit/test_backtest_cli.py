"""`kpi-sentinel backtest` end to end, and the escaping of what people open (CSV and HTML)."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpi_sentinel.alerts import build_alerts
from kpi_sentinel.backtest import OUTPUT_COLUMNS
from kpi_sentinel.cli import main
from kpi_sentinel.config import IntegrationConfig, MetricSpec
from kpi_sentinel.outputs import ALERT_CSV_COLUMNS, html_page, spreadsheet_safe, write_alerts
from kpi_sentinel.scoring import ScoredPoint

T0 = datetime(2026, 9, 1, tzinfo=UTC)
CRATER = T0 + timedelta(days=18, hours=15)


@pytest.fixture(scope="module")
def traffic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weeks of hourly NGR and clicks for two sources; at CRATER both lose 80%."""
    rng = np.random.default_rng(21)
    lines = ["timestamp,source,clicks,ngr"]
    for hour in range(21 * 24):
        when = T0 + timedelta(hours=hour)
        profile = 0.25 + 0.75 * (1 + math.cos(2 * math.pi * (when.hour - 16) / 24)) / 2
        for source, level in (("telegram-push", 900.0), ("google-cpc", 600.0)):
            clicks = int(rng.poisson(level * profile * (0.2 if when == CRATER else 1.0)))
            ngr = rng.normal(2.0 * clicks, 2.0 * math.sqrt(clicks + 1))
            lines.append(f"{when:%Y-%m-%dT%H:%M:%SZ},{source},{clicks},{ngr:.2f}")
    path = tmp_path_factory.mktemp("backtest") / "traffic.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(args: list[str], out: Path) -> tuple[int, list[dict[str, str]]]:
    code = main(["backtest", *args, "-o", str(out)])
    if code != 0:
        return code, []
    with out.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == OUTPUT_COLUMNS
        return code, list(reader)


def _crater_total(rows: list[dict[str, str]], metric: str = "ngr") -> dict[str, str]:
    (row,) = [
        r
        for r in rows
        if r["period_start"] == CRATER.isoformat() and r["metric"] == metric and not r["dimension"]
    ]
    return row


def test_given_hourly_traffic_with_a_crater_when_backtested_then_the_crater_hour_alerts(
    traffic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, rows = _run([str(traffic_csv)], tmp_path / "scores.csv")

    assert code == 0
    crater = _crater_total(rows)
    assert (crater["alert"], crater["ready"]) == ("1", "1")
    assert crater["severity"] in ("warning", "critical")
    assert float(crater["score"]) <= -3
    assert float(crater["deviation_percent"]) < -50
    assert float(crater["observed"]) < float(crater["expected_lower"]) < float(crater["expected"])
    first_week = [r for r in rows if r["period_start"] < (T0 + timedelta(days=7)).isoformat()]
    assert first_week
    assert {r["ready"] for r in first_week} == {"0"}
    assert {r["alert"] for r in first_week} == {"0"}
    assert {r["dimension_value"] for r in rows} == {"", "telegram-push", "google-cpc"}
    assert {r["metric"] for r in rows} == {"ngr", "clicks"}
    err = capsys.readouterr().err
    assert "traffic.csv: 1008 rows (0 rejected), granularity 3600s, season 168 periods" in err


@pytest.mark.parametrize(
    ("options", "check"),
    [
        (["--threshold", "1000"], lambda rows: {r["alert"] for r in rows} == {"0"}),
        (["--no-slices"], lambda rows: {r["dimension"] for r in rows} == {""}),
        (["--metric", "ngr"], lambda rows: {r["metric"] for r in rows} == {"ngr"}),
        (
            ["--dimension", "source", "--metric", "clicks"],
            lambda rows: _crater_total(rows, "clicks")["alert"] == "1",
        ),
        (["--season", "24"], lambda rows: _crater_total(rows)["alert"] == "1"),
        (
            ["--direction", "up"],  # a drop is good news for an up-is-bad metric: shown, not alerted
            lambda rows: (_crater_total(rows)["alert"], _crater_total(rows)["severity"]) == ("0", "info"),
        ),
    ],
    ids=["threshold", "no-slices", "metric", "dimension", "season", "direction-up"],
)
def test_given_options_when_backtested_then_the_output_follows_them(
    traffic_csv: Path, tmp_path: Path, options: list[str], check: Any
) -> None:
    code, rows = _run([str(traffic_csv), *options], tmp_path / "scores.csv")

    assert code == 0
    assert rows
    assert check(rows)


def test_given_a_missing_file_when_backtested_then_it_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"

    code = main(["backtest", str(missing), "-o", str(tmp_path / "out.csv")])

    assert code == 2
    assert f"{missing}: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "body", "problem"),
    [
        ("no-time.csv", "when,clicks\n2026-09-01T00:00:00Z,5\n", "no timestamp column"),
        ("empty.csv", "timestamp,clicks\n", "no valid rows"),
        ("broken.csv.gz", "not gzip at all", "not a valid gzip stream"),
        ("notes.txt", "timestamp,clicks\n", "unsupported file type"),
    ],
)
def test_given_a_file_it_cannot_use_when_backtested_then_it_exits_2_naming_the_file_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, body: str, problem: str
) -> None:
    source = tmp_path / name
    source.write_text(body, encoding="utf-8")

    code = main(["backtest", str(source), "-o", str(tmp_path / "out.csv")])

    err = capsys.readouterr().err
    assert code == 2
    assert str(source) in err
    assert problem in err
    assert "Traceback" not in err


def test_given_an_unknown_metric_option_when_backtested_then_it_exits_2_listing_the_real_ones(
    traffic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", str(traffic_csv), "--metric", "revenue", "-o", str(tmp_path / "o.csv")])

    assert code == 2
    assert (
        "--metric ['revenue']: not numeric columns of the file (['clicks', 'ngr'])" in capsys.readouterr().err
    )


# --- outputs: spreadsheets and HTML ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("telegram-push", "telegram-push"),
        ("", ""),
        (-3.5, -3.5),
        (42, 42),
        (None, None),
    ],
)
def test_given_a_cell_when_made_spreadsheet_safe_then_only_formula_text_is_neutralised(
    value: Any, safe: Any
) -> None:
    assert spreadsheet_safe(value) == safe


def _hostile_alert() -> dict[str, Any]:
    config = IntegrationConfig(
        "acme-ads", granularity_seconds=3600, dimensions=("source",), metrics=(MetricSpec("ngr", "down"),)
    )
    period = int(T0.timestamp()) // 3600
    point = ScoredPoint(
        period,
        ("ngr", "source", '=HYPERLINK("http://x")'),
        5.0,
        400.0,
        300.0,
        500.0,
        -9.0,
        True,
        5.0,
        streak=-2,
    )
    (alert,) = build_alerts(config, 3600, [point], "syncs/acme-ads/x.csv")
    return alert


def test_given_an_alert_with_formula_text_when_written_then_the_csv_cell_is_inert_and_jsonl_exact(
    tmp_path: Path,
) -> None:
    alert = _hostile_alert()

    jsonl, table = write_alerts([alert], tmp_path / "out")

    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == ALERT_CSV_COLUMNS
    cells = dict(zip(ALERT_CSV_COLUMNS, rows[1], strict=True))
    assert cells["dimension_value"] == '\'=HYPERLINK("http://x")'
    assert not any(cell.startswith(("=", "+", "@")) for cell in rows[1])
    assert cells["observed"] == "5.0"
    assert cells["score"] == "-9.0"
    assert [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()] == [alert]


def test_given_hostile_text_when_rendered_as_html_then_it_is_escaped_everywhere() -> None:
    evil = "<script>alert(1)</script>"

    page = html_page(
        f"report {evil}",
        [
            (
                f"section {evil}",
                (f"col {evil}", "severity"),
                [(evil, "critical"), ('it\'s "quoted"', "warning")],
            )
        ],
    )

    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 5  # title, h1, h2, th, td
    assert "it&#x27;s &quot;quoted&quot;" in page
    assert "<td class='critical'>critical</td>" in page


def test_given_mappings_and_lists_in_a_report_cell_then_they_read_as_text_and_stay_escaped() -> None:
    page = html_page("t", [("h", ["what"], [[{"scored": 2, "<script>": 1}], [["a", "<b>x</b>"]], [[]]])])

    assert "<td>scored: 2; &lt;script&gt;: 1</td>" in page
    assert "<td>a<br>&lt;b&gt;x&lt;/b&gt;</td>" in page
    assert "<td>none</td>" in page
    assert "<script>" not in page
