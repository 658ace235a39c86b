"""``kpi-sentinel local-api``: the local stack and its operator API, kept up for a person at a terminal.

Starts the moto stack from ``template.yaml`` (:func:`kpi_sentinel.local.stack.local_stack`), grants
the caller a scope in the control table, serves the operator API on ``http://127.0.0.1:<port>``
(never another interface), prints the URL and the commands to use it, and runs until Ctrl-C
(SIGINT) or SIGTERM, then stops the API and the stack. Nothing is kept: the next start is empty.

The API takes every request as coming from the granted principal (API Gateway's IAM authorizer is
not run locally); a request's ``x-kpi-sentinel-principal`` header, which the CLI's ``--as`` sets,
names another caller, whose scope then applies (none: 403 on everything).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

ALL = "*"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class PortUnavailable(OSError):
    """The requested port cannot be bound on 127.0.0.1."""


def check_port(port: int) -> None:
    """Fail fast (before the stack starts) when ``port`` cannot be bound on 127.0.0.1; 0 always can."""
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortUnavailable(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def usage_lines(url: str, principal: str, integrations: Sequence[str], control_table: str) -> list[str]:
    """What the command prints once the API answers: the URL and the commands to use it."""
    example = next((i for i in integrations if i != ALL), "acme-ads")
    scope = (
        "all integrations (*), the global calendar too" if ALL in integrations else ", ".join(integrations)
    )
    env = f"KPI_SENTINEL_API={url}"
    return [
        f"operator API: {url}",
        f"caller: {principal}",
        f"scope: {scope} (control table {control_table})",
        "",
        "Use it from another terminal (requests to 127.0.0.1 are sent unsigned):",
        f"  export {env}",
        "  kpi-sentinel whoami",
        f"  kpi-sentinel snooze create {example} --metric ngr --for 2h --reason {shlex.quote('migration')}",
        f"  kpi-sentinel snooze list {example}",
        f"  kpi-sentinel override set {example} ngr --threshold 5 --reason {shlex.quote('noisy source')}",
        f"  kpi-sentinel calendar list {example}",
        "  kpi-sentinel incidents list",
        f"  curl -s {url}/v1/whoami",
        "Add --json for the API's answer as it is, --as <ARN> to call as another principal (one without",
        "a scope is refused with 403). The OpenAPI document: kpi_sentinel/operator/openapi.json.",
        "",
        "Ctrl-C stops the API and the stack (nothing is kept).",
    ]


def serve_operator_api(
    *,
    port: int,
    principal: str,
    integrations: Sequence[str],
    out: TextIO | None = None,
    template: Path | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run the local stack and its operator API until SIGINT/SIGTERM (or ``stop`` is set); returns 0.

    ``on_ready`` is called with the API's URL once it answers. Signal handlers are installed only
    when called from the main thread, and the previous ones are restored on the way out.
    """
    out = out or sys.stdout
    stop = stop or threading.Event()
    check_port(port)
    # Metrics would print one EMF document per request; the logs (refusals, invalid requests) stay.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from kpi_sentinel.adapters.aws import DynamoScopes
    from kpi_sentinel.local.stack import local_stack

    def say(*lines: str) -> None:
        for line in lines:
            print(line, file=out)
        out.flush()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for number in STOP_SIGNALS:
            previous[number] = signal.signal(number, _stop)
    try:
        say("starting the local stack (moto, resources from template.yaml) ...")
        with local_stack(template) as stack:
            control_table = stack.physical["ControlTable"]
            DynamoScopes(control_table).put_scope(principal, list(integrations))
            with stack.serve_api(principal=principal, port=port) as api:
                say(
                    f"local stack up in {getattr(stack, 'started_seconds', 0.0):.1f}s: moto at {stack.endpoint}"
                )
                say(*usage_lines(api.url, principal, integrations, control_table))
                if on_ready is not None:
                    on_ready(api.url)
                while not stop.wait(0.5):
                    pass
                say("stopping ...")
        say("stopped.")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
