"""The report's incidents table says who acknowledged each incident, escaped like every other value."""

from __future__ import annotations

import html
import re

from kpi_sentinel.report.build import ReportSettings, build_report

from tests.unit.report_fixture import DAY, SCRIPT, fixture_day

OPERATOR = "arn:aws:iam::123456789012:user/alice"


def incident_rows(page: str) -> dict[str, list[str]]:
    """The incidents tables' rows by incident id: each cell's inner HTML."""
    rows: dict[str, list[str]] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        if cells and re.fullmatch(r"I\d", cells[0]):
            rows[cells[0]] = cells
    return rows


def test_given_incidents_acknowledged_by_someone_when_rendered_then_a_column_shows_who_escaped() -> None:
    fixture = fixture_day()
    fixture.incidents.incidents[0]["acknowledged_by"] = OPERATOR  # I1, acknowledged within its SLA
    fixture.incidents.incidents[1]["acknowledged_by"] = SCRIPT  # I2: a hostile identity is only text
    # I5 was acknowledged before who acknowledged was recorded: its record has no such field
    result = build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))
    assert not result.problems
    page = result.files["index.html"].decode("utf-8")
    assert "<th>acknowledged by</th>" in page
    headers = re.findall(r"<th>(.*?)</th>", page.split("<th>incident</th>", 1)[1].split("</tr>", 1)[0])
    assert headers[6:8] == ["acknowledged", "acknowledged by"]  # after incident, right of "acknowledged"
    rows = incident_rows(page)
    by = 8  # the column, counting "incident" as 0
    assert rows["I1"][by] == html.escape(OPERATOR)
    assert rows["I2"][by] == html.escape(SCRIPT)
    assert SCRIPT not in page
    assert rows["I5"][by] == "–"
    assert rows["I3"][by] == "–"  # nobody acknowledged it
