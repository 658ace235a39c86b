"""Offline AWS for the adapters' unit tests: moto in-process, tables made from template.yaml itself.

The tables are created from their resource definitions in the template (keys, attributes, indexes and
their projections, TTL), so a test can never pass against a table the deployment does not have.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from kpi_sentinel.adapters import aws
from kpi_sentinel.local.stack import load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def offline_aws(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    """Credentials and region for moto's in-process mock, no endpoint or profile, fresh boto3 clients."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws.client.cache_clear()


@cache
def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template(TEMPLATE)["Resources"]
    return resources


def create_table(logical_id: str, name: str, region: str) -> None:
    """Create table ``name`` in moto as the template declares ``logical_id`` (call inside ``mock_aws``)."""
    props = _resources()[logical_id]["Properties"]
    extra: dict[str, Any] = {}
    if props.get("GlobalSecondaryIndexes"):
        extra["GlobalSecondaryIndexes"] = [
            {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
            for index in props["GlobalSecondaryIndexes"]
        ]
    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(
        TableName=name,
        BillingMode=props["BillingMode"],
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        **extra,
    )
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
        )
