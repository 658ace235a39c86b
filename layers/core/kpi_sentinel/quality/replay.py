"""Replay a generated suite through the scorer's own code and collect what it would have alerted.

* ``ewma`` (the production detector) goes through :func:`kpi_sentinel.sync.process_sync` with the
  in-memory adapters: the exact use case the ``ewma_scorer`` function runs — key contract, parsing,
  validation, config inference, state serialisation between syncs, calendar, history writes — one
  sync per file, in drop order.
* ``isolation_forest`` goes through :func:`kpi_sentinel.forest.retrain.run_job`, the use case the
  ``iforest_retrainer`` function runs, on the very adapters the EWMA replay of the scenario left behind
  (its history store, state and calendar): see :func:`replay_forest`. It runs right after each
  scenario's EWMA replay (:func:`replay_with_forest`), so it reads exactly the history the scorer wrote.
* The baselines go through :func:`kpi_sentinel.sync.score_table`, the same validate → aggregate →
  score → alert core, with their detector in place of the EWMA (their state is not serialisable,
  which is the only step they skip).

Every replay checks that rows reconcile (in = scored + rejected) and that no file was quarantined:
a benchmark that silently dropped data would measure nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kpi_sentinel.adapters.memory import (
    MemoryControl,
    MemoryLedger,
    MemoryObjects,
    MemoryPublisher,
    MemoryState,
)
from kpi_sentinel.calendar import GLOBAL, parse_events
from kpi_sentinel.parsing import parse_sync_key, read_table
from kpi_sentinel.ports import ForestPorts, ScorerPorts
from kpi_sentinel.quality.evaluate import Coverage
from kpi_sentinel.quality.labels import KnownEvent, Scenario
from kpi_sentinel.scoring import DetectorFactory, IntegrationState
from kpi_sentinel.sync import ScorerSettings, SyncRef, process_sync, score_table

if TYPE_CHECKING:
    from kpi_sentinel.forest.retrain import ForestSettings

INGEST, DATA = "bench-ingest", "bench-data"
SETTINGS = ScorerSettings(ingest_bucket=INGEST, data_bucket=DATA, max_sync_bytes=2**31)
FOREST = "isolation_forest"  # the forest's detector name (kpi_sentinel.forest.explain.DETECTOR)
SIGNING_KEY = b"quality-benchmark-key"
DAY = timedelta(days=1)


class ReplayError(RuntimeError):
    """A file of the suite did not go through cleanly (quarantined, rejected rows, rows lost)."""


@dataclass
class ReplayResult:
    detector: str
    alerts: list[dict[str, Any]] = field(default_factory=list)  # what would have been published
    coverage: list[Coverage] = field(default_factory=list)
    files: int = 0
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    suppressed_by_calendar: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # detector-specific facts (the forest's jobs)


@dataclass(frozen=True)
class ScenarioAdapters:
    """One scenario's in-memory adapters as its EWMA replay left them: history, state, calendar."""

    scenario: Scenario
    objects: MemoryObjects
    state: MemoryState
    control: MemoryControl
    coverage: Coverage


@dataclass(frozen=True)
class ForestReplay:
    """How the benchmark runs the nightly forest over a scenario, in data time.

    The first ``retrain`` job comes on the first night whose training window holds what the retrainer
    needs (``min_training_days`` usable days and its minimum of periods); until one has trained a
    model, it is retried every night. Then a ``retrain`` every ``cadence_days`` nights (as production
    does nightly: training on the ``training_days`` before the night's day and scoring that day) and a
    ``score`` job for every other day (``score_lookback_minutes`` = one day, as of the next midnight),
    so every day after the first model is scored exactly once, by the latest model.

    ``min_training_days`` defaults to 7, not production's 14: the suite's 5-minute integrations have
    16 to 21 days, and at 14 the forest would see almost none of them.
    """

    cadence_days: int = 7
    min_training_days: int = 7
    training_days: int = 90
    trees: int = 100
    percentile: float | None = None  # None: production's per-granularity default

    def __post_init__(self) -> None:
        if self.cadence_days < 1:
            raise ValueError(f"forest cadence must be at least 1 day, got {self.cadence_days}")
        if self.min_training_days < 1:
            raise ValueError(f"forest min_training_days must be at least 1, got {self.min_training_days}")

    def settings(self) -> ForestSettings:
        from kpi_sentinel.forest.retrain import ForestSettings

        return ForestSettings(
            data_bucket=DATA,
            training_days=self.training_days,
            min_training_days=self.min_training_days,
            percentile=self.percentile,
            score_lookback_minutes=24 * 60,
            trees=self.trees,
        )


def calendar_items(events: Iterable[KnownEvent]) -> list[Mapping[str, Any]]:
    """Known events as the operators' calendar stores them."""
    return [
        {
            "event_id": f"{e.kind}-{n}",
            "integration_id": e.integration_id or GLOBAL,
            "kind": e.kind,
            "name": e.name,
            "start": e.start.timestamp(),
            "end": e.end.timestamp(),
        }
        for n, e in enumerate(events)
    ]


def replay_production(
    scenarios: Iterable[Scenario],
    use_calendar: bool = True,
    after: Callable[[ScenarioAdapters], None] | None = None,
) -> ReplayResult:
    """The EWMA scorer's use case, end to end on in-memory adapters.

    ``after`` is called with each scenario's adapters once its last file is scored (the forest replay
    reads them); its time is not counted in the result's ``seconds`` nor in ``details["cpu_seconds"]``
    (the process CPU time of the replay).
    """
    started, cpu = time.perf_counter(), time.process_time()
    elsewhere = cpu_elsewhere = 0.0
    out = ReplayResult("ewma")
    for scenario in scenarios:
        objects, state, control = MemoryObjects(), MemoryState(), MemoryControl()
        publisher = MemoryPublisher()
        if scenario.config is not None:
            control.configs[scenario.integration_id] = scenario.config
        if use_calendar:
            control.calendar = list(calendar_items(scenario.known_events))
        clock = _clock(scenario)
        ports = ScorerPorts(objects, state, control, publisher, clock)
        periods = 0
        for n, drop in enumerate(scenario.syncs):
            objects.put(INGEST, drop.key, drop.body, "application/octet-stream")
            outcome = process_sync(SyncRef(INGEST, drop.key, len(drop.body), f"v{n}"), ports, SETTINGS)
            if outcome.status != "scored" or outcome.rows_rejected:
                raise ReplayError(
                    f"{drop.key}: {outcome.status}, {outcome.rows_rejected} rows rejected ({outcome.reason})"
                )
            out.files += 1
            out.rows_in += outcome.rows_in
            out.rows_scored += outcome.rows_scored
            out.rows_rejected += outcome.rows_rejected
            out.suppressed_by_calendar += outcome.alerts_suppressed  # no snoozes here: all calendar
            periods += outcome.periods_scored
        blob = state.load(scenario.integration_id).blob
        assert blob is not None
        final = IntegrationState.from_bytes(blob)
        out.alerts.extend(dict(a) for a in publisher.published)
        coverage = Coverage(scenario.integration_id, final.granularity, len(final.series), periods)
        out.coverage.append(coverage)
        if after is not None:
            handed, handed_cpu = time.perf_counter(), time.process_time()
            after(ScenarioAdapters(scenario, objects, state, control, coverage))
            elsewhere += time.perf_counter() - handed
            cpu_elsewhere += time.process_time() - handed_cpu
    out.seconds = time.perf_counter() - started - elsewhere
    out.details["cpu_seconds"] = time.process_time() - cpu - cpu_elsewhere
    return out


def replay_forest(adapters: ScenarioAdapters, options: ForestReplay, out: ReplayResult) -> None:
    """The forest's use case (``run_job``) over one scenario, on the adapters its EWMA replay left.

    Jobs follow :class:`ForestReplay`'s schedule; their alerts go to a publisher of their own (with a
    ledger, a clock returning the job's ``as_of`` and the benchmark's signing key) and are appended to
    ``out.alerts``. ``out.coverage`` gets the EWMA's coverage of the scenario: the false-alarm rate of
    the forest is then per series-week of the same monitored data, comparable with the EWMA's, and the
    union's denominator is simply the EWMA's. ``out.details`` counts jobs by mode and status, days
    scored, each integration's first scored day (``first_scored``) and the process CPU time
    (``cpu_seconds``, the measure that other load on the machine does not inflate).
    ``out.rows_scored`` counts the periods the forest scored.
    """
    from kpi_sentinel.forest import retrain
    from kpi_sentinel.forest.retrain import Job, run_job

    started, cpu = time.perf_counter(), time.process_time()
    scenario, iid = adapters.scenario, adapters.scenario.integration_id
    settings = options.settings()
    retrain._MODELS.clear()  # per scenario; the cache is keyed by integration, version and digest anyway
    publisher, ledger = MemoryPublisher(), MemoryLedger()
    now = {"as_of": scenario.start}
    ports = ForestPorts(
        adapters.objects,
        adapters.state,
        adapters.control,
        ledger,
        publisher,
        lambda: now["as_of"],
        lambda: SIGNING_KEY,
    )
    last_day = _day(scenario.end - timedelta(microseconds=1))
    candidate = _first_trainable_day(adapters, settings)
    jobs: Counter[str] = Counter(out.details.get("jobs", {}))
    trained_on: datetime | None = None
    day = candidate if candidate is not None else last_day + DAY
    while day <= last_day:
        as_of = day + DAY
        now["as_of"] = as_of
        retrain_due = trained_on is None or (day - trained_on).days % options.cadence_days == 0
        outcome = run_job(
            Job(iid, "retrain" if retrain_due else "score", _run_id(as_of), as_of), ports, settings
        )
        jobs[f"{outcome.mode}/{outcome.status}"] += 1
        if outcome.mode == "retrain" and outcome.status == "trained" and trained_on is None:
            trained_on = day
            out.details.setdefault("first_scored", {})[iid] = day.isoformat()
        if outcome.mode == "retrain" and outcome.status != "trained" and trained_on is not None:
            # The night's retrain did not train: the day is still scored, by the latest model.
            outcome = run_job(Job(iid, "score", _run_id(as_of), as_of), ports, settings)
            jobs[f"{outcome.mode}/{outcome.status}"] += 1
        if outcome.status in ("trained", "scored"):
            out.details["days_scored"] = out.details.get("days_scored", 0) + 1
            out.rows_scored += outcome.rows_scored
            out.suppressed_by_calendar += outcome.alerts_suppressed  # no snoozes here: all calendar
        elif trained_on is not None:
            raise ReplayError(
                f"{iid}: forest {outcome.mode} job as of {as_of:%Y-%m-%d}: {outcome.status} ({outcome.reason})"
            )
        day += DAY
    out.details["jobs"] = dict(sorted(jobs.items()))
    out.details.setdefault("first_scored", {}).setdefault(iid, None)
    out.alerts.extend(dict(a) for a in publisher.published)
    out.coverage.append(adapters.coverage)
    out.seconds += time.perf_counter() - started
    out.details["cpu_seconds"] = out.details.get("cpu_seconds", 0.0) + time.process_time() - cpu


def _day(moment: datetime) -> datetime:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _run_id(as_of: datetime) -> str:
    return as_of.strftime("%Y%m%dT%H%MZ")  # what the planner gives a job scheduled at ``as_of``


def _first_trainable_day(adapters: ScenarioAdapters, settings: ForestSettings) -> datetime | None:
    """The first day the retrainer could train for: its window holds enough usable days and periods.

    Read from the raw history the scorer wrote, with the forest's own reader and usable-day rule,
    without touching the store (the retrainer's compacted days are left to its jobs). Nights before it
    would only record "too little history"; a retrain that still skips is retried the next night.
    """
    from kpi_sentinel.forest.features import feature_frame, read_history, usable_days
    from kpi_sentinel.forest.retrain import MIN_TRAINING_ROWS

    scenario, objects = adapters.scenario, adapters.objects
    keys = objects.keys(DATA, f"history/integration={scenario.integration_id}/")
    frame = feature_frame(read_history((k, objects.get(DATA, k)) for k in keys), None)
    if len(frame) == 0:
        return None
    day, end = _day(scenario.start) + DAY, _day(scenario.end - timedelta(microseconds=1)) + DAY
    while day < end:
        training = frame.between(day - timedelta(days=settings.training_days), day)
        rows = int((~training.calendar).sum())
        if usable_days(training) >= settings.min_training_days and rows >= MIN_TRAINING_ROWS:
            return day
        day += DAY
    return None


def union(name: str, first: ReplayResult, *others: ReplayResult) -> ReplayResult:
    """Several detectors' alerts over the same scenarios, as one (what users receive from all of them).

    Coverage is ``first``'s (the others must cover the same integrations); counts are summed.
    """
    covered = {c.integration_id for c in first.coverage}
    out = ReplayResult(name, alerts=list(first.alerts), coverage=list(first.coverage))
    out.suppressed_by_calendar = first.suppressed_by_calendar
    out.seconds = first.seconds
    for other in others:
        if {c.integration_id for c in other.coverage} != covered:
            raise ValueError(
                f"union {name!r}: {other.detector} and {first.detector} cover different integrations"
            )
        out.alerts.extend(other.alerts)
        out.suppressed_by_calendar += other.suppressed_by_calendar
        out.seconds += other.seconds
    return out


def replay_with_forest(
    scenarios: Sequence[Scenario], use_calendar: bool = True, options: ForestReplay | None = None
) -> tuple[ReplayResult, ReplayResult]:
    """``(ewma, isolation_forest)``: each scenario's EWMA replay, then the forest on its adapters."""
    forest = ReplayResult(FOREST)
    chosen = options or ForestReplay()
    ewma = replay_production(scenarios, use_calendar, after=lambda a: replay_forest(a, chosen, forest))
    return ewma, forest


def replay_core(
    name: str, scenarios: Iterable[Scenario], factory: DetectorFactory, use_calendar: bool = True
) -> ReplayResult:
    """Any detector through the scorer's validate → aggregate → score → alert core."""
    started = time.perf_counter()
    out = ReplayResult(name)
    for scenario in scenarios:
        events = parse_events(calendar_items(scenario.known_events)) if use_calendar else []
        state: IntegrationState | None = None
        series: set[tuple[str, str, str]] = set()
        periods = 0
        for drop in scenario.syncs:
            sync = parse_sync_key(drop.key)
            table = read_table(drop.body, sync, SETTINGS.max_sync_bytes)
            scored = score_table(
                table, drop.key, scenario.integration_id, state, scenario.config, [], events, factory
            )
            state = scored.state
            if scored.rejected:
                raise ReplayError(f"{drop.key}: {len(scored.rejected)} rows rejected: {scored.rejected[0]}")
            out.files += 1
            out.rows_in += table.rows_in
            out.rows_scored += scored.result.scored_rows
            out.alerts.extend(scored.publishable)
            out.suppressed_by_calendar += sum(1 for _, why in scored.suppressed if why.startswith("calendar"))
            series.update(p.series for p in scored.result.points)
            periods += len({p.period for p in scored.result.points})
        assert state is not None
        out.coverage.append(Coverage(scenario.integration_id, state.granularity, len(series), periods))
    out.seconds = time.perf_counter() - started
    return out


def _clock(scenario: Scenario) -> Callable[[], datetime]:
    end = scenario.end if scenario.end.tzinfo else scenario.end.replace(tzinfo=UTC)
    return lambda: end


def baseline_factories() -> Mapping[str, DetectorFactory]:
    """The naive detectors ours must beat, configured like the EWMA (threshold, season)."""
    from kpi_sentinel.quality.baselines import RollingZScore, StaticThreshold

    return {
        "rolling_zscore": lambda c: RollingZScore(season_length=c.season, threshold=c.alert_threshold),
        "static_threshold": lambda c: StaticThreshold(season_length=c.season, threshold=c.alert_threshold),
    }


def replay(name: str, scenarios: Sequence[Scenario], use_calendar: bool = True) -> ReplayResult:
    """One detector by name: ``ewma`` through the scorer's use case, ``isolation_forest`` through its
    job after the EWMA's (default :class:`ForestReplay`), a baseline through the scorer's core."""
    if name == "ewma":
        return replay_production(scenarios, use_calendar)
    if name == FOREST:
        return replay_with_forest(scenarios, use_calendar)[1]
    factories = baseline_factories()
    if name not in factories:
        raise ValueError(f"unknown detector {name!r}: choose from ewma, {FOREST}, {', '.join(factories)}")
    return replay_core(name, scenarios, factories[name], use_calendar)


def replay_parallel(
    name: str, scenarios: Sequence[Scenario], jobs: int, use_calendar: bool = True
) -> ReplayResult:
    """:func:`replay` with the scenarios spread over ``jobs`` processes (integrations are independent)."""
    if jobs <= 1 or len(scenarios) < 2:
        return replay(name, scenarios, use_calendar)
    started = time.perf_counter()
    chunks = _chunks(scenarios, jobs)
    parts = _pool_map(replay, [name] * len(chunks), chunks, [use_calendar] * len(chunks))
    merged = merge(name, parts)
    merged.seconds = time.perf_counter() - started
    return merged


def replay_with_forest_parallel(
    scenarios: Sequence[Scenario], jobs: int, use_calendar: bool = True, options: ForestReplay | None = None
) -> tuple[ReplayResult, ReplayResult]:
    """:func:`replay_with_forest` over ``jobs`` processes; ``seconds`` of each is its share of the wall time.

    Both replays run interleaved in the same processes, so the wall time is split between them in
    proportion to the time each spent (summed over the processes).
    """
    if jobs <= 1 or len(scenarios) < 2:
        return replay_with_forest(scenarios, use_calendar, options)
    started = time.perf_counter()
    chunks = _chunks(scenarios, jobs)
    n = len(chunks)
    parts = _pool_map(replay_with_forest, chunks, [use_calendar] * n, [options] * n)
    ewma, forest = merge("ewma", [p[0] for p in parts]), merge(FOREST, [p[1] for p in parts])
    wall, spent = time.perf_counter() - started, ewma.seconds + forest.seconds
    share = ewma.seconds / spent if spent else 0.5
    ewma.seconds, forest.seconds = wall * share, wall * (1 - share)
    return ewma, forest


def _chunks(scenarios: Sequence[Scenario], jobs: int) -> list[list[Scenario]]:
    chunks = [list(scenarios[k::jobs]) for k in range(jobs)]
    return [c for c in chunks if c]


def _pool_map(function: Callable[..., Any], *arguments: Sequence[Any]) -> list[Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(max_workers=len(arguments[0]), mp_context=context) as pool:
        return list(pool.map(function, *arguments))


def merge(name: str, parts: Iterable[ReplayResult]) -> ReplayResult:
    """Replays of disjoint sets of scenarios as one (``seconds`` summed; the forest's details merged)."""
    merged = ReplayResult(name)
    jobs: Counter[str] = Counter()
    for part in parts:
        merged.alerts.extend(part.alerts)
        merged.coverage.extend(part.coverage)
        merged.files += part.files
        merged.rows_in += part.rows_in
        merged.rows_scored += part.rows_scored
        merged.rows_rejected += part.rows_rejected
        merged.suppressed_by_calendar += part.suppressed_by_calendar
        merged.seconds += part.seconds
        jobs.update(part.details.get("jobs", {}))
        for summed in ("days_scored", "cpu_seconds"):
            if summed in part.details:
                merged.details[summed] = merged.details.get(summed, 0) + part.details[summed]
        if "first_scored" in part.details:
            merged.details.setdefault("first_scored", {}).update(part.details["first_scored"])
    if jobs:
        merged.details["jobs"] = dict(sorted(jobs.items()))
    if "first_scored" in merged.details:
        merged.details["first_scored"] = dict(sorted(merged.details["first_scored"].items()))
    return merged
