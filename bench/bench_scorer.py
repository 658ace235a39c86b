"""`make bench`: the scorer's speed targets, each measured as a ratio against a reference in one run.

1. Cold import: the scorer's handler module plus its AWS adapters, against a bare
   `import boto3, numpy, aws_lambda_powertools`, in fresh interpreters (median of runs, interleaved).
   Target: ratio <= 1.25.
2. Warm processing of one sync (24 periods x 20 sources x 5 metrics) against the local moto stack,
   against just reading that object from S3. Aim: ratio <= 3.
3. Detector core throughput (series-points per second) against river's EWMean + EWVar on the same
   data. Target: >= 20x.
4. The hourly roll-up's cost: scoring two days of 5-minute data with it against the same detector
   without it (process time). Reported, no target yet.

Timings on a shared machine are noisy: every figure is a median, and each ratio compares two things
measured in the same run. Results go to bench/results/scorer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scorer.json"
SCORER_IMPORT = "import functions.ewma_scorer.app, kpi_sentinel.adapters.aws"
BARE_IMPORT = "import boto3, numpy, aws_lambda_powertools"


def cold_import(runs: int) -> dict[str, Any]:
    def once(statement: str) -> float:
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'core'}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        return float(out.stdout.strip())

    once(SCORER_IMPORT)  # warm the OS file cache and bytecode for both sides alike
    once(BARE_IMPORT)
    scorer, bare = [], []
    for _ in range(runs):
        scorer.append(once(SCORER_IMPORT))
        bare.append(once(BARE_IMPORT))
    s, b = statistics.median(scorer), statistics.median(bare)
    return {"scorer_seconds": round(s, 4), "bare_seconds": round(b, 4), "ratio": round(s / b, 3), "runs": runs,
            "target": "<= 1.25"}  # fmt: skip


def _metrics_sync(day: datetime, rng: np.random.Generator) -> bytes:
    lines = ["timestamp,source,clicks,signups,ftds,deposits,ngr"]
    for hour in range(24):
        stamp = (day + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
        shape = 0.3 + 0.7 * np.sin(np.pi * hour / 24) ** 2
        for source in range(20):
            clicks = int(rng.poisson(200 * shape * (1 + source / 10)))
            signups = int(rng.binomial(clicks, 0.08))
            ftds = int(rng.binomial(signups, 0.25))
            deposits = ftds + int(rng.poisson(ftds * 0.4))
            lines.append(
                f"{stamp},source-{source:02d},{clicks},{signups},{ftds},{deposits},{deposits * 41.5:.2f}"
            )
    return ("\n".join(lines) + "\n").encode()


def warm_sync(runs: int) -> dict[str, Any]:
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from kpi_sentinel.adapters.aws import DynamoControl, DynamoState, S3Objects, SnsPublisher
    from kpi_sentinel.local.stack import local_stack
    from kpi_sentinel.ports import ScorerPorts
    from kpi_sentinel.sync import ScorerSettings, SyncRef, process_sync

    rng = np.random.default_rng(3)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    with local_stack() as stack:
        env = stack.functions["EwmaScorerFunction"].environment
        ports = ScorerPorts(
            objects=S3Objects(),
            state=DynamoState(env["STATE_TABLE"]),
            control=DynamoControl(env["CONTROL_TABLE"]),
            publisher=SnsPublisher(env["ALERTS_TOPIC_ARN"]),
            clock=lambda: datetime.now(UTC),
        )
        settings = ScorerSettings(ingest_bucket=env["INGEST_BUCKET"], data_bucket=env["DATA_BUCKET"])
        s3, bucket = stack.client("s3"), env["INGEST_BUCKET"]
        warmup_days = 21  # three seasons: past the warm-up, so the measured syncs score and alert for real
        process_times, read_times, alerts = [], [], 0
        for day in range(warmup_days + runs):
            key = f"syncs/bench-ads/{(start + timedelta(days=day)):%Y/%m/%d}.csv"
            body = _metrics_sync(start + timedelta(days=day), rng)
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            t = time.perf_counter()
            outcome = process_sync(SyncRef(bucket, key, len(body), "v1"), ports, settings)
            elapsed = time.perf_counter() - t
            if day >= warmup_days:
                process_times.append(elapsed)
                alerts += outcome.alerts_published
                t = time.perf_counter()
                s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                read_times.append(time.perf_counter() - t)
    p, r = statistics.median(process_times), statistics.median(read_times)
    return {
        "sync": "24 periods x 20 sources x 5 metrics (480 rows; 7 totals + 140 slices incl. 2 ratios)",
        "process_seconds": round(p, 4),
        "s3_read_seconds": round(r, 4),
        "ratio": round(p / r, 2),
        "runs": runs,
        "alerts_published": alerts,
        "aim": "<= 3",
    }


def detector_throughput(n_series: int, n_periods: int) -> dict[str, Any]:
    from kpi_sentinel.detectors.ewma import SeasonalEWMA
    from river import stats

    rng = np.random.default_rng(11)
    data = rng.poisson(100.0, size=(n_periods, n_series)).astype(np.float64)
    detector = SeasonalEWMA(season_length=24).resize(n_series)
    t = time.perf_counter()
    for period in range(n_periods):
        detector.step(period, data[period])
    ours = time.perf_counter() - t

    river_series = min(n_series, 200)  # river is per point in Python: time a subset, same per-point work
    means = [stats.EWMean(fading_factor=0.1) for _ in range(river_series)]
    variances = [stats.EWVar(fading_factor=0.1) for _ in range(river_series)]
    t = time.perf_counter()
    for period in range(n_periods):
        row = data[period]
        for i in range(river_series):
            value = float(row[i])
            means[i].update(value)
            variances[i].update(value)
    theirs = time.perf_counter() - t
    ours_rate = n_series * n_periods / ours
    river_rate = river_series * n_periods / theirs
    return {
        "data": f"{n_series} series x {n_periods} periods (river timed on {river_series} series)",
        "kpi_sentinel_points_per_second": round(ours_rate),
        "river_points_per_second": round(river_rate),
        "ratio": round(ours_rate / river_rate, 1),
        "target": ">= 20",
    }


def rollup_overhead(runs: int) -> dict[str, Any]:
    """Scoring 5-minute data with the hourly roll-up against the same detector without it (process time,
    median of interleaved runs): what the roll-up adds to a 5-minute integration's scoring."""
    from kpi_sentinel.config import IntegrationConfig, MetricSpec, RatioSpec
    from kpi_sentinel.parsing import ValidRow
    from kpi_sentinel.scoring import IntegrationState, aggregate

    names = ("clicks", "signups", "ftds", "deposits", "ngr")
    config = IntegrationConfig(
        "bench-5min", granularity_seconds=300, season_length=288, dimensions=("source",),
        metrics=tuple(MetricSpec(m) for m in names),
        ratios=(RatioSpec("conversion", "ftds", "clicks"), RatioSpec("signup_rate", "signups", "clicks")),
    )  # fmt: skip
    rng = np.random.default_rng(5)
    start, rows = datetime(2026, 9, 1, tzinfo=UTC), []
    for k in range(2 * 288):
        when = start + timedelta(minutes=5 * k)
        for s in range(20):
            values = {m: float(v) for m, v in zip(names, rng.poisson(20, size=len(names)), strict=True)}
            rows.append(ValidRow(len(rows) + 1, when, {"source": f"source-{s}"}, values))

    def once(rolled: bool) -> float:
        state = IntegrationState(config, 300)
        if not rolled:
            state.rollup = None  # the same state without its roll-up
        agg = aggregate(rows, config, 300, state.known_values())
        t = time.process_time()
        state.score(agg)
        return time.process_time() - t

    with_rollup, without = [], []
    for _ in range(runs):
        with_rollup.append(once(True))
        without.append(once(False))
    a, b = statistics.median(with_rollup), statistics.median(without)
    return {
        "data": "2 days x 288 periods x 20 sources x 5 metrics + 2 ratios (7 totals + 140 slices)",
        "with_rollup_seconds": round(a, 4),
        "without_seconds": round(b, 4),
        "ratio": round(a / b, 3),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the benchmark)")
    args = parser.parse_args()
    runs = 3 if args.quick else 11
    results = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cold_import": cold_import(runs),
        "warm_sync": warm_sync(3 if args.quick else 15),
        "detector": detector_throughput(2000, 500 if args.quick else 2000),
        "rollup": rollup_overhead(3 if args.quick else 7),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    ci, ws, dt = results["cold_import"], results["warm_sync"], results["detector"]
    print(f"cold import   scorer {ci['scorer_seconds']:.3f}s vs bare {ci['bare_seconds']:.3f}s  "
          f"ratio {ci['ratio']:.2f} (target <= 1.25)")  # fmt: skip
    print(f"warm sync     process {ws['process_seconds'] * 1000:.1f} ms vs S3 read {ws['s3_read_seconds'] * 1000:.1f} ms"
          f"  ratio {ws['ratio']:.2f} (aim <= 3)")  # fmt: skip
    print(f"detector      {dt['kpi_sentinel_points_per_second']:,} vs river {dt['river_points_per_second']:,} "
          f"points/s  ratio {dt['ratio']:.1f}x (target >= 20x)")  # fmt: skip
    ro = results["rollup"]
    print(f"roll-up       5-minute scoring {ro['with_rollup_seconds']:.2f}s with it vs {ro['without_seconds']:.2f}s "
          f"without  ratio {ro['ratio']:.2f}")  # fmt: skip
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
