"""Shared builders for the operator API tests: memory ports, callers with scopes, requests by HTTP verb."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kpi_sentinel.adapters.memory import (
    MemoryControl,
    MemoryFeedback,
    MemoryIncidents,
    MemoryObjects,
    MemoryOperatorStore,
    MemoryScopes,
)
from kpi_sentinel.handlers.operator_api import handle
from kpi_sentinel.operator.local import http_api_event
from kpi_sentinel.ports import OperatorPorts

DATA = "data-bucket"
NOW = datetime(2026, 10, 15, 13, 5, tzinfo=UTC)
ACCOUNT = "123456789012"
ADMIN = f"arn:aws:iam::{ACCOUNT}:user/admin"  # scope *
ACME_OPS = f"arn:aws:iam::{ACCOUNT}:user/acme-ops"  # scope acme-ads
GLOBEX_OPS = f"arn:aws:iam::{ACCOUNT}:user/globex-ops"  # scope globex-traffic
NOBODY = f"arn:aws:iam::{ACCOUNT}:user/nobody"  # no scope item
ROLE = f"arn:aws:iam::{ACCOUNT}:role/AcmeOperators"  # scope acme-ads, for whoever assumes it
ROLE_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/AcmeOperators/alice"
SCOPES = {
    ADMIN: ["*"],
    ACME_OPS: ["acme-ads"],
    GLOBEX_OPS: ["globex-traffic"],
    ROLE: ["acme-ads"],
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else ""

    def fields(self) -> list[list[Any]]:
        """The ``loc`` of each reported validation error."""
        return [d["loc"] for d in self.body.get("detail", [])]


@dataclass
class World:
    control: MemoryControl
    feedback: MemoryFeedback
    store: MemoryOperatorStore
    scopes: MemoryScopes
    incidents: MemoryIncidents
    objects: MemoryObjects
    clock: Clock

    @property
    def ports(self) -> OperatorPorts:
        return OperatorPorts(self.store, self.scopes, self.incidents, self.objects, DATA, self.clock)

    def call(
        self,
        method: str,
        target: str,
        body: Any = None,
        *,
        who: str | None = ACME_OPS,
        raw: str | None = None,
        jwt: dict[str, Any] | None = None,
    ) -> Answer:
        """Send one request through the Lambda handler as API Gateway would, and decode the answer."""
        text = raw if raw is not None else (None if body is None else json.dumps(body))
        event = http_api_event(
            method,
            target,
            headers={"content-type": "application/json"},
            body=text,
            user_arn=who,
            jwt_claims=jwt,
        )
        response = handle(event, None, self.ports)
        payload = response.get("body")
        decoded = json.loads(payload) if payload else None
        return Answer(int(response["statusCode"]), decoded, dict(response.get("headers") or {}))


def world(now: datetime = NOW) -> World:
    control, feedback = MemoryControl(), MemoryFeedback()
    return World(
        control=control,
        feedback=feedback,
        store=MemoryOperatorStore(control, feedback),
        scopes=MemoryScopes(SCOPES),
        incidents=MemoryIncidents(),
        objects=MemoryObjects(),
        clock=Clock(now),
    )
