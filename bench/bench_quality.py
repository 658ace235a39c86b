"""`make bench-quality`: detection quality on a generated, labelled suite, against naive baselines.

1. Generate the suite (seeded): daily, hourly and 5-minute integrations of three archetypes with
   seasonality, trend, volume-dependent noise, low-volume segments, holidays and planned campaigns
   (in the calendar), level shifts, and labelled anomaly windows of every kind.
2. Replay it through the scorer's code: the EWMA through the scorer's use case on in-memory
   adapters, the baselines (rolling z-score over 14 periods, static threshold per series) through
   the same validate → aggregate → score → alert core.
3. Score the alerts against the labels (event recall, precision with false bursts grouped, F2,
   detection delay, false alarms per series-week, alerts in known events), print the tables and a
   one-line summary, check the targets, and write bench/results/quality.json.

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

from kpi_sentinel.quality.evaluate import QualityReport, evaluate, format_table
from kpi_sentinel.quality.labels import EWMA_TARGETED, Suite
from kpi_sentinel.quality.replay import ReplayResult, baseline_factories, replay_parallel
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
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    suite = generate_suite(seed=args.seed, size=args.size)
    generated = time.perf_counter() - started
    print(f"suite: {composition(suite)} (generated in {generated:.1f}s)", flush=True)

    names = ["ewma", *(baseline_factories() if args.baselines else ())]
    replays: list[ReplayResult] = []
    for name in names:
        replays.append(replay_parallel(name, suite.scenarios, args.jobs, use_calendar=args.calendar))
        last = replays[-1]
        print(
            f"{name}: {last.files} files, {last.rows_in:,} rows replayed in {last.seconds:.1f}s", flush=True
        )

    reports = {
        r.detector: evaluate(
            suite.windows, suite.known_events, r.alerts, r.coverage, targeted_kinds=EWMA_TARGETED
        )
        for r in replays
    }
    print()
    print(format_table(reports))
    targets = check_targets(reports["ewma"])
    print()
    for row in targets:
        print(
            f"  {'ok  ' if row['met'] else 'MISS'} {row['target']:<36} {row['value']!s:<10} goal {row['goal']}"
        )

    ewma = reports["ewma"].overall
    beaten = {name: beats(reports["ewma"], report) for name, report in reports.items() if name != "ewma"}
    met = sum(1 for row in targets if row["met"])
    print()
    print(
        f"quality: ewma recall {ewma.recall or 0:.3f} precision {ewma.precision:.3f} F2 {ewma.f2 or 0:.3f} "
        f"median delay {ewma.median_delay} periods, {ewma.false_alarms_per_series_week or 0:.3f} false "
        f"alarms/series/week, {ewma.known_event_alerts} alerts in known events; targets met {met}/{len(targets)}; "
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
        "rows": {
            "in": replays[0].rows_in,
            "scored": replays[0].rows_scored,
            "rejected": replays[0].rows_rejected,
        },
        "suppressed_by_calendar": {r.detector: r.suppressed_by_calendar for r in replays},
        "targets": targets,
        "beats_baselines_on_f2_every_granularity": beaten,
        "detectors": {name: report.to_dict() for name, report in reports.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
