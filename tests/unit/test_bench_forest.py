"""The forest benchmark's functions at a tiny size, so a change that breaks `make bench` fails CI.

No timing is asserted (speed is checked by the benchmark itself, never by timed tests): only that each
step runs, finds what it should and reports in the shape the projection and the report read.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_forest.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_forest", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_forest"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def history(bench: ModuleType) -> Any:
    return bench.build_history(days=24)  # a short window that still trains (14 usable days after warm-up)


@pytest.fixture(scope="module")
def memory(bench: ModuleType, history: Any) -> Iterator[Future[dict[str, Any]]]:
    """The peak-memory children (fresh interpreters, seconds of imports each) run while the local
    stack test does (it comes next): the suite stays short on a machine with two cores."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(bench.peak_memory, history, 1)


def test_history_is_the_scorers_format(bench: ModuleType, history: Any, memory: Future[Any]) -> None:
    from kpi_sentinel.sync import HISTORY_COLUMNS

    assert len(history.objects) == history.sync_files == 24 * 24
    key, body = next(iter(history.objects.items()))
    assert key.startswith(f"history/integration={bench.INTEGRATION}/date=")
    header = gzip.decompress(body).decode().splitlines()[0]
    assert tuple(header.split(",")) == HISTORY_COLUMNS


def test_fanout_and_moto_read_on_the_local_stack(bench: ModuleType, history: Any) -> None:
    from kpi_sentinel.adapters import aws
    from kpi_sentinel.local.stack import local_stack

    last_day = max(key.split("/")[2] for key in history.objects)
    small = dataclasses.replace(  # one day of objects: moto serves about 100 GETs a second here
        history, objects={k: v for k, v in history.objects.items() if k.split("/")[2] == last_day}
    )
    saved = dict(os.environ)  # the stack and the planner's handler set AWS and function variables
    try:
        with local_stack() as stack:
            read = bench.moto_read(stack, small, repeats=1)
            fan = bench.fanout(stack, 30)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.client.cache_clear()
    assert read["objects"] == len(small.objects) == 24
    assert read["score_window_objects"] == 24
    assert fan["nightly_retrain"]["queue_count"] == 30
    assert fan["business_tier_scoring"]["queue_count"] == 3
    assert fan["nightly_retrain"]["aws_calls"] > 0


def test_job_phases_memory_projection_and_report(
    bench: ModuleType, history: Any, memory: Future[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    job = bench.time_job(history, repeats=1)
    assert len(job["features"]) == 7
    assert job["history_objects"] == len(history.objects)
    days = len({key.split("/")[2] for key in history.objects})
    # Next nights read one compacted object per closed day and the open last day's raw objects.
    last_day = max(key.split("/")[2] for key in history.objects)
    open_objects = sum(1 for key in history.objects if key.split("/")[2] == last_day)
    assert job["history_objects_steady"] == days - 1 + open_objects
    assert job["model_joblib_bytes"] > 0
    assert set(job["seconds"]) >= {
        "retrain_job", "retrain_job_steady", "train", "read_window", "read_window_steady", "score_job_cold_cache"
    }  # fmt: skip
    peak = memory.result(timeout=120)
    assert peak["retrain_job_peak_rss_mb"] >= peak["imports_only_peak_rss_mb"] > 0
    projection = bench.projection(job, peak, None)
    night = projection["bounds"]["memory_ports"]["by_concurrency"]
    assert set(night) == {"20", "100"}
    assert projection["bounds"]["memory_ports"]["retrain_gb_seconds_per_night"] > 0
    results = {
        "parameters": {"days": history.days},
        "history": {"bytes": history.history_bytes},
        "job": job,
        "memory": peak,
        "projection": projection,
    }
    json.dumps(results)  # what main writes
    bench.print_report(results)
    assert "GB-s: retrain" in capsys.readouterr().out


def test_command_line(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    assert "--skip-fanout" in capsys.readouterr().out
