"""The local stack: moto in server mode on 127.0.0.1, resources created from ``template.yaml``.

moto's CloudFormation creates the data plane (buckets, queues, topics, tables, keys) but silently
skips some types (SNS subscriptions, SQS queue policies, DynamoDB TTL, Secrets Manager secrets).
Those are created here through the APIs, from the same template properties, and
:meth:`LocalStack.missing` proves every template resource exists locally. What moto cannot run at
all — Lambda functions, their event source mappings, schedules — the runner does:
:meth:`LocalStack.drain` polls a function's SQS sources and :meth:`LocalStack.trigger` delivers one of
its schedule events, each calling the real handler with the environment the template gives it.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import secrets
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REGION = "us-east-1"
STACK = "kpi-sentinel-local"
PSEUDO = {
    "AWS::Region": REGION, "AWS::AccountId": "123456789012", "AWS::StackName": STACK,
    "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": None,
}  # fmt: skip
DATA_PLANE = {
    "AWS::KMS::Key", "AWS::KMS::Alias", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::SQS::Queue",
    "AWS::SQS::QueuePolicy", "AWS::SNS::Topic", "AWS::SNS::TopicPolicy", "AWS::SNS::Subscription",
    "AWS::DynamoDB::Table", "AWS::SecretsManager::Secret",
}  # fmt: skip
# Run by this runner rather than by moto: functions (their handlers are called directly), and what
# only exists to serve them in AWS (layers are on the local import path, roles and log groups are
# meaningless without a Lambda service).
RUNNER = {
    "AWS::Serverless::Function",
    "AWS::Serverless::HttpApi",  # served on 127.0.0.1 by LocalStack.serve_api
    "AWS::Serverless::LayerVersion",
    "AWS::IAM::Role",
    "AWS::Logs::LogGroup",
}
# Function event types that are EventBridge rules (Schedule) or EventBridge Scheduler schedules
# (ScheduleV2): they never fire locally, LocalStack.trigger delivers them on demand.
SCHEDULE_EVENTS = {"Schedule", "ScheduleV2"}
# Modules holding cached AWS clients or settings read from the environment, and the cached callables.
CACHED_MODULES = (
    "kpi_sentinel.adapters.aws",
    "kpi_sentinel.handlers.scorer",
    "kpi_sentinel.handlers.planner",
    "kpi_sentinel.handlers.retrainer",
    "kpi_sentinel.handlers.triage",
    "kpi_sentinel.handlers.report",
    "kpi_sentinel.handlers.freshness",
    "kpi_sentinel.handlers.tuning",
    "kpi_sentinel.handlers.operator_api",
)
CACHED_ATTRIBUTES = ("client", "_aws_ports", "_signing_key")


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "template.yaml").exists():
            return parent
    raise FileNotFoundError("template.yaml not found above " + str(here))


def load_template(path: Path) -> dict[str, Any]:
    """The template with intrinsic functions in their long form (``!Ref X`` -> ``{"Ref": "X"}``)."""
    from cfnlint.decode import cfn_yaml

    template: dict[str, Any] = json.loads(json.dumps(cfn_yaml.load(str(path))))
    return template


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FunctionSpec:
    logical_id: str
    handler: str  # module.path:function
    environment: dict[str, str]
    sqs_sources: list[tuple[str, int]]  # (queue logical id, batch size)
    # Schedule event name -> the rule's Input parsed from JSON ({} when the rule has none).
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class LocalStack:
    template_path: Path
    endpoint: str = ""
    physical: dict[str, str] = field(default_factory=dict)  # logical id -> physical id (name / url / arn)
    types: dict[str, str] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # batches a handler failed as a whole
    _server: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalStack:
        from moto.server import ThreadedMotoServer

        # moto's request log and its notes on the types its CloudFormation skips (created below) are
        # noise for a person watching the demo.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="Tried to parse", category=UserWarning)
        port = _free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        self._reset_client_caches()
        self.template = load_template(self.template_path)
        self._deploy()
        return self

    def stop(self) -> None:
        if self._server is not None:
            # moto's backends live in this process: reset them so the next stack starts empty.
            import urllib.request

            request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310
            urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback only
            self._server.stop()
            self._server = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)
        return self._clients[service]

    @staticmethod
    def _reset_client_caches() -> None:
        for name in CACHED_MODULES:
            module = sys.modules.get(name)
            if module is not None:
                for attr in CACHED_ATTRIBUTES:
                    cached = getattr(module, attr, None)
                    if cached is not None and hasattr(cached, "cache_clear"):
                        cached.cache_clear()

    # ------------------------------------------------------------------ deployment

    def _deploy(self) -> None:
        resources: dict[str, Any] = self.template["Resources"]
        self.types = {lid: r["Type"] for lid, r in resources.items()}
        unknown = sorted(f"{lid} ({t})" for lid, t in self.types.items() if t not in DATA_PLANE | RUNNER)
        if unknown:
            raise RuntimeError(f"the local stack does not know how to create: {', '.join(unknown)}")
        data_plane = {lid: r for lid, r in resources.items() if r["Type"] in DATA_PLANE}
        cfn_template = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Parameters": self.template.get("Parameters", {}),
            "Conditions": self.template.get("Conditions", {}),
            "Resources": {lid: self._strip_runner_refs(r) for lid, r in data_plane.items()},
        }
        cfn = self.client("cloudformation")
        cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(cfn_template))
        for summary in cfn.describe_stack_resources(StackName=STACK)["StackResources"]:
            if summary.get("LogicalResourceId") and summary.get("PhysicalResourceId"):
                self.physical[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
        self.repair()
        for lid, resource in resources.items():
            if resource["Type"] == "AWS::Serverless::Function":
                self.functions[lid] = self._function_spec(lid, resource)

    def _strip_runner_refs(self, resource: dict[str, Any]) -> dict[str, Any]:
        """KMS key policies may name function roles, which moto never creates: keep the statements
        that do not (the local key is never used for access control). moto wants the policy as text."""
        if resource["Type"] != "AWS::KMS::Key":
            return resource
        props = dict(resource.get("Properties", {}))
        policy = props.get("KeyPolicy")
        if isinstance(policy, dict):
            statements = [s for s in policy.get("Statement", []) if not self._mentions_runner(s)]
            props["KeyPolicy"] = json.dumps(self.resolve({**policy, "Statement": statements}))
        return {**resource, "Properties": props}

    def _mentions_runner(self, node: Any) -> bool:
        if isinstance(node, dict):
            if "Ref" in node and self.types.get(node["Ref"]) in RUNNER:
                return True
            if "Fn::GetAtt" in node:
                target = node["Fn::GetAtt"]
                name = target[0] if isinstance(target, list) else str(target).split(".")[0]
                if self.types.get(name) in RUNNER:
                    return True
            return any(self._mentions_runner(v) for v in node.values())
        if isinstance(node, list):
            return any(self._mentions_runner(v) for v in node)
        return False

    def resolve(self, node: Any) -> Any:
        """Resolve Ref / GetAtt Arn / Sub for the values the runner needs (env vars, subscriptions)."""
        if isinstance(node, dict):
            if "Ref" in node:
                name = node["Ref"]
                if name in self.physical:
                    return self._ref_value(name)
                params = self.template.get("Parameters", {})
                if name in params:
                    return str(params[name].get("Default", ""))
                return PSEUDO[name]
            if "Fn::GetAtt" in node:
                target = node["Fn::GetAtt"]
                name, attribute = target if isinstance(target, list) else str(target).split(".", 1)
                return self.attribute(name, attribute)
            if "Fn::Sub" in node:
                sub = node["Fn::Sub"]
                text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
                for token in {t.split("}")[0] for t in text.split("${")[1:]}:
                    if token in variables:
                        value = self.resolve(variables[token])
                    else:
                        ref = {"Ref": token} if "." not in token else {"Fn::GetAtt": token.split(".", 1)}
                        value = self.resolve(ref)
                    text = text.replace("${" + token + "}", str(value))
                return text
            if "Fn::Join" in node:
                separator, parts = node["Fn::Join"]
                return str(separator).join(str(self.resolve(p)) for p in parts)
            return {k: self.resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        return node

    def _ref_value(self, name: str) -> str:
        kind, physical = self.types[name], self.physical[name]
        if kind == "AWS::SQS::Queue" and not physical.startswith("http"):
            return str(self.client("sqs").get_queue_url(QueueName=physical)["QueueUrl"])
        return physical

    def attribute(self, name: str, attribute: str) -> str:
        kind = self.types[name]
        if kind == "AWS::SQS::Queue" and attribute == "Arn":
            url = self._ref_value(name)
            attrs = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return str(attrs["Attributes"]["QueueArn"])
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return self._ref_value(name).rsplit("/", 1)[-1]
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{self.physical[name]}"
        if kind == "AWS::DynamoDB::Table" and attribute == "Arn":
            return str(
                self.client("dynamodb").describe_table(TableName=self.physical[name])["Table"]["TableArn"]
            )
        if kind == "AWS::KMS::Key" and attribute == "Arn":
            return str(self.client("kms").describe_key(KeyId=self.physical[name])["KeyMetadata"]["Arn"])
        if kind == "AWS::SNS::Topic" and attribute == "TopicArn":
            return self.physical[name]
        raise KeyError(f"the local stack cannot resolve {name}.{attribute}")

    def repair(self) -> None:
        """Create (again) what moto's CloudFormation skips; idempotent."""
        resources = self.template["Resources"]
        self._create_what_moto_skips({lid: r for lid, r in resources.items() if r["Type"] in DATA_PLANE})

    def _create_what_moto_skips(self, data_plane: Mapping[str, Any]) -> None:
        for lid, resource in data_plane.items():
            kind, raw = resource["Type"], resource.get("Properties", {})
            needed = {
                "AWS::SNS::Subscription": raw,
                "AWS::SQS::QueuePolicy": raw,
                "AWS::S3::BucketPolicy": raw,
                "AWS::SNS::TopicPolicy": raw,
                "AWS::DynamoDB::Table": {"TimeToLiveSpecification": raw.get("TimeToLiveSpecification", {})},
                "AWS::S3::Bucket": {k: v for k, v in raw.items() if k == "NotificationConfiguration"},
                "AWS::SecretsManager::Secret": {k: v for k, v in raw.items() if k == "Description"},
            }.get(kind, {})
            props = self.resolve(needed)
            if kind == "AWS::SNS::Subscription" and not self._exists(lid):
                attributes = {}
                if props.get("RawMessageDelivery") in (True, "true"):
                    attributes["RawMessageDelivery"] = "true"
                if "FilterPolicy" in props:
                    attributes["FilterPolicy"] = json.dumps(props["FilterPolicy"])
                    attributes["FilterPolicyScope"] = props.get("FilterPolicyScope", "MessageAttributes")
                if "RedrivePolicy" in props:
                    attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
                arn = self.client("sns").subscribe(
                    TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"],
                    Attributes=attributes, ReturnSubscriptionArn=True,
                )["SubscriptionArn"]  # fmt: skip
                self.physical[lid] = arn
            elif kind == "AWS::SQS::QueuePolicy":
                for queue_url in props["Queues"]:
                    self.client("sqs").set_queue_attributes(
                        QueueUrl=queue_url, Attributes={"Policy": json.dumps(props["PolicyDocument"])}
                    )
                self.physical.setdefault(lid, f"{STACK}-{lid}")
            elif kind == "AWS::S3::BucketPolicy":
                # moto enforces bucket policies, and the local endpoint is plain HTTP on loopback: the
                # TLS-only statements stay in the template (checkov checks them) but not in moto.
                self.client("s3").put_bucket_policy(
                    Bucket=props["Bucket"], Policy=json.dumps(without_tls_only(props["PolicyDocument"]))
                )
                self.physical.setdefault(lid, f"{STACK}-{lid}")
            elif kind == "AWS::SNS::TopicPolicy":
                for topic in props["Topics"]:
                    self.client("sns").set_topic_attributes(
                        TopicArn=topic,
                        AttributeName="Policy",
                        AttributeValue=json.dumps(props["PolicyDocument"]),
                    )
                self.physical.setdefault(lid, f"{STACK}-{lid}")
            elif kind == "AWS::DynamoDB::Table" and props.get("TimeToLiveSpecification", {}).get("Enabled"):
                self.client("dynamodb").update_time_to_live(
                    TableName=self.physical[lid],
                    TimeToLiveSpecification={
                        "Enabled": True,
                        "AttributeName": props["TimeToLiveSpecification"]["AttributeName"],
                    },
                )
            elif kind == "AWS::SecretsManager::Secret" and not self._exists(lid):
                self.physical[lid] = self._create_secret(lid, props.get("Description", ""))
            elif kind == "AWS::S3::Bucket" and "NotificationConfiguration" in props:
                s3 = self.client("s3")
                current = s3.get_bucket_notification_configuration(Bucket=self.physical[lid])
                if not current.get("QueueConfigurations"):
                    s3.put_bucket_notification_configuration(
                        Bucket=self.physical[lid],
                        NotificationConfiguration=_notification(props["NotificationConfiguration"]),
                    )

    def _create_secret(self, lid: str, description: str) -> str:
        """The secret with a random value (its GenerateSecretString: 64 alphanumeric characters; the
        KmsKeyId is not needed locally); returns its ARN, what ``!Ref`` of a secret gives."""
        secretsmanager = self.client("secretsmanager")
        name = f"{STACK}-{lid}"
        try:
            found = secretsmanager.describe_secret(SecretId=name)
        except secretsmanager.exceptions.ResourceNotFoundException:
            created = secretsmanager.create_secret(
                Name=name, Description=description, SecretString=secrets.token_hex(32)
            )
            return str(created["ARN"])
        if "DeletedDate" in found:  # deleted behind the stack's back: still recoverable
            secretsmanager.restore_secret(SecretId=name)
        return str(found["ARN"])

    def _exists(self, lid: str) -> bool:
        """Whether the resource really exists in moto (not only in moto's CloudFormation records)."""
        kind, physical = self.types[lid], self.physical.get(lid)
        if kind in RUNNER:
            return lid in self.functions or kind != "AWS::Serverless::Function"
        if physical is None:
            return False
        if kind == "AWS::S3::Bucket":
            return physical in {b["Name"] for b in self.client("s3").list_buckets()["Buckets"]}
        if kind == "AWS::SQS::Queue":
            return any(url.endswith("/" + physical.rsplit("/", 1)[-1]) for url in self._queue_urls())
        if kind == "AWS::SNS::Topic":
            return physical in {t["TopicArn"] for t in self.client("sns").list_topics()["Topics"]}
        if kind == "AWS::SNS::Subscription":
            subs = self.client("sns").list_subscriptions()["Subscriptions"]
            return physical in {s["SubscriptionArn"] for s in subs}
        if kind == "AWS::DynamoDB::Table":
            return physical in self.client("dynamodb").list_tables()["TableNames"]
        if kind == "AWS::KMS::Key":
            return physical in {k["KeyId"] for k in self.client("kms").list_keys()["Keys"]}
        if kind == "AWS::KMS::Alias":
            return physical in {a["AliasName"] for a in self.client("kms").list_aliases()["Aliases"]}
        if kind == "AWS::SecretsManager::Secret":
            secretsmanager = self.client("secretsmanager")
            try:
                return "DeletedDate" not in secretsmanager.describe_secret(SecretId=physical)
            except secretsmanager.exceptions.ResourceNotFoundException:
                return False
        if kind == "AWS::SQS::QueuePolicy":
            props = self.resolve(self.template["Resources"][lid]["Properties"])
            return all(
                "Policy"
                in self.client("sqs")
                .get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
                .get("Attributes", {})
                for url in props["Queues"]
            )
        if kind == "AWS::S3::BucketPolicy":
            props = self.resolve(self.template["Resources"][lid]["Properties"])
            try:
                self.client("s3").get_bucket_policy(Bucket=props["Bucket"])
            except self.client("s3").exceptions.ClientError:
                return False
            return True
        if kind == "AWS::SNS::TopicPolicy":
            props = self.resolve(self.template["Resources"][lid]["Properties"])
            wanted = props["PolicyDocument"]
            return all(
                json.loads(self.client("sns").get_topic_attributes(TopicArn=t)["Attributes"]["Policy"])
                == wanted
                for t in props["Topics"]
            )
        return False

    def _queue_urls(self) -> list[str]:
        return list(self.client("sqs").list_queues().get("QueueUrls", []))

    def missing(self) -> list[str]:
        """Template resources that do not exist locally (moto, or the runner for functions)."""
        return sorted(f"{lid} ({t})" for lid, t in self.types.items() if not self._exists(lid))

    # ------------------------------------------------------------------ functions

    def _function_spec(self, lid: str, resource: Mapping[str, Any]) -> FunctionSpec:
        props = resource["Properties"]
        globals_ = self.template.get("Globals", {}).get("Function", {})
        env = dict(self.resolve(globals_.get("Environment", {}).get("Variables", {})))
        env.update(self.resolve(props.get("Environment", {}).get("Variables", {})))
        code = str(props["CodeUri"]).strip("/").replace("/", ".")
        module, function = str(props.get("Handler", globals_.get("Handler"))).rsplit(".", 1)
        events: dict[str, Any] = props.get("Events", {})
        sources = [
            (event["Properties"]["Queue"]["Fn::GetAtt"][0], int(event["Properties"].get("BatchSize", 10)))
            for event in events.values()
            if event["Type"] == "SQS"
        ]
        schedules = {
            name: json.loads(event["Properties"]["Input"]) if "Input" in event["Properties"] else {}
            for name, event in events.items()
            if event["Type"] in SCHEDULE_EVENTS
        }
        return FunctionSpec(
            lid, f"{code}.{module}:{function}", {k: str(v) for k, v in env.items()}, sources, schedules
        )

    def handler(self, function_id: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        spec = self.functions[function_id]
        os.environ.update(spec.environment)
        self._reset_client_caches()
        module, name = spec.handler.split(":")
        root = str(self.template_path.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        loaded: Callable[[dict[str, Any], Any], dict[str, Any]] = getattr(
            importlib.import_module(module), name
        )
        return loaded

    def trigger(
        self, function_id: str, event_name: str, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Fire one of the function's schedules now, as EventBridge would; returns the handler's result.

        A rule with an Input delivers exactly that JSON; one without delivers a Scheduled Event
        envelope with ``time`` set to now (an Input of ``{}`` is therefore delivered as the envelope).
        ``extra`` adds fields to the delivered event, e.g. ``as_of`` to replay a past night over
        synthetic data.
        """
        spec = self.functions[function_id]
        if event_name not in spec.schedules:
            known = ", ".join(spec.schedules) or "none"
            raise KeyError(f"{function_id} has no schedule event {event_name!r} (it has: {known})")
        event = spec.schedules[event_name] or scheduled_event(f"{STACK}-{function_id}-{event_name}")
        # A copy: a handler that changes its event must not change the next delivery.
        delivered = {**copy.deepcopy(event), **(extra or {})}
        return self.handler(function_id)(delivered, lambda_context(function_id))

    @contextmanager
    def serve_api(
        self, function_id: str = "OperatorApiFunction", principal: str | None = None, port: int = 0
    ) -> Iterator[Any]:
        """Serve the function's HTTP API on ``http://127.0.0.1:<port>`` (``.url``; ``port`` 0: a free
        one) while the block runs.

        API Gateway's IAM authorizer is not run locally: every request arrives as if signed by
        ``principal`` (or by the principal a request names in its ``x-kpi-sentinel-principal`` header),
        and the function's own tenant scoping applies to it exactly as deployed.
        """
        from kpi_sentinel.operator.local import DEFAULT_PRINCIPAL, LocalOperatorApi

        handler = self.handler(function_id)
        context = lambda_context(function_id)
        with LocalOperatorApi(
            lambda event: handler(event, context), port=port, principal=principal or DEFAULT_PRINCIPAL
        ) as api:
            yield api

    def queue_url(self, logical_id: str) -> str:
        return self._ref_value(logical_id)

    def drain(
        self,
        function_id: str,
        max_batches: int = 100_000,
        wait_seconds: int = 0,
        handler: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None,
    ) -> int:
        """Deliver the function's SQS sources to its handler until they are empty, as Lambda would.

        Messages the handler reports as failed become visible again at once (moto then redrives
        them to the DLQ after maxReceiveCount). Returns the number of messages delivered. ``handler``
        replaces the function's handler (with the function's environment in place): the demo uses it
        to run support triage on a clock that follows the replayed data.
        """
        spec = self.functions[function_id]
        default = self.handler(function_id)
        handler = handler or default
        sqs = self.client("sqs")
        delivered = 0
        for queue_id, batch_size in spec.sqs_sources:
            url, arn = self.queue_url(queue_id), self.attribute(queue_id, "Arn")
            for _ in range(max_batches):
                messages = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=min(batch_size, 10), WaitTimeSeconds=wait_seconds,
                    AttributeNames=["All"], MessageAttributeNames=["All"],
                ).get("Messages", [])  # fmt: skip
                if not messages:
                    break
                delivered += len(messages)
                event = {"Records": [sqs_record(m, arn) for m in messages]}
                try:
                    response = handler(event, lambda_context(function_id))
                    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
                except Exception as exc:
                    self.errors.append(f"{function_id}: {exc}")
                    failed = {m["MessageId"] for m in messages}
                done = [m for m in messages if m["MessageId"] not in failed]
                retry = [m for m in messages if m["MessageId"] in failed]
                if done:
                    sqs.delete_message_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)
                        ],
                    )
                if retry:
                    sqs.change_message_visibility_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                            for n, m in enumerate(retry)
                        ],
                    )
        return delivered


def without_tls_only(policy: Mapping[str, Any]) -> dict[str, Any]:
    statements = [s for s in policy.get("Statement", []) if "aws:SecureTransport" not in json.dumps(s)]
    return {**policy, "Statement": statements}


def _notification(config: Mapping[str, Any]) -> dict[str, Any]:
    queues = []
    for q in config.get("QueueConfigurations", []):
        entry: dict[str, Any] = {"QueueArn": q["Queue"], "Events": [q["Event"]]}
        rules = q.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            entry["Filter"] = {
                "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
            }
        queues.append(entry)
    return {"QueueConfigurations": queues}


def sqs_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping presents it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def scheduled_event(rule_name: str) -> dict[str, Any]:
    """The event an EventBridge schedule rule without an Input delivers."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": PSEUDO["AWS::AccountId"],
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{PSEUDO['AWS::AccountId']}:rule/{rule_name}"],
        "detail": {},
    }


def lambda_context(function_name: str) -> Any:
    return SimpleNamespace(
        function_name=function_name,
        function_version="$LATEST",
        memory_limit_in_mb=1024,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{function_name}",
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{function_name}",
        log_stream_name="local",
        get_remaining_time_in_millis=lambda: 60_000,
    )


@contextmanager
def local_stack(template: Path | None = None) -> Iterator[LocalStack]:
    stack = LocalStack(template or repo_root() / "template.yaml")
    started = time.perf_counter()
    stack.start()
    stack.started_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
    try:
        yield stack
    finally:
        stack.stop()
