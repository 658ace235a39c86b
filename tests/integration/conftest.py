"""Integration fixtures: one local moto stack (server mode, created from template.yaml) per session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kpi_sentinel.local.stack import LocalStack, lambda_context, local_stack

EVENTS = Path(__file__).resolve().parents[2] / "events"
SCORER = "EwmaScorerFunction"


@pytest.fixture(scope="session", autouse=True)
def _quiet_powertools() -> None:
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ["CONTROL_CACHE_SECONDS"] = "0"


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with local_stack() as running:
        yield running


def load_event(name: str, stack: LocalStack) -> dict[str, Any]:
    """An event from events/, with the local stack's physical names filled in."""
    text = (EVENTS / name).read_text()
    text = text.replace("${INGEST_BUCKET}", stack.physical["IngestBucket"])
    return json.loads(text)  # type: ignore[no-any-return]


def invoke(stack: LocalStack, event: dict[str, Any]) -> dict[str, Any]:
    return stack.handler(SCORER)(event, lambda_context(SCORER))


def read_queue(stack: LocalStack, queue_id: str) -> list[dict[str, Any]]:
    from kpi_sentinel.demo import read_queue as read

    return read(stack, queue_id)
