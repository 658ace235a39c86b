"""``kpi-sentinel snooze | label | calendar | override | incidents | whoami`` against the API served on 127.0.0.1.

The local server (kpi_sentinel.operator.local) answers with the real handler on memory ports, so the
CLI, the HTTP client, the event API Gateway would build and the routes are exercised end to end.
SigV4 signing of a deployed API's requests is checked on the request the client would send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from kpi_sentinel import cli
from kpi_sentinel.adapters.memory import MemoryTeamOutbox
from kpi_sentinel.handlers.operator_api import handle
from kpi_sentinel.operator.client import ApiError, OperatorClient
from kpi_sentinel.operator.local import PRINCIPAL_HEADER, LocalOperatorApi
from kpi_sentinel.report.record import record_alerts
from kpi_sentinel.triage.incidents import TriagePorts, TriageSettings, triage_alert
from kpi_sentinel.triage.routing import default_rules

from tests.unit.operator_helpers import ACME_OPS, ADMIN, DATA, NOW, World, world
from tests.unit.triage_helpers import make_alert


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, str]]:
    w = world()
    with LocalOperatorApi(lambda event: handle(event, None, w.ports), principal=ACME_OPS) as api:
        monkeypatch.setenv("KPI_SENTINEL_API", api.url)
        yield w, api.url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_given_the_local_api_when_snoozing_from_the_terminal_then_create_list_and_delete_work(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = served
    code, out, err = run(
        capsys, "snooze", "create", "acme-ads", "--metric", "ngr", "--value", "telegram-push", "--for", "2h",
        "--reason", "push provider outage", "--json",
    )  # fmt: skip
    assert code == 0, err
    snooze = json.loads(out)
    assert snooze["who"] == ACME_OPS
    assert snooze["until"] == (NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [s["snooze_id"] for s in w.control.active_snoozes("acme-ads", NOW)] == [snooze["snooze_id"]]
    code, out, _ = run(capsys, "snooze", "list", "acme-ads")
    assert code == 0
    assert snooze["snooze_id"] in out
    assert "metric=ngr dimension_value=telegram-push" in out
    assert "push provider outage" in out
    code, out, _ = run(capsys, "snooze", "delete", "acme-ads", snooze["snooze_id"])
    assert code == 0
    assert snooze["snooze_id"] in out
    assert run(capsys, "snooze", "list", "acme-ads")[1].strip() == "(no snoozes)"


def test_given_an_invalid_request_when_sent_then_the_cli_exits_1_with_the_apis_message_naming_the_field(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "snooze", "create", "acme-ads", "--until", "2020-01-01T00:00:00Z", "--reason", "r"
    )
    assert code == 1
    assert "HTTP 422" in err
    assert "field 'body.until'" in err


def test_given_another_callers_scope_when_acting_then_the_cli_reports_403(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "snooze", "list", "globex-traffic")
    assert code == 1
    assert "HTTP 403" in err
    assert "not scoped to integration 'globex-traffic'" in err
    code, _, err = run(
        capsys, "calendar", "add", "--global", "--kind", "holiday", "--name", "Xmas",
        "--start", "2026-12-25T00:00:00Z", "--end", "2026-12-26T00:00:00Z",
    )  # fmt: skip
    assert code == 1
    assert "scope '*'" in err
    code, out, _ = run(
        capsys, "calendar", "add", "--global", "--kind", "holiday", "--name", "Xmas",
        "--start", "2026-12-25T00:00:00Z", "--end", "2026-12-26T00:00:00Z", "--as", ADMIN,
    )  # fmt: skip
    assert code == 0
    assert "global" in out


def test_given_the_local_api_when_labelling_then_the_days_alerts_show_their_labels(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = served
    alert = make_alert("ngr")
    record_alerts(w.objects, DATA, [alert])
    code, out, err = run(
        capsys, "label", "set", "acme-ads", alert["alert_id"], "false_positive", "--note", "promo"
    )
    assert code == 0, err
    assert "false_positive" in out
    assert "promo" in out
    code, out, _ = run(capsys, "label", "list", "acme-ads", "--date", alert["period_start"][:10])
    assert code == 0
    assert alert["alert_id"] in out
    assert "[false_positive]" in out
    assert w.feedback.labels("acme-ads", [alert["alert_id"]]) == {alert["alert_id"]: "false_positive"}


def test_given_the_local_api_when_managing_the_calendar_then_add_list_and_delete_work(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = served
    code, out, err = run(
        capsys, "calendar", "add", "acme-ads", "--kind", "campaign", "--name", "Launch",
        "--start", "2026-11-01T00:00:00Z", "--end", "2026-11-02T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0, err
    event_id = json.loads(out)["event_id"]
    code, out, _ = run(capsys, "calendar", "list", "acme-ads")
    assert event_id in out
    assert "'Launch'" in out
    assert run(capsys, "calendar", "delete", "acme-ads", event_id)[0] == 0
    assert w.control.calendar == []
    code, _, err = run(capsys, "calendar", "list")
    assert code == 2
    assert "--global" in err


def test_given_the_local_api_when_overriding_then_set_list_audit_and_delete_work_for_any_metric_name(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = served
    code, out, err = run(
        capsys, "override", "set", "acme-ads", "signup rate/web", "--threshold", "4.5", "--direction", "down",
        "--reason", "weekend noise",
    )  # fmt: skip
    assert code == 0, err
    assert "signup rate/web  threshold=4.5 bad_direction=down  v1" in out
    assert w.control.metric_overrides("acme-ads") == {
        "signup rate/web": {"threshold": 4.5, "bad_direction": "down"}
    }
    code, _, err = run(
        capsys,
        "override",
        "set",
        "acme-ads",
        "signup rate/web",
        "--threshold",
        "5",
        "--expected-version",
        "0",
    )
    assert code == 1
    assert "HTTP 409" in err
    code, out, _ = run(capsys, "override", "list", "acme-ads")
    assert "signup rate/web" in out
    code, out, _ = run(capsys, "override", "audit", "acme-ads")
    assert code == 0
    assert f"by {ACME_OPS}: None -> " in out
    assert run(capsys, "override", "delete", "acme-ads", "signup rate/web")[0] == 0
    assert w.control.metric_overrides("acme-ads") == {}


def test_given_an_open_incident_when_acknowledged_and_resolved_from_the_terminal_then_its_status_follows(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = served
    ports = TriagePorts(w.incidents, MemoryTeamOutbox(), w.clock)
    outcome = triage_alert(make_alert("ngr", severity="critical"), default_rules(), ports, TriageSettings())
    incident = str(outcome.incident_id)
    code, out, _ = run(capsys, "incidents", "list", "--status", "open")
    assert code == 0
    assert incident in out
    assert " open " in out
    assert " acknowledged " in run(capsys, "incidents", "ack", incident)[1]
    assert " resolved " in run(capsys, "incidents", "resolve", incident)[1]
    code, _, err = run(capsys, "incidents", "ack", incident)
    assert code == 1
    assert "HTTP 409" in err
    assert json.loads(run(capsys, "incidents", "show", incident, "--json")[1])["status"] == "resolved"


def test_given_who_am_i_when_asked_then_the_caller_and_scope_are_shown(
    served: tuple[World, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "whoami")[1].strip() == f"{ACME_OPS} (iam): acme-ads"
    assert run(capsys, "whoami", "--as", ADMIN)[1].strip() == f"{ADMIN} (iam): *"


def test_given_no_api_url_when_running_then_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KPI_SENTINEL_API", raising=False)
    code, _, err = run(capsys, "snooze", "list", "acme-ads")
    assert code == 2
    assert "KPI_SENTINEL_API" in err


def test_given_an_unreachable_api_when_running_then_exit_1_saying_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "snooze", "list", "acme-ads", "--api", "http://127.0.0.1:9")
    assert code == 1
    assert "cannot reach" in err


# --- SigV4 for a deployed API ---------------------------------------------------------------------------


class Recorder:
    """Stands in for urlopen: keeps the request, answers 200 with a JSON body."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, request: Any, timeout: float) -> Any:
        self.requests.append(request)
        recorder = self

        class Answer:
            def __enter__(self) -> Answer:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def read(self) -> bytes:
                return json.dumps({"ok": len(recorder.requests)}).encode()

        return Answer()


def test_given_a_deployed_api_when_calling_then_the_request_is_signed_with_sigv4_for_execute_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    opener = Recorder()
    client = OperatorClient(
        "https://abc123.execute-api.eu-west-1.amazonaws.com", principal="ignored", opener=opener
    )
    assert client.sign is True
    assert client.request("PUT", "/v1/integrations/acme-ads/overrides/ngr", body={"threshold": 5}) == {
        "ok": 1
    }
    sent = opener.requests[0]
    headers = {k.lower(): v for k, v in sent.header_items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["authorization"]
    assert "x-amz-date" in headers
    assert PRINCIPAL_HEADER not in headers  # the local caller header never reaches a deployed API
    assert sent.data == b'{"threshold":5}'
    assert sent.get_method() == "PUT"


def test_given_a_deployed_api_over_plain_http_when_configured_then_refused() -> None:
    with pytest.raises(ValueError, match="https"):
        OperatorClient("http://abc123.execute-api.eu-west-1.amazonaws.com")


def test_given_an_api_error_when_the_body_is_not_json_then_the_message_still_comes_through() -> None:
    from io import BytesIO
    from urllib.error import HTTPError

    def refuse(request: Any, timeout: float) -> Any:
        raise HTTPError(request.full_url, 502, "Bad Gateway", {}, BytesIO(b"upstream down"))  # type: ignore[arg-type]

    client = OperatorClient("http://127.0.0.1:1", opener=refuse)
    with pytest.raises(ApiError) as raised:
        client.request("GET", "/v1/whoami")
    assert raised.value.status == 502
    assert "upstream down" in str(raised.value)
