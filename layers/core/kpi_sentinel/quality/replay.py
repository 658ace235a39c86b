"""Replay a generated suite through the scorer's own code and collect what it would have alerted.

* ``ewma`` (the production detector) goes through :func:`kpi_sentinel.sync.process_sync` with the
  in-memory adapters: the exact use case the ``ewma_scorer`` function runs — key contract, parsing,
  validation, config inference, state serialisation between syncs, calendar, history writes — one
  sync per file, in drop order.
* The baselines go through :func:`kpi_sentinel.sync.score_table`, the same validate → aggregate →
  score → alert core, with their detector in place of the EWMA (their state is not serialisable,
  which is the only step they skip).

Every replay checks that rows reconcile (in = scored + rejected) and that no file was quarantined:
a benchmark that silently dropped data would measure nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kpi_sentinel.adapters.memory import MemoryControl, MemoryObjects, MemoryPublisher, MemoryState
from kpi_sentinel.calendar import GLOBAL, parse_events
from kpi_sentinel.parsing import parse_sync_key, read_table
from kpi_sentinel.ports import ScorerPorts
from kpi_sentinel.quality.evaluate import Coverage
from kpi_sentinel.quality.labels import KnownEvent, Scenario
from kpi_sentinel.scoring import DetectorFactory, IntegrationState
from kpi_sentinel.sync import ScorerSettings, SyncRef, process_sync, score_table

INGEST, DATA = "bench-ingest", "bench-data"
SETTINGS = ScorerSettings(ingest_bucket=INGEST, data_bucket=DATA, max_sync_bytes=2**31)


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


def replay_production(scenarios: Iterable[Scenario], use_calendar: bool = True) -> ReplayResult:
    """The EWMA scorer's use case, end to end on in-memory adapters."""
    started = time.perf_counter()
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
        out.coverage.append(Coverage(scenario.integration_id, final.granularity, len(final.series), periods))
    out.seconds = time.perf_counter() - started
    return out


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
    """One detector by name: ``ewma`` through the scorer's use case, a baseline through its core."""
    if name == "ewma":
        return replay_production(scenarios, use_calendar)
    factories = baseline_factories()
    if name not in factories:
        raise ValueError(f"unknown detector {name!r}: choose from ewma, {', '.join(factories)}")
    return replay_core(name, scenarios, factories[name], use_calendar)


def replay_parallel(
    name: str, scenarios: Sequence[Scenario], jobs: int, use_calendar: bool = True
) -> ReplayResult:
    """:func:`replay` with the scenarios spread over ``jobs`` processes (integrations are independent)."""
    if jobs <= 1 or len(scenarios) < 2:
        return replay(name, scenarios, use_calendar)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    chunks = [list(scenarios[k::jobs]) for k in range(jobs)]
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        parts = list(pool.map(replay, [name] * jobs, chunks, [use_calendar] * jobs))
    merged = ReplayResult(name)
    for part in parts:
        merged.alerts.extend(part.alerts)
        merged.coverage.extend(part.coverage)
        merged.files += part.files
        merged.rows_in += part.rows_in
        merged.rows_scored += part.rows_scored
        merged.rows_rejected += part.rows_rejected
        merged.suppressed_by_calendar += part.suppressed_by_calendar
    merged.seconds = time.perf_counter() - started
    return merged
