"""``kpi-sentinel demo``: the whole scoring pipeline on a local moto stack with synthetic data.

Syncs go into the local ingest bucket; S3 notifies the ingest queue; the runner delivers the queue to
the real ``ewma_scorer`` handler in batches, as Lambda would; alerts travel through the SNS topic to
the support-triage and kpi-report queues, from which the demo reads them back. It also drops one
unreadable file and one file with bad rows, to show what happens to them.

An operator works through the real operator API, served by the runner on 127.0.0.1 and called with
:class:`~kpi_sentinel.operator.client.OperatorClient` as a principal granted the three integrations:
before the backfill it snoozes one slice of a metric (its alerts, and the metric's alerts it drives, are
suppressed) and registers a planned
campaign of ``acme-ads`` in the calendar. The campaign is the demo's own addition to the synthetic
data, not an injected incident: every source's clicks x2 for 6 hours on one weekday. Its periods are
scored but not learned, and their alerts are suppressed by the calendar (the summary and the report's
suppressed counts say so).

The scorer runs on the data's clock, as it would have run live: each sync commits
:data:`SYNC_LAG` after its period ends (the moment ``last_sync_at``, on which the freshness check
measures a silence, is stamped). ``initech-support``'s last 4 hours of syncs are held back: when the
data's clock reaches the integration's cadence + grace past its last commit, the demo fires the real
``freshness_check`` schedule, whose ``missing_data`` alert goes to support triage (an incident for the
integrations team) and to ``kpi_report`` (in the reports of that day). The held-back syncs arrive
:data:`BACKLOG_LAG` after the data ends; the next check publishes the resolution, and support triage
resolves the outage's incident.

After the backfill the runner fires the nightly retrain schedule for the night after the data ends:
the real ``retrain_planner`` enqueues one job per active integration and the real
``iforest_retrainer`` trains each isolation forest on the scorer's history, stores it signed in the
data bucket and scores the last day, where the data carries a funnel break (clicks normal, the
funnel -55%). The summary says which detector caught which incident.

Support triage runs on the data's clock, as it would have run live: each time the scorer's queue is
drained, the real ``support_triage`` handler takes the alerts published so far with its clock at the
newest data, groups them into incidents, sends new and escalated ones to the team queues, and then
runs its SLA check at that moment. A simulated operator acknowledges the revenue team's incidents 10
minutes after they open and the acquisition team's after 90 minutes; the other teams' incidents are
left to escalate. Finally the real ``kpi_report`` records every alert, the operator labels the
warning and critical alerts through the API (inside an injected incident: true, else false), the real
``threshold_tuning`` schedule runs for the night after the data and the summary says which thresholds
it changed (or why none), and ``kpi_report`` builds two reports: the daily one of the last day
(through its schedule) and one of the month with the injected incidents.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from kpi_sentinel.synthetic import (
    ACME,
    GLOBEX,
    INITECH,
    DemoDataset,
    Incident,
    SyncFile,
    demo_dataset,
    incident_to_dict,
)

SCORER = "EwmaScorerFunction"
PLANNER = "RetrainPlannerFunction"
RETRAINER = "IforestRetrainerFunction"
TRIAGE = "SupportTriageFunction"
REPORT = "KpiReportFunction"
TEAM_QUEUES = {
    "revenue": "RevenueTeamQueue", "acquisition": "AcquisitionTeamQueue",
    "support-ops": "SupportOpsTeamQueue", "integrations": "IntegrationsTeamQueue",
}  # fmt: skip
# The simulated operator: how long after an incident opens each team acknowledges it (others never do).
ACKNOWLEDGES_AFTER = {"revenue": timedelta(minutes=10), "acquisition": timedelta(minutes=90)}
DETECTORS = ("ewma", "isolation_forest")
FRESHNESS = "FreshnessCheckFunction"
TUNING = "ThresholdTuningFunction"
OPERATOR_API = "OperatorApiFunction"
OPERATOR = "arn:aws:iam::123456789012:user/demo-operator"  # granted the three integrations
SNOOZED = {
    "integration_id": GLOBEX,
    "metric": "clicks",
    "dimension": "campaign",
    "dimension_value": "brand-search",
    "reason": "demo: brand-search bids under test",
}
SNOOZED_LABEL = f"{GLOBEX}/clicks[campaign=brand-search]"


@dataclass(frozen=True)
class Campaign:
    """A planned campaign the demo adds to the synthetic data (not an injected incident): every
    source's clicks of ``integration_id`` times ``factor`` for ``hours`` from ``start``."""

    integration_id: str
    name: str
    start: datetime
    hours: int
    factor: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def onboarding_config(sync: Any, threshold: float) -> dict[str, Any]:
    """The explicit config an integration is onboarded with: what the scorer infers from its first
    sync, with an integration-wide ``threshold`` (which tuning may change, unlike a metric's own)."""
    from kpi_sentinel.config import infer_config
    from kpi_sentinel.parsing import parse_sync_key, read_table

    table = read_table(sync.body, parse_sync_key(sync.key), 50 * 1024 * 1024)
    inferred = infer_config(sync.integration_id, table.columns, table.sample())
    return {**inferred.to_dict(), "inferred": False, "threshold": threshold}


def demo_campaign(dataset: DemoDataset) -> Campaign:
    """Wednesday 2026-10-07 12:00-18:00 UTC for the 60-day demo: 36 days in, clear of the incidents."""
    days = (dataset.end - dataset.start).days
    start = dataset.start + timedelta(days=days * 36 // 60, hours=12)
    return Campaign(ACME, "demo: autumn promo push (clicks x2)", start, 6, 2)


def with_campaign(files: Sequence[SyncFile], campaign: Campaign) -> list[SyncFile]:
    """The files with the campaign's uplift applied (acme-ads syncs are plain CSV with a clicks column)."""
    changed: list[SyncFile] = []
    for sync in files:
        if sync.integration_id != campaign.integration_id or not campaign.covers(sync.period_start):
            changed.append(sync)
            continue
        header, *rows = sync.body.decode().splitlines()
        column = header.split(",").index("clicks")
        lines = [header]
        for row in rows:
            cells = row.split(",")
            cells[column] = str(int(cells[column]) * campaign.factor)
            lines.append(",".join(cells))
        changed.append(replace(sync, body=("\n".join(lines) + "\n").encode()))
    return changed


HELD_BACK = (INITECH, 4)  # this integration's last 4 hours of syncs arrive late, after an outage
# Onboarded with a sensitive integration-wide threshold (its team asked to see every move): its false
# alarms, labelled by the operator, are what the nightly threshold tuning learns from.
SENSITIVE = (INITECH, 2.5)
SYNC_LAG = timedelta(minutes=5)  # a sync commits this long after its period ends
BACKLOG_LAG = timedelta(minutes=10)  # the held-back syncs arrive this long after the data ends


class ApiFeedback:
    """Labels put through the operator API (PUT .../alerts/<id>/label), as the CLI would."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def put_label(self, integration_id: str, alert_id: str, label: str) -> None:
        from kpi_sentinel.operator.client import segment

        path = f"/v1/integrations/{segment(integration_id)}/alerts/{segment(alert_id)}/label"
        self.client.request(
            "PUT", path, body={"label": label, "note": "demo: judged against the injected incidents"}
        )


@dataclass
class DemoStats:
    files: int = 0
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    quarantined: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    alerts_published: int = 0
    alerts_suppressed: int = 0
    duplicates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def observe(self, outcome: Any) -> None:
        self.files += 1
        self.statuses[outcome.status] += 1
        self.rows_in += outcome.rows_in
        self.rows_scored += outcome.rows_scored
        self.rows_rejected += outcome.rows_rejected
        self.alerts_published += outcome.alerts_published
        self.alerts_suppressed += outcome.alerts_suppressed
        if outcome.status == "quarantined":
            self.quarantined.append(f"{outcome.key}: {outcome.reason}")
        if outcome.report_key:
            self.reports.append(outcome.report_key)


def bad_inputs(dataset: DemoDataset) -> list[SyncFile]:
    """An unreadable file and a file with two bad rows, placed near the end of the data."""
    when = dataset.end - timedelta(days=2)
    stamp = when.strftime("%Y-%m-%dT%H:00:00Z")
    rows = "\n".join(
        [
            "timestamp,source,clicks,signups,ftds,deposits,ngr",
            f"{stamp},email,n/a,3,1,1,40.00",
            "not-a-time,email,120,3,1,1,40.00",
        ]
    )
    return [
        SyncFile("syncs/acme-ads/manual/upload-broken.csv.gz", b"this is not gzip", when, "acme-ads"),
        SyncFile("syncs/acme-ads/manual/upload-typos.csv", rows.encode(), when, "acme-ads"),
    ]


def caught(incident: Incident, alerts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first warning-or-worse alert inside the incident's window that names its series.

    An EWMA alert names it by its metric (and the slice, itself or as a top contributor); an isolation
    forest alert, which is about the integration's metrics together, by having the metric among the
    features that moved (its contributors).
    """
    start, end = incident.start.isoformat(), incident.end.isoformat()
    for alert in sorted(alerts, key=lambda a: a["period_start"]):
        if alert["integration_id"] != incident.integration_id or alert["severity"] == "info":
            continue
        if not start <= alert["period_start"] <= end:
            continue
        if alert["detector"] == "isolation_forest":
            moved = {alert["metric"]} | {c["value"] for c in alert["contributors"][:2]}
            if incident.metric in moved:
                return alert
            continue
        if alert["metric"] != incident.metric:
            continue
        names = {alert.get("dimension_value")} | {c["value"] for c in alert["contributors"][:2]}
        if incident.dimension_value is None or incident.dimension_value in names:
            return alert
    return None


class DataClockScorer:
    """The real ``ewma_scorer`` handler with its clock at the replayed data's time (see the module doc)."""

    def __init__(self, stack: Any) -> None:
        from kpi_sentinel.handlers import scorer

        self.stack, self.scorer = stack, scorer
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        stack.handler(SCORER)  # the function's environment, as the runner gives it
        ports, self.settings = scorer._aws_ports()
        self.ports = replace(ports, clock=lambda: self.now)

    def commit(self, at: datetime) -> None:
        """Deliver every sync waiting on the ingest queue, committing them at ``at``."""
        self.now = at
        self.stack.handler(SCORER)
        self.stack.drain(
            SCORER,
            handler=lambda event, context: self.scorer.handle(event, context, self.ports, self.settings),
        )
        self.scorer.metrics.clear_metrics()  # disabled metrics are never flushed, only piled up


class DemoTriage:
    """support_triage on the replayed data's clock, with an operator acknowledging some teams' incidents."""

    def __init__(self, stack: Any) -> None:
        from kpi_sentinel.adapters.aws import DynamoIncidents
        from kpi_sentinel.handlers import triage

        self.stack, self.triage = stack, triage
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        stack.handler(TRIAGE)  # the function's environment, as the runner gives it
        base = triage._aws_ports()
        self.runtime = replace(base, ports=replace(base.ports, clock=lambda: self.now))
        self.store = DynamoIncidents(stack.physical["IncidentsTable"])
        self.opened: list[Any] = []
        self.acknowledged = 0
        self.sla_escalations = 0
        triage.observers.append(self._seen)

    def _seen(self, outcome: Any) -> None:
        if outcome.status == "opened":
            self.opened.append(outcome)

    def close(self) -> None:
        self.triage.observers.remove(self._seen)

    def run(self, now: datetime, sla: bool = True) -> None:
        from kpi_sentinel.local.stack import lambda_context

        self.now = now
        self.stack.handler(TRIAGE)
        self.stack.drain(
            TRIAGE, handler=lambda event, context: self.triage.handle(event, context, self.runtime)
        )
        for outcome in self.opened:
            delay = ACKNOWLEDGES_AFTER.get(outcome.team or "")
            if delay is not None:
                stored = self.store.get(outcome.incident_id)
                if stored is None:
                    raise RuntimeError(
                        f"incident {outcome.incident_id} was reported opened but is not stored"
                    )
                opened_at = datetime.fromisoformat(str(stored.record["opened_at"]))
                self.store.acknowledge(outcome.incident_id, opened_at + delay, by=OPERATOR)
                self.acknowledged += 1
        self.opened.clear()
        if sla:
            check = {"action": "sla_check", "as_of": now.isoformat()}
            done = self.triage.handle(check, lambda_context(TRIAGE), self.runtime)
            self.sla_escalations += int(done.get("escalated", 0)) + int(done.get("breached", 0))
        self.triage.metrics.clear_metrics()


def label_alerts(
    feedback: Any, alerts: Sequence[Mapping[str, Any]], incidents: Sequence[Incident]
) -> Counter[str]:
    """The operator labels what support saw: an alert inside an injected incident's window (same
    integration) is a true positive, any other warning or critical alert a false one (the generator
    injected nothing else), and a ``missing_data`` alert is true (the demo held the syncs back). The
    report's precision comes from these labels."""
    labels: Counter[str] = Counter()
    for alert in alerts:
        if alert["severity"] == "info":
            continue
        start = datetime.fromisoformat(alert["period_start"])
        inside = alert["detector"] == "missing_data" or any(
            i.integration_id == alert["integration_id"] and i.start <= start <= i.end for i in incidents
        )
        label = "true_positive" if inside else "false_positive"
        feedback.put_label(alert["integration_id"], alert["alert_id"], label)
        labels[label] += 1
    return labels


def fetch_report(stack: Any, built: Mapping[str, Any], folder: Path) -> Path:
    """Copy a report the kpi_report function wrote to the data bucket into ``folder``."""
    s3, bucket = stack.client("s3"), stack.physical["DataBucket"]
    folder.mkdir(parents=True, exist_ok=True)
    for listed in s3.list_objects_v2(Bucket=bucket, Prefix=built["prefix"]).get("Contents", []):
        name = listed["Key"][len(built["prefix"]) :]
        (folder / name).write_bytes(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read())
    return folder / "index.html"


def read_queue(stack: Any, queue_id: str) -> list[dict[str, Any]]:
    sqs, url = stack.client("sqs"), stack.queue_url(queue_id)
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            messages.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def run_demo(out: Path, days: int = 60, seed: int = 7, stream: TextIO = sys.stdout) -> dict[str, Any]:
    from kpi_sentinel.adapters.aws import DynamoActiveIndex, DynamoControl, DynamoScopes, S3Objects
    from kpi_sentinel.handlers import freshness, report, retrainer, scorer, tuning
    from kpi_sentinel.local.stack import lambda_context, local_stack
    from kpi_sentinel.operator.client import OperatorClient, segment
    from kpi_sentinel.operator_jobs.freshness import FreshnessSettings, expectation
    from kpi_sentinel.operator_jobs.tuning import record_key
    from kpi_sentinel.outputs import alert_row, html_page, write_alerts
    from kpi_sentinel.report.data import read_recorded_alerts, read_suppressed, report_days

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    started = time.perf_counter()
    say("kpi-sentinel demo: starting a local AWS stack (moto) from template.yaml ...")
    stats = DemoStats()
    jobs: list[Any] = []
    scorer.observers.append(stats.observe)
    retrainer.observers.append(jobs.append)
    try:
        with local_stack() as stack, contextlib.ExitStack() as serving:
            # A person watches this run: the functions log warnings only and keep their metrics to themselves.
            for function in (SCORER, PLANNER, RETRAINER, TRIAGE, REPORT, FRESHNESS, TUNING, OPERATOR_API):
                stack.functions[function].environment.update(
                    {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
                )
            for module in (scorer, retrainer, report, freshness, tuning):
                module.logger.setLevel("WARNING")
            desk = DemoTriage(stack)
            desk.triage.logger.setLevel("WARNING")
            logging.getLogger("kpi_sentinel").setLevel(logging.ERROR)  # the summary reports quarantines
            for name in list(logging.root.manager.loggerDict):  # and what the handlers' imports configured
                if name.startswith("kpi_sentinel."):
                    logging.getLogger(name).setLevel(logging.ERROR)
            say(f"  stack up in {time.perf_counter() - started:.1f}s at {stack.endpoint}; "
                f"{len(stack.types)} template resources, missing locally: {stack.missing() or 'none'}")  # fmt: skip
            dataset = demo_dataset(days=days, seed=seed)
            campaign = demo_campaign(dataset)
            held_integration, held_hours = HELD_BACK
            held_from = dataset.end - timedelta(hours=held_hours)
            every = sorted(
                [*with_campaign(dataset.files, campaign), *bad_inputs(dataset)],
                key=lambda f: (f.period_start, f.key),
            )
            held = [f for f in every if f.integration_id == held_integration and f.period_start >= held_from]
            files = [f for f in every if f not in held]
            say(f"  {len(every)} sync files for {days} days of hourly data, 3 integrations, "
                f"{len(dataset.incidents)} injected incidents")  # fmt: skip

            # The operator, through the API on 127.0.0.1: a snooze and a planned campaign, before the data.
            DynamoScopes(stack.physical["ControlTable"]).put_scope(OPERATOR, [ACME, GLOBEX, INITECH])
            sensitive, onboarded_threshold = SENSITIVE
            first_sync = next(f for f in every if f.integration_id == sensitive)
            DynamoControl(stack.physical["ControlTable"], 0).put_config(
                sensitive, onboarding_config(first_sync, onboarded_threshold)
            )
            say(f"  {sensitive} is onboarded with an integration-wide threshold of {onboarded_threshold:g} "
                "(its team asked to see every move); its false alarms are labelled and tuning learns from them")  # fmt: skip
            api = serving.enter_context(stack.serve_api(OPERATOR_API, principal=OPERATOR))
            client = OperatorClient(api.url, principal=OPERATOR)
            snooze = client.request(
                "POST",
                f"/v1/integrations/{segment(SNOOZED['integration_id'])}/snoozes",
                body={
                    **{k: v for k, v in SNOOZED.items() if k != "integration_id"},
                    "duration_minutes": 24 * 60,
                },
            )
            event = client.request(
                "POST",
                f"/v1/integrations/{segment(campaign.integration_id)}/calendar",
                body={"kind": "campaign", "name": campaign.name,
                      "start": campaign.start.isoformat(), "end": campaign.end.isoformat()},
            )  # fmt: skip
            say(f"  operator API at {api.url} as {OPERATOR.rsplit('/', 1)[-1]}: snooze {snooze['snooze_id']} on "
                f"{SNOOZED_LABEL} until {snooze['until']}; calendar "
                f"{event['kind']} {event['event_id']} on {event['integration_id']} {event['start']} … {event['end']}")  # fmt: skip
            say(
                f"  {held_integration}'s last {held_hours} hours of syncs are held back (from {held_from:%Y-%m-%d %H:%M})"
            )

            s3, bucket = stack.client("s3"), stack.physical["IngestBucket"]
            live = DataClockScorer(stack)
            period = timedelta(seconds=dataset.granularity_seconds)
            settings = FreshnessSettings.from_env(stack.functions[FRESHNESS].environment)
            check_at: datetime | None = None  # when the held-back integration's silence is past due
            missed: dict[str, Any] = {}
            day = None
            for n, sync in enumerate(files, start=1):
                arrives = sync.period_start + period + SYNC_LAG
                if check_at is None and sync.period_start >= held_from:
                    # The held-back integration's last sync has committed: from its last_sync_at and its
                    # config, the moment the freshness check must find it late.
                    live.commit(held_from + SYNC_LAG)
                    synced = DynamoActiveIndex(stack.physical["StateTable"]).active(0)
                    last_sync = next(a.last_sync_at for a in synced if a.integration_id == held_integration)
                    config = DynamoControl(stack.physical["ControlTable"], 0).integration_config(
                        held_integration
                    )
                    expect = expectation(dataset.granularity_seconds, config, settings, [])
                    if expect is None:
                        raise RuntimeError("the demo's integrations have no sync cadence")
                    check_at = datetime.fromtimestamp(last_sync + expect.due_after, UTC)
                    say(f"  {held_integration} stops syncing after its sync of {held_from - period:%Y-%m-%d %H:%M}; "
                        f"its sync is overdue {expect.due_after // 60} min after that commit")  # fmt: skip
                if check_at is not None and not missed and arrives > check_at:
                    live.commit(check_at - timedelta(seconds=1))  # the others are on time
                    say(f"  freshness_check (FreshnessCheck schedule) at {stamp(check_at)} ...")
                    missed = stack.trigger(FRESHNESS, "FreshnessCheck", {"time": stamp(check_at)})
                    freshness.metrics.clear_metrics()
                    desk.run(check_at + timedelta(minutes=1), sla=False)  # triage takes it at once
                    say(f"    {missed['late']} late, {missed['alerts_published']} missing_data alert(s): "
                        f"{', '.join(missed['alert_ids']) or 'none'}")  # fmt: skip
                s3.put_object(Bucket=bucket, Key=sync.key, Body=sync.body)
                if n % 30 == 0 or n == len(files):
                    live.commit(arrives)
                    # Triage sees the alerts minutes after their period, as it would live.
                    desk.run(sync.period_start + timedelta(hours=1, minutes=5))
                if sync.period_start.date() != day:
                    day = sync.period_start.date()
                    if day.day in (1, 8, 15, 22) or n == 1:
                        say(f"  {day}  files {n:>5}/{len(files)}  rows scored {stats.rows_scored:>7}  "
                            f"alerts {stats.alerts_published:>4}  ({time.perf_counter() - started:.0f}s)")  # fmt: skip
            if check_at is None or not missed:
                raise RuntimeError(f"{held_integration}'s silence never reached the freshness check")
            desk.run(dataset.end + timedelta(minutes=5))
            arrived_at = dataset.end + BACKLOG_LAG
            say(f"  {held_integration}'s {len(held)} held-back syncs arrive at {stamp(arrived_at)} ...")
            for sync in held:
                s3.put_object(Bucket=bucket, Key=sync.key, Body=sync.body)
            live.commit(arrived_at)
            resumed_at = arrived_at + timedelta(minutes=5)
            resumed = stack.trigger(FRESHNESS, "FreshnessCheck", {"time": stamp(resumed_at)})
            freshness.metrics.clear_metrics()
            desk.run(resumed_at + timedelta(minutes=1))
            say(f"    freshness_check at {stamp(resumed_at)}: {resumed['resolved']} resolution(s): "
                f"{', '.join(resumed['alert_ids']) or 'none'}")  # fmt: skip
            last_sync_at = {
                a.integration_id: a.last_sync_at
                for a in DynamoActiveIndex(stack.physical["StateTable"]).active(0)
            }

            say(f"  nightly retrain for the night of {dataset.end:%Y-%m-%d}: planner -> RetrainQueue -> "
                f"iforest_retrainer ...")  # fmt: skip
            planned = stack.trigger(PLANNER, "NightlyRetrain", {"as_of": dataset.end.isoformat()})
            stack.drain(RETRAINER)
            retrainer.metrics.clear_metrics()
            for job in jobs:
                say(f"    {job.integration_id:<16} {job.status:<8} {len(job.features)} features, "
                    f"{job.training_rows} training periods, {job.alerts_published} alert(s) "
                    f"({job.seconds:.1f}s){'; ' + job.reason if job.reason else ''}")  # fmt: skip
            # The forest's alerts are triaged after the nightly run; a day later the SLA check has
            # escalated whatever nobody acknowledged.
            desk.run(dataset.end + timedelta(hours=2, minutes=30))
            desk.run(dataset.end + timedelta(days=1))
            incidents = sorted(
                desk.store.incidents_opened(dataset.start, check_at + timedelta(days=1)),
                key=lambda i: (i["opened_at"], i["incident_id"]),
            )
            team_messages = {team: read_queue(stack, queue) for team, queue in TEAM_QUEUES.items()}
            say(f"  support triage: {len(incidents)} incidents, {desk.acknowledged} acknowledged by the operator, "
                f"{desk.sla_escalations} SLA escalation(s); team queues: "
                + ", ".join(f"{t} {len(m)}" for t, m in team_messages.items()))  # fmt: skip
            say("  kpi_report: recording every alert, then the daily report (schedule) and the month's ...")
            stack.drain(REPORT)
            report.metrics.clear_metrics()
            data_bucket = stack.physical["DataBucket"]
            alerts, _ = read_recorded_alerts(
                S3Objects(), data_bucket, report_days(dataset.start.date(), dataset.end.date())
            )
            freshness_alerts = sorted(
                (a for a in alerts if a["detector"] == "missing_data"),
                key=lambda a: (a["period_end"], a["alert_id"]),
            )
            suppressed, _ = read_suppressed(
                S3Objects(), data_bucket, report_days(dataset.start.date(), dataset.end.date())
            )
            label_started = time.perf_counter()
            labels = label_alerts(ApiFeedback(client), alerts, dataset.incidents)
            label_seconds = time.perf_counter() - label_started
            say(f"  operator labels: {sum(labels.values())} alerts labelled through the API in {label_seconds:.1f}s; "
                f"threshold_tuning (ThresholdTuning schedule) for the night of {dataset.end:%Y-%m-%d} ...")  # fmt: skip
            tuned = stack.trigger(TUNING, "ThresholdTuning", {"time": stamp(dataset.end)})
            tuning.metrics.clear_metrics()
            tuning_records = [  # what the run decided per integration and metric, and why
                json.loads(s3.get_object(Bucket=data_bucket, Key=listed["Key"])["Body"].read())
                for listed in s3.list_objects_v2(Bucket=data_bucket, Prefix="tuning/").get("Contents", [])
                if listed["Key"] in {record_key(i, tuned["run_id"]) for i in last_sync_at}
            ]
            daily = stack.trigger(REPORT, "DailyReport", {"time": stamp(dataset.end)})
            last = (dataset.end - timedelta(days=1)).date()
            first = max(dataset.start.date(), last - timedelta(days=30))
            request = {"action": "build_report", "start": first.isoformat(), "end": last.isoformat()}
            monthly = stack.handler(REPORT)(request, lambda_context(REPORT))
            report.metrics.clear_metrics()
            daily_page = fetch_report(stack, daily, out / "report-daily")
            month_page = fetch_report(stack, monthly, out / "report")
            triage = [a for a in alerts if a["severity"] != "info"]
            dead = {
                q: len(read_queue(stack, q))
                for q in ("IngestDLQ", "SupportTriageDLQ", "KpiReportDLQ", "TeamQueuesDLQ")
            }
    finally:
        scorer.observers.remove(stats.observe)
        retrainer.observers.remove(jobs.append)
        if "desk" in locals():
            desk.close()

    alerts.sort(key=lambda a: (a["period_start"], a["integration_id"], a["metric"]))
    out.mkdir(parents=True, exist_ok=True)
    jsonl, table = write_alerts(alerts, out)
    results: list[dict[str, Any]] = []
    for incident in dataset.incidents:
        by_detector = {d: caught(incident, [a for a in alerts if a["detector"] == d]) for d in DETECTORS}
        found = [a for a in by_detector.values() if a is not None]
        hit = min(found, key=lambda a: a["period_start"]) if found else None
        delay = None
        if hit:
            delay = (datetime.fromisoformat(hit["period_start"]) - incident.start) // timedelta(hours=1)
        results.append({**incident_to_dict(incident), "caught": hit is not None, "delay_hours": delay,
                        "caught_by": [d for d, a in by_detector.items() if a is not None],
                        "alert_summary": hit["summary"] if hit else None,
                        "alert_summaries": {d: a["summary"] for d, a in by_detector.items() if a}})  # fmt: skip
    per_integration = Counter((a["integration_id"], a["severity"]) for a in alerts)
    suppressed_by = Counter(x.cause for x in suppressed)  # what the scorer and the nightly forest suppressed
    suppressed_detectors = Counter(x.alert_id.rsplit("-", 1)[0] for x in suppressed)
    in_campaign = [
        a for a in alerts
        if a["integration_id"] == campaign.integration_id
        and campaign.covers(datetime.fromisoformat(a["period_start"]))
    ]  # fmt: skip
    report_suppressed = json.loads((month_page.parent / "summary.json").read_text())["suppressed"]
    report_counts = {k: report_suppressed[k] for k in ("total", "snooze", "calendar", "other")}
    missing = [a for a in freshness_alerts if a["severity"] != "info"]
    resolutions = [a for a in freshness_alerts if a.get("resolves")]
    missing_incidents = [i for i in incidents if any(a in i["alert_ids"] for a in missed["alert_ids"])]
    decisions = [
        {"integration_id": r["integration_id"], "status": r["status"], "labels": r["labels"],
         "labels_matched": r["labels_matched"], "reason": r["reason"],
         "metrics": [{k: m[k] for k in ("metric", "status", "reason", "labels", "current", "threshold")}
                     for m in r["metrics"]]}
        for r in sorted(tuning_records, key=lambda r: r["integration_id"])
    ]  # fmt: skip
    summary = {
        "files": stats.files,
        "statuses": dict(stats.statuses),
        "rows_in": stats.rows_in,
        "rows_scored": stats.rows_scored,
        "rows_rejected": stats.rows_rejected,
        "rows_reconcile": stats.rows_in == stats.rows_scored + stats.rows_rejected,
        "quarantined": stats.quarantined,
        "reports": stats.reports,
        "alerts_published": stats.alerts_published,
        "alerts_suppressed": len(suppressed),
        "alerts_suppressed_by_scorer": stats.alerts_suppressed,
        "alerts_suppressed_by_detector": dict(suppressed_detectors),
        "alerts_suppressed_by_snooze": suppressed_by["snooze"],
        "alerts_suppressed_by_calendar": suppressed_by["calendar"],
        "report_suppressed_counts": {
            k: report_suppressed[k] for k in ("total", "snooze", "calendar", "other")
        },
        "operator_api": {
            "url": api.url,
            "principal": OPERATOR,
            "snooze": {
                k: snooze[k]
                for k in (
                    "snooze_id",
                    "integration_id",
                    "metric",
                    "dimension",
                    "dimension_value",
                    "until",
                    "who",
                )
            },
            "calendar_event": {
                k: event[k] for k in ("event_id", "integration_id", "kind", "name", "start", "end", "who")
            },
        },
        "campaign": {
            "integration_id": campaign.integration_id,
            "name": campaign.name,
            "start": campaign.start.isoformat(),
            "end": campaign.end.isoformat(),
            "uplift": f"clicks x{campaign.factor} on every source for {campaign.hours} h",
            "alerts_published_in_window": len(in_campaign),
            "alerts_suppressed_by_calendar": suppressed_by["calendar"],
        },
        "missing_sync": {
            "integration_id": held_integration,
            "held_back_hours": held_hours,
            "check_at": check_at.isoformat(),
            "late": missed["late"],
            "alerts": [
                {k: a[k] for k in ("alert_id", "severity", "summary", "period_start", "period_end")}
                for a in missing
            ],
            "support_incidents": [
                {k: i[k] for k in ("incident_id", "team", "priority", "status")} for i in missing_incidents
            ],
            "resolved_at_check": resumed_at.isoformat(),
            "resolutions": [
                {k: a[k] for k in ("alert_id", "severity", "summary", "resolves")} for a in resolutions
            ],
        },
        "alerts_recorded_by_kpi_report": len(alerts),
        "alerts_for_support_triage": len(triage),
        "support_incidents": len(incidents),
        "incidents_by_team": dict(Counter(i["team"] for i in incidents)),
        "incidents_by_priority": dict(Counter(i["priority"] for i in incidents)),
        "incidents_acknowledged_by_operator": desk.acknowledged,
        "alert_labels_by_operator": dict(labels),
        "labels_via_api_seconds": round(label_seconds, 1),
        "threshold_tuning": {
            "run_id": tuned["run_id"],
            "as_of": tuned["as_of"],
            "thresholds_tuned": tuned["thresholds_tuned"],
            "changes": tuned["changes"],
            "decisions": decisions,
        },
        "sla_escalations": desk.sla_escalations,
        "team_queue_messages": {
            team: dict(Counter(m["event"] for m in messages)) for team, messages in team_messages.items()
        },
        "kpi_reports": {"daily": str(daily_page), "period": str(month_page)},
        "dead_letters": dead,
        "alerts_by_integration": {f"{i}/{s}": c for (i, s), c in sorted(per_integration.items())},
        "alerts_by_detector": dict(Counter(a["detector"] for a in alerts)),
        "nightly_retrain": {
            "run_id": planned["run_id"],
            "jobs_enqueued": planned["enqueued"],
            "jobs": [
                {
                    k: v
                    for k, v in job.record().items()
                    if k
                    in (
                        "integration_id",
                        "status",
                        "reason",
                        "model_version",
                        "features",
                        "training_rows",
                        "rows_scored",
                        "alerts_published",
                        "seconds",
                    )
                }
                for job in jobs
            ],
        },
        "incidents": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "incidents.json").write_text(
        json.dumps([incident_to_dict(i) for i in dataset.incidents], indent=2)
    )
    sections: list[tuple[str, Sequence[str], Sequence[Sequence[Any]]]] = [
        ("Injected incidents", ("kind", "integration", "window", "caught by", "delay (h)", "first alert"),
         [(r["kind"], r["integration_id"], f"{r['start']} … {r['end']}",
           ", ".join(r["caught_by"]) if r["caught"] else "MISSED", r["delay_hours"],
           r["alert_summaries"]) for r in results]),
        ("Nightly isolation-forest retrain", ("integration", "status", "model version", "features",
                                              "training periods", "periods scored", "alerts", "seconds"),
         [(j.integration_id, j.status if not j.reason else f"{j.status}: {j.reason}", j.model_version,
           j.features, j.training_rows, j.rows_scored, j.alerts_published, j.seconds) for j in jobs]),
        ("Support incidents (support_triage)", ("opened", "integration", "team", "priority", "status",
                                                 "severity", "alerts", "escalations", "summary"),
         [(i["opened_at"], i["integration_id"], i["team"], i["priority"], i["status"], i["severity"],
           i["count"], [f"{x['level']} ({x['reason']})" for x in i["escalations"]], i["summary"])
          for i in incidents]),
        ("Pipeline", ("measure", "value"),
         [(k, v) for k, v in summary.items()
         if k not in ("incidents", "alerts_by_integration", "nightly_retrain", "operator_api", "campaign",
                      "missing_sync", "threshold_tuning")]),
        ("Operator API (snooze and calendar, before the backfill)", ("what", "id", "integration", "details", "by"),
         [("snooze", snooze["snooze_id"], snooze["integration_id"],
           f"metric {snooze['metric']} {snooze['dimension']}={snooze['dimension_value']} until {snooze['until']}: "
           f"{summary['alerts_suppressed_by_snooze']} alert(s) "
           "suppressed", snooze["who"]),
          ("calendar " + event["kind"], event["event_id"], event["integration_id"],
           f"{event['name']}, {event['start']} … {event['end']}: {len(in_campaign)} alert(s) published in its "
           f"window, {summary['alerts_suppressed_by_calendar']} suppressed by the calendar", event["who"]),
          ("report's suppressed counts", monthly["report"], "all",
           ", ".join(f"{k} {v}" for k, v in report_counts.items()), "kpi_report")]),
        ("Missing sync (freshness_check)", ("when", "alert", "severity", "summary", "support incident"),
         [*[(a["period_end"], a["alert_id"], a["severity"], a["summary"],
             ", ".join(f"{i['incident_id']} ({i['team']}, {i['priority']})" for i in missing_incidents))
            for a in missing],
          *[(resumed_at.isoformat(), a["alert_id"], a["severity"], a["summary"], "resolves " + a["resolves"])
            for a in resolutions]]),
        ("Threshold tuning from the operator's labels", ("integration", "metric", "status", "labels",
                                                         "old -> new", "reason"),
         [(d["integration_id"], m["metric"], m["status"], m["labels"],
           f"{m['current']} -> {m['threshold']}" if m["status"] == "tuned" else m["current"], m["reason"])
          for d in decisions for m in d["metrics"]]
         + [(d["integration_id"], "", d["status"], d["labels"], "", d["reason"])
            for d in decisions if not d["metrics"]]),
        ("Alerts", ("id", "integration", "detector", "severity", "metric", "dimension", "value", "period",
                    "observed", "expected", "change %", "score", "direction", "top contributor", "share",
                    "summary"),
         [alert_row(a) for a in alerts if a["severity"] != "info"]),
    ]  # fmt: skip
    (out / "index.html").write_text(html_page("kpi-sentinel demo", sections), encoding="utf-8")

    say("")
    say(f"Files: {stats.files} ({', '.join(f'{k} {v}' for k, v in sorted(stats.statuses.items()))})")
    say(f"Rows: {stats.rows_in} in = {stats.rows_scored} scored + {stats.rows_rejected} rejected"
        f" ({'reconciled' if summary['rows_reconcile'] else 'DO NOT RECONCILE'})")  # fmt: skip
    for line in stats.quarantined:
        say(f"Quarantined: {line}")
    say(f"Alerts: {len(alerts)} recorded by kpi_report, {len(triage)} of them (warning and above) for support "
        f"triage; {len(suppressed)} suppressed ("
        + ", ".join(f"{d} {n}" for d, n in sorted(suppressed_detectors.items()))
        + f"): {suppressed_by['snooze']} by the API snooze on "
        f"{SNOOZED_LABEL}, {suppressed_by['calendar']} by the calendar; "
        f"dead letters: {sum(dead.values())}")  # fmt: skip
    say(f"Campaign in the calendar: {campaign.name} on {campaign.integration_id}, {campaign.start:%Y-%m-%d %H:%M}-"
        f"{campaign.end:%H:%M} (registered through the API): {len(in_campaign)} alert(s) published in its window, "
        f"{suppressed_by['calendar']} suppressed by the calendar; the month's report ({monthly['report']}) counts suppressed "
        + ", ".join(f"{k} {v}" for k, v in report_counts.items()))  # fmt: skip
    say(f"Missing sync: {held_integration}'s last {held_hours} h of syncs held back; freshness_check at "
        f"{check_at:%Y-%m-%d %H:%M:%S} found {missed['late']} late integration(s) and published "
        f"{missed['alerts_published']} missing_data alert(s)")  # fmt: skip
    for a in missing:
        say(f"  {a['severity']} {a['alert_id']}: {a['summary']} (recorded by kpi_report)")
    for i in missing_incidents:
        say(f"  support triage: incident {i['incident_id']} for {i['team']}, {i['priority']}, {i['status']}")
    for a in resolutions:
        say(f"  after the held-back syncs arrived: {a['severity']} {a['alert_id']}: {a['summary']}")
    for integration in sorted({i for i, _ in per_integration}):
        counts = ", ".join(
            f"{s} {per_integration[(integration, s)]}" for s in ("critical", "warning", "info")
        )
        say(f"  {integration}: {counts}")
    per_detector = Counter(a["detector"] for a in alerts)
    say(f"Alerts by detector: {', '.join(f'{d} {n}' for d, n in sorted(per_detector.items()))}")
    say("Injected incidents:")
    for r in results:
        if r["caught"]:
            verdict = f"CAUGHT by {' and '.join(r['caught_by'])} after {r['delay_hours']} h"
            say(f"  {r['kind']:<14} {r['integration_id']:<16} {r['start'][:16]}  {verdict}")
            for detector, text in r["alert_summaries"].items():
                say(f"      {detector}: {text}")
        else:
            say(f"  {r['kind']:<14} {r['integration_id']:<16} {r['start'][:16]}  MISSED")
    say(f"Support incidents: {len(incidents)} ("
        + ", ".join(f"{t} {n}" for t, n in sorted(Counter(i["team"] for i in incidents).items()))
        + f"); {desk.acknowledged} acknowledged by the operator, {desk.sla_escalations} escalated past their SLA")  # fmt: skip
    for team, messages in team_messages.items():
        events = Counter(m["event"] for m in messages)
        say(f"  {team} queue: " + (", ".join(f"{e} {n}" for e, n in sorted(events.items())) or "no messages"))
    say(f"Labels: the operator marked {labels['true_positive']} alerts true and {labels['false_positive']} false "
        f"(inside or outside an injected incident) through the API in {label_seconds:.1f}s; the report's "
        "precision comes from them")  # fmt: skip
    say(
        f"Threshold tuning ({tuned['as_of'][:10]}): {tuned['thresholds_tuned']} threshold(s) changed"
        + "".join(f"; {c['integration_id']}/{c['metric']} {c['old']} -> {c['new']}" for c in tuned["changes"])
    )
    if tuned["changes"]:
        say(
            "  the scorer applies a tuned threshold from the integration's next sync (no operator override wins)"
        )
    for d in decisions:
        why = d["reason"] or "; ".join(f"{m['metric']}: {m['reason']}" for m in d["metrics"])
        say(
            f"  {d['integration_id']}: {d['status']} ({d['labels']} labels, {d['labels_matched']} matched): {why}"
        )
    say(f"KPI report (daily, {daily['report']}): {daily_page.resolve()}")
    say(f"KPI report ({monthly['report']}, the injected incidents): {month_page.resolve()}")
    say(f"Caught {sum(r['caught'] for r in results)} of {len(results)} injected incidents "
        f"in {summary['seconds']}s.")  # fmt: skip
    say(f"Output: {out.resolve()}  (report/index.html: the KPI report; report-daily/; the demo's index.html, "
        f"{jsonl.name}, {table.name}, summary.json)")  # fmt: skip
    return summary


def gunzip_if_needed(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
