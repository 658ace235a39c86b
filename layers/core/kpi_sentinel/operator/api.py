"""The operator API's routes: a Powertools ``APIGatewayHttpResolver`` (HTTP API, payload v2).

``enable_validation=True``: path and query parameters and bodies are validated against their
annotations and the models of :mod:`kpi_sentinel.operator.models`, responses are serialised through
their models, and the OpenAPI document is generated from the same code (:mod:`.openapi`).

**Status codes.** 200/201 on success; 401 without a caller identity; 403 outside the caller's scope
(for reading as for changing); 404 for an unknown snooze, event, override or incident (and route);
409 for a conflict (an override's ``expected_version``, acknowledging a resolved incident); 422 for
any invalid request value — pydantic's and the use cases' own alike — with a body that names the
field::

    {"statusCode": 422, "message": "field 'body.until': ...", "detail": [{"loc": ["body", "until"],
     "msg": "...", "type": "..."}]}

503 when the deployment has no incidents table. Other errors are not caught here: the Lambda fails
and API Gateway answers 500.

The use cases get their ports through ``app.context["ports"]``, set per request by :func:`resolve`.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.operator import service
from kpi_sentinel.operator.callers import Caller, InvalidRequest, OperatorError, identify
from kpi_sentinel.operator.models import (
    AlertLabel,
    AlertList,
    AuditEntry,
    AuditList,
    CalendarEvent,
    CalendarList,
    CalendarRequest,
    ErrorBody,
    Incident,
    IncidentList,
    LabelledAlert,
    LabelRequest,
    Override,
    OverrideList,
    OverrideRequest,
    Snooze,
    SnoozeList,
    SnoozeRequest,
    WhoAmI,
)
from kpi_sentinel.ports import OperatorPorts

log = logging.getLogger(__name__)

INTEGRATION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # kpi_sentinel.parsing.INTEGRATION_ID
ALERT_PATTERN = r"^[a-z][a-z0-9_]*-[0-9a-f]{32}$"  # schemas/alert-v1.json
INCIDENT_PATTERN = r"^inc-[0-9a-f]{24}$"
ITEM_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"  # snooze and calendar event ids
TEAM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
METRIC_MAX = 128

app = APIGatewayHttpResolver(enable_validation=True)

IntegrationId = Annotated[str, Path(pattern=INTEGRATION_PATTERN, description="The integration's id.")]
AlertId = Annotated[str, Path(pattern=ALERT_PATTERN, description="A schema-v1 alert id.")]
IncidentId = Annotated[str, Path(pattern=INCIDENT_PATTERN, description="An incident id.")]
ItemId = Annotated[str, Path(pattern=ITEM_ID_PATTERN)]
MetricName = Annotated[
    str,
    Path(min_length=1, max_length=3 * METRIC_MAX, description="The metric (URL-encoded when it must be)."),
]


def _error(description: str) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"model": ErrorBody}}}


# Every route may answer these (422 is added by Powertools from the validation itself).
_ERRORS: dict[int, OpenAPIResponse] = {
    401: _error("No caller identity (unsigned request, no JWT)."),
    403: _error("The integration (or the global calendar) is outside the caller's scope."),
}
_NOT_FOUND = {404: _error("No such item.")}
_CONFLICT = {409: _error("The item changed meanwhile, or the change is not possible in its state.")}
_NO_INCIDENTS = {503: _error("The deployment has no incidents table.")}


def _responses(*extra: dict[int, OpenAPIResponse], ok: int = 200) -> dict[int, OpenAPIResponse]:
    """The route's documented answers: success (its return model), 401, 403, ``extra`` (and 422)."""
    merged: dict[int, OpenAPIResponse] = {ok: {"description": "Created" if ok == 201 else "Success"}}
    merged.update(_ERRORS)
    for more in extra:
        merged.update(more)
    return merged


def resolve(event: dict[str, Any], context: Any, ports: OperatorPorts) -> dict[str, Any]:
    """Answer one HTTP API (payload v2) event with the given ports."""
    app.append_context(ports=ports)  # type: ignore[no-untyped-call]
    return app.resolve(event, context)


def _ports() -> OperatorPorts:
    ports: OperatorPorts = app.context["ports"]
    return ports


def _caller() -> Caller:
    authorizer = (app.current_event.raw_event.get("requestContext") or {}).get("authorizer")
    return identify(authorizer, _ports().scopes)


def _metric(raw: str) -> str:
    """The metric of a path (percent-decoded), checked like the bodies' names are."""
    metric = unquote(raw)
    if not 1 <= len(metric) <= METRIC_MAX or any(ord(c) < 32 or ord(c) == 127 for c in metric):
        raise InvalidRequest(
            "metric", f"must be 1 to {METRIC_MAX} characters without control characters", where="path"
        )
    return metric


def _field_name(loc: list[str | int]) -> str:
    return ".".join(str(part) for part in loc)


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def _invalid(exc: RequestValidationError) -> Response[Any]:
    detail = [
        {"loc": [p if isinstance(p, int) else str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    message = "; ".join(f"field '{_field_name(d['loc'])}': {d['msg']}" for d in detail)
    log.info("operator request invalid", extra={"errors": detail})
    return _json(422, {"statusCode": 422, "message": message or "invalid request", "detail": detail})


@app.exception_handler(OperatorError)  # type: ignore[untyped-decorator]
def _refused(exc: OperatorError) -> Response[Any]:
    body: dict[str, Any] = {"statusCode": exc.status, "message": str(exc)}
    if isinstance(exc, InvalidRequest):
        body["message"] = f"field '{_field_name(exc.loc)}': {exc.problem}"
        body["detail"] = [{"loc": exc.loc, "msg": exc.problem, "type": "value_error"}]
    return _json(exc.status, body)


def _json(status: int, body: dict[str, Any]) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


# --- caller ---------------------------------------------------------------------------------------------


@app.get(
    "/v1/whoami",
    tags=["callers"],
    summary="Who the API takes the caller for, and their scope",
    responses=_responses(),
)
def whoami() -> WhoAmI:
    caller = _caller()
    return WhoAmI(who=caller.who, source=caller.source, integrations=sorted(caller.integrations))


# --- snoozes --------------------------------------------------------------------------------------------


def _snooze(record: dict[str, Any]) -> Snooze:
    return Snooze(**{**record, "until": datetime.fromtimestamp(float(record["until"]), UTC)})


@app.post(
    "/v1/integrations/<integration_id>/snoozes",
    status_code=201,
    tags=["snoozes"],
    summary="Snooze alerts of an integration until a time or for a duration",
    responses=_responses(ok=201),
)
def create_snooze(integration_id: IntegrationId, request: SnoozeRequest) -> Snooze:
    return _snooze(service.create_snooze(_ports(), _caller(), integration_id, request))


@app.get(
    "/v1/integrations/<integration_id>/snoozes",
    tags=["snoozes"],
    summary="The integration's snoozes in force",
    responses=_responses(),
)
def list_snoozes(integration_id: IntegrationId) -> SnoozeList:
    found = service.list_snoozes(_ports(), _caller(), integration_id)
    return SnoozeList(integration_id=integration_id, snoozes=[_snooze(s) for s in found])


@app.delete(
    "/v1/integrations/<integration_id>/snoozes/<snooze_id>",
    tags=["snoozes"],
    summary="End a snooze now",
    responses=_responses(_NOT_FOUND),
)
def delete_snooze(integration_id: IntegrationId, snooze_id: ItemId) -> Snooze:
    return _snooze(service.delete_snooze(_ports(), _caller(), integration_id, snooze_id))


# --- feedback -------------------------------------------------------------------------------------------


@app.put(
    "/v1/integrations/<integration_id>/alerts/<alert_id>/label",
    tags=["feedback"],
    summary="Label an alert true_positive, false_positive or expected",
    responses=_responses(),
)
def label_alert(integration_id: IntegrationId, alert_id: AlertId, request: LabelRequest) -> AlertLabel:
    return AlertLabel(**service.label_alert(_ports(), _caller(), integration_id, alert_id, request))


@app.get(
    "/v1/integrations/<integration_id>/alerts",
    tags=["feedback"],
    summary="The integration's recorded alerts of a day, with their labels",
    responses=_responses(),
)
def list_alerts(
    integration_id: IntegrationId,
    date_: Annotated[date, Query(alias="date", description="UTC date of the alerts' periods, YYYY-MM-DD.")],
) -> AlertList:
    alerts, unreadable = service.list_alerts(_ports(), _caller(), integration_id, date_)
    return AlertList(
        integration_id=integration_id,
        date=date_.isoformat(),
        alerts=[
            LabelledAlert(
                alert_id=a["alert_id"],
                detector=a["detector"],
                metric=a["metric"],
                dimension=a.get("dimension"),
                dimension_value=a.get("dimension_value"),
                period_start=a["period_start"],
                severity=a["severity"],
                direction=a["direction"],
                observed=a["observed"],
                expected=a["expected"],
                score=a["score"],
                summary=a["summary"],
                label=AlertLabel(**a["label"]) if a["label"] else None,
            )
            for a in alerts
        ],
        unreadable_objects=unreadable,
    )


# --- calendar -------------------------------------------------------------------------------------------


def _event(record: dict[str, Any]) -> CalendarEvent:
    return CalendarEvent(
        **{
            **record,
            "start": datetime.fromtimestamp(float(record["start"]), UTC),
            "end": datetime.fromtimestamp(float(record["end"]), UTC),
        }
    )


@app.post(
    "/v1/integrations/<integration_id>/calendar",
    status_code=201,
    tags=["calendar"],
    summary="Register a known event (campaign, holiday, maintenance) of an integration",
    responses=_responses(ok=201),
)
def create_event(integration_id: IntegrationId, request: CalendarRequest) -> CalendarEvent:
    return _event(service.create_event(_ports(), _caller(), integration_id, request))


@app.get(
    "/v1/integrations/<integration_id>/calendar",
    tags=["calendar"],
    summary="The integration's known events (and the global ones)",
    responses=_responses(),
)
def list_events(
    integration_id: IntegrationId,
    include_global: Annotated[bool, Query(description="Also list the global events.")] = True,
) -> CalendarList:
    found = service.list_events(_ports(), _caller(), integration_id, include_global)
    return CalendarList(events=[_event(e) for e in found])


@app.delete(
    "/v1/integrations/<integration_id>/calendar/<event_id>",
    tags=["calendar"],
    summary="Remove a known event of an integration",
    responses=_responses(_NOT_FOUND),
)
def delete_event(integration_id: IntegrationId, event_id: ItemId) -> CalendarEvent:
    return _event(service.delete_event(_ports(), _caller(), integration_id, event_id))


@app.post(
    "/v1/calendar",
    status_code=201,
    tags=["calendar"],
    summary="Register a global known event (scope * only)",
    responses=_responses(ok=201),
)
def create_global_event(request: CalendarRequest) -> CalendarEvent:
    return _event(service.create_event(_ports(), _caller(), GLOBAL, request))


@app.get("/v1/calendar", tags=["calendar"], summary="The global known events", responses=_responses())
def list_global_events() -> CalendarList:
    found = service.list_events(_ports(), _caller(), GLOBAL, include_global=False)
    return CalendarList(events=[_event(e) for e in found])


@app.delete(
    "/v1/calendar/<event_id>",
    tags=["calendar"],
    summary="Remove a global known event (scope * only)",
    responses=_responses(_NOT_FOUND),
)
def delete_global_event(event_id: ItemId) -> CalendarEvent:
    return _event(service.delete_event(_ports(), _caller(), GLOBAL, event_id))


# --- overrides ------------------------------------------------------------------------------------------


@app.put(
    "/v1/integrations/<integration_id>/overrides/<metric>",
    tags=["overrides"],
    summary="Override a metric's threshold, bad direction or floors (audited)",
    responses=_responses(_CONFLICT),
)
def put_override(integration_id: IntegrationId, metric: MetricName, request: OverrideRequest) -> Override:
    return Override(**service.put_override(_ports(), _caller(), integration_id, _metric(metric), request))


@app.get(
    "/v1/integrations/<integration_id>/overrides",
    tags=["overrides"],
    summary="The integration's metric overrides",
    responses=_responses(),
)
def list_overrides(integration_id: IntegrationId) -> OverrideList:
    found = service.list_overrides(_ports(), _caller(), integration_id)
    return OverrideList(integration_id=integration_id, overrides=[Override(**o) for o in found])


@app.delete(
    "/v1/integrations/<integration_id>/overrides/<metric>",
    tags=["overrides"],
    summary="Remove a metric's override (audited)",
    responses=_responses(_NOT_FOUND, _CONFLICT),
)
def delete_override(integration_id: IntegrationId, metric: MetricName) -> Override:
    return Override(**service.delete_override(_ports(), _caller(), integration_id, _metric(metric)))


@app.get(
    "/v1/integrations/<integration_id>/audit",
    tags=["overrides"],
    summary="The integration's audit trail (override changes, threshold tuning), newest first",
    responses=_responses(),
)
def list_audit(
    integration_id: IntegrationId,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        str | None, Query(max_length=200, description="next_before of the previous page.")
    ] = None,
) -> AuditList:
    entries, next_before = service.list_audit(_ports(), _caller(), integration_id, limit, before)
    return AuditList(
        integration_id=integration_id,
        entries=[AuditEntry.model_validate({k: e.get(k) for k in AuditEntry.model_fields}) for e in entries],
        next_before=next_before,
    )


# --- incidents ------------------------------------------------------------------------------------------


@app.get(
    "/v1/incidents",
    tags=["incidents"],
    summary="Incidents opened in the last days, within the caller's scope, newest first",
    responses=_responses(_NO_INCIDENTS),
)
def list_incidents(
    status: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
    team: Annotated[str | None, Query(pattern=TEAM_PATTERN)] = None,
    integration_id: Annotated[str | None, Query(pattern=INTEGRATION_PATTERN)] = None,
    days: Annotated[int, Query(ge=1, le=service.INCIDENT_DAYS_MAX)] = 14,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> IncidentList:
    found = service.list_incidents(
        _ports(), _caller(), status=status, team=team, integration_id=integration_id, days=days, limit=limit
    )
    return IncidentList(incidents=[Incident(**r) for r in found])


@app.get(
    "/v1/incidents/<incident_id>",
    tags=["incidents"],
    summary="One incident",
    responses=_responses(_NOT_FOUND, _NO_INCIDENTS),
)
def get_incident(incident_id: IncidentId) -> Incident:
    return Incident(**service.get_incident(_ports(), _caller(), incident_id))


@app.post(
    "/v1/incidents/<incident_id>/acknowledge",
    tags=["incidents"],
    summary="Acknowledge an incident (stops its SLA escalation)",
    responses=_responses(_NOT_FOUND, _CONFLICT, _NO_INCIDENTS),
)
def acknowledge_incident(incident_id: IncidentId) -> Incident:
    return Incident(**service.acknowledge_incident(_ports(), _caller(), incident_id))


@app.post(
    "/v1/incidents/<incident_id>/resolve",
    tags=["incidents"],
    summary="Resolve an incident (later alerts open a new one)",
    responses=_responses(_NOT_FOUND, _CONFLICT, _NO_INCIDENTS),
)
def resolve_incident(incident_id: IncidentId) -> Incident:
    return Incident(**service.resolve_incident(_ports(), _caller(), incident_id))
