"""The operator API's OpenAPI document, generated from the routes and models.

``python -m kpi_sentinel.operator.openapi`` prints it; ``--write`` (re)writes the committed
``openapi.json`` beside this module. A unit test fails when the committed file differs from what the
code generates, so the document never drifts from the API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

API_VERSION = "1.0.0"
COMMITTED = Path(__file__).with_name("openapi.json")
DESCRIPTION = """Operators tell kpi-sentinel what they know: snoozes, alert labels, known events \
(calendar), per-metric threshold overrides (audited), and incident acknowledgement and resolution.

Every request is authenticated by the HTTP API's authorizer (IAM: sign with SigV4 for service \
`execute-api`; or a JWT). A caller may read and change only the integrations of their scope (the \
control table's `scope#<principal>` item, or the JWT claim `kpi_sentinel_integrations`); the global \
calendar needs scope `*`. Invalid values answer 422 with a body naming the field \
(`detail[].loc`, e.g. `["body", "until"]`)."""


def document() -> str:
    """The OpenAPI 3.1 document (JSON text, ending with a newline)."""
    from kpi_sentinel.operator.api import app

    text = app.get_openapi_json_schema(
        title="kpi-sentinel operator API",
        version=API_VERSION,
        description=DESCRIPTION,
        security_schemes={
            "sigv4": APIKey.model_validate(
                {
                    "name": "Authorization",
                    "in": APIKeyIn.header,
                    "description": "AWS Signature Version 4 (IAM authorizer), service execute-api.",
                }
            ),
            "jwt": HTTPBearer(bearerFormat="JWT", description="A JWT accepted by the JWT authorizer."),
        },
        security=[{"sigv4": []}, {"jwt": []}],
    )
    return text.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {COMMITTED.name} instead of printing")
    args = parser.parse_args(argv)
    text = document()
    if args.write:
        COMMITTED.write_text(text, encoding="utf-8")
        print(f"wrote {COMMITTED}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
