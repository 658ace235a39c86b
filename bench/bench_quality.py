"""`make bench-quality`: detection quality on a generated, labelled suite, against naive baselines.

1. Generate the suite (seeded): daily, hourly and 5-minute integrations of three archetypes with
   seasonality, trend, volume-dependent noise, low-volume segments, holidays and planned campaigns
   (in the calendar), level shifts, and labelled anomaly windows of every kind.
2. Replay it through the functions' code: the EWMA through the scorer's use case on in-memory
   adapters; right after each integration's EWMA replay, the nightly isolation forest through its
   use case (``run_job``) on the same adapters, so it reads the history the scorer wrote (first model
   once the history holds ``--forest-min-days`` usable days, a retrain every ``--forest-cadence``
   days, the other days scored by the latest model: every day after the first model is scored once);
   the baselines (rolling z-score over 14 periods, static threshold per series) through the same
   validate → aggregate → score → alert core.
3. Score the alerts against the labels (event recall, precision with false bursts grouped, F2,
   detection delay, false alarms per series-week, alerts in known events) for each detector and for
   ``ewma+forest``, the union of both detectors' alerts (what users receive), print the tables and a
   one-line summary, check the targets (for the EWMA, and the same targets for the union), and write
   bench/results/quality.json.
4. The EWMA's operating curve: recall, precision and F2 if only its alerts at least k times past
   their threshold were sent (k = 1, 1.05 … 2), read off the alerts as raised. It shows what a higher
   threshold would trade: how much recall each step of precision costs.

An isolation_forest alert is about the integration's metric totals together: it matches a window
when its metric or one of the features that moved is one of the window's metrics, whatever slice
the window names. Its false alarms are counted per series-week of the EWMA's coverage (the same
monitored data), so the rates of the EWMA, the forest and the union are comparable.

The exit status is 0 whether or not the targets are met: the targets are reported, not enforced
(the quality benchmark informs tuning; the unit suite guards behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kpi_sentinel.config import GRANULARITIES
from kpi_sentinel.quality.evaluate import (
    QualityReport,
    evaluate,
    format_curve,
    format_table,
    operating_curve,
)
from kpi_sentinel.quality.labels import EWMA_TARGETED, Suite
from kpi_sentinel.quality.replay import (
    FOREST,
    ForestReplay,
    ReplayResult,
    baseline_factories,
    replay_parallel,
    replay_with_forest_parallel,
    union,
)
from kpi_sentinel.quality.scenarios import generate_suite

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "quality.json"
TARGETS = {
    "recall": 0.95,
    "recall_per_kind": 0.90,
    "precision": 0.80,
    "median_delay_periods": 1.0,
    "false_alarms_per_series_week": 0.2,
    "known_event_alerts": 0,
}
UNION = "ewma+forest"
FOREST_TREES = 100  # production's; --forest-trees 50 halves the tree work, results within noise


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def composition(suite: Suite) -> dict[str, Any]:
    per_granularity = Counter(s.granularity_seconds for s in suite.scenarios)
    return {
        "integrations": len(suite.scenarios),
        "per_granularity": {str(k): v for k, v in sorted(per_granularity.items())},
        "per_archetype": dict(sorted(Counter(s.archetype for s in suite.scenarios).items())),
        "files": sum(len(s.syncs) for s in suite.scenarios),
        "windows_per_kind": dict(sorted(Counter(w.kind for w in suite.windows).items())),
        "known_events": dict(sorted(Counter(e.kind for e in suite.known_events).items())),
    }


def check_targets(report: QualityReport) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (the note explains any miss)."""
    overall = report.overall
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: float, higher_is_better: bool) -> None:
        met = value is not None and (value >= target if higher_is_better else value <= target)
        shown = None if value is None else round(value, 4)
        rows.append({"target": name, "value": shown, "goal": f"{'>=' if higher_is_better else '<='} {target}",
                     "met": met})  # fmt: skip

    add("recall", overall.recall, TARGETS["recall"], True)
    for kind, stats in report.per_kind.items():
        if stats.targeted:
            add(f"recall[{kind}]", stats.recall, TARGETS["recall_per_kind"], True)
    add("precision", overall.precision, TARGETS["precision"], True)
    add("median_delay_periods", overall.median_delay, TARGETS["median_delay_periods"], False)
    add("false_alarms_per_series_week", overall.false_alarms_per_series_week,
        TARGETS["false_alarms_per_series_week"], False)  # fmt: skip
    add("known_event_alerts", overall.known_event_alerts, TARGETS["known_event_alerts"], False)
    return rows


def beats(ours: QualityReport, baseline: QualityReport) -> bool:
    """Our F2 is higher than the baseline's at every granularity."""
    return all(
        (summary.f2 or 0.0) > (baseline.per_granularity[g].f2 or 0.0)
        if g in baseline.per_granularity
        else True
        for g, summary in ours.per_granularity.items()
    )


def print_targets(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(
            f"  {'ok  ' if row['met'] else 'MISS'} {row['target']:<36} {row['value']!s:<10} goal {row['goal']}"
        )


def forest_schedule(options: ForestReplay) -> str:
    shown = ", ".join(f"{value:g} ({name})" for name, value in percentiles(options).items())
    return (
        f"first model once the history holds {options.min_training_days} usable days (production: 14), "
        f"retrain every {options.cadence_days} days of data (production: nightly), the other days scored "
        f"by the latest model; {options.training_days}-day training window, {options.trees} trees "
        f"(production: 100), threshold percentile {shown} (production: the same)"
    )


def percentiles(options: ForestReplay) -> dict[str, float]:
    """The forest's threshold percentile per granularity name, as the replay's settings give it."""
    settings = options.settings()
    return {name: settings.percentile_for(seconds) for name, seconds in GRANULARITIES.items()}


def forest_facts(forest: ReplayResult, report: QualityReport, options: ForestReplay) -> dict[str, Any]:
    """The forest's schedule, jobs, and its recall on the windows that start where it scored."""
    first = forest.details.get("first_scored", {})
    seen = [
        r
        for r in report.windows
        if first.get(r.window.integration_id) is not None
        and r.window.start.isoformat() >= str(first[r.window.integration_id])
    ]
    targeted = [r for r in seen if r.targeted]
    per_kind: dict[str, dict[str, int]] = {}
    for r in seen:
        stats = per_kind.setdefault(r.window.kind, {"windows": 0, "caught": 0})
        stats["windows"] += 1
        stats["caught"] += int(r.caught)
    return {
        "cadence_days": options.cadence_days,
        "min_training_days": options.min_training_days,
        "training_days": options.training_days,
        "trees": options.trees,
        "threshold_percentile": percentiles(options),
        "score_lookback_minutes": 24 * 60,
        "schedule": forest_schedule(options),
        "coverage": "the EWMA's (false alarms per series-week of the same monitored data)",
        "jobs": forest.details.get("jobs", {}),
        "days_scored": forest.details.get("days_scored", 0),
        "periods_scored": forest.rows_scored,
        "first_scored": first,
        "integrations_never_scored": sorted(k for k, v in first.items() if v is None),
        "windows_after_first_model": {
            "targeted_windows": len(targeted),
            "caught": sum(1 for r in targeted if r.caught),
            "recall": round(sum(1 for r in targeted if r.caught) / len(targeted), 4) if targeted else None,
            "per_kind": dict(sorted(per_kind.items())),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--calendar", action=argparse.BooleanOptionalAction, default=True,
                        help="give the detectors the known events (default); --no-calendar shows their cost")  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    parser.add_argument("--forest", action=argparse.BooleanOptionalAction, default=True,
                        help="replay the nightly isolation forest on the EWMA's adapters (default)")  # fmt: skip
    parser.add_argument("--forest-cadence", type=int, default=7, metavar="N",
                        help="retrain the forest every N days of data; the other days are scored by the latest model (default 7)")  # fmt: skip
    parser.add_argument("--forest-min-days", type=int, default=7, metavar="N",
                        help="usable days of history before the first model (default 7; production 14)")  # fmt: skip
    parser.add_argument("--forest-trees", type=int, default=FOREST_TREES, metavar="N",
                        help=f"trees per forest (default {FOREST_TREES}, production's)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    suite = generate_suite(seed=args.seed, size=args.size)
    generated = time.perf_counter() - started
    print(f"suite: {composition(suite)} (generated in {generated:.1f}s)", flush=True)

    options = ForestReplay(
        cadence_days=args.forest_cadence, min_training_days=args.forest_min_days, trees=args.forest_trees
    )
    replays: list[ReplayResult] = []
    if args.forest:
        print(f"{FOREST} schedule: {forest_schedule(options)}", flush=True)
        ewma_replay, forest_replay = replay_with_forest_parallel(
            suite.scenarios, args.jobs, use_calendar=args.calendar, options=options
        )
        replays += [ewma_replay, forest_replay]
    else:
        replays.append(replay_parallel("ewma", suite.scenarios, args.jobs, use_calendar=args.calendar))
    baselines = list(baseline_factories() if args.baselines else ())
    for name in baselines:
        replays.append(replay_parallel(name, suite.scenarios, args.jobs, use_calendar=args.calendar))
    for replay in replays:
        if replay.detector == FOREST:
            jobs = replay.details.get("jobs", {})
            print(
                f"{FOREST}: {sum(jobs.values())} jobs through run_job ({', '.join(f'{k} {v}' for k, v in jobs.items())}), "
                f"{replay.details.get('days_scored', 0)} days and {replay.rows_scored:,} periods scored "
                f"in {replay.seconds:.1f}s ({replay.details.get('cpu_seconds', 0):.0f}s CPU)",
                flush=True,
            )
        else:
            print(
                f"{replay.detector}: {replay.files} files, {replay.rows_in:,} rows replayed in {replay.seconds:.1f}s"
                + (f" ({replay.details['cpu_seconds']:.0f}s CPU)" if "cpu_seconds" in replay.details else ""),
                flush=True,
            )
    by_name = {r.detector: r for r in replays}
    evaluated = [by_name["ewma"]]
    if args.forest:
        evaluated += [by_name[FOREST], union(UNION, by_name["ewma"], by_name[FOREST])]
    evaluated += [by_name[name] for name in baselines]

    reports = {
        r.detector: evaluate(
            suite.windows, suite.known_events, r.alerts, r.coverage, targeted_kinds=EWMA_TARGETED
        )
        for r in evaluated
    }
    print()
    print(format_table(reports))
    curve = operating_curve(
        suite.windows, suite.known_events, by_name["ewma"].alerts, by_name["ewma"].coverage
    )
    print()
    print("ewma operating curve: only the alerts at least k times past their threshold (k = 1: as sent)")
    print(format_curve(curve))
    print()
    targets = check_targets(reports["ewma"])
    print("targets (ewma):")
    print_targets(targets)
    union_targets = check_targets(reports[UNION]) if args.forest else []
    if args.forest:
        print(f"same targets, {UNION} (both detectors' alerts, what users receive):")
        print_targets(union_targets)
    forest = forest_facts(by_name[FOREST], reports[FOREST], options) if args.forest else None
    if forest is not None:
        seen = forest["windows_after_first_model"]
        never = forest["integrations_never_scored"]
        print(
            f"{FOREST} on the windows that start after its first model: {seen['caught']}/{seen['targeted_windows']} "
            f"targeted caught" + (f"; never scored (too little history): {', '.join(never)}" if never else "")
        )

    ewma = reports["ewma"].overall
    beaten = {name: beats(reports["ewma"], reports[name]) for name in baselines}
    union_beaten = {name: beats(reports[UNION], reports[name]) for name in baselines} if args.forest else {}
    met = sum(1 for row in targets if row["met"])
    extra = ""
    if args.forest:
        fo, un = reports[FOREST].overall, reports[UNION].overall
        extra = (
            f"{FOREST} F2 {fo.f2 or 0:.3f} (recall {fo.recall or 0:.3f} precision {fo.precision:.3f}), "
            f"{UNION} F2 {un.f2 or 0:.3f} (recall {un.recall or 0:.3f} precision {un.precision:.3f}, "
            f"targets met {sum(1 for row in union_targets if row['met'])}/{len(union_targets)}); "
        )
    print()
    print(
        f"quality: ewma recall {ewma.recall or 0:.3f} precision {ewma.precision:.3f} F2 {ewma.f2 or 0:.3f} "
        f"median delay {ewma.median_delay} periods, {ewma.false_alarms_per_series_week or 0:.3f} false "
        f"alarms/series/week, {ewma.known_event_alerts} alerts in known events; targets met {met}/{len(targets)}; "
        + extra
        + ", ".join(
            f"beats {name} on F2 at every granularity: {'yes' if ok else 'NO'}" for name, ok in beaten.items()
        )
    )

    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "seed": args.seed,
        "size": args.size,
        "calendar": args.calendar,
        "suite": composition(suite),
        "timing_seconds": {
            "generate": round(generated, 2),
            **{r.detector: round(r.seconds, 2) for r in replays},
        },
        "cpu_seconds": {
            r.detector: round(r.details["cpu_seconds"], 2) for r in replays if "cpu_seconds" in r.details
        },
        "rows": {
            "in": replays[0].rows_in,
            "scored": replays[0].rows_scored,
            "rejected": replays[0].rows_rejected,
        },
        "suppressed_by_calendar": {r.detector: r.suppressed_by_calendar for r in replays},
        "targets": targets,
        "beats_baselines_on_f2_every_granularity": beaten,
        "detectors": {name: report.to_dict() for name, report in reports.items()},
        "ewma_operating_curve": [point.to_dict() for point in curve],
        "forest": forest,
        "targets_union": union_targets,
        "union_beats_baselines_on_f2_every_granularity": union_beaten,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
