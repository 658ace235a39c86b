"""An HTTP client of the operator API for the ``kpi-sentinel`` CLI: standard library plus botocore.

Requests to a deployed API are signed with SigV4 (botocore's ``SigV4Auth``, service ``execute-api``)
using the usual AWS credential chain (environment, profile, SSO, instance role); requests to the
local stack (``http://127.0.0.1:...``) are sent plain, with the local caller in
:data:`kpi_sentinel.operator.local.PRINCIPAL_HEADER` when one is given. No pydantic, no Powertools:
the API validates, this module only carries the request and the answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import Request, urlopen

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
Opener = Callable[..., Any]  # urllib.request.urlopen's signature: (request, timeout=...) -> response


class ApiError(Exception):
    """The API refused a request (or could not be reached); ``status`` is 0 when unreachable."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.body = body


def region_of(url: str) -> str | None:
    """The AWS region of an ``execute-api`` URL, else None.

    >>> region_of("https://abc123.execute-api.eu-west-1.amazonaws.com")
    'eu-west-1'
    """
    match = _REGION_IN_HOST.search(urlsplit(url).hostname or "")
    return match.group(1) if match else None


def segment(value: str) -> str:
    """One path segment, percent-encoded (a metric name may hold spaces or slashes)."""
    return quote(value, safe="")


@dataclass
class OperatorClient:
    """Calls the operator API at ``base_url``; ``sign`` None: sign unless the host is local."""

    base_url: str
    sign: bool | None = None
    region: str | None = None
    principal: str | None = None  # the local stack's caller (never sent to a deployed API)
    timeout: float = 30.0
    opener: Opener = field(default=urlopen)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"API base URL must be http(s)://host[:port][/stage], got {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        self.local = parts.hostname in LOCAL_HOSTS
        if self.sign is None:
            self.sign = not self.local
        if not self.local and parts.scheme != "https":
            raise ValueError(f"a deployed API must be reached over https, got {self.base_url!r}")

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; returns the decoded JSON answer or raises :class:`ApiError`."""
        url = self.base_url + path
        given = {k: v for k, v in (query or {}).items() if v is not None}
        if given:
            url += "?" + urlencode(
                {k: str(v).lower() if isinstance(v, bool) else v for k, v in given.items()}
            )
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        if self.local and self.principal:
            from kpi_sentinel.operator.local import PRINCIPAL_HEADER

            headers[PRINCIPAL_HEADER] = self.principal
        if self.sign:
            headers = self._signed(method, url, data, headers)
        request = Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) checked above
        try:
            with self.opener(request, timeout=self.timeout) as response:
                return _decode(response.read())
        except HTTPError as exc:
            payload = _decode(exc.read())
            message = payload.get("message") if isinstance(payload, dict) else None
            raise ApiError(exc.code, str(message or exc.reason), payload) from None
        except URLError as exc:
            raise ApiError(0, f"cannot reach {self.base_url}: {exc.reason}") from None

    def _signed(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import Session

        session = Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ApiError(0, "no AWS credentials to sign the request with (configure a profile or role)")
        region = (
            self.region
            or region_of(url)
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or session.get_config_variable("region")
        )
        if not region:
            raise ApiError(0, "no AWS region to sign for: pass --region or set AWS_REGION")
        aws_request = AWSRequest(method=method, url=url, data=data or b"", headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(aws_request)
        return dict(aws_request.headers.items())


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"message": raw[:500].decode("utf-8", "replace")}
