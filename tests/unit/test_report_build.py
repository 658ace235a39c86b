"""The KPI report's content on the hand-checked fixture day (see tests/unit/report_fixture.py)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kpi_sentinel.adapters.memory import MemoryObjects
from kpi_sentinel.report.build import ReportResult, ReportSettings, build_report, write_report
from kpi_sentinel.report.data import read_metric_history
from kpi_sentinel.report.record import record_alerts

from tests.unit.report_fixture import (
    A1,
    A2,
    A3,
    A4,
    AS_OF,
    DATA,
    DAY,
    G1,
    G2,
    MIDNIGHT,
    fixture_day,
    history_body,
    history_row,
    make_alert,
    suppressed_body,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> ReportResult:
    return build_report(fixture_day().ports, DAY, DAY)


@pytest.fixture(scope="module")
def summary(report: ReportResult) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(report.files["summary.json"])
    return parsed


def _section(report: ReportResult, integration_id: str) -> Any:
    return next(s for s in report.integrations if s.integration_id == integration_id)


def test_given_the_fixture_day_when_built_then_alert_counts_are_by_severity_detector_and_integration(
    summary: dict[str, Any],
) -> None:
    assert summary["alerts"] == {
        "total": 6,
        "by_severity": {"critical": 2, "warning": 3, "info": 1},
        "by_detector": {"ewma": 5, "isolation_forest": 1},
        "by_integration": {"acme-ads": 4, "globex-traffic": 2, "initech-support": 0},
    }
    assert summary["integrations"]["acme-ads"]["by_severity"] == {"critical": 1, "warning": 2, "info": 1}
    assert summary["report"]["integrations"] == ["acme-ads", "globex-traffic", "initech-support"]


def test_given_incidents_acknowledged_within_and_after_sla_and_overdue_when_built_then_adherence_is_exact(
    report: ReportResult, summary: dict[str, Any]
) -> None:
    # I1 met, I2 missed, I3 and I6 overdue: 1 / 4; I3 still open; acks after 15, 90, 30 min -> median 30
    assert summary["incidents"] == {
        "available": True,
        "opened": 7,
        "by_status": {"acknowledged": 3, "open": 2, "resolved": 2},
        "by_priority": {"P1": 2, "P2": 2, "P3": 2, "P4": 1},
        "sla": {
            "incidents": 7,
            "with_sla": 6,
            "acknowledged_within_sla": 1,
            "acknowledged_after_sla": 1,
            "overdue_unacknowledged": 2,
            "open_overdue": 1,
            "not_yet_due": 1,
            "closed_before_due": 1,
            "adherence": 0.25,
            "median_minutes_to_acknowledge": 30.0,
        },
    }
    assert summary["integrations"]["acme-ads"]["incidents"]["sla"]["adherence"] == 0.5
    assert summary["integrations"]["globex-traffic"]["incidents"]["sla"]["adherence"] == 0.0
    assert summary["integrations"]["globex-traffic"]["incidents"]["sla"]["open_overdue"] == 1
    assert summary["integrations"]["initech-support"]["incidents"]["sla"]["adherence"] is None
    states = {i.incident_id: i.sla_state for i in report.incidents or ()}
    assert states == {
        "I1": "met", "I2": "missed", "I3": "overdue", "I4": "closed_before_due", "I5": "no_sla",
        "I6": "overdue", "I8": "not_due",
    }  # fmt: skip


def test_given_the_incident_store_when_built_then_it_is_asked_for_the_report_days_only() -> None:
    fixture = fixture_day()
    build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))
    assert fixture.incidents.asked == [(MIDNIGHT, MIDNIGHT + timedelta(days=1))]


def test_given_labels_when_built_then_precision_is_true_over_true_plus_false_and_expected_apart(
    summary: dict[str, Any],
) -> None:
    assert summary["precision"] == {
        "available": True,
        "alerts": 6,
        "labelled": 5,
        "true_positive": 2,
        "false_positive": 2,
        "expected": 1,
        "other_labels": 0,
        "unlabelled": 1,
        "precision": 0.5,
    }
    assert summary["integrations"]["acme-ads"]["precision"]["precision"] == 0.6667
    assert summary["integrations"]["globex-traffic"]["precision"]["precision"] == 0.0
    # no alert, so no label: "no labels", not 0%
    assert summary["integrations"]["initech-support"]["precision"]["precision"] is None


def test_given_suppressed_alerts_when_built_then_they_are_counted_once_by_integration_and_cause(
    summary: dict[str, Any],
) -> None:
    assert summary["suppressed"] == {
        "total": 6,
        "snooze": 2,
        "calendar": 4,
        "other": 0,
        "by_integration": {
            "acme-ads": {"total": 3, "snooze": 2, "calendar": 1, "other": 0},
            "initech-support": {"total": 3, "snooze": 0, "calendar": 3, "other": 0},
        },
    }


def test_given_contributors_on_several_alerts_when_built_then_they_are_aggregated(
    summary: dict[str, Any],
) -> None:
    assert summary["top_contributors"] == [
        {"dimension": "source", "value": "telegram-push", "share": 1.43, "alerts": 2},
        {"dimension": "feature", "value": "ngr", "share": 0.7, "alerts": 1},
        {"dimension": "source", "value": "google", "share": 0.17, "alerts": 1},
    ]


def test_given_history_when_built_then_each_metric_total_is_one_png_alerted_metrics_first(
    report: ReportResult,
) -> None:
    acme = _section(report, "acme-ads")
    # ngr has the critical, signups a warning, clicks only an info alert; the warm-up and late rows
    # (deposits, late_metric) are not plotted
    assert [p.metric for p in acme.plots] == ["ngr", "signups", "clicks"]
    assert all(p.png.startswith(PNG_SIGNATURE) for p in acme.plots)
    assert all(p.periods == 24 for p in acme.plots)
    # flagged points: alerts on the metric's total (A1 and A4 on ngr); A3 is a slice of clicks
    assert {p.metric: p.flagged for p in acme.plots} == {"ngr": 2, "signups": 1, "clicks": 0}
    assert all(len(p.png) < 60_000 for p in acme.plots)  # small: 6.4 x 2.2 in at 80 dpi
    assert [p.metric for p in _section(report, "globex-traffic").plots] == ["ftds", "clicks"]
    initech = _section(report, "initech-support")
    assert initech.plots == ()
    assert initech.history_note == "no scored history in the report's range"


def test_given_a_period_written_by_two_syncs_when_read_then_the_last_object_in_key_order_wins() -> None:
    objects = fixture_day().objects
    series, problems = read_metric_history(objects, DATA, "acme-ads", [DAY])
    assert problems == []
    assert sorted(series) == ["clicks", "ngr", "signups"]  # no slices, no warm-up, no late rows
    ngr = {p.period_start.hour: p for p in series["ngr"]}
    assert len(series["ngr"]) == 24
    assert (ngr[10].observed, ngr[10].expected, ngr[10].lower, ngr[10].upper) == (
        600.0,
        1000.0,
        800.0,
        1200.0,
    )
    assert [p.period_start.hour for p in series["clicks"] if p.calendar] == [18]
    assert [p.period_start for p in series["ngr"]] == sorted(p.period_start for p in series["ngr"])


def test_given_caps_when_built_then_plots_are_capped_and_what_was_left_out_is_named() -> None:
    settings = ReportSettings(max_plots_per_integration=2, max_plotted_integrations=1)
    result = build_report(fixture_day().ports, DAY, DAY, settings=settings)
    acme = _section(result, "acme-ads")
    assert [p.metric for p in acme.plots] == ["ngr", "signups"]
    assert acme.unplotted_metrics == ("clicks",)
    globex = _section(result, "globex-traffic")
    assert globex.plots == ()
    assert globex.history_note.startswith("history not plotted")
    page = result.files["index.html"].decode()
    assert "Not plotted (at most 2 metrics per integration): clicks." in page
    assert "History not plotted: plots are drawn for the 1 integrations" in page


def test_given_an_integration_asked_for_when_built_then_it_is_covered_and_plotted_first() -> None:
    settings = ReportSettings(max_plotted_integrations=1)
    result = build_report(fixture_day().ports, DAY, DAY, ["globex-traffic", "quiet-one"], settings)
    ids = [s.integration_id for s in result.integrations]
    assert "quiet-one" in ids
    quiet = _section(result, "quiet-one")
    assert quiet.alerts == ()
    assert quiet.history_note.startswith("history not plotted")
    # globex-traffic was asked for: it gets the one plotted slot although acme-ads is more severe
    assert _section(result, "globex-traffic").plots
    assert not _section(result, "acme-ads").plots


def test_given_an_invalid_integration_id_when_asked_for_then_the_error_names_it() -> None:
    with pytest.raises(ValueError, match=r"not a valid integration id: '\.\./etc'"):
        build_report(fixture_day().ports, DAY, DAY, ["../etc"])


def test_given_unreadable_objects_when_built_then_they_are_reported_and_the_rest_is_used() -> None:
    fixture = fixture_day()
    objects = fixture.objects
    day = DAY.isoformat()
    objects.put(DATA, f"alerts/date={day}/zz-not-gzip.jsonl.gz", b"plain text", "application/gzip")
    bad_line = (
        json.dumps({"alert_id": "x"}) + "\n" + json.dumps(make_alert("acme-ads", "deposits", 20, "warning"))
    )
    objects.put(
        DATA, f"alerts/date={day}/zz-bad-line.jsonl.gz", gzip.compress(bad_line.encode()), "application/gzip"
    )
    broken = gzip.compress(
        gzip.decompress(history_body([history_row("acme-ads", "ngr", 23, 1.0, 1.0)])) + b"a,b\n"
    )
    objects.put(DATA, f"history/integration=acme-ads/date={day}/zz.csv.gz", broken, "application/gzip")
    odd = suppressed_body([(make_alert("acme-ads", "ngr", 5, "warning"), "operator whim")])
    objects.put(
        DATA, f"suppressed/date={day}/integration=acme-ads/00000000000000c1.jsonl.gz", odd, "application/gzip"
    )
    objects.put(
        DATA, f"suppressed/date={day}/integration=../x/00000000000000c2.jsonl.gz", odd, "application/gzip"
    )

    result = build_report(fixture.ports, DAY, DAY)

    reasons = {(p.source, p.reason) for p in result.problems}
    assert (
        f"alerts/date={day}/zz-not-gzip.jsonl.gz",
        "not a gzip UTF-8 object (Not a gzipped file (b'pl'))",
    ) in reasons
    assert any(
        s.endswith("zz-bad-line.jsonl.gz") and r.startswith("line 1: alert field 'alert_id'")
        for s, r in reasons
    )
    assert any(
        s.endswith("zz.csv.gz") and r.startswith("row 3 has 2 fields, the header 14") for s, r in reasons
    )
    assert any(
        s.endswith("c1.jsonl.gz") and "unknown suppression cause 'operator whim'" in r for s, r in reasons
    )
    assert any("integration=../x/" in s and "not a suppressed/date=" in r for s, r in reasons)
    # the good line of the object with a bad one is used, and the odd suppression is counted as other
    assert len(result.alerts) == 7
    assert result.suppressed.other == 1
    summary = json.loads(result.files["summary.json"])
    assert len(summary["problems"]) == len(result.problems) == 5
    assert "Data the report could not use" in result.files["index.html"].decode()


def test_given_no_incident_store_and_no_label_store_when_built_then_both_are_reported_unavailable() -> None:
    result = build_report(fixture_day(incidents=False, feedback=False).ports, DAY, DAY)
    summary = json.loads(result.files["summary.json"])
    assert summary["incidents"] == {"available": False}
    assert summary["precision"] == {"available": False}
    assert summary["integrations"]["acme-ads"]["incidents"] is None
    page = result.files["index.html"].decode()
    assert "Incidents unavailable: no incident store configured." in page
    assert "no label store configured" in page
    # integrations come only from alerts and suppressions then: initech-support has suppressions
    assert [s.integration_id for s in result.integrations] == [
        "acme-ads",
        "globex-traffic",
        "initech-support",
    ]


def test_given_a_day_without_data_when_built_then_the_report_says_so() -> None:
    result = build_report(fixture_day().ports, date(2026, 11, 20), date(2026, 11, 20))
    summary = json.loads(result.files["summary.json"])
    assert summary["alerts"]["total"] == 0
    assert summary["integrations"] == {}
    assert summary["precision"]["precision"] is None
    assert summary["incidents"]["sla"]["adherence"] is None
    assert "No alert, suppression or incident in this range." in result.files["index.html"].decode()
    assert result.files["alerts.csv"].decode().count("\n") == 1  # the header alone


def test_given_a_range_when_built_then_it_covers_every_day_and_is_named_by_both_ends() -> None:
    fixture = fixture_day()
    next_day = make_alert("acme-ads", "ngr", 30, "critical")  # 2026-11-25T06:00
    record_alerts(fixture.objects, DATA, [next_day])
    result = build_report(fixture.ports, DAY, DAY + timedelta(days=1))
    assert result.name == "2026-11-24_2026-11-25"
    assert result.prefix == "reports/2026-11-24_2026-11-25/"
    assert {a["alert_id"] for a in result.alerts} == {
        a["alert_id"] for a in (A1, A2, A3, A4, G1, G2, next_day)
    }
    assert "I7" in {i.incident_id for i in result.incidents or ()}  # opened on the second day


def test_given_a_report_when_written_then_the_bucket_has_the_three_files_under_reports_date(
    report: ReportResult, tmp_path: Path
) -> None:
    fixture = fixture_day()
    written = write_report(report, fixture.ports, tmp_path / "out")
    keys = [f"reports/2026-11-24/{n}" for n in ("index.html", "alerts.csv", "summary.json")]
    assert [k for k in fixture.objects.keys(DATA, "reports/")] == sorted(keys)
    for key in keys:
        name = key.rsplit("/", 1)[1]
        assert fixture.objects.get(DATA, key) == report.files[name] == (tmp_path / "out" / name).read_bytes()
        assert f"s3://{DATA}/{key}" in written
    with pytest.raises(ValueError, match="needs a data bucket"):
        write_report(report)


def test_given_the_report_when_built_then_it_is_stamped_with_the_clock(summary: dict[str, Any]) -> None:
    assert summary["report"]["generated_at"] == AS_OF.isoformat()
    assert summary["report"]["start"] == summary["report"]["end"] == "2026-11-24"
    assert datetime.fromisoformat(summary["report"]["generated_at"]).tzinfo == UTC


def test_given_an_empty_memory_store_when_built_then_nothing_fails() -> None:
    # A bucket with nothing in it at all (first day of a deployment).
    fixture = fixture_day()
    fixture.ports.objects.objects.clear()  # type: ignore[attr-defined]
    assert isinstance(fixture.ports.objects, MemoryObjects)
    result = build_report(fixture.ports, DAY, DAY)
    assert len(result.alerts) == 0
    assert [s.integration_id for s in result.integrations] == [
        "acme-ads",
        "globex-traffic",
        "initech-support",
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"opened_at": "yesterday"}, "incident I1: field 'opened_at' is not an ISO 8601 time"),
        (
            {"acknowledged_at": "2026-11-24T10:20:00"},
            "incident I1: field 'acknowledged_at' needs a UTC offset",
        ),
        ({"sla_minutes": "half an hour"}, "incident I1: field 'sla_minutes' is not a number"),
        ({"sla_minutes": True}, "incident I1: field 'sla_minutes' is not a number"),
        ({"integration_id": None}, "incident I1: field 'integration_id' is missing"),
    ],
)
def test_given_an_unreadable_incident_when_built_then_it_is_a_problem_and_the_others_count(
    change: dict[str, Any], words: str
) -> None:
    fixture = fixture_day()
    fixture.incidents.incidents[0].update(change)  # I1, the one acknowledged within its SLA
    result = build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))
    assert [(p.source, p.reason[: len(words)]) for p in result.problems] == [("incidents", words)]
    sla = result.sla
    assert sla is not None
    assert (sla.incidents, sla.met, sla.missed, sla.overdue) == (6, 0, 1, 2)
    assert sla.adherence == 0.0


def test_given_an_incident_with_an_sla_but_no_due_time_when_read_then_it_is_due_sla_minutes_after_opening() -> (
    None
):
    fixture = fixture_day()
    i2 = fixture.incidents.incidents[1]
    i2["due_at"] = None  # opened 11:05 with 60 minutes; acknowledged 12:35
    i2["sla_minutes"] = "120"  # as text, as some stores return numbers
    result = build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))
    incident = next(i for i in result.incidents or () if i.incident_id == "I2")
    assert incident.due_at == MIDNIGHT + timedelta(hours=13, minutes=5)
    assert incident.sla_state == "met"
    assert result.problems == ()


def test_given_an_incident_escalated_for_its_sla_when_acknowledged_before_its_new_due_time_then_it_missed() -> (
    None
):
    # Given I1 (P2, due 10:35) that nobody acknowledged in time: triage escalated it to P1 at 10:36 and
    # moved its due time to 10:51; support acknowledged at 10:45
    fixture = fixture_day()
    i1 = fixture.incidents.incidents[0]
    i1.update(
        priority="P1",
        sla_minutes=15,
        due_at=(MIDNIGHT + timedelta(hours=10, minutes=51)).isoformat(),
        acknowledged_at=(MIDNIGHT + timedelta(hours=10, minutes=45)).isoformat(),
        escalations=[
            {
                "level": "P1",
                "from": "P2",
                "at": (MIDNIGHT + timedelta(hours=10, minutes=36)).isoformat(),
                "reason": "sla",
            }
        ],
    )
    # and I8, not yet due by its due time, but escalated at P1 for a breach (sla_breached) already
    fixture.incidents.incidents[7]["escalations"] = [
        {
            "level": "P1",
            "at": (MIDNIGHT + timedelta(hours=23, minutes=45)).isoformat(),
            "reason": "sla_breached",
        }
    ]

    result = build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))

    # Then I1 counts as missed although it was acknowledged before its current due time, I8 as overdue
    states = {i.incident_id: i.sla_state for i in result.incidents or ()}
    assert (states["I1"], states["I8"]) == ("missed", "overdue")
    sla = result.sla
    assert sla is not None
    assert (sla.met, sla.missed, sla.overdue, sla.open_overdue) == (0, 2, 3, 2)


def test_given_an_escalation_of_priority_only_when_read_then_the_sla_is_judged_on_the_due_time() -> None:
    fixture = fixture_day()
    fixture.incidents.incidents[0]["escalations"] = [
        {
            "level": "P1",
            "from": "P2",
            "at": (MIDNIGHT + timedelta(hours=10, minutes=10)).isoformat(),
            "reason": "priority",
        }
    ]
    result = build_report(fixture.ports, DAY, DAY, settings=ReportSettings(max_plotted_integrations=0))
    assert next(i.sla_state for i in result.incidents or () if i.incident_id == "I1") == "met"
