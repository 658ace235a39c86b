"""The ``kpi-sentinel`` command (the operator API's commands: :mod:`kpi_sentinel.operator.commands`)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from kpi_sentinel.config import GRANULARITIES, ConfigError
from kpi_sentinel.operator.commands import add_operator_commands
from kpi_sentinel.operator.local import DEFAULT_PRINCIPAL


def _backtest(args: argparse.Namespace) -> int:
    from kpi_sentinel.backtest import BacktestOptions, open_output, run_backtest
    from kpi_sentinel.parsing import KeyContractError, UnreadableSync

    options = BacktestOptions(
        threshold=args.threshold,
        alpha=args.alpha,
        season_length=args.season,
        granularity_seconds=GRANULARITIES[args.granularity] if args.granularity else None,
        warmup=args.warmup,
        direction=args.direction,
        min_abs_change=args.min_abs_change,
        min_volume=args.min_volume,
        metrics=args.metric or (),
        dimensions=args.dimension,
        slices=not args.no_slices,
    )
    if not args.file.exists():
        print(f"kpi-sentinel backtest: {args.file}: no such file", file=sys.stderr)
        return 2
    target = open_output(args.output)
    try:
        result = run_backtest(args.file, target, options)
    except (UnreadableSync, KeyContractError, ConfigError) as exc:
        print(f"kpi-sentinel backtest: {args.file}: {exc}", file=sys.stderr)
        if target is not sys.stdout:
            target.close()
            Path(args.output).unlink(missing_ok=True)  # no half-written output left behind
        return 2
    if target is not sys.stdout:
        target.close()
    print(
        f"{args.file}: {result.rows_in} rows ({result.rows_rejected} rejected), granularity "
        f"{result.granularity_seconds}s, season {result.season_length} periods; {result.points} points scored, "
        f"{result.alerts} alerts" + (f"; written to {args.output}" if args.output not in (None, "-") else ""),
        file=sys.stderr,
    )
    for line in result.rejections:
        print(f"  rejected {line}", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kpi_sentinel.demo import run_demo

    summary = run_demo(args.out, days=args.days, seed=args.seed)
    missed = [i for i in summary["incidents"] if not i["caught"]]
    return 1 if missed or not summary["rows_reconcile"] else 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from botocore.exceptions import BotoCoreError, ClientError

    from kpi_sentinel.adapters.aws import DynamoFeedback, DynamoIncidents, S3Objects
    from kpi_sentinel.ports import ReportPorts
    from kpi_sentinel.report.build import build_report, write_report

    if not args.bucket:
        print("kpi-sentinel report: no data bucket (--bucket or DATA_BUCKET)", file=sys.stderr)
        return 2
    end = args.end or args.start
    if end < args.start:
        print(f"kpi-sentinel report: --end {end} is before --start {args.start}", file=sys.stderr)
        return 2
    ports = ReportPorts(
        objects=S3Objects(),
        data_bucket=args.bucket,
        incidents=DynamoIncidents(args.incidents_table) if args.incidents_table else None,
        feedback=DynamoFeedback(args.control_table) if args.control_table else None,
        clock=lambda: datetime.now(UTC),
    )
    try:
        result = build_report(ports, args.start, end, args.integration)
        written = write_report(result, folder=args.out) if args.out else write_report(result, ports)
    except ValueError as exc:
        print(f"kpi-sentinel report: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"kpi-sentinel report: AWS refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"report {result.name}: {len(result.alerts)} alerts, {len(result.integrations)} integrations, "
        f"{len(result.problems)} data problem(s)"
        + ("" if ports.incidents else "; incidents unavailable (no --incidents-table)")
        + ("" if ports.feedback else "; labels unavailable (no --control-table)"),
        file=sys.stderr,
    )
    for problem in result.problems:
        print(f"  problem: {problem.source}: {problem.reason}", file=sys.stderr)
    for location in written:
        print(location)
    return 0


def _integrations(text: str) -> list[str]:
    from kpi_sentinel.parsing import INTEGRATION_ID

    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [n for n in names if not INTEGRATION_ID.fullmatch(n)]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integration ids: {text!r}")
    return names


def _local_api(args: argparse.Namespace) -> int:
    from kpi_sentinel.local.serve import ALL, PortUnavailable, serve_operator_api

    integrations = args.integrations or [ALL]
    try:
        return serve_operator_api(port=args.port, principal=args.principal, integrations=integrations)
    except PortUnavailable as exc:
        print(f"kpi-sentinel local-api: {exc} (another --port, or 0 for any free one)", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpi-sentinel", description="KPI anomaly detection and alert routing"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the pipeline on a local moto stack with synthetic data")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for alerts and the report")
    demo.add_argument("--days", type=int, default=60, help="days of hourly data (default 60)")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(run=_demo)

    backtest = commands.add_parser(
        "backtest", help="replay a CSV through the EWMA detector and write per-period scores as CSV"
    )
    backtest.add_argument("file", type=Path, help="CSV (or .csv.gz/.jsonl/.parquet) with a timestamp column")
    backtest.add_argument("-o", "--output", help="output CSV (default: standard output)")
    backtest.add_argument(
        "--threshold",
        type=float,
        help="alert threshold in standard deviations (default 3.5; 4 for 5-minute data)",
    )
    backtest.add_argument("--alpha", type=float, help="EWMA smoothing of the residual (default 0.1)")
    backtest.add_argument(
        "--season", type=int, help="season length in periods (default: a week; 5 min: a day)"
    )
    backtest.add_argument("--granularity", choices=sorted(GRANULARITIES), help="default: inferred")
    backtest.add_argument("--warmup", type=int, help="residual updates before a series may alert")
    backtest.add_argument("--direction", choices=("down", "up", "both"), help="bad direction for all metrics")
    backtest.add_argument("--min-abs-change", type=float, help="minimum absolute change to alert")
    backtest.add_argument("--min-volume", type=float, help="minimum volume to alert")
    backtest.add_argument("--metric", action="append", help="only this metric column (repeatable)")
    backtest.add_argument("--dimension", action="append", help="only slice by this column (repeatable)")
    backtest.add_argument("--no-slices", action="store_true", help="score totals only")
    backtest.set_defaults(run=_backtest)

    report = commands.add_parser(
        "report",
        help="build the KPI report (HTML, alerts CSV, summary JSON) of a date range from the data bucket",
        description="Reads alerts/, history/ and suppressed/ from the data bucket (AWS_ENDPOINT_URL points "
        "boto3 at a local stack) and writes reports/<start>[_<end>]/ there, or the files to --out.",
    )
    report.add_argument(
        "--bucket", default=os.environ.get("DATA_BUCKET"), help="data bucket (default: $DATA_BUCKET)"
    )
    report.add_argument("--start", type=_day, required=True, help="first day, YYYY-MM-DD (UTC)")
    report.add_argument("--end", type=_day, help="last day, included (default: --start)")
    report.add_argument(
        "--integration", action="append", default=[], help="also cover this integration (repeatable)"
    )
    report.add_argument(
        "--incidents-table",
        default=os.environ.get("INCIDENTS_TABLE"),
        help="incidents table for SLA adherence (default: $INCIDENTS_TABLE; none: reported unavailable)",
    )
    report.add_argument(
        "--control-table",
        default=os.environ.get("CONTROL_TABLE"),
        help="control table for feedback labels (default: $CONTROL_TABLE; none: precision unavailable)",
    )
    report.add_argument("--out", type=Path, help="write the files to this folder instead of the bucket")
    report.set_defaults(run=_report)

    local_api = commands.add_parser(
        "local-api",
        help="run the local moto stack and serve the operator API on 127.0.0.1 until Ctrl-C",
        description="Starts the local stack from template.yaml, grants --principal a scope, serves the "
        "operator API on http://127.0.0.1:PORT and prints how to use it (KPI_SENTINEL_API=<url> "
        "kpi-sentinel snooze ...). Ctrl-C or SIGTERM stops it; nothing is kept.",
    )
    local_api.add_argument(
        "--port", type=int, default=8787, help="port on 127.0.0.1 (default 8787; 0: any free one)"
    )
    local_api.add_argument(
        "--principal",
        default=DEFAULT_PRINCIPAL,
        help=f"the caller the API takes every request for (default {DEFAULT_PRINCIPAL})",
    )
    scope = local_api.add_mutually_exclusive_group()
    scope.add_argument(
        "--integrations", type=_integrations, metavar="A,B,...", help="scope the caller to these integrations"
    )
    scope.add_argument(
        "--all", action="store_true", help="scope the caller to every integration, '*' (the default)"
    )
    local_api.set_defaults(run=_local_api)

    # snooze | label | calendar | override | incidents | whoami: the operator API over HTTP
    add_operator_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
