"""The operator API without API Gateway: HTTP API (payload v2) events from plain HTTP requests.

:func:`http_api_event` builds the event API Gateway would hand the function, with the caller in
``requestContext.authorizer.iam.userArn`` as the IAM authorizer puts it. :class:`LocalOperatorApi`
serves a handler on 127.0.0.1 (never another interface) for the local stack, the demo and contract
tests: each request's caller is its :data:`PRINCIPAL_HEADER` header, else the server's default
principal. That header is a local convenience only: the deployed API takes the caller from its
authorizer and never reads it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

PRINCIPAL_HEADER = "x-kpi-sentinel-principal"
DEFAULT_PRINCIPAL = "arn:aws:iam::123456789012:user/local-operator"
MAX_BODY = 1024 * 1024
Handler = Callable[[dict[str, Any]], Mapping[str, Any]]


def http_api_event(
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: str | bytes | None = None,
    user_arn: str | None = DEFAULT_PRINCIPAL,
    jwt_claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for ``method target`` (path and query string).

    ``user_arn`` sets the IAM authorizer's caller, ``jwt_claims`` a JWT authorizer's; neither: an
    unauthenticated request.
    """
    parts = urlsplit(target)
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value  # as API Gateway joins them
    authorizer: dict[str, Any] = {}
    if user_arn:
        authorizer["iam"] = {"userArn": user_arn, "userId": user_arn.rsplit("/", 1)[-1]}
    if jwt_claims is not None:
        authorizer["jwt"] = {"claims": dict(jwt_claims), "scopes": None}
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "queryStringParameters": query or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "http": {
                "method": method.upper(),
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": (headers or {}).get("user-agent", ""),
            },
            "requestId": f"local-{time.time_ns()}",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
            "authorizer": authorizer or None,
        },
        "body": text,
        "isBase64Encoded": False,
    }


class LocalOperatorApi:
    """Serves ``handler`` (event -> HTTP API response) on ``http://127.0.0.1:<port>`` in a thread.

    Use as a context manager; ``url`` is the base URL. Requests are answered one at a time (the
    Powertools resolver keeps per-request context on the app).
    """

    def __init__(self, handler: Handler, port: int = 0, principal: str = DEFAULT_PRINCIPAL) -> None:
        self.handler = handler
        self.principal = principal
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._request_handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="operator-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LocalOperatorApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        lowered = {k.lower(): v for k, v in headers.items()}
        principal = lowered.pop(PRINCIPAL_HEADER, None) or self.principal
        event = http_api_event(method, target, headers=lowered, body=body or None, user_arn=principal)
        with self._lock:
            return self.handler(event)

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self._send(413, {"statusCode": 413, "message": f"body larger than {MAX_BODY} bytes"})
                    return
                body = self.rfile.read(length) if length else b""
                try:
                    answer = api.answer(self.command, self.path, dict(self.headers.items()), body)
                except Exception as exc:  # a local server must answer, as API Gateway answers 500
                    self._send(500, {"message": f"Internal Server Error: {type(exc).__name__}"})
                    return
                headers = dict(answer.get("headers") or {})
                payload = str(answer.get("body") or "").encode()
                self.send_response(int(answer.get("statusCode", 200)))
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, str(value))
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send(self, status: int, body: Mapping[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return  # requests are logged by the handler itself

        return Handler
