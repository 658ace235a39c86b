"""boto3 adapters: the only module that talks to AWS. Clients are created lazily and cached.

``AWS_ENDPOINT_URL`` (honoured by boto3 itself) points every client at the local moto stack.

State layout in the state table (one partition per integration, read with one Query):

* ``pk=integration#<id>, sk=state`` — version, chunk count and the first chunk of the state blob;
* ``sk=state#<n>`` — further chunks (a DynamoDB item holds at most 400 KB);
* ``sk=outbox#<sync id>`` — alerts committed with the state but not yet published.

A commit is one ``TransactWriteItems`` whose header put is conditional on the version read, so two
syncs of one integration can never overwrite each other's update.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from kpi_sentinel.calendar import GLOBAL
from kpi_sentinel.forest.planner import SHARDS, shard_of
from kpi_sentinel.operator_jobs.tuning import merge_tuned
from kpi_sentinel.ports import (
    ActiveIntegration,
    IncidentConflict,
    IncidentGroup,
    OperatorConflict,
    Outage,
    StateConflict,
    StoredIncident,
    StoredState,
    TunedThreshold,
    TuningInputs,
)
from kpi_sentinel.triage.incidents import (
    DUE_SHARDS,
    OUTBOX_SHARD,
    acknowledged,
    due_entry,
    epoch,
    iso,
    resolved,
    transition,
    with_defaults,
)

CHUNK_BYTES = 350_000
OUTBOX_TTL_SECONDS = 14 * 86400
LEDGER_TTL_SECONDS = 35 * 86400
ACTIVE_INDEX = "ActiveIntegrations"
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_RETRIES)  # type: ignore[call-overload]


class S3Objects:
    def get(self, bucket: str, key: str) -> bytes:
        try:
            body: bytes = client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from exc
            raise
        return body

    def list(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]:
        """Keys under ``prefix`` in key order, page by page (stop iterating to stop listing)."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            page = client("s3").list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                yield item["Key"]
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def delete(self, bucket: str, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            result = client("s3").delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
            if result.get("Errors"):
                raise RuntimeError(
                    f"S3 refused to delete {len(result['Errors'])} object(s): {result['Errors'][:3]}"
                )

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        client("s3").copy_object(
            Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": source_key}
        )


def _pk(integration_id: str) -> str:
    return f"integration#{integration_id}"


def _partition(table: str, integration_id: str, consistent: bool) -> list[dict[str, Any]]:
    """Every item of an integration's partition: one Query, more pages only past 1 MB."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": _pk(integration_id)}},
        "ConsistentRead": consistent,
    }
    while True:
        page = client("dynamodb").query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class DynamoState:
    def __init__(self, table: str) -> None:
        self.table = table

    def load(self, integration_id: str) -> StoredState:
        items = _partition(self.table, integration_id, consistent=True)
        by_sk = {item["sk"]["S"]: item for item in items}
        header = by_sk.get("state")
        outbox = {
            sk.removeprefix("outbox#"): json.loads(zlib.decompress(item["alerts"]["B"]))
            for sk, item in by_sk.items()
            if sk.startswith("outbox#")
        }
        if header is None:
            return StoredState(blob=None, version=0, outbox=outbox)
        chunks = [header["blob"]["B"]]
        for n in range(1, int(header["chunks"]["N"])):
            chunks.append(by_sk[f"state#{n}"]["blob"]["B"])
        return StoredState(blob=b"".join(chunks), version=int(header["version"]["N"]), outbox=outbox)

    def commit(
        self,
        integration_id: str,
        expected_version: int,
        blob: bytes,
        sync_id: str,
        outbox: Sequence[Mapping[str, Any]],
        index: Mapping[str, Any] | None = None,
    ) -> None:
        pk = {"S": _pk(integration_id)}
        chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        header: dict[str, Any] = {
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": pk,
                    "sk": {"S": "state"},
                    "version": {"N": str(expected_version + 1)},
                    "chunks": {"N": str(len(chunks))},
                    "blob": {"B": chunks[0]},
                    "last_sync": {"S": sync_id},
                    # The ActiveIntegrations index (see kpi_sentinel.forest.planner).
                    "active_shard": {"S": shard_of(integration_id)},
                    "integration_id": {"S": integration_id},
                    "last_sync_at": {"N": str(int((index or {}).get("synced_at", time.time())))},
                    "tier": {"S": str((index or {}).get("tier", "standard"))},
                    "granularity": {"N": str(int((index or {}).get("granularity", 0)))},
                },
                "ConditionExpression": "attribute_not_exists(pk) OR version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
            }
        }
        if expected_version == 0:
            header["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
            del header["Put"]["ExpressionAttributeValues"]
        writes: list[dict[str, Any]] = [header]
        for n, chunk in enumerate(chunks[1:], start=1):
            writes.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {"pk": pk, "sk": {"S": f"state#{n}"}, "blob": {"B": chunk}},
                    }
                }
            )
        if outbox:
            expires = int(datetime.now().timestamp()) + OUTBOX_TTL_SECONDS
            alerts = zlib.compress(json.dumps(list(outbox), separators=(",", ":")).encode())
            writes.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": pk,
                            "sk": {"S": f"outbox#{sync_id}"},
                            "alerts": {"B": alerts},
                            "expires_at": {"N": str(expires)},
                        },
                    }
                }
            )
        try:
            client("dynamodb").transact_write_items(TransactItems=writes)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in (
                "TransactionCanceledException",
                "ConditionalCheckFailedException",
            ):
                reasons = exc.response.get("CancellationReasons", [])
                if not reasons or any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                    raise StateConflict(integration_id) from exc
            raise

    def clear_outbox(self, integration_id: str, sync_id: str) -> None:
        client("dynamodb").delete_item(
            TableName=self.table, Key={"pk": {"S": _pk(integration_id)}, "sk": {"S": f"outbox#{sync_id}"}}
        )


class DynamoActiveIndex:
    """Active integrations from the state table's sparse ``ActiveIntegrations`` index, shard by shard."""

    def __init__(self, table: str, threads: int = 8) -> None:
        self.table = table
        self.threads = threads

    def _shard(self, shard: str, since: float, tier: str | None) -> list[ActiveIntegration]:
        values: dict[str, Any] = {":shard": {"S": shard}, ":since": {"N": str(int(since))}}
        condition = "last_sync_at >= :since"
        if tier is not None:
            condition += " AND tier = :tier"
            values[":tier"] = {"S": tier}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": ACTIVE_INDEX,
            "KeyConditionExpression": "active_shard = :shard",
            "FilterExpression": condition,
            "ExpressionAttributeValues": values,
        }
        found = []
        while True:
            page = client("dynamodb").query(**kwargs)
            for item in page["Items"]:
                found.append(
                    ActiveIntegration(
                        integration_id=item["integration_id"]["S"],
                        tier=item.get("tier", {}).get("S", "standard"),
                        granularity=int(item.get("granularity", {}).get("N", "0")),
                        last_sync_at=float(item["last_sync_at"]["N"]),
                    )
                )
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def active(self, since: float, tier: str | None = None) -> Iterator[ActiveIntegration]:
        shards = [f"shard#{n:02d}" for n in range(SHARDS)]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for found in pool.map(lambda s: self._shard(s, since, tier), shards):
                yield from found


class DynamoLedger:
    """``published#<alert id>`` items in the state table (expire after 35 days)."""

    def __init__(self, table: str) -> None:
        self.table = table

    def unpublished(self, integration_id: str, alert_ids: Sequence[str]) -> list[str]:
        seen: set[str] = set()
        ids = list(dict.fromkeys(alert_ids))
        for start in range(0, len(ids), 100):
            keys = [
                {"pk": {"S": _pk(integration_id)}, "sk": {"S": f"published#{a}"}}
                for a in ids[start : start + 100]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ProjectionExpression": "sk"}}
            for _ in range(8):
                page = client("dynamodb").batch_get_item(RequestItems=request)
                seen.update(
                    i["sk"]["S"].removeprefix("published#") for i in page["Responses"].get(self.table, [])
                )
                request = page.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("DynamoDB kept keys unprocessed while reading the alert ledger")
        return [a for a in ids if a not in seen]

    def mark_published(self, integration_id: str, alert_ids: Sequence[str]) -> None:
        expires = str(int(time.time()) + LEDGER_TTL_SECONDS)
        ids = list(dict.fromkeys(alert_ids))
        for start in range(0, len(ids), 25):
            puts = [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": {"S": _pk(integration_id)},
                            "sk": {"S": f"published#{a}"},
                            "expires_at": {"N": expires},
                        }
                    }
                }
                for a in ids[start : start + 25]
            ]
            request: dict[str, Any] = {self.table: puts}
            for _ in range(8):
                request = (
                    client("dynamodb").batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
                )
                if not request:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("DynamoDB kept writes unprocessed while recording published alerts")


def _send_batch(queue_url: str, entries: list[dict[str, Any]], what: str) -> None:
    """SendMessageBatch (at most 10 entries), re-sending the entries SQS reports failed, up to 5 tries."""
    for _ in range(5):
        result = client("sqs").send_message_batch(QueueUrl=queue_url, Entries=entries)
        failed = {f["Id"] for f in result.get("Failed", [])}
        if not failed:
            return
        entries = [e for e in entries if e["Id"] in failed]
        time.sleep(0.2)
    raise RuntimeError(f"SQS refused {len(entries)} {what} after retries")


class SqsJobQueue:
    """Sends jobs as JSON messages, 10 per SendMessageBatch call, calls spread over a few threads."""

    def __init__(self, queue_url: str, threads: int = 8) -> None:
        self.queue_url = queue_url
        self.threads = threads

    def _send(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        entries = [
            {"Id": str(n), "MessageBody": json.dumps(job, separators=(",", ":"))}
            for n, job in enumerate(jobs)
        ]
        _send_batch(self.queue_url, entries, "job(s)")

    def send(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        chunks = [jobs[i : i + 10] for i in range(0, len(jobs), 10)]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            list(pool.map(self._send, chunks))


def secret_value(secret_id: str) -> bytes:
    """A Secrets Manager secret's string value as bytes (the model signing key)."""
    value = client("secretsmanager").get_secret_value(SecretId=secret_id)
    secret = value.get("SecretString")
    if not secret:
        raise RuntimeError(f"secret {secret_id} has no string value")
    return str(secret).encode()


class DynamoControl:
    """Operator-owned settings: ``config``, ``snooze#<id>`` and ``calendar#<id>`` items under ``integration#<id>``.

    Both come from one Query of the integration's partition, cached for ``cache_seconds`` in a warm
    container (a new snooze or config takes effect within that time).
    """

    def __init__(self, table: str, cache_seconds: float = 30.0) -> None:
        self.table = table
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def _items(self, integration_id: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._cache.get(integration_id)
        if cached and now - cached[0] < self.cache_seconds:
            return cached[1]
        items = _partition(self.table, integration_id, consistent=False)
        self._cache[integration_id] = (now, items)
        return items

    def integration_config(self, integration_id: str) -> Mapping[str, Any] | None:
        for item in self._items(integration_id):
            if item["sk"]["S"] == "config":
                config: Mapping[str, Any] = json.loads(item["config"]["S"])
                return config
        return None

    def active_snoozes(self, integration_id: str, now: datetime) -> list[Mapping[str, Any]]:
        stamp = now.timestamp()
        snoozes: list[Mapping[str, Any]] = []
        for item in self._items(integration_id):
            if not item["sk"]["S"].startswith("snooze#") or float(item["until"]["N"]) <= stamp:
                continue  # TTL deletion is lazy: an expired snooze may still be stored
            snoozes.append(
                {
                    "integration_id": integration_id,
                    "snooze_id": item["sk"]["S"].removeprefix("snooze#"),
                    "metric": item.get("metric", {}).get("S"),
                    "dimension": item.get("dimension", {}).get("S"),
                    "dimension_value": item.get("dimension_value", {}).get("S"),
                    "until": float(item["until"]["N"]),
                    "reason": item.get("reason", {}).get("S", ""),
                }
            )
        return snoozes

    def known_events(self, integration_id: str) -> list[Mapping[str, Any]]:
        """``calendar#<id>`` items of the integration and of the global partition ``integration#*``."""
        events: list[Mapping[str, Any]] = []
        for owner in (integration_id, GLOBAL):
            for item in self._items(owner):
                if item["sk"]["S"].startswith("calendar#"):
                    events.append(
                        {
                            "event_id": item["sk"]["S"].removeprefix("calendar#"),
                            "integration_id": owner,
                            "kind": item.get("kind", {}).get("S", "event"),
                            "name": item.get("name", {}).get("S", ""),
                            "start": float(item["start"]["N"]),
                            "end": float(item["end"]["N"]),
                        }
                    )
        return events

    def put_event(self, event: Mapping[str, Any]) -> None:
        """Used by the demo and tests until the operator API exists (``integration_id`` ``*``: global)."""
        owner = event.get("integration_id") or GLOBAL
        item: dict[str, Any] = {
            "pk": {"S": _pk(owner)},
            "sk": {"S": f"calendar#{event['event_id']}"},
            "kind": {"S": event.get("kind", "event")},
            "name": {"S": event.get("name", "")},
            "start": {"N": str(float(event["start"]))},
            "end": {"N": str(float(event["end"]))},
        }
        client("dynamodb").put_item(TableName=self.table, Item=item)
        self._cache.pop(owner, None)

    def metric_overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        """Operators' ``override#<metric>`` items: ``metric -> {field: value}`` of the overridden fields.

        From the same cached Query as the config, so an override takes effect within ``cache_seconds``.
        """
        found: dict[str, dict[str, Any]] = {}
        for item in self._items(integration_id):
            if item["sk"]["S"].startswith("override#"):
                fields = {k: v for k, v in _override_fields(item).items() if v is not None}
                if fields:
                    found[item["sk"]["S"].removeprefix("override#")] = fields
        return found

    def put_config(self, integration_id: str, config: Mapping[str, Any]) -> None:
        """Used by tests and the demo until the operator API exists."""
        client("dynamodb").put_item(
            TableName=self.table,
            Item={
                "pk": {"S": _pk(integration_id)},
                "sk": {"S": "config"},
                "config": {"S": json.dumps(config)},
            },
        )
        self._cache.pop(integration_id, None)

    def put_snooze(self, snooze: Mapping[str, Any]) -> None:
        """Used by the demo and tests until the operator API exists."""
        item: dict[str, Any] = {
            "pk": {"S": _pk(snooze["integration_id"])},
            "sk": {"S": f"snooze#{snooze['snooze_id']}"},
            "until": {"N": str(int(snooze["until"]))},
            "expires_at": {"N": str(int(snooze["until"]))},
            "reason": {"S": snooze.get("reason", "")},
        }
        for name in ("metric", "dimension", "dimension_value"):
            if snooze.get(name):
                item[name] = {"S": snooze[name]}
        client("dynamodb").put_item(TableName=self.table, Item=item)
        self._cache.pop(snooze["integration_id"], None)


class SnsPublisher:
    """Publishes each alert as raw JSON with the attributes subscriptions filter on."""

    def __init__(self, topic_arn: str) -> None:
        self.topic_arn = topic_arn

    def publish(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(alerts), 10):
            batch = alerts[start : start + 10]
            entries = [
                {
                    "Id": str(n),
                    "Message": json.dumps(alert, separators=(",", ":")),
                    "MessageAttributes": {
                        name: {"DataType": "String", "StringValue": str(alert[name])}
                        for name in ("severity", "integration_id", "detector", "metric", "schema_version")
                    },
                }
                for n, alert in enumerate(batch)
            ]
            result = client("sns").publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=entries)
            if result.get("Failed"):
                raise RuntimeError(f"SNS refused {len(result['Failed'])} alert(s): {result['Failed'][:3]}")


class DynamoFeedback:
    """Operators' alert labels from the control table: ``sk=feedback#<alert id>`` items, attribute ``label``.

    Read by key with BatchGetItem (100 keys a call), so a report asks only about the alerts it shows.
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def labels(self, integration_id: str, alert_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(alert_ids))
        for start in range(0, len(ids), 100):
            keys = [
                {"pk": {"S": _pk(integration_id)}, "sk": {"S": f"feedback#{a}"}}
                for a in ids[start : start + 100]
            ]
            request: dict[str, Any] = {
                self.table: {
                    "Keys": keys,
                    "ProjectionExpression": "sk, #label",
                    "ExpressionAttributeNames": {"#label": "label"},
                }
            }
            for _ in range(8):
                page = client("dynamodb").batch_get_item(RequestItems=request)
                for item in page["Responses"].get(self.table, []):
                    if "S" in item.get("label", {}):
                        found[item["sk"]["S"].removeprefix("feedback#")] = item["label"]["S"]
                request = page.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("DynamoDB kept keys unprocessed while reading alert feedback labels")
        return found

    def put_label(self, integration_id: str, alert_id: str, label: str) -> None:
        """Used by the demo and tests until the operator API exists."""
        client("dynamodb").put_item(
            TableName=self.table,
            Item={
                "pk": {"S": _pk(integration_id)},
                "sk": {"S": f"feedback#{alert_id}"},
                "label": {"S": label},
                "labelled_at": {"N": str(int(time.time()))},
            },
        )


# --- support triage ------------------------------------------------------------------------------------

INCIDENT_TTL_SECONDS = 90 * 86400  # after the incident's last change
CLAIM_TTL_SECONDS = 35 * 86400  # far past SQS's retention: a redelivery always finds its claim
DUE_INDEX = "Due"
BY_DAY_INDEX = "ByDay"


def _incident_key(integration_id: str, family: str, incident_id: str) -> dict[str, Any]:
    return {"pk": {"S": _pk(integration_id)}, "sk": {"S": f"family#{family}#incident#{incident_id}"}}


def _audit_item(integration_id: str, audit: Mapping[str, Any], **extra: dict[str, str]) -> dict[str, Any]:
    """The ``audit#<id>`` item of a change (operator overrides, tuned thresholds): who, when, old, new."""
    return {
        "pk": {"S": _pk(integration_id)},
        "sk": {"S": f"audit#{audit['audit_id']}"},
        "kind": {"S": str(audit.get("kind", ""))},
        "subject": {"S": str(audit.get("subject", ""))},
        "who": {"S": str(audit.get("who", ""))},
        "at": {"S": str(audit.get("at", ""))},
        "old": {"S": json.dumps(audit.get("old"), sort_keys=True)},
        "new": {"S": json.dumps(audit.get("new"), sort_keys=True)},
        "reason": {"S": str(audit.get("reason") or "")},
        **extra,
    }


def _write_audited(table: str, change: Mapping[str, Any], audit: Mapping[str, Any]) -> bool:
    """The change and its audit entry in one transaction; False when a condition of either failed."""
    entry = {"TableName": table, "Item": audit, "ConditionExpression": "attribute_not_exists(sk)"}
    try:
        client("dynamodb").transact_write_items(TransactItems=[change, {"Put": entry}])
    except ClientError as exc:
        if _cancelled_by_condition(exc):
            return False
        raise
    return True


def _cancelled_by_condition(exc: ClientError) -> bool:
    if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
        return True
    if exc.response["Error"]["Code"] != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons", [])
    codes = {r.get("Code") for r in reasons}
    return not reasons or bool(codes & {"ConditionalCheckFailed", "TransactionConflict"})


class DynamoIncidents:
    """Support triage's incidents in the incidents table (hash ``pk``, range ``sk``, TTL ``expires_at``).

    Items:

    * ``pk=integration#<id>, sk=family#<family>`` — the group head: ``version`` (N), bumped by every
      save that opens or updates an incident of the family, so concurrent alerts never open two;
    * ``pk=integration#<id>, sk=family#<family>#incident#<incident id>`` — the incident: ``record`` (S,
      the JSON record), ``version`` (N), ``incident_id``, ``integration_id``, ``family``, ``status``,
      ``outbox`` (S, JSON list of unsent messages; absent when empty), ``opened_day``/``opened_at``
      (the ``ByDay`` index), ``due_shard``/``due_at_epoch`` (the sparse ``Due`` index, see
      :func:`kpi_sentinel.triage.incidents.due_entry`), ``expires_at`` (90 days after its last change);
    * ``pk=incident#<incident id>, sk=incident`` — where the incident lives (``ref_pk``/``ref_sk``), for
      lookups by id;
    * ``pk=alert#<alert id>, sk=alert`` — the alert's claim: ``incident_id`` and ``claimed_at``; expires
      after 35 days.

    A save is one ``TransactWriteItems``: the claim (``attribute_not_exists``), the group head and the
    incident (both conditional on their version) and the id pointer, all or nothing.
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def _stored(self, item: Mapping[str, Any]) -> StoredIncident:
        outbox = json.loads(item["outbox"]["S"]) if "outbox" in item else []
        return StoredIncident(with_defaults(json.loads(item["record"]["S"])), tuple(outbox))

    def _get_item(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        found = client("dynamodb").get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        return item

    def claimed_by(self, alert_id: str) -> str | None:
        item = self._get_item({"pk": {"S": f"alert#{alert_id}"}, "sk": {"S": "alert"}})
        return str(item["incident_id"]["S"]) if item else None

    def get(self, incident_id: str) -> StoredIncident | None:
        pointer = self._get_item({"pk": {"S": f"incident#{incident_id}"}, "sk": {"S": "incident"}})
        if pointer is None:
            return None
        item = self._get_item({"pk": pointer["ref_pk"], "sk": pointer["ref_sk"]})
        return self._stored(item) if item else None

    def candidates(self, integration_id: str, family: str) -> IncidentGroup:
        head_sk, prefix = f"family#{family}", f"family#{family}#incident#"
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :family)",
            "FilterExpression": "attribute_not_exists(#status) OR #status <> :resolved",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":pk": {"S": _pk(integration_id)},
                ":family": {"S": head_sk},
                ":resolved": {"S": "resolved"},
            },
            "ConsistentRead": True,
        }
        version, found = 0, []
        while True:
            page = client("dynamodb").query(**kwargs)
            for item in page["Items"]:
                sk = item["sk"]["S"]
                if sk == head_sk:
                    version = int(item["version"]["N"])
                elif sk.startswith(prefix) and item["family"]["S"] == family:
                    found.append(self._stored(item))
            if "LastEvaluatedKey" not in page:
                return IncidentGroup(version, tuple(found))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _item(self, record: Mapping[str, Any], outbox: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_incident_key(record["integration_id"], record["family"], record["incident_id"]),
            "record": {"S": json.dumps(record, separators=(",", ":"))},
            "version": {"N": str(record["version"])},
            "incident_id": {"S": record["incident_id"]},
            "integration_id": {"S": record["integration_id"]},
            "family": {"S": record["family"]},
            "status": {"S": record["status"]},
            "opened_day": {"S": record["opened_at"][:10]},
            "opened_at": {"S": record["opened_at"]},
            "expires_at": {"N": str(epoch(record["updated_at"]) + INCIDENT_TTL_SECONDS)},
        }
        if outbox:
            item["outbox"] = {"S": json.dumps(list(outbox), separators=(",", ":"))}
        entry = due_entry(record, bool(outbox))
        if entry is not None:
            item["due_shard"] = {"S": entry[0]}
            item["due_at_epoch"] = {"N": str(entry[1])}
        return item

    def save(
        self,
        record: Mapping[str, Any],
        expected_version: int,
        outbox: Sequence[Mapping[str, Any]],
        claim_alert_id: str | None = None,
        group_version: int | None = None,
    ) -> None:
        if record["version"] != expected_version + 1:
            raise ValueError(f"record version {record['version']} must be expected_version + 1")
        item = self._item(record, outbox)
        writes: list[dict[str, Any]] = []
        if claim_alert_id is not None:
            writes.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": {"S": f"alert#{claim_alert_id}"},
                            "sk": {"S": "alert"},
                            "incident_id": {"S": record["incident_id"]},
                            "claimed_at": {"S": record["updated_at"]},
                            "expires_at": {"N": str(epoch(record["updated_at"]) + CLAIM_TTL_SECONDS)},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        if group_version is not None:
            head: dict[str, Any] = {
                "TableName": self.table,
                "Item": {
                    "pk": item["pk"],
                    "sk": {"S": f"family#{record['family']}"},
                    "family": {"S": record["family"]},
                    "version": {"N": str(group_version + 1)},
                },
            }
            _versioned(head, group_version)
            writes.append({"Put": head})
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        _versioned(put, expected_version)
        writes.append({"Put": put})
        writes.append(
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": f"incident#{record['incident_id']}"},
                        "sk": {"S": "incident"},
                        "ref_pk": item["pk"],
                        "ref_sk": item["sk"],
                        "expires_at": item["expires_at"],
                    },
                }
            }
        )
        try:
            client("dynamodb").transact_write_items(TransactItems=writes)
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise IncidentConflict(
                    f"incident {record['incident_id']} (or its group or the alert's claim) changed"
                ) from exc
            raise

    def clear_outbox(self, record: Mapping[str, Any]) -> None:
        entry = due_entry(record, has_outbox=False)
        values: dict[str, Any] = {":v": {"N": str(record["version"])}}
        if entry is None:
            expression = "REMOVE outbox, due_shard, due_at_epoch"
        else:
            expression = "SET due_shard = :shard, due_at_epoch = :due REMOVE outbox"
            values.update({":shard": {"S": entry[0]}, ":due": {"N": str(entry[1])}})
        try:
            client("dynamodb").update_item(
                TableName=self.table,
                Key=_incident_key(record["integration_id"], record["family"], record["incident_id"]),
                UpdateExpression=expression,
                ConditionExpression="#v = :v",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # A newer version was saved: its writer read this outbox and sends (then clears) it.

    def _due_shard(self, shard: str, until: int) -> Iterator[StoredIncident]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND due_at_epoch <= :until",
            "ExpressionAttributeValues": {":shard": {"S": shard}, ":until": {"N": str(until)}},
        }
        while True:
            page = client("dynamodb").query(**kwargs)
            yield from (self._stored(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def pending_outboxes(self, before: datetime) -> Iterator[StoredIncident]:
        yield from self._due_shard(OUTBOX_SHARD, int(before.timestamp()))

    def due(self, now: datetime) -> Iterator[StoredIncident]:
        for n in range(DUE_SHARDS):
            yield from self._due_shard(f"due#{n}", int(now.timestamp()))

    def incidents_opened(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        low, high = iso(start), iso(end)
        day = datetime.fromisoformat(low).date()
        while day.isoformat() <= high[:10]:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": BY_DAY_INDEX,
                "KeyConditionExpression": "opened_day = :day AND opened_at BETWEEN :low AND :high",
                "ExpressionAttributeValues": {
                    ":day": {"S": day.isoformat()},
                    ":low": {"S": low},
                    ":high": {"S": high},
                },
            }
            while True:
                page = client("dynamodb").query(**kwargs)
                for item in page["Items"]:
                    if item["opened_at"]["S"] < high:
                        yield with_defaults(json.loads(item["record"]["S"]))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            day += timedelta(days=1)

    def acknowledge(self, incident_id: str, at: datetime, by: str | None = None) -> dict[str, Any]:
        return transition(self, incident_id, lambda r: acknowledged(r, at, by))

    def resolve(self, incident_id: str, at: datetime, by: str | None = None) -> dict[str, Any]:
        return transition(self, incident_id, lambda r: resolved(r, at, by))


def _versioned(put: dict[str, Any], expected_version: int) -> None:
    """Make a Put conditional on the stored item's ``version`` (0: the item must not exist yet)."""
    if expected_version == 0:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        put["ConditionExpression"] = "#v = :v"
        put["ExpressionAttributeNames"] = {"#v": "version"}
        put["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}


class SqsTeamOutbox:
    """Sends incident messages to their team's queue as JSON, with ``dedup_key``, ``team`` and
    ``priority`` message attributes (a FIFO queue also gets the key as its deduplication id and the
    incident as its message group)."""

    def __init__(self, queues: Mapping[str, str]) -> None:
        self.queues = dict(queues)

    def _send(self, url: str, batch: Sequence[Mapping[str, Any]]) -> None:
        entries: list[dict[str, Any]] = []
        for n, message in enumerate(batch):
            entry: dict[str, Any] = {
                "Id": str(n),
                "MessageBody": json.dumps(message, separators=(",", ":")),
                "MessageAttributes": {
                    name: {"DataType": "String", "StringValue": str(message[name])}
                    for name in ("dedup_key", "team", "priority")
                },
            }
            if url.endswith(".fifo"):
                entry["MessageDeduplicationId"] = str(message["dedup_key"])[:128]
                entry["MessageGroupId"] = str(message["incident"]["incident_id"])
            entries.append(entry)
        _send_batch(url, entries, f"incident message(s) for {url}")

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        by_team: dict[str, list[Mapping[str, Any]]] = {}
        for message in messages:
            by_team.setdefault(str(message["team"]), []).append(message)
        for team, batch in by_team.items():
            url = self.queues.get(team)
            if url is None:
                raise RuntimeError(
                    f"no outbound queue for team {team!r} (TEAM_QUEUES has {sorted(self.queues)})"
                )
            for start in range(0, len(batch), 10):
                self._send(url, batch[start : start + 10])


class AwsRulesSource:
    """Routing rules from S3 (``s3://<bucket>/<key>``) or SSM Parameter Store (``ssm:/<name>``)."""

    def read(self, location: str) -> str:
        if location.startswith("s3://"):
            bucket, _, key = location.removeprefix("s3://").partition("/")
            body: bytes = client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            return body.decode("utf-8")
        if location.startswith("ssm:/"):
            parameter = client("ssm").get_parameter(Name=location.removeprefix("ssm:"), WithDecryption=True)
            return str(parameter["Parameter"]["Value"])
        raise ValueError(f"rules location {location!r} is neither s3://<bucket>/<key> nor ssm:/<name>")


# --- operator_api --------------------------------------------------------------------------------------

OPERATOR_EVENT_TTL_SECONDS = 90 * 86400  # a calendar event is kept this long after its end
LABEL_TTL_SECONDS = 400 * 86400  # labels feed tuning and precision for a year and a bit


def _override_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """The overridable fields of an ``override#<metric>`` item (None where not overridden)."""
    return {
        "threshold": float(item["threshold"]["N"]) if "threshold" in item else None,
        "bad_direction": item["bad_direction"]["S"] if "bad_direction" in item else None,
        "min_abs_change": float(item["min_abs_change"]["N"]) if "min_abs_change" in item else None,
        "min_volume": float(item["min_volume"]["N"]) if "min_volume" in item else None,
    }


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else None


def _query_prefix(
    table: str, pk: str, prefix: str, *, limit: int | None = None, before: str | None = None
) -> list[dict[str, Any]]:
    """Items of partition ``pk`` whose sort key starts with ``prefix`` (newest first with ``before``)."""
    values: dict[str, Any] = {":pk": {"S": pk}, ":prefix": {"S": prefix}}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
        "ExpressionAttributeValues": values,
        "ConsistentRead": True,
    }
    if before is not None:
        kwargs["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :prefix AND :before"
        values[":before"] = {"S": before}
    if limit is not None:
        kwargs["ScanIndexForward"] = False
        kwargs["Limit"] = limit
    items: list[dict[str, Any]] = []
    while True:
        page = client("dynamodb").query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page or (limit is not None and len(items) >= limit):
            return items if limit is None else items[:limit]
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _delete_returning(table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
    found = client("dynamodb").delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")
    item: dict[str, Any] | None = found.get("Attributes")
    return item


class DynamoOperatorStore:
    """The operator API's items in the control table, exactly as :class:`DynamoControl` (the scorer),
    :class:`DynamoFeedback` (the report) and threshold tuning read them. Under ``pk=integration#<id>``:

    * ``sk=snooze#<id>`` — ``until`` and ``expires_at`` (N, epoch seconds: DynamoDB's TTL deletes it
      some time after, the scorer ignores it from ``until`` on), ``reason``, ``metric``, ``dimension``,
      ``dimension_value`` (S, only when set), ``who``, ``created_at``;
    * ``sk=calendar#<id>`` — ``kind``, ``name``, ``start``/``end`` (N, epoch seconds), ``who``,
      ``created_at``, ``expires_at`` (90 days after ``end``); global events live under
      ``pk=integration#*``;
    * ``sk=feedback#<alert id>`` — ``label``, ``note``, ``who``, ``at`` (S), ``labelled_at`` and
      ``expires_at`` (N);
    * ``sk=override#<metric>`` — ``metric``, ``threshold``/``min_abs_change``/``min_volume`` (N) and
      ``bad_direction`` (S) when overridden, ``version`` (N), ``updated_by``, ``updated_at``, ``reason``;
    * ``sk=audit#<ISO time>#<uuid>`` — ``kind``, ``subject``, ``who``, ``at``, ``old``/``new`` (S, JSON),
      ``reason``; written in the same transaction as the change it records.

    Reads are strongly consistent: an operator sees their own change at once.
    """

    def __init__(self, table: str) -> None:
        self.table = table

    # snoozes

    def put_snooze(self, snooze: Mapping[str, Any]) -> None:
        until = str(int(snooze["until"]))
        item: dict[str, Any] = {
            "pk": {"S": _pk(snooze["integration_id"])},
            "sk": {"S": f"snooze#{snooze['snooze_id']}"},
            "until": {"N": until},
            "expires_at": {"N": until},
            "reason": {"S": str(snooze.get("reason", ""))},
            "who": {"S": str(snooze.get("who", ""))},
            "created_at": {"S": str(snooze.get("created_at", ""))},
        }
        for name in ("metric", "dimension", "dimension_value"):
            if snooze.get(name):
                item[name] = {"S": str(snooze[name])}
        client("dynamodb").put_item(TableName=self.table, Item=item)

    @staticmethod
    def _snooze(integration_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "snooze_id": item["sk"]["S"].removeprefix("snooze#"),
            "integration_id": integration_id,
            "metric": _text(item, "metric"),
            "dimension": _text(item, "dimension"),
            "dimension_value": _text(item, "dimension_value"),
            "until": float(item["until"]["N"]),
            "reason": _text(item, "reason") or "",
            "who": _text(item, "who") or "",
            "created_at": _text(item, "created_at") or "",
        }

    def snoozes(self, integration_id: str, now: datetime) -> list[dict[str, Any]]:
        stamp = now.timestamp()
        items = _query_prefix(self.table, _pk(integration_id), "snooze#")
        found = [self._snooze(integration_id, i) for i in items]
        return [s for s in found if s["until"] > stamp]  # TTL deletion is lazy

    def delete_snooze(self, integration_id: str, snooze_id: str) -> dict[str, Any] | None:
        key = {"pk": {"S": _pk(integration_id)}, "sk": {"S": f"snooze#{snooze_id}"}}
        old = _delete_returning(self.table, key)
        return self._snooze(integration_id, old) if old else None

    # feedback labels

    def put_label(self, label: Mapping[str, Any]) -> None:
        now = int(time.time())
        client("dynamodb").put_item(
            TableName=self.table,
            Item={
                "pk": {"S": _pk(label["integration_id"])},
                "sk": {"S": f"feedback#{label['alert_id']}"},
                "label": {"S": str(label["label"])},
                "note": {"S": str(label.get("note") or "")},
                "who": {"S": str(label.get("who", ""))},
                "at": {"S": str(label.get("at", ""))},
                "labelled_at": {"N": str(now)},
                "expires_at": {"N": str(now + LABEL_TTL_SECONDS)},
            },
        )

    def label_records(self, integration_id: str, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(alert_ids))
        for start in range(0, len(ids), 100):
            keys = [
                {"pk": {"S": _pk(integration_id)}, "sk": {"S": f"feedback#{a}"}}
                for a in ids[start : start + 100]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for _ in range(8):
                page = client("dynamodb").batch_get_item(RequestItems=request)
                for item in page["Responses"].get(self.table, []):
                    if "S" not in item.get("label", {}):
                        continue
                    alert = item["sk"]["S"].removeprefix("feedback#")
                    found[alert] = {
                        "alert_id": alert,
                        "integration_id": integration_id,
                        "label": item["label"]["S"],
                        "note": _text(item, "note") or "",
                        "who": _text(item, "who") or "",
                        "at": _text(item, "at") or "",
                    }
                request = page.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("DynamoDB kept keys unprocessed while reading alert feedback labels")
        return found

    # calendar

    def put_event(self, event: Mapping[str, Any]) -> None:
        owner = event.get("integration_id") or GLOBAL
        end = float(event["end"])
        client("dynamodb").put_item(
            TableName=self.table,
            Item={
                "pk": {"S": _pk(owner)},
                "sk": {"S": f"calendar#{event['event_id']}"},
                "kind": {"S": str(event.get("kind", "event"))},
                "name": {"S": str(event.get("name", ""))},
                "start": {"N": str(float(event["start"]))},
                "end": {"N": str(end)},
                "who": {"S": str(event.get("who", ""))},
                "created_at": {"S": str(event.get("created_at", ""))},
                "expires_at": {"N": str(int(end) + OPERATOR_EVENT_TTL_SECONDS)},
            },
        )

    @staticmethod
    def _event(owner: str, item: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "event_id": item["sk"]["S"].removeprefix("calendar#"),
            "integration_id": owner,
            "kind": _text(item, "kind") or "event",
            "name": _text(item, "name") or "",
            "start": float(item["start"]["N"]),
            "end": float(item["end"]["N"]),
            "who": _text(item, "who") or "",
            "created_at": _text(item, "created_at") or "",
        }

    def events(self, owner: str) -> list[dict[str, Any]]:
        return [self._event(owner, i) for i in _query_prefix(self.table, _pk(owner), "calendar#")]

    def delete_event(self, owner: str, event_id: str) -> dict[str, Any] | None:
        old = _delete_returning(self.table, {"pk": {"S": _pk(owner)}, "sk": {"S": f"calendar#{event_id}"}})
        return self._event(owner, old) if old else None

    # overrides and their audit trail

    def overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for item in _query_prefix(self.table, _pk(integration_id), "override#"):
            metric = item["sk"]["S"].removeprefix("override#")
            found[metric] = {
                "metric": metric,
                **_override_fields(item),
                "version": int(item["version"]["N"]),
                "updated_by": _text(item, "updated_by") or "",
                "updated_at": _text(item, "updated_at") or "",
                "reason": _text(item, "reason") or "",
            }
        return found

    def save_override(
        self,
        integration_id: str,
        metric: str,
        override: Mapping[str, Any] | None,
        expected_version: int,
        audit: Mapping[str, Any],
    ) -> None:
        key = {"pk": {"S": _pk(integration_id)}, "sk": {"S": f"override#{metric}"}}
        change: dict[str, Any]
        if override is None:
            change = {
                "Delete": {
                    "TableName": self.table,
                    "Key": key,
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
                }
            }
        else:
            item: dict[str, Any] = {
                **key,
                "metric": {"S": metric},
                "version": {"N": str(expected_version + 1)},
                "updated_by": {"S": str(override.get("updated_by", ""))},
                "updated_at": {"S": str(override.get("updated_at", ""))},
                "reason": {"S": str(override.get("reason") or "")},
            }
            for name in ("threshold", "min_abs_change", "min_volume"):
                if override.get(name) is not None:
                    item[name] = {"N": repr(float(override[name]))}
            if override.get("bad_direction") is not None:
                item["bad_direction"] = {"S": str(override["bad_direction"])}
            put: dict[str, Any] = {"TableName": self.table, "Item": item}
            _versioned(put, expected_version)
            change = {"Put": put}
        if not _write_audited(self.table, change, _audit_item(integration_id, audit)):
            raise OperatorConflict(
                f"override of {integration_id}/{metric} changed since version {expected_version}"
            )

    def audit(self, integration_id: str, limit: int, before: str | None = None) -> list[dict[str, Any]]:
        # BETWEEN is inclusive: ask for one more and drop ``before`` itself.
        bound = f"audit#{before}" if before is not None else None
        items = _query_prefix(self.table, _pk(integration_id), "audit#", limit=limit + 1, before=bound)
        entries = []
        for item in items:
            audit_id = item["sk"]["S"].removeprefix("audit#")
            if before is not None and audit_id >= before:
                continue
            entries.append(
                {
                    "audit_id": audit_id,
                    "integration_id": integration_id,
                    "kind": _text(item, "kind") or "",
                    "subject": _text(item, "subject") or _text(item, "metric") or "",
                    "who": _text(item, "who") or "",
                    "at": _text(item, "at") or "",
                    "old": _json_or_none(_text(item, "old")),
                    "new": _json_or_none(_text(item, "new")),
                    "reason": _text(item, "reason") or "",
                }
            )
        return entries[:limit]


def _json_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # written by another job in another shape: shown as it is


class DynamoScopes:
    """Operator API scopes in the control table: ``pk=scope#<principal>, sk=scope`` with ``integrations``
    (L or SS of S; ``*`` for every integration). Cached per principal for ``cache_seconds`` in a warm
    container, so a revoked scope stops working within that time."""

    def __init__(self, table: str, cache_seconds: float = 30.0) -> None:
        self.table = table
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, frozenset[str] | None]] = {}

    def scope_of(self, principal: str) -> frozenset[str] | None:
        now = time.monotonic()
        cached = self._cache.get(principal)
        if cached and now - cached[0] < self.cache_seconds:
            return cached[1]
        found = client("dynamodb").get_item(
            TableName=self.table, Key={"pk": {"S": f"scope#{principal}"}, "sk": {"S": "scope"}}
        )
        item = found.get("Item")
        scope: frozenset[str] | None = None
        if item is not None:
            raw = item.get("integrations", {})
            values = raw.get("SS") or [v["S"] for v in raw.get("L", []) if "S" in v]
            scope = frozenset(str(v) for v in values)
        self._cache[principal] = (now, scope)
        return scope

    def put_scope(self, principal: str, integrations: Sequence[str]) -> None:
        """Grant ``principal`` the integrations (``["*"]``: all). Used by deployers, tests and the demo."""
        client("dynamodb").put_item(
            TableName=self.table,
            Item={
                "pk": {"S": f"scope#{principal}"},
                "sk": {"S": "scope"},
                "integrations": {"L": [{"S": i} for i in integrations]},
            },
        )
        self._cache.pop(principal, None)


# --- operator jobs: freshness check and threshold tuning ----------------------------------------------


OUTAGE_TTL_SECONDS = 90 * 86400  # after the outage's last sync: a resumption within it is still resolved


def _outage_pk(integration_id: str) -> str:
    return f"freshness#{shard_of(integration_id)}"


class DynamoFreshness:
    """Announced missing-data outages in the state table (see :mod:`kpi_sentinel.operator_jobs.freshness`).

    One item per outage, ``pk=freshness#shard#<nn>`` (the integration's :func:`shard_of`, so the
    freshness function's access can be limited to keys starting ``freshness#``), ``sk=outage#<id>``:
    ``integration_id``, ``last_sync_at``, ``cadence_seconds``, ``alert_ids`` (L of S), ``severity``,
    ``alerted_at``, ``tier``, ``segment``, ``version`` and ``expires_at`` (90 days after the last
    sync). Every write is conditional on the version read; a run reads all outages with one Query per
    shard (only announced, unresolved outages are stored: a handful).
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def open_outages(self) -> Iterator[Outage]:
        for n in range(SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :outage)",
                "ExpressionAttributeValues": {
                    ":pk": {"S": f"freshness#shard#{n:02d}"},
                    ":outage": {"S": "outage#"},
                },
                "ConsistentRead": True,
            }
            while True:
                page = client("dynamodb").query(**kwargs)
                for item in page["Items"]:
                    yield Outage(
                        integration_id=item["integration_id"]["S"],
                        last_sync_at=float(item["last_sync_at"]["N"]),
                        cadence_seconds=int(item["cadence_seconds"]["N"]),
                        alert_ids=tuple(v["S"] for v in item.get("alert_ids", {}).get("L", [])),
                        severity=item["severity"]["S"],
                        alerted_at=float(item["alerted_at"]["N"]),
                        tier=item.get("tier", {}).get("S", "standard"),
                        segment=item.get("segment", {}).get("S", "default"),
                        version=int(item["version"]["N"]),
                    )
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _key(integration_id: str) -> dict[str, Any]:
        return {"pk": {"S": _outage_pk(integration_id)}, "sk": {"S": f"outage#{integration_id}"}}

    def save(self, outage: Outage, expected_version: int) -> None:
        if outage.version != expected_version + 1:
            raise ValueError(f"outage version {outage.version} must be expected_version + 1")
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": {
                **self._key(outage.integration_id),
                "integration_id": {"S": outage.integration_id},
                "last_sync_at": {"N": repr(float(outage.last_sync_at))},
                "cadence_seconds": {"N": str(int(outage.cadence_seconds))},
                "alert_ids": {"L": [{"S": a} for a in outage.alert_ids]},
                "severity": {"S": outage.severity},
                "alerted_at": {"N": repr(float(outage.alerted_at))},
                "tier": {"S": outage.tier},
                "segment": {"S": outage.segment},
                "version": {"N": str(outage.version)},
                "expires_at": {"N": str(int(outage.last_sync_at) + OUTAGE_TTL_SECONDS)},
            },
        }
        _versioned(put, expected_version)
        try:
            client("dynamodb").put_item(**put)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StateConflict(f"outage of {outage.integration_id} changed") from exc
            raise

    def close(self, integration_id: str, expected_version: int) -> None:
        try:
            client("dynamodb").delete_item(
                TableName=self.table,
                Key=self._key(integration_id),
                ConditionExpression="#v = :v",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(expected_version)}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StateConflict(f"outage of {integration_id} changed") from exc
            raise


def _tuned(item: Mapping[str, Any]) -> TunedThreshold:
    previous = item.get("previous", {}).get("N")
    return TunedThreshold(
        metric=item["sk"]["S"].removeprefix("tuned#"),
        threshold=float(item["threshold"]["N"]),
        previous=float(previous) if previous is not None else None,
        tuned_at=item.get("tuned_at", {}).get("S", ""),
        run_id=item.get("run_id", {}).get("S", ""),
        version=int(item["version"]["N"]),
    )


class DynamoTuning:
    """Threshold tuning's side of the control table (``pk=integration#<id>``).

    Reads ``feedback#<alert id>`` (``label``), ``override#<metric>`` (an operator's ``threshold``, as
    the operator API writes it), ``config`` and ``tuned#<metric>``; writes ``tuned#<metric>``
    (``metric``, ``threshold``, ``previous``, ``tuned_at``, ``run_id``, ``who``, ``version``) together
    with its ``audit#<audit_id>`` entry (the operator API's audit shape — ``kind``, ``subject``, ``who``,
    ``at``, ``old``/``new`` as JSON, ``reason`` — plus ``metric``, ``run_id`` and ``evidence`` as JSON) in
    one transaction, conditional on the tuned item's version.
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def _prefix(
        self, integration_id: str, prefix: str, projection: str | None = None
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": _pk(integration_id)}, ":prefix": {"S": prefix}},
        }
        if projection:
            kwargs["ProjectionExpression"] = projection
            kwargs["ExpressionAttributeNames"] = {"#label": "label"}
        items: list[dict[str, Any]] = []
        while True:
            page = client("dynamodb").query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def labels(self, integration_id: str) -> dict[str, str]:
        return {
            item["sk"]["S"].removeprefix("feedback#"): item["label"]["S"]
            for item in self._prefix(integration_id, "feedback#", "sk, #label")
            if "S" in item.get("label", {})
        }

    def inputs(self, integration_id: str) -> TuningInputs:
        overrides = {
            item["sk"]["S"].removeprefix("override#"): float(item["threshold"]["N"])
            for item in self._prefix(integration_id, "override#")
            if "N" in item.get("threshold", {})
        }
        tuned = {t.metric: t for t in map(_tuned, self._prefix(integration_id, "tuned#"))}
        found = client("dynamodb").get_item(
            TableName=self.table, Key={"pk": {"S": _pk(integration_id)}, "sk": {"S": "config"}}
        )
        config = json.loads(found["Item"]["config"]["S"]) if "Item" in found else None
        return TuningInputs(self.labels(integration_id), overrides, tuned, config)

    def save_tuned(self, integration_id: str, tuned: TunedThreshold, audit: Mapping[str, Any]) -> None:
        pk = {"S": _pk(integration_id)}
        item: dict[str, Any] = {
            "pk": pk,
            "sk": {"S": f"tuned#{tuned.metric}"},
            "metric": {"S": tuned.metric},
            "threshold": {"N": repr(float(tuned.threshold))},
            "tuned_at": {"S": tuned.tuned_at},
            "run_id": {"S": tuned.run_id},
            "who": {"S": str(audit.get("who", ""))},
            "version": {"N": str(tuned.version)},
        }
        if tuned.previous is not None:
            item["previous"] = {"N": repr(float(tuned.previous))}
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        _versioned(put, tuned.version - 1)
        entry = _audit_item(
            integration_id,
            audit,
            metric={"S": tuned.metric},
            run_id={"S": str(audit.get("run_id", ""))},
            evidence={"S": json.dumps(audit.get("evidence"), sort_keys=True)},
        )
        if not _write_audited(self.table, {"Put": put}, entry):
            raise StateConflict(
                f"tuned threshold of {integration_id}/{tuned.metric} changed since version {tuned.version - 1}"
            )


class DynamoTunedControl(DynamoControl):
    """The scorer's control store with tuned thresholds: :meth:`metric_overrides` also carries the
    ``tuned#<metric>`` thresholds where no operator set one (:func:`kpi_sentinel.operator_jobs.tuning.
    merge_tuned`), from the same cached Query of the partition, so the scorer uses a new tuned
    threshold from its next sync (within ``cache_seconds``)."""

    def metric_overrides(self, integration_id: str) -> dict[str, dict[str, Any]]:
        tuned = {
            item["sk"]["S"].removeprefix("tuned#"): float(item["threshold"]["N"])
            for item in self._items(integration_id)
            if item["sk"]["S"].startswith("tuned#") and "N" in item.get("threshold", {})
        }
        overrides = super().metric_overrides(integration_id)
        if not tuned:
            return overrides
        return merge_tuned(overrides, tuned, self.integration_config(integration_id))
