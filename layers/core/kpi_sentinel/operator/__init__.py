"""The operator API: people tell the system what they know, within their scope.

* :mod:`.models` — request and response bodies (pydantic), the API's contract;
* :mod:`.callers` — who is calling (IAM or JWT authorizer) and which integrations they may touch;
* :mod:`.service` — the use cases (snoozes, labels, calendar, overrides with their audit, incidents),
  on :class:`kpi_sentinel.ports.OperatorPorts`;
* :mod:`.api` — the Powertools ``APIGatewayHttpResolver`` (HTTP API payload v2) with its routes;
* :mod:`.openapi` — the OpenAPI document generated from the routes (committed as ``openapi.json``);
* :mod:`.client` and :mod:`.commands` — ``kpi-sentinel snooze|label|calendar|override|incidents|whoami``
  over HTTP (standard library and botocore's SigV4 only: no pydantic, no Powertools);
* :mod:`.local` — an HTTP API v2 event from a plain HTTP request, and a 127.0.0.1 server for the
  local stack.
"""
