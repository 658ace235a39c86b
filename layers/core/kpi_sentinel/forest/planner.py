"""Use case: on a schedule, enqueue one isolation-forest job per active integration.

Active integrations come from the state table's ``ActiveIntegrations`` index, which the scorer keeps up
to date on every commit (integration id, tier, granularity, last sync time), spread over
:data:`SHARDS` partitions so 50,000 integrations are read with a handful of Query pages and no Scan,
and never by listing files. An integration is active when it synced within ``active_within_days``.

Two schedules use it: the nightly retrain (every active integration, ``mode=retrain``) and the
business-tier scoring (``mode=score``, ``tier=business``, every 30 minutes). Jobs carry a run id (the
schedule's time to the minute) and the time they are computed ``as_of``, so a redelivered job does
the same work and stores the same model version.

No numpy, pandas or scikit-learn here: the planner runs with the core and Powertools layers only.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kpi_sentinel.ports import PlannerPorts

SHARDS = 16
MODES = ("retrain", "score")
TIERS = ("standard", "business")
SEND_BATCH = 500  # jobs handed to the queue adapter at a time (it sends 10 per SQS call)


class BadSchedule(ValueError):
    """A schedule input the planner cannot run; the message names the field."""


def shard_of(integration_id: str) -> str:
    """The index partition an integration lives in (stable: CRC-32 of its id)."""
    return f"shard#{zlib.crc32(integration_id.encode()) % SHARDS:02d}"


def run_id(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%MZ")


@dataclass(frozen=True)
class PlanRequest:
    mode: str
    tier: str | None
    as_of: datetime | None  # replaying history (local runner, backfills); None: now

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> PlanRequest:
        mode = event.get("mode", "retrain")
        if mode not in MODES:
            raise BadSchedule(f"schedule input 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
        tier = event.get("tier")
        if tier is not None and tier not in TIERS:
            raise BadSchedule(f"schedule input 'tier' must be one of {', '.join(TIERS)}, got {tier!r}")
        as_of = None
        if event.get("as_of") is not None:
            try:
                as_of = datetime.fromisoformat(str(event["as_of"]))
            except ValueError as exc:
                raise BadSchedule(f"schedule input 'as_of' is not an ISO 8601 time: {exc}") from exc
            if as_of.tzinfo is None:
                raise BadSchedule("schedule input 'as_of' needs a UTC offset")
        return cls(mode, tier, as_of)


@dataclass
class PlanOutcome:
    mode: str
    tier: str | None
    run_id: str
    as_of: str
    enqueued: int = 0
    by_tier: dict[str, int] | None = None


def plan(request: PlanRequest, ports: PlannerPorts, active_within_days: float = 7.0) -> PlanOutcome:
    now = ports.clock()
    as_of = (request.as_of or now).astimezone(UTC).replace(second=0, microsecond=0)
    since = (as_of - timedelta(days=active_within_days)).timestamp()
    outcome = PlanOutcome(request.mode, request.tier, run_id(as_of), as_of.isoformat(), by_tier={})
    batch: list[dict[str, Any]] = []
    by_tier: dict[str, int] = {}
    for item in ports.index.active(since, request.tier):
        batch.append(
            {
                "integration_id": item.integration_id,
                "mode": request.mode,
                "run_id": outcome.run_id,
                "as_of": outcome.as_of,
                "granularity": item.granularity,
                "tier": item.tier,
            }
        )
        by_tier[item.tier] = by_tier.get(item.tier, 0) + 1
        if len(batch) >= SEND_BATCH:
            ports.queue.send(batch)
            outcome.enqueued += len(batch)
            batch = []
    if batch:
        ports.queue.send(batch)
        outcome.enqueued += len(batch)
    outcome.by_tier = by_tier
    return outcome
