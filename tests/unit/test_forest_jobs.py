"""The forest use cases on in-memory adapters: planner, nightly retrain, business-tier scoring.

The history they read is written by the real scorer: ``process_sync`` over 40 days of the demo data
of one integration, with a funnel break (signups, ftds, deposits and NGR halved, clicks normal) on the
last day from 10:00 to 14:59 UTC.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from kpi_sentinel.adapters.memory import (
    MemoryControl,
    MemoryLedger,
    MemoryObjects,
    MemoryPublisher,
    MemoryQueue,
    MemoryState,
)
from kpi_sentinel.forest import retrain
from kpi_sentinel.forest.planner import SEND_BATCH, BadSchedule, PlanRequest, plan
from kpi_sentinel.forest.retrain import BadJob, ForestSettings, Job, JobOutcome, model_prefix, run_job
from kpi_sentinel.ports import ForestPorts, PlannerPorts, ScorerPorts
from kpi_sentinel.sync import ScorerSettings, SyncRef, process_sync
from kpi_sentinel.synthetic import SyncFile, demo_dataset

IID = "acme-ads"
INGEST, DATA = "ingest", "data"
KEY = b"k" * 32
SETTINGS = ForestSettings(data_bucket=DATA, min_training_days=14)
START = datetime(2026, 9, 1, tzinfo=UTC)
END = START + timedelta(days=40)  # 2026-10-11, the demo data's end
LAST_DAY = END - timedelta(days=1)
BREAK = [LAST_DAY + timedelta(hours=h) for h in range(10, 15)]
PREFIX = model_prefix(IID)


def _halve_the_funnel(sync: SyncFile) -> SyncFile:
    """signups, ftds, deposits and NGR halved on every source; clicks untouched."""
    header, *rows = sync.body.decode().splitlines()
    broken = [header]
    for row in rows:
        ts, source, clicks, signups, ftds, deposits, ngr = row.split(",")
        halves = [str(int(v) // 2) for v in (signups, ftds, deposits)]
        broken.append(",".join([ts, source, clicks, *halves, f"{float(ngr) / 2:.2f}"]))
    return replace(sync, body=("\n".join(broken) + "\n").encode())


@dataclass(frozen=True)
class ScoredHistory:
    objects: MemoryObjects
    state: MemoryState


@pytest.fixture(scope="module")
def scored_history() -> ScoredHistory:
    dataset = demo_dataset(days=40, seed=3)
    assert (dataset.start, dataset.end) == (START, END)
    syncs = [
        _halve_the_funnel(s) if s.period_start in BREAK else s
        for s in dataset.files
        if s.integration_id == IID
    ]
    objects, state = MemoryObjects(), MemoryState()
    now = {"at": START}
    state.clock = lambda: now["at"].timestamp()  # last_sync_at in the active index
    ports = ScorerPorts(objects, state, MemoryControl(), MemoryPublisher(), lambda: now["at"])
    settings = ScorerSettings(ingest_bucket=INGEST, data_bucket=DATA)
    for n, sync in enumerate(syncs):
        now["at"] = sync.period_start
        objects.put(INGEST, sync.key, sync.body, "text/csv")
        outcome = process_sync(SyncRef(INGEST, sync.key, len(sync.body), f"v{n}"), ports, settings)
        assert outcome.status == "scored", outcome.reason
    assert len(syncs) == 40 * 24
    return ScoredHistory(objects, state)


@dataclass
class World:
    objects: MemoryObjects
    state: MemoryState
    control: MemoryControl
    ledger: MemoryLedger
    publisher: MemoryPublisher
    now: datetime = END + timedelta(hours=2)

    @property
    def ports(self) -> ForestPorts:
        return ForestPorts(
            self.objects, self.state, self.control, self.ledger, self.publisher, lambda: self.now, lambda: KEY
        )

    def run(
        self, mode: str, as_of: datetime, settings: ForestSettings = SETTINGS, iid: str = IID
    ) -> JobOutcome:
        job = Job(iid, mode, as_of.strftime("%Y%m%dT%H%MZ"), as_of)
        return run_job(job, self.ports, settings)

    def json(self, key: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.objects.get(DATA, key))
        return loaded

    def model_keys(self, iid: str = IID) -> list[str]:
        return [k for k in self.objects.keys(DATA, model_prefix(iid)) if "/runs/" not in k]

    def flip_byte(self, key: str, at: int = 100) -> None:
        body = self.objects.get(DATA, key)
        self.objects.put(DATA, key, body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :], "")


@pytest.fixture
def world(scored_history: ScoredHistory) -> Iterator[World]:
    objects, state = MemoryObjects(), MemoryState()
    objects.objects = dict(scored_history.objects.objects)
    state.items, state.index = dict(scored_history.state.items), dict(scored_history.state.index)
    retrain._MODELS.clear()  # a cold container; tests that want a warm one say so
    yield World(objects, state, MemoryControl(), MemoryLedger(), MemoryPublisher())
    retrain._MODELS.clear()


def _starts(alerts: Any) -> set[str]:
    return {a["period_start"] for a in alerts}


BREAK_STARTS = {b.isoformat() for b in BREAK}


# --- nightly retrain --------------------------------------------------------------------------------------


def test_given_40_days_of_scored_history_when_retrained_then_a_signed_model_is_stored_and_the_break_alerts(
    world: World,
) -> None:
    outcome = world.run("retrain", END)

    version = "20261011T0000Z"
    assert outcome.status == "trained", outcome.reason
    assert outcome.model_version == version
    assert outcome.features == ["clicks", "conversion", "deposits", "ftds", "ngr", "signup_rate", "signups"]
    assert 14 <= outcome.training_days <= 40
    assert outcome.training_rows >= 14 * 24
    assert outcome.rows_scored == 24  # the last day
    assert world.model_keys() == [
        f"{PREFIX}{version}.joblib",
        f"{PREFIX}{version}.json",
        f"{PREFIX}latest.json",
    ]
    body, metadata = (
        world.objects.get(DATA, f"{PREFIX}{version}.joblib"),
        world.json(f"{PREFIX}{version}.json"),
    )
    pointer = world.json(f"{PREFIX}latest.json")
    assert pointer["version"] == version
    assert pointer["sha256"] == metadata["sha256"] == hashlib.sha256(body).hexdigest()
    assert metadata["training_days"] == outcome.training_days
    assert metadata["window_end"] == LAST_DAY.isoformat()
    assert metadata["threshold_percentile"] == 1.0  # hourly data's default: no percentile configured
    # the break is caught, in the bad direction, and published once
    published = world.publisher.published
    assert _starts(published) >= BREAK_STARTS
    for alert in (a for a in published if a["period_start"] in BREAK_STARTS):
        assert alert["detector"] == "isolation_forest"
        assert alert["severity"] in ("warning", "critical")
        assert alert["direction"] == "down"
        assert alert["source_key"] == f"{PREFIX}{version}.joblib"
    assert outcome.alerts_published == len(published)
    assert world.ledger.published[IID] == {a["alert_id"] for a in published}
    record = world.json(f"{PREFIX}runs/{version}-retrain.json")
    assert record["status"] == "trained"
    assert record["alert_ids"] == [a["alert_id"] for a in published]


def test_given_a_rerun_of_the_same_retrain_then_nothing_is_published_twice_and_the_model_is_byte_identical(
    world: World,
) -> None:
    first = world.run("retrain", END)
    stored = {k: world.objects.get(DATA, k) for k in world.model_keys()}
    published = list(world.publisher.published)
    retrain._MODELS.clear()  # the redelivery lands on another container

    again = world.run("retrain", END)

    assert again.status == "trained"
    assert again.alerts_published == 0
    assert again.alerts_already_published == first.alerts_published > 0
    assert world.publisher.published == published
    assert {k: world.objects.get(DATA, k) for k in world.model_keys()} == stored


def test_given_too_little_history_when_retrained_then_skipped_with_the_days_and_no_model(
    world: World,
) -> None:
    as_of = START + timedelta(days=10)  # the scorer warms up for 8 days: 1 usable day

    outcome = world.run("retrain", as_of)

    assert outcome.status == "skipped"
    assert outcome.reason is not None
    found = re.match(r"too little history: (\d+) usable day\(s\) and (\d+) period\(s\)", outcome.reason)
    assert found is not None, outcome.reason
    assert int(found[1]) < 14
    assert "needs 14 days and 48 periods" in outcome.reason
    assert world.model_keys() == []
    assert world.publisher.published == []
    assert world.json(f"{PREFIX}runs/20260911T0000Z-retrain.json")["status"] == "skipped"


def test_given_an_integration_still_in_warm_up_when_retrained_then_skipped_not_crashed(world: World) -> None:
    outcome = world.run("retrain", START + timedelta(days=5))

    assert outcome.status == "skipped"
    assert outcome.reason is not None
    assert outcome.reason.startswith("too little history: 0 usable day(s)")


def test_given_an_integration_that_never_synced_when_retrained_then_skipped_with_the_reason(
    world: World,
) -> None:
    outcome = world.run("retrain", END, iid="globex-traffic")

    assert outcome.status == "skipped"
    assert outcome.reason == "no scorer state: the integration has never synced"
    assert world.model_keys("globex-traffic") == []
    assert (
        world.json(f"{model_prefix('globex-traffic')}runs/20261011T0000Z-retrain.json")["status"] == "skipped"
    )


def test_given_old_model_versions_when_retrained_then_versions_past_retention_are_deleted_and_latest_kept(
    world: World,
) -> None:
    old = [
        f"{PREFIX}20260801T0200Z.joblib",
        f"{PREFIX}20260801T0200Z.json",
        f"{PREFIX}runs/20260801T0200Z-retrain.json",
        f"{PREFIX}runs/20260801T0230Z-score.json",
    ]
    recent = [
        f"{PREFIX}20261001T0200Z.joblib",
        f"{PREFIX}20261001T0200Z.json",
        f"{PREFIX}runs/20261001T0200Z-retrain.json",
    ]
    for key in old + recent:
        world.objects.put(DATA, key, b"{}", "application/json")

    world.run("retrain", END, replace(SETTINGS, retention_days=30))

    keys = set(world.objects.keys(DATA, PREFIX))
    assert keys.isdisjoint(old)
    assert set(recent) <= keys
    assert {f"{PREFIX}20261011T0000Z.joblib", f"{PREFIX}20261011T0000Z.json", f"{PREFIX}latest.json"} <= keys


def test_given_a_retention_shorter_than_the_model_age_then_the_latest_version_is_still_kept(
    world: World,
) -> None:
    world.now = END + timedelta(days=5)

    world.run("retrain", END, replace(SETTINGS, retention_days=1))
    retrain._MODELS.clear()
    scored = world.run("score", END)

    assert {f"{PREFIX}20261011T0000Z.joblib", f"{PREFIX}20261011T0000Z.json"} <= set(world.model_keys())
    assert scored.status == "scored"
    assert scored.model_version == "20261011T0000Z"


# --- business-tier scoring --------------------------------------------------------------------------------

AT_15 = LAST_DAY + timedelta(hours=15)
LOOKBACK_5H = replace(SETTINGS, score_lookback_minutes=300)


def _trained_the_night_before(world: World) -> None:
    """The model of the night before the break (trained on the days before it), cache dropped."""
    world.now = LAST_DAY + timedelta(hours=2)
    assert world.run("retrain", LAST_DAY).status == "trained"
    world.publisher.published.clear()
    world.now = AT_15 + timedelta(minutes=5)
    retrain._MODELS.clear()


def test_given_no_model_yet_when_scored_then_no_model_and_nothing_published(world: World) -> None:
    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.status == "no_model"
    assert outcome.reason is not None
    assert "no model stored yet" in outcome.reason
    assert world.publisher.published == []
    assert world.json(f"{PREFIX}runs/{AT_15:%Y%m%dT%H%MZ}-score.json")["status"] == "no_model"


def test_given_last_nights_model_when_the_break_is_scored_then_its_hours_are_published(world: World) -> None:
    _trained_the_night_before(world)

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.status == "scored"
    assert outcome.model_version == "20261010T0000Z"
    assert outcome.rows_scored == 5
    assert _starts(world.publisher.published) == BREAK_STARTS
    assert outcome.alerts_published == 5
    assert {a["severity"] for a in world.publisher.published} <= {"warning", "critical"}


def test_given_a_score_job_rerun_then_it_publishes_nothing_twice(world: World) -> None:
    _trained_the_night_before(world)
    first = world.run("score", AT_15, LOOKBACK_5H)

    again = world.run("score", AT_15, LOOKBACK_5H)

    assert first.alerts_published == 5
    assert again.alerts_published == 0
    assert again.alerts_already_published == 5
    assert len(world.publisher.published) == 5


def test_given_a_tampered_model_file_when_scored_cold_then_refused_and_nothing_published(
    world: World,
) -> None:
    _trained_the_night_before(world)
    world.flip_byte(f"{PREFIX}20261010T0000Z.joblib")

    outcome = world.run("score", AT_15, LOOKBACK_5H)  # no exception: the EWMA goes on alone

    assert outcome.status == "refused"
    assert outcome.reason is not None
    assert "SHA-256" in outcome.reason
    assert world.publisher.published == []
    assert world.json(f"{PREFIX}runs/{AT_15:%Y%m%dT%H%MZ}-score.json")["status"] == "refused"


def test_given_tampered_metadata_when_scored_cold_then_refused_for_the_hmac(world: World) -> None:
    _trained_the_night_before(world)
    key = f"{PREFIX}20261010T0000Z.json"
    metadata = world.json(key)
    metadata["threshold"] = -1.0  # silence the model
    world.objects.put(DATA, key, json.dumps(metadata).encode(), "application/json")

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.status == "refused"
    assert outcome.reason is not None
    assert "HMAC" in outcome.reason
    assert world.publisher.published == []


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ("latest.json", "not JSON"),
        ("latest-missing-version", "not a version pointer"),
        ("metadata-missing", "metadata is missing"),
        ("model-missing", "model file is missing"),
    ],
)
def test_given_a_broken_model_store_when_scored_then_refused_not_crashed(
    world: World, broken: str, why: str
) -> None:
    _trained_the_night_before(world)
    if broken == "latest.json":
        world.objects.put(DATA, f"{PREFIX}latest.json", b"{not json", "application/json")
    elif broken == "latest-missing-version":
        world.objects.put(DATA, f"{PREFIX}latest.json", b'{"sha256": "00"}', "application/json")
    elif broken == "metadata-missing":
        world.objects.delete(DATA, [f"{PREFIX}20261010T0000Z.json"])
    else:
        world.objects.delete(DATA, [f"{PREFIX}20261010T0000Z.joblib"])

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.status == "refused"
    assert why in (outcome.reason or "")
    assert world.publisher.published == []


def test_given_a_warm_cache_then_a_tampered_file_behind_an_unchanged_pointer_is_never_read(
    world: World,
) -> None:
    """Documents the cache: models are cached by (integration, version, digest of the pointer).

    A warm container keeps scoring with the model it verified when the file changes behind an unchanged
    ``latest.json`` (the tampered bytes are never unpickled); once the pointer names another digest the
    cache misses and the file is verified again, and refused.
    """
    _trained_the_night_before(world)
    world.now = AT_15
    assert world.run("score", BREAK[0]).status == "scored"  # 09:00 scored, the model verified and cached
    world.now = AT_15 + timedelta(minutes=5)
    model_key = f"{PREFIX}20261010T0000Z.joblib"
    world.flip_byte(model_key)

    warm = world.run("score", AT_15, LOOKBACK_5H)

    assert warm.status == "scored"
    assert _starts(world.publisher.published) == BREAK_STARTS
    pointer = world.json(f"{PREFIX}latest.json")
    pointer["sha256"] = hashlib.sha256(world.objects.get(DATA, model_key)).hexdigest()
    world.objects.put(DATA, f"{PREFIX}latest.json", json.dumps(pointer).encode(), "application/json")

    repointed = world.run("score", AT_15 + timedelta(minutes=30), LOOKBACK_5H)

    assert repointed.status == "refused"
    assert repointed.reason is not None
    assert "disagree on the model digest" in repointed.reason


def test_given_a_config_narrowed_since_the_retrain_when_the_break_is_scored_then_it_still_alerts(
    world: World,
) -> None:
    _trained_the_night_before(world)  # seven features, from the config the scorer inferred
    world.control.configs[IID] = {
        "integration_id": IID,
        "granularity": "hour",
        "dimensions": ["source"],
        "metrics": [{"name": "clicks"}, {"name": "signups", "bad_direction": "down"}],
        "ratios": [{"name": "signup_rate", "numerator": "signups", "denominator": "clicks"}],
    }

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.status == "scored"
    assert _starts(world.publisher.published) >= BREAK_STARTS


# --- snoozes and known events -----------------------------------------------------------------------------


def _snooze(**fields: Any) -> dict[str, Any]:
    return {"integration_id": IID, "until": (AT_15 + timedelta(days=1)).timestamp(), **fields}


@pytest.mark.parametrize(
    ("snoozes", "suppressed"),
    [
        ([_snooze()], True),
        ([_snooze(metric="signup_rate"), _snooze(metric="signups")], True),
        ([_snooze(until=(AT_15 - timedelta(hours=1)).timestamp())], False),  # expired
        ([_snooze(integration_id="globex-traffic")], False),
        ([_snooze(metric="clicks")], False),
    ],
    ids=["integration", "its-metrics", "expired", "other-integration", "other-metric"],
)
def test_given_a_snooze_then_forest_alerts_it_covers_are_suppressed_and_counted(
    world: World, snoozes: list[Mapping[str, Any]], suppressed: bool
) -> None:
    _trained_the_night_before(world)
    world.control.snoozes = snoozes

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    if suppressed:
        assert outcome.alerts_suppressed == 5
        assert world.publisher.published == []
        assert world.ledger.published.get(IID, set()) == set()
        # Kept for the report: each suppressed alert once, with the snooze that suppressed it
        keys = world.objects.keys(DATA, "suppressed/")
        lines = [
            json.loads(x) for k in keys for x in gzip.decompress(world.objects.get(DATA, k)).splitlines()
        ]
        assert len(lines) == 5
        assert all(
            r["by"].startswith("snooze") and r["alert"]["detector"] == "isolation_forest" for r in lines
        )
    else:
        assert outcome.alerts_suppressed == 0
        assert _starts(world.publisher.published) == BREAK_STARTS


def _event(start: datetime, hours: int, integration_id: str = IID) -> dict[str, Any]:
    return {
        "event_id": f"campaign-{start:%H}",
        "integration_id": integration_id,
        "kind": "campaign",
        "name": "Signup flow A/B test",
        "start": start.timestamp(),
        "end": (start + timedelta(hours=hours)).timestamp(),
    }


@pytest.mark.parametrize("integration_id", [IID, "*"])
def test_given_a_known_event_over_part_of_the_break_then_those_hours_are_suppressed(
    world: World, integration_id: str
) -> None:
    _trained_the_night_before(world)
    world.control.calendar = [_event(BREAK[0], 2, integration_id), _event(BREAK[0], 9, "globex-traffic")]

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.alerts_suppressed == 2
    assert _starts(world.publisher.published) == {b.isoformat() for b in BREAK[2:]}


def test_given_an_unusable_calendar_then_the_forest_still_alerts(world: World) -> None:
    _trained_the_night_before(world)
    ends_before_it_starts = {**_event(BREAK[0], 2), "end": BREAK[0].timestamp() - 1}
    world.control.calendar = [ends_before_it_starts]

    outcome = world.run("score", AT_15, LOOKBACK_5H)

    assert outcome.status == "scored"
    assert _starts(world.publisher.published) == BREAK_STARTS


# --- job messages -----------------------------------------------------------------------------------------

GOOD_JOB = {
    "integration_id": IID,
    "mode": "retrain",
    "run_id": "20261011T0200Z",
    "as_of": "2026-10-11T02:00:00+00:00",
}


def test_given_a_good_job_message_then_it_is_read_with_defaults_and_as_of_in_utc() -> None:
    raw = {k: v for k, v in GOOD_JOB.items() if k != "mode"} | {"as_of": "2026-10-11T04:00:00+02:00"}
    job = Job.from_dict(raw)

    assert job == Job(IID, "retrain", "20261011T0200Z", datetime(2026, 10, 11, 2, tzinfo=UTC))
    assert job.as_of.utcoffset() == timedelta(0)
    with pytest.raises(BadJob, match="as_of"):
        Job.from_dict(raw | {"as_of": "2026-10-11T02:00:00"})  # no offset: ambiguous


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("integration_id", None),
        ("integration_id", ""),
        ("integration_id", "../acme-ads"),
        ("integration_id", "acme ads"),
        ("integration_id", "a" * 65),
        ("mode", "train"),
        ("mode", None),
        ("run_id", None),
        ("run_id", ""),
        ("run_id", "../../latest"),
        ("run_id", "2026/10/11"),
        ("run_id", "20261011T0200Z.json"),
        ("as_of", None),
        ("as_of", "yesterday"),
        ("as_of", "11/10/2026 02:00"),
    ],
)
def test_given_a_bad_job_field_then_bad_job_names_it(field: str, value: object) -> None:
    with pytest.raises(BadJob, match=f"job field '{field}'"):
        Job.from_dict({**GOOD_JOB, field: value})


def test_given_a_job_without_as_of_then_bad_job_names_it() -> None:
    with pytest.raises(BadJob, match="job field 'as_of'"):
        Job.from_dict({k: v for k, v in GOOD_JOB.items() if k != "as_of"})


# --- planner ----------------------------------------------------------------------------------------------

AS_OF = datetime(2026, 10, 11, 2, 0, 37, tzinfo=UTC)


def _index(*integrations: tuple[str, str, datetime]) -> MemoryState:
    state = MemoryState()
    for iid, tier, synced in integrations:
        state.clock = synced.timestamp
        state.commit(iid, 0, b"state", f"syncs/{iid}/x.csv#1", [], {"tier": tier, "granularity": 3600})
    return state


def _planned(
    state: MemoryState, request: PlanRequest, now: datetime = AS_OF
) -> tuple[list[Job], MemoryQueue]:
    queue = MemoryQueue()
    outcome = plan(request, PlannerPorts(state, queue, lambda: now))
    assert outcome.enqueued == len(queue.jobs)
    return [Job.from_dict(j) for j in queue.jobs], queue


def test_given_active_and_idle_integrations_then_one_job_per_active_one_with_the_schedules_run_id() -> None:
    state = _index(
        ("acme-ads", "standard", AS_OF - timedelta(hours=1)),
        ("globex-traffic", "business", AS_OF - timedelta(days=6, hours=23)),
        ("initech-support", "standard", AS_OF - timedelta(days=8)),
    )

    jobs, queue = _planned(state, PlanRequest("retrain", None, AS_OF))

    assert [j.integration_id for j in jobs] == ["acme-ads", "globex-traffic"]
    assert {j.run_id for j in jobs} == {"20261011T0200Z"}
    assert {j.as_of for j in jobs} == {AS_OF.replace(second=0)}
    assert {j.mode for j in jobs} == {"retrain"}
    assert [(j["tier"], j["granularity"]) for j in queue.jobs] == [("standard", 3600), ("business", 3600)]


def test_given_a_tier_then_only_that_tiers_active_integrations_are_planned() -> None:
    state = _index(
        ("acme-ads", "standard", AS_OF - timedelta(hours=1)),
        ("globex-traffic", "business", AS_OF - timedelta(hours=1)),
        ("hooli", "business", AS_OF - timedelta(days=30)),
    )

    jobs, _ = _planned(state, PlanRequest("score", "business", AS_OF))

    assert [(j.integration_id, j.mode) for j in jobs] == [("globex-traffic", "score")]


def test_given_no_as_of_then_the_plan_runs_at_the_clocks_minute() -> None:
    now = datetime(2026, 10, 12, 2, 0, 12, 345, tzinfo=UTC)
    state = _index(("acme-ads", "standard", now - timedelta(days=2)))

    jobs, _ = _planned(state, PlanRequest("retrain", None, None), now=now)

    assert [(j.run_id, j.as_of) for j in jobs] == [
        ("20261012T0200Z", datetime(2026, 10, 12, 2, 0, tzinfo=UTC))
    ]


def test_given_more_integrations_than_a_batch_then_every_one_is_enqueued_exactly_once() -> None:
    count = 2 * SEND_BATCH + 7
    state = _index(*[(f"tenant-{n:05d}", "standard", AS_OF - timedelta(minutes=n)) for n in range(count)])
    sizes: list[int] = []

    class CountingQueue(MemoryQueue):
        def send(self, jobs: Any) -> None:
            sizes.append(len(jobs))
            super().send(jobs)

    queue = CountingQueue()
    outcome = plan(PlanRequest("retrain", None, AS_OF), PlannerPorts(state, queue, lambda: AS_OF))

    assert outcome.enqueued == count
    assert outcome.by_tier == {"standard": count}
    assert sorted(j["integration_id"] for j in queue.jobs) == [f"tenant-{n:05d}" for n in range(count)]
    assert max(sizes) <= SEND_BATCH


def test_given_an_as_of_with_another_utc_offset_then_the_run_id_is_in_utc() -> None:
    state = _index(("acme-ads", "standard", AS_OF - timedelta(hours=1)))
    request = PlanRequest.from_event({"mode": "retrain", "as_of": "2026-10-11T04:00:00+02:00"})

    jobs, _ = _planned(state, request)

    assert [j.run_id for j in jobs] == ["20261011T0200Z"]
    assert jobs[0].as_of == datetime(2026, 10, 11, 2, tzinfo=UTC)


def test_given_a_schedule_input_then_it_is_read_with_defaults() -> None:
    assert PlanRequest.from_event({}) == PlanRequest("retrain", None, None)
    assert PlanRequest.from_event({"mode": "score", "tier": "business", "as_of": "2026-10-11T02:00:00Z"}) == (
        PlanRequest("score", "business", datetime(2026, 10, 11, 2, tzinfo=UTC))
    )
    offset = PlanRequest.from_event({"as_of": "2026-10-11T04:00:00+02:00"}).as_of
    assert offset == datetime(2026, 10, 11, 4, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"mode": "train"}, "schedule input 'mode' must be one of retrain, score, got 'train'"),
        ({"tier": "gold"}, "schedule input 'tier' must be one of standard, business, got 'gold'"),
        ({"as_of": "last night"}, "schedule input 'as_of' is not an ISO 8601 time"),
        ({"as_of": "2026-10-11T02:00:00"}, "schedule input 'as_of' needs a UTC offset"),
    ],
)
def test_given_a_bad_schedule_input_then_bad_schedule_names_the_field(
    event: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadSchedule) as raised:
        PlanRequest.from_event(event)

    assert str(raised.value).startswith(message)


def test_given_the_scorers_active_index_when_planned_and_run_then_the_planned_job_trains(
    world: World,
) -> None:
    jobs, _ = _planned(world.state, PlanRequest("retrain", None, END + timedelta(hours=2)), now=END)

    assert [j.integration_id for j in jobs] == [IID]
    outcome = run_job(jobs[0], world.ports, SETTINGS)

    assert outcome.status == "trained"
    assert outcome.model_version == "20261011T0200Z"


def test_given_no_configured_percentile_when_retrained_then_the_model_uses_its_granularitys_default(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2.5 is nobody's default and not the fallback (1): the model can only get it through the job's
    # granularity (hourly) looking up its own default.
    monkeypatch.setitem(retrain.DEFAULT_FOREST_PERCENTILE, 3600, 2.5)

    outcome = world.run("retrain", END)

    assert outcome.status == "trained", outcome.reason
    assert world.json(f"{PREFIX}{outcome.model_version}.json")["threshold_percentile"] == 2.5


@pytest.mark.parametrize(
    ("env_value", "granularity", "percentile"),
    [
        (None, 300, 0.1),
        (None, 3600, 1.0),
        (None, 86400, 0.3),
        ("0", 300, 0.1),
        ("2.5", 300, 2.5),
        ("2.5", 86400, 2.5),
    ],
)
def test_given_a_configured_percentile_or_none_then_each_granularity_gets_it_or_its_default(
    env_value: str | None, granularity: int, percentile: float
) -> None:
    env = {"DATA_BUCKET": DATA} | ({} if env_value is None else {"SCORE_THRESHOLD_PERCENTILE": env_value})

    settings = ForestSettings.from_env(env)

    assert settings.percentile_for(granularity) == percentile
