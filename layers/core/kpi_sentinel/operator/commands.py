"""``kpi-sentinel snooze | label | calendar | override | incidents | whoami``: the operator API from a terminal.

Every command talks to the API at ``--api`` (default ``$KPI_SENTINEL_API``): a deployed API
(``https://<id>.execute-api.<region>.amazonaws.com``, requests signed with SigV4 from the usual AWS
credentials) or the local stack (``http://127.0.0.1:<port>``, plain HTTP; ``--as`` picks the local
caller). Output is one line per item; ``--json`` prints the API's answer as it is. Exit status: 0 done,
1 refused by the API (its message on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from kpi_sentinel.operator.client import ApiError, OperatorClient, segment

LABELS = ("true_positive", "false_positive", "expected")
KINDS = ("campaign", "holiday", "maintenance")
_DURATION = re.compile(r"(\d+)\s*([mhd]?)")
_UNIT_MINUTES = {"": 1, "m": 1, "h": 60, "d": 1440}

Command = Callable[[OperatorClient, argparse.Namespace], Any]


def duration_minutes(text: str) -> int:
    """``90``, ``90m``, ``2h`` or ``1d`` as minutes.

    >>> duration_minutes("2h"), duration_minutes("45"), duration_minutes("1d")
    (120, 45, 1440)
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration like 90m, 2h or 1d: {text!r}")
    return int(match.group(1)) * _UNIT_MINUTES[match.group(2)]


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(segment(p) for p in parts)


# --- what each command sends ----------------------------------------------------------------------------


def _snooze_create(api: OperatorClient, a: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"reason": a.reason}
    for name, value in (("metric", a.metric), ("dimension", a.dimension), ("dimension_value", a.value)):
        if value:
            body[name] = value
    if a.until:
        body["until"] = a.until
    if a.duration:
        body["duration_minutes"] = a.duration
    return api.request("POST", _path("integrations", a.integration, "snoozes"), body=body)


def _snooze_list(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("GET", _path("integrations", a.integration, "snoozes"))


def _snooze_delete(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("DELETE", _path("integrations", a.integration, "snoozes", a.snooze_id))


def _label_set(api: OperatorClient, a: argparse.Namespace) -> Any:
    path = _path("integrations", a.integration, "alerts", a.alert_id, "label")
    return api.request("PUT", path, body={"label": a.label, "note": a.note})


def _label_list(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("GET", _path("integrations", a.integration, "alerts"), query={"date": a.date})


def _owner(a: argparse.Namespace) -> tuple[str, ...]:
    if bool(a.integration) == bool(a.global_):
        raise ValueError("give an integration or --global (not both)")
    return ("calendar",) if a.global_ else ("integrations", a.integration, "calendar")


def _calendar_add(api: OperatorClient, a: argparse.Namespace) -> Any:
    body = {"kind": a.kind, "name": a.name, "start": a.start, "end": a.end}
    return api.request("POST", _path(*_owner(a)), body=body)


def _calendar_list(api: OperatorClient, a: argparse.Namespace) -> Any:
    query = None if a.global_ else {"include_global": not a.no_global}
    return api.request("GET", _path(*_owner(a)), query=query)


def _calendar_delete(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("DELETE", _path(*_owner(a), a.event_id))


def _override_set(api: OperatorClient, a: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"reason": a.reason}
    for name in ("threshold", "min_abs_change", "min_volume", "expected_version"):
        if getattr(a, name) is not None:
            body[name] = getattr(a, name)
    if a.direction:
        body["bad_direction"] = a.direction
    return api.request("PUT", _path("integrations", a.integration, "overrides", a.metric), body=body)


def _override_list(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("GET", _path("integrations", a.integration, "overrides"))


def _override_delete(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("DELETE", _path("integrations", a.integration, "overrides", a.metric))


def _override_audit(api: OperatorClient, a: argparse.Namespace) -> Any:
    query = {"limit": a.limit, "before": a.before}
    return api.request("GET", _path("integrations", a.integration, "audit"), query=query)


def _incidents_list(api: OperatorClient, a: argparse.Namespace) -> Any:
    query = {
        "status": a.status,
        "team": a.team,
        "integration_id": a.integration,
        "days": a.days,
        "limit": a.limit,
    }
    return api.request("GET", _path("incidents"), query=query)


def _incident(action: str | None) -> Command:
    def run(api: OperatorClient, a: argparse.Namespace) -> Any:
        parts = ("incidents", a.incident_id, action) if action else ("incidents", a.incident_id)
        return api.request("POST" if action else "GET", _path(*parts))

    return run


def _whoami(api: OperatorClient, a: argparse.Namespace) -> Any:
    return api.request("GET", _path("whoami"))


# --- how answers are shown ------------------------------------------------------------------------------


def _line(item: Mapping[str, Any], kind: str) -> str:
    get = item.get
    if kind == "snooze":
        scope = (
            " ".join(f"{k}={get(k)}" for k in ("metric", "dimension", "dimension_value") if get(k))
            or "all alerts"
        )
        return f"{get('snooze_id')}  until {get('until')}  {scope}  by {get('who')}: {get('reason')}"
    if kind == "event":
        where = "global" if get("integration_id") == "*" else get("integration_id")
        return f"{get('event_id')}  {get('kind')}  {get('start')} .. {get('end')}  {where}  {get('name')!r}"
    if kind == "override":
        fields = " ".join(
            f"{k}={get(k)}"
            for k in ("threshold", "bad_direction", "min_abs_change", "min_volume")
            if get(k) is not None
        )
        return f"{get('metric')}  {fields}  v{get('version')}  by {get('updated_by')} at {get('updated_at')}"
    if kind == "audit":
        return f"{get('at')}  {get('kind')} {get('subject')}  by {get('who')}: {get('old')} -> {get('new')}"
    if kind == "alert":
        label = (get("label") or {}).get("label", "-")
        slice_ = f" {get('dimension')}={get('dimension_value')}" if get("dimension") else ""
        return (
            f"{get('alert_id')}  {get('period_start')}  {get('severity')}  {get('metric')}{slice_}  "
            f"[{label}]  {get('summary')}"
        )
    if kind == "incident":
        return (
            f"{get('incident_id')}  {get('status')}  {get('priority')}  {get('team')}  "
            f"{get('integration_id')}  opened {get('opened_at')}  {get('summary')}"
        )
    if kind == "label":
        return f"{get('alert_id')}  {get('label')}  by {get('who')} at {get('at')}" + (
            f": {get('note')}" if get("note") else ""
        )
    if kind == "whoami":
        return f"{get('who')} ({get('source')}): {', '.join(get('integrations') or [])}"
    return json.dumps(item)


_LISTS = {
    "snoozes": "snooze",
    "events": "event",
    "overrides": "override",
    "entries": "audit",
    "alerts": "alert",
    "incidents": "incident",
}


def show(answer: Any, kind: str, out: Any = None) -> None:
    """One line per item of a list answer (or the single item), on ``out`` (standard output)."""
    out = out or sys.stdout
    if isinstance(answer, dict):
        for key, item_kind in _LISTS.items():
            if isinstance(answer.get(key), list):
                for item in answer[key]:
                    print(_line(item, item_kind), file=out)
                if not answer[key]:
                    print(f"(no {key})", file=out)
                if answer.get("next_before"):
                    print(f"(more: --before {answer['next_before']})", file=out)
                return
        print(_line(answer, kind), file=out)


# --- the parser -----------------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        default=os.environ.get("KPI_SENTINEL_API"),
        help="operator API base URL (default: $KPI_SENTINEL_API)",
    )
    common.add_argument("--region", help="AWS region to sign for (default: from the URL or AWS_REGION)")
    signing = common.add_mutually_exclusive_group()
    signing.add_argument("--sign", dest="sign", action="store_true", default=None, help="sign with SigV4")
    signing.add_argument("--no-sign", dest="sign", action="store_false", help="send unsigned (local stack)")
    common.add_argument("--as", dest="principal", help="the caller on the local stack (an ARN)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return common


def _run(command: Command, kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if not args.api:
            print(f"kpi-sentinel {args.command}: no API URL (--api or KPI_SENTINEL_API)", file=sys.stderr)
            return 2
        try:
            client = OperatorClient(args.api, sign=args.sign, region=args.region, principal=args.principal)
            answer = command(client, args)
        except ValueError as exc:
            print(f"kpi-sentinel {args.command}: {exc}", file=sys.stderr)
            return 2
        except ApiError as exc:
            print(f"kpi-sentinel {args.command}: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(answer, indent=2))
        else:
            show(answer, kind)
        return 0

    return run


def add_operator_commands(commands: Any) -> None:
    """Add the operator API's command groups to the ``kpi-sentinel`` subparsers."""
    common = _common()

    snooze = commands.add_parser("snooze", help="snooze alerts (operator API)").add_subparsers(
        dest="action", required=True
    )
    p = snooze.add_parser("create", parents=[common], help="snooze an integration's alerts")
    p.add_argument("integration")
    p.add_argument("--metric", help="only this metric")
    p.add_argument("--dimension", help="only slices of this dimension")
    p.add_argument("--value", help="only this dimension value")
    until = p.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", help="end time, ISO 8601 with offset (2026-10-15T18:00:00Z)")
    until.add_argument("--for", dest="duration", type=duration_minutes, help="duration: 90m, 2h, 1d")
    p.add_argument("--reason", required=True, help="why (shown with what it suppresses)")
    p.set_defaults(run=_run(_snooze_create, "snooze"))
    p = snooze.add_parser("list", parents=[common], help="the snoozes in force")
    p.add_argument("integration")
    p.set_defaults(run=_run(_snooze_list, "snooze"))
    p = snooze.add_parser("delete", parents=[common], help="end a snooze now")
    p.add_argument("integration")
    p.add_argument("snooze_id")
    p.set_defaults(run=_run(_snooze_delete, "snooze"))

    label = commands.add_parser("label", help="label alerts (operator API)").add_subparsers(
        dest="action", required=True
    )
    p = label.add_parser("set", parents=[common], help="label an alert")
    p.add_argument("integration")
    p.add_argument("alert_id")
    p.add_argument("label", choices=LABELS)
    p.add_argument("--note", default="", help="a note for whoever reads the label")
    p.set_defaults(run=_run(_label_set, "label"))
    p = label.add_parser("list", parents=[common], help="a day's alerts with their labels")
    p.add_argument("integration")
    p.add_argument("--date", required=True, help="UTC date of the alerts' periods, YYYY-MM-DD")
    p.set_defaults(run=_run(_label_list, "alert"))

    calendar = commands.add_parser("calendar", help="known events (operator API)").add_subparsers(
        dest="action", required=True
    )
    for action, helptext in (
        ("add", "register a campaign, holiday or maintenance"),
        ("list", "the known events"),
        ("delete", "remove a known event"),
    ):
        p = calendar.add_parser(action, parents=[common], help=helptext)
        p.add_argument("integration", nargs="?", help="the integration (or --global)")
        p.add_argument("--global", dest="global_", action="store_true", help="the global calendar")
        if action == "add":
            p.add_argument("--kind", choices=KINDS, required=True)
            p.add_argument("--name", required=True)
            p.add_argument("--start", required=True, help="ISO 8601 with offset")
            p.add_argument("--end", required=True, help="ISO 8601 with offset, after --start")
        if action == "list":
            p.add_argument("--no-global", action="store_true", help="leave out the global events")
        if action == "delete":
            p.add_argument("event_id")
        command = {"add": _calendar_add, "list": _calendar_list, "delete": _calendar_delete}[action]
        p.set_defaults(run=_run(command, "event"))

    override = commands.add_parser("override", help="metric overrides (operator API)").add_subparsers(
        dest="action", required=True
    )
    p = override.add_parser("set", parents=[common], help="override a metric's threshold, direction, floors")
    p.add_argument("integration")
    p.add_argument("metric")
    p.add_argument("--threshold", type=float, help="alert threshold in standard deviations")
    p.add_argument("--direction", choices=("down", "up", "both"), help="the bad direction")
    p.add_argument("--min-abs-change", type=float, help="minimum absolute change to alert")
    p.add_argument("--min-volume", type=float, help="minimum volume to alert")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p.add_argument("--expected-version", type=int, help="only if the override is at this version")
    p.set_defaults(run=_run(_override_set, "override"))
    for action, helptext, command in (
        ("list", "the integration's overrides", _override_list),
        ("delete", "remove a metric's override", _override_delete),
        ("audit", "the audit trail, newest first", _override_audit),
    ):
        p = override.add_parser(action, parents=[common], help=helptext)
        p.add_argument("integration")
        if action == "delete":
            p.add_argument("metric")
        if action == "audit":
            p.add_argument("--limit", type=int, default=50)
            p.add_argument("--before", help="next page: the 'more' hint of the previous one")
        p.set_defaults(run=_run(command, "audit" if action == "audit" else "override"))

    incidents = commands.add_parser("incidents", help="incidents (operator API)").add_subparsers(
        dest="action", required=True
    )
    p = incidents.add_parser("list", parents=[common], help="incidents opened lately, newest first")
    p.add_argument("--status", choices=("open", "acknowledged", "resolved"))
    p.add_argument("--team")
    p.add_argument("--integration")
    p.add_argument("--days", type=int, default=14, help="opened in the last DAYS days (default 14)")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=_run(_incidents_list, "incident"))
    for action, helptext, path_action in (
        ("show", "one incident", None),
        ("ack", "acknowledge an incident", "acknowledge"),
        ("resolve", "resolve an incident", "resolve"),
    ):
        p = incidents.add_parser(action, parents=[common], help=helptext)
        p.add_argument("incident_id")
        p.set_defaults(run=_run(_incident(path_action), "incident"))

    p = commands.add_parser("whoami", parents=[common], help="who the operator API takes you for")
    p.set_defaults(run=_run(_whoami, "whoami"))
