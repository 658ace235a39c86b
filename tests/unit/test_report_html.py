"""What the report prints is inert: escaped HTML, neutralised CSV formulas, a self-contained page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kpi_sentinel.report.build import ReportResult, ReportSettings, build_report
from kpi_sentinel.report.data import HistoryPoint
from kpi_sentinel.report.plots import metric_plot, split_flagged

from tests.unit.report_fixture import (
    A1,
    A2,
    A3,
    A4,
    DAY,
    FORMULA,
    G1,
    G2,
    IMG,
    MIDNIGHT,
    SCRIPT,
    fixture_day,
    make_alert,
)  # fmt: skip

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br"}
# Every tag and attribute the report's template writes; anything else in the page came from data.
TEMPLATE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "section", "nav", "ul", "li", "a",
    "div", "table", "thead", "tbody", "tr", "th", "td", "img", "br",
}  # fmt: skip
TEMPLATE_ATTRIBUTES = {
    "lang",
    "charset",
    "name",
    "content",
    "class",
    "id",
    "href",
    "src",
    "alt",
    "width",
    "height",
}


class PageChecker(HTMLParser):
    """Well-formedness (every opened tag closed, in order) and the tags and attributes used."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "a":
            self.links.append(values.get("href") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()


def check_page(page: str) -> PageChecker:
    checker = PageChecker()
    checker.feed(page)
    checker.close()
    return checker


@pytest.fixture(scope="module")
def report() -> ReportResult:
    return build_report(fixture_day().ports, DAY, DAY)


@pytest.fixture(scope="module")
def page(report: ReportResult) -> str:
    return report.files["index.html"].decode("utf-8")


def test_given_a_script_tag_in_a_slice_value_when_rendered_then_it_is_escaped_text(page: str) -> None:
    assert SCRIPT not in page
    assert "<script" not in page.lower()
    assert html.escape(SCRIPT) in page  # &lt;script&gt;alert(1)&lt;/script&gt;, shown as text


def test_given_an_img_onerror_in_a_summary_when_rendered_then_it_is_escaped_text(page: str) -> None:
    assert IMG not in page
    assert "onerror" not in {a.lower() for a in check_page(page).attributes}
    assert html.escape(IMG) in page  # in the alert's summary and in incident I3's


def test_given_the_page_when_parsed_then_it_is_well_formed_and_uses_only_the_template_tags(page: str) -> None:
    checker = check_page(page)
    assert page.startswith("<!doctype html>")
    assert checker.errors == []
    assert checker.stack == []
    assert checker.tags <= TEMPLATE_TAGS, checker.tags - TEMPLATE_TAGS
    assert checker.attributes <= TEMPLATE_ATTRIBUTES, checker.attributes - TEMPLATE_ATTRIBUTES


def test_given_the_page_when_read_then_plots_are_embedded_pngs_and_nothing_is_loaded_from_outside(
    report: ReportResult, page: str
) -> None:
    checker = check_page(page)
    plotted = sum(len(s.plots) for s in report.integrations)
    assert plotted == 5
    assert len(checker.images) == plotted
    for source in checker.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.removeprefix("data:image/png;base64,"), validate=True).startswith(
            PNG_SIGNATURE
        )
    assert all(link.startswith("#integration-") for link in checker.links)  # in-page navigation only
    # http(s):// appears only as escaped text from data (the =HYPERLINK cell), never as markup
    for match in re.finditer(r"https?://", page):
        before = page[max(0, match.start() - 30) : match.start()]
        assert "&quot;" in before, before
    assert "url(" not in page
    assert "@import" not in page
    assert "<link" not in page


def test_given_a_formula_in_a_cell_when_written_to_csv_then_it_is_neutralised(report: ReportResult) -> None:
    rows = list(csv.DictReader(io.StringIO(report.files["alerts.csv"].decode())))
    assert len(rows) == 6
    g1 = next(r for r in rows if r["alert_id"] == G1["alert_id"])
    assert g1["dimension_value"] == "'" + FORMULA
    assert g1["summary"] == "'" + FORMULA
    assert g1["label"] == "false_positive"
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), value
            # a leading minus only on numbers, which a spreadsheet reads as numbers
            assert not value.startswith("-") or re.fullmatch(r"-[0-9.]+", value), value


def test_given_the_csv_when_read_then_it_has_every_alert_most_severe_first(report: ReportResult) -> None:
    rows = list(csv.DictReader(io.StringIO(report.files["alerts.csv"].decode())))
    assert [r["severity"] for r in rows] == ["critical", "critical", "warning", "warning", "warning", "info"]
    assert {r["alert_id"] for r in rows} == {a["alert_id"] for a in (A1, A2, A3, A4, G1, G2)}
    a1 = next(r for r in rows if r["alert_id"] == A1["alert_id"])
    assert (a1["top_contributor"], a1["top_contributor_share"], a1["deviation_percent"]) == (
        "source=telegram-push",
        "0.83",
        "-40.0",
    )


def test_given_summary_json_when_read_then_its_numbers_match_the_page(
    report: ReportResult, page: str
) -> None:
    summary = json.loads(report.files["summary.json"])
    assert summary["alerts"]["total"] == len(report.alerts) == 6
    assert "25.0%" in page
    assert summary["incidents"]["sla"]["adherence"] == 0.25
    assert "50.0%" in page
    assert summary["precision"]["precision"] == 0.5
    assert "2 by snoozes, 4 by the calendar" in page


# Text with the characters that matter to HTML, anywhere in the string.
hostile = st.text(
    alphabet=st.sampled_from(list("<>&\"'=/ab -\n\t"))
    | st.characters(codec="utf-8", exclude_categories=("Cs",)),
    min_size=1,
    max_size=40,
)


def _page_with(text: str) -> str:
    alert = make_alert(
        "acme-ads",
        text,
        10,
        "critical",
        dimension=text,
        value=text,
        contributors=[(text, text, 0.9)],
        summary=text,
    )
    fixture = fixture_day(alerts=[alert])
    for incident in fixture.incidents.incidents:
        incident["summary"] = incident["team"] = incident["priority"] = text
    result = build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))
    return result.files["index.html"].decode("utf-8")


def _shape(page: str) -> list[str]:
    """The page's markup without the escaped text in between."""
    return re.findall(r"<[^>]*>", page)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=hostile)
def test_given_any_text_in_alert_and_incident_fields_when_rendered_then_no_markup_comes_from_data(
    text: str,
) -> None:
    # The same report with harmless text in the same fields: any '<' the hostile text added to the
    # page would show up as markup the harmless page does not have.
    page, baseline = _page_with(text), _page_with("plain")
    assert page.count("<") == baseline.count("<")
    assert _shape(page) == _shape(baseline)
    checker = check_page(page)
    assert checker.errors == []
    assert checker.stack == []
    assert checker.tags <= TEMPLATE_TAGS
    assert checker.attributes <= TEMPLATE_ATTRIBUTES
    assert html.escape(text) in page


def test_given_a_metric_name_with_math_text_when_plotted_then_it_renders() -> None:
    # matplotlib would parse "$...$" as math text and fail on a bad one; titles are drawn literally.
    alert = make_alert("acme-ads", "ngr", 10, "critical")
    start = MIDNIGHT + timedelta(hours=9)
    points = [HistoryPoint(start + timedelta(hours=h), 1.0, 1.0, 0.5, 1.5, h == 2) for h in range(3)]
    png = metric_plot("acme-ads · $\\frac{bad $x^", points, [alert], (MIDNIGHT, MIDNIGHT + timedelta(days=1)))
    assert png.startswith(PNG_SIGNATURE)


def test_given_an_hourly_rollup_alert_on_five_minute_history_then_it_is_drawn_as_a_band_not_a_dot() -> None:
    start = MIDNIGHT + timedelta(hours=9)
    points = [HistoryPoint(start + timedelta(minutes=5 * k), 2.0, 2.0, 1.0, 3.0, False) for k in range(36)]
    hourly = make_alert("acme-ads", "ftds", 10, "warning", observed=4.0, expected=24.0)  # an hour's sums
    five = {
        **make_alert("acme-ads", "ftds", 11, "critical", observed=0.0, expected=2.0),
        "granularity_seconds": 300,
    }
    broken = {**five, "observed": float("nan")}

    dots, spans = split_flagged(points, [hourly, five, broken])

    assert (dots, spans) == ([five], [hourly])
    assert split_flagged(points[:1], [hourly]) == ([hourly], [])  # one point: nothing to compare with
    png = metric_plot("acme-ads · ftds", points, [hourly, five], (MIDNIGHT, MIDNIGHT + timedelta(days=1)))
    assert png.startswith(PNG_SIGNATURE)
