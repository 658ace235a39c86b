"""Who is calling the operator API, and which integrations they may read and change.

**Identity** comes from the HTTP API's authorizer, never from the request body:

* IAM authorizer (SigV4-signed requests): ``requestContext.authorizer.iam.userArn`` is the caller
  (``who`` in every record and log line);
* JWT authorizer: ``requestContext.authorizer.jwt.claims.sub`` is the caller, as ``jwt:<sub>``.

A request with neither is refused with 401 (it cannot happen behind the deployed API's authorizer).

**Scope** is the set of integration ids the caller may touch (``"*"``: every one, and the only scope
that may change the global calendar):

* the control table's ``scope#<principal>`` item (:class:`kpi_sentinel.ports.ScopeStore`). For an
  assumed role (``arn:aws:sts::<account>:assumed-role/<role>/<session>``) the session's own item is
  looked up first, then the role's (``arn:aws:iam::<account>:role/<role>``, written without a path), so
  one item can scope everybody who assumes a role, and a session may still be narrowed;
* for a JWT caller, the ``kpi_sentinel_integrations`` claim when the token has it (a list, or a string
  separated by spaces or commas, as API Gateway flattens arrays: ``"[a b]"``), else the
  ``scope#jwt:<sub>`` item.

A caller without any scope gets 403 on everything; a caller scoped to some integrations gets 403 on
any other, for reading as for changing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import ScopeStore

log = logging.getLogger(__name__)

SCOPE_CLAIM = "kpi_sentinel_integrations"
_ASSUMED_ROLE = re.compile(
    r"arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.+"
)


class OperatorError(Exception):
    """A request the operator API refuses; ``status`` is the HTTP status it answers with."""

    status = 500


class InvalidRequest(OperatorError):
    """A request value that is not acceptable (422); ``loc`` names it like pydantic does."""

    status = 422

    def __init__(self, field: str, problem: str, where: str = "body") -> None:
        super().__init__(f"field '{field}' {problem}")
        self.loc: list[str | int] = [where, field]
        self.field = field
        self.problem = problem


class Unauthenticated(OperatorError):
    status = 401


class Forbidden(OperatorError):
    status = 403


class NotFound(OperatorError):
    status = 404


class Conflict(OperatorError):
    status = 409


class Unavailable(OperatorError):
    status = 503


@dataclass(frozen=True)
class Caller:
    """An identified caller and the integrations they may read and change."""

    who: str
    source: str  # iam | jwt
    integrations: frozenset[str]

    @property
    def is_global(self) -> bool:
        return GLOBAL in self.integrations

    def may(self, integration_id: str) -> bool:
        return self.is_global or integration_id in self.integrations

    def require(self, integration_id: str) -> None:
        """Raise :class:`Forbidden` unless the caller's scope includes the integration."""
        if not self.may(integration_id):
            log.warning(
                "operator request refused: out of scope",
                extra={"who": self.who, "integration_id": integration_id},
            )
            raise Forbidden(f"{self.who} is not scoped to integration {integration_id!r}")

    def require_global(self) -> None:
        """Raise :class:`Forbidden` unless the caller may act on every integration (scope ``*``)."""
        if not self.is_global:
            log.warning("operator request refused: needs scope *", extra={"who": self.who})
            raise Forbidden(f"{self.who} needs scope '*' to change the global calendar")


def role_of(user_arn: str) -> str | None:
    """The IAM role behind an assumed-role session ARN, else None.

    >>> role_of("arn:aws:sts::123456789012:assumed-role/Operators/alice")
    'arn:aws:iam::123456789012:role/Operators'
    >>> role_of("arn:aws:iam::123456789012:user/bob") is None
    True
    """
    match = _ASSUMED_ROLE.fullmatch(user_arn)
    if match is None:
        return None
    return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"


def parse_scope_claim(value: Any) -> frozenset[str]:
    """The integration ids of a JWT scope claim; entries that are not ids (nor ``*``) are dropped.

    >>> sorted(parse_scope_claim("[acme-ads globex]"))
    ['acme-ads', 'globex']
    >>> sorted(parse_scope_claim(["acme-ads", "../etc", "*"]))
    ['*', 'acme-ads']
    """
    if isinstance(value, str):
        items: list[Any] = re.split(r"[\s,]+", value.strip().strip("[]"))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return frozenset()
    return frozenset(i for i in items if isinstance(i, str) and (i == GLOBAL or INTEGRATION_ID.fullmatch(i)))


def identify(authorizer: Mapping[str, Any] | None, scopes: ScopeStore) -> Caller:
    """The caller of a request from its ``requestContext.authorizer``; raises 401 or 403 errors."""
    authorizer = authorizer or {}
    iam = authorizer.get("iam") or {}
    jwt = authorizer.get("jwt") or {}
    user_arn = iam.get("userArn") if isinstance(iam, Mapping) else None
    claims = jwt.get("claims") if isinstance(jwt, Mapping) else None
    if isinstance(user_arn, str) and user_arn:
        candidates = [user_arn]
        role = role_of(user_arn)
        if role:
            candidates.append(role)
        return _scoped(user_arn, "iam", candidates, scopes)
    if isinstance(claims, Mapping) and isinstance(claims.get("sub"), str) and claims["sub"]:
        who = f"jwt:{claims['sub']}"
        if SCOPE_CLAIM in claims:
            found = parse_scope_claim(claims[SCOPE_CLAIM])
            if not found:
                raise Forbidden(f"{who}: claim {SCOPE_CLAIM!r} names no integration")
            return Caller(who, "jwt", found)
        return _scoped(who, "jwt", [who], scopes)
    raise Unauthenticated(
        "no caller identity: sign the request with SigV4 (IAM authorizer) or send a JWT (JWT authorizer)"
    )


def _scoped(who: str, source: str, candidates: list[str], scopes: ScopeStore) -> Caller:
    for principal in candidates:
        found = scopes.scope_of(principal)
        if found is not None:
            if not found:
                break
            return Caller(who, source, found)
    log.warning("operator request refused: no scope", extra={"who": who})
    raise Forbidden(f"{who} has no operator scope (no scope#<principal> item grants it any integration)")
