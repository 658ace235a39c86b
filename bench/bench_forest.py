"""`make bench`: the isolation forest's cost per integration, and the planner's fan-out to 50,000 of them.

1. One integration's nightly job on 91 days of hourly history with 7 features (acme-ads of the demo
   data: clicks, signups, ftds, deposits, ngr, signup_rate, conversion; 6 sources, so 42 slice rows
   and 7 total rows per hour). The history is written by the real scorer (``process_sync`` on memory
   adapters), so it is the history store's exact format: one gzip CSV per sync and date, 2,184 objects.
   Timed with memory ports: ``run_job`` in retrain mode end to end, and its phases one by one
   (read_window, feature_frame, train, serialise, load_verified, scoring the last day); ``run_job`` in
   score mode with the model cache empty (what a business-tier job usually meets) and warm. Peak
   memory of one retrain job: the peak resident set (VmHWM) of a fresh interpreter that imports the
   retrainer's modules and runs the job, and of one that only imports them.
2. The same history read from the local moto stack's DataBucket with ``S3Objects`` (16 threads, as on
   Lambda): wall time, and the CPU of the reading threads alone. moto on loopback, in this process:
   not S3's latency, and moto's server threads share the GIL with the readers.
3. The planner's fan-out: the state table's ActiveIntegrations index seeded with N integrations
   (BatchWriteItem, not timed), then the real planner handler for the NightlyRetrain schedule (N jobs
   on the RetrainQueue, counted) and for BusinessTierScoring (on the ScoringQueue) (the 10% business tier), with the CPU the
   planner spends in its AWS calls. moto's SendMessage costs O(queue length) (see
   :func:`moto_sends_without_queue_scan`), which the bench works around for standard queues.
4. A projection for 50,000 integrations from those measurements: the night's wall time at the
   template's RetrainerMaxConcurrency (20) and at 100, Lambda GB-seconds at RetrainerMemorySize
   (2048 MB), and the business tier's scoring every 30 minutes.

Timings on a shared machine are noisy: medians (and minima) over repeats, and each phase is measured in
the same run as the whole it belongs to. Results go to bench/results/forest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "forest.json"
INTEGRATION = "acme-ads"
DATA_BUCKET = "bench-data"
INGEST_BUCKET = "bench-ingest"
SIGNING_KEY = b"bench-signing-key"
RUN_ID = "20261201T0200Z"
STEADY_RUN_ID = "20261201T0215Z"
# What the template gives by default (template.yaml parameters and the retrainer's schedule).
MAX_CONCURRENCY = 20
SCORING_CONCURRENCY = 5  # ScoringMaxConcurrency: the scoring queue's own event source
MEMORY_MB = 2048
PROJECTED_INTEGRATIONS = 50_000
BUSINESS_SHARE = 0.10
SCORING_RUNS_PER_DAY = 48  # BusinessScoringSchedule: rate(30 minutes)
LAMBDA_TIMEOUT_SECONDS = 900
PLANNER_MEMORY_MB = 512  # RetrainPlannerFunction MemorySize
RETRAIN_RETENTION_SECONDS = 86_400  # RetrainQueue MessageRetentionPeriod
PLANNER = "RetrainPlannerFunction"

# The retrainer's import set on Lambda: its handler (Powertools batch, pandas, scikit-learn, joblib)
# and the boto3 adapters it wires in.
CHILD_IMPORTS = (
    "import kpi_sentinel.handlers.retrainer, kpi_sentinel.adapters.aws, kpi_sentinel.adapters.memory"
)
CHILD = """
import json, pickle, resource, sys, time


def peak_kb():
    # VmHWM: this process image's peak resident set. Not ru_maxrss: Linux carries the parent's peak
    # across fork + exec into it, so a child of a large parent would report the parent's size.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


started = time.perf_counter()
{imports}
imported = time.perf_counter() - started
after_imports = peak_kb()
result = {{"import_seconds": imported, "rss_after_imports_kb": after_imports}}
if len(sys.argv) > 1:
    from datetime import datetime
    from kpi_sentinel.adapters.memory import (
        MemoryControl, MemoryLedger, MemoryObjects, MemoryPublisher, MemoryState)
    from kpi_sentinel.forest.retrain import ForestSettings, Job, run_job
    from kpi_sentinel.ports import ForestPorts, StoredState
    with open(sys.argv[1], "rb") as f:
        saved = pickle.load(f)
    objects, state = MemoryObjects(), MemoryState()
    objects.objects.update(saved["objects"])
    state.items[saved["integration_id"]] = StoredState(saved["state_blob"], 1)
    as_of = datetime.fromisoformat(saved["as_of"])
    ports = ForestPorts(objects, state, MemoryControl(), MemoryLedger(), MemoryPublisher(),
                        lambda: as_of, lambda: saved["signing_key"])
    settings = ForestSettings(saved["bucket"], training_days=saved["training_days"])
    outcome = run_job(Job(saved["integration_id"], "retrain", saved["run_id"], as_of), ports, settings)
    result["status"] = outcome.status
    result["job_seconds"] = outcome.seconds
result["peak_rss_kb"] = peak_kb()
print(json.dumps(result))
"""


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(_median(values), 4), "min": round(min(values), 4)}


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


# ------------------------------------------------------------------------------------------- history


@dataclass
class History:
    """One integration's history store, as the scorer wrote it, and what a retrain job needs besides."""

    integration_id: str
    objects: dict[str, bytes]  # data bucket key -> gzip CSV body
    state_blob: bytes
    as_of: datetime  # the job's time: the end of the data
    days: int
    generate_seconds: float
    sync_files: int

    @property
    def training_days(self) -> int:
        return max(self.days - 1, 1)  # the window before the scored last day: 90 for 91 days

    @property
    def history_bytes(self) -> int:
        return sum(len(b) for b in self.objects.values())


def build_history(days: int, seed: int = 7) -> History:
    """acme-ads's hourly sync files from the demo data, scored by the real scorer on memory ports."""
    from kpi_sentinel.adapters.memory import MemoryControl, MemoryObjects, MemoryPublisher, MemoryState
    from kpi_sentinel.ports import ScorerPorts
    from kpi_sentinel.sync import ScorerSettings, SyncRef, process_sync
    from kpi_sentinel.synthetic import demo_dataset

    started = time.perf_counter()
    dataset = demo_dataset(days=days, seed=seed)
    files = sorted(
        (f for f in dataset.files if f.integration_id == INTEGRATION), key=lambda f: f.period_start
    )
    objects, state = MemoryObjects(), MemoryState()
    ports = ScorerPorts(objects, state, MemoryControl(), MemoryPublisher(), lambda: dataset.end)
    settings = ScorerSettings(ingest_bucket=INGEST_BUCKET, data_bucket=DATA_BUCKET)
    for n, sync in enumerate(files):
        objects.put(INGEST_BUCKET, sync.key, sync.body, "text/csv")
        outcome = process_sync(SyncRef(INGEST_BUCKET, sync.key, len(sync.body), f"v{n}"), ports, settings)
        if outcome.status != "scored":
            raise RuntimeError(f"{sync.key}: {outcome.status} ({outcome.reason})")
    blob = state.load(INTEGRATION).blob
    assert blob is not None
    history = {k: b for (bucket, k), b in objects.objects.items() if bucket == DATA_BUCKET}
    return History(INTEGRATION, history, blob, dataset.end, days, time.perf_counter() - started, len(files))


def memory_ports(history: History) -> Any:
    """ForestPorts on memory adapters holding ``history`` (a fresh ledger: every run publishes)."""
    from kpi_sentinel.adapters.memory import (
        MemoryControl,
        MemoryLedger,
        MemoryObjects,
        MemoryPublisher,
        MemoryState,
    )
    from kpi_sentinel.ports import ForestPorts, StoredState

    objects, state = MemoryObjects(), MemoryState()
    objects.objects.update({(DATA_BUCKET, k): b for k, b in history.objects.items()})
    state.items[history.integration_id] = StoredState(history.state_blob, 1)
    return ForestPorts(
        objects, state, MemoryControl(), MemoryLedger(), MemoryPublisher(),
        lambda: history.as_of, lambda: SIGNING_KEY,
    )  # fmt: skip


def forest_settings(history: History) -> Any:
    from kpi_sentinel.forest.retrain import ForestSettings

    return ForestSettings(DATA_BUCKET, training_days=history.training_days)


# ----------------------------------------------------------------------------------- job and phases


def time_job(history: History, repeats: int) -> dict[str, Any]:
    """``run_job`` end to end (retrain; score with an empty and a warm model cache) and its phases."""
    from kpi_sentinel.forest import retrain
    from kpi_sentinel.forest.explain import flagged_alerts
    from kpi_sentinel.forest.features import feature_frame
    from kpi_sentinel.forest.model import load_verified, serialise, train
    from kpi_sentinel.scoring import IntegrationState

    settings = forest_settings(history)
    as_of, iid = history.as_of, history.integration_id
    score_start = as_of - timedelta(days=1)
    train_start = score_start - timedelta(days=settings.training_days)
    retrain_job = retrain.Job(iid, "retrain", RUN_ID, as_of)
    steady_job = retrain.Job(iid, "retrain", STEADY_RUN_ID, as_of)
    score_job = retrain.Job(iid, "score", "20261201T0230Z", as_of)
    lookback_start = as_of - timedelta(minutes=settings.score_lookback_minutes)
    state = IntegrationState.from_bytes(history.state_blob)
    config, granularity = state.config, state.granularity

    times: dict[str, list[float]] = {
        name: []
        for name in (
            "retrain_job", "retrain_job_steady", "score_job_cold_cache", "score_job_warm_cache",
            "read_window", "read_window_steady", "feature_frame", "train", "serialise", "load_verified",
            "score_last_day", "score_read_window",
        )
    }  # fmt: skip
    info: dict[str, Any] = {}
    for _ in range(repeats + 1):  # the first round warms imports and caches and is not counted
        first = not info
        ports = memory_ports(history)
        retrain._MODELS.clear()
        elapsed, outcome = _timed(retrain.run_job, retrain_job, ports, settings)
        if outcome.status != "trained":
            raise RuntimeError(f"retrain job did not train: {outcome.status} ({outcome.reason})")
        # The next night: the closed days were compacted by the job above (a new run id, same data).
        retrain._MODELS.clear()
        steady, again = _timed(retrain.run_job, steady_job, ports, settings)
        if again.status != "trained":
            raise RuntimeError(f"steady-state retrain did not train: {again.status} ({again.reason})")
        retrain._MODELS.clear()
        cold, scored = _timed(retrain.run_job, score_job, ports, settings)
        warm, _ = _timed(retrain.run_job, score_job, ports, settings)
        if scored.status != "scored":
            raise RuntimeError(f"score job did not score: {scored.status} ({scored.reason})")

        # The retrain path's phases, as retrain._retrain runs them: the read on the first night (raw
        # history, fresh ports) and once its closed days are compacted (the ports the jobs used).
        t_read, (frame_rows, objects) = _timed(
            retrain.read_window, memory_ports(history), settings, iid, train_start, as_of
        )
        t_steady_read, (_rows, steady_objects) = _timed(
            retrain.read_window, ports, settings, iid, train_start, as_of
        )
        t_features, frame = _timed(feature_frame, frame_rows, config)
        training, recent = frame.between(train_start, score_start), frame.between(score_start, as_of)
        t_train, model = _timed(train, training, iid, settings.percentile_for(granularity), settings.trees)
        identity = {"integration_id": iid, "version": RUN_ID, "granularity_seconds": granularity}
        t_serialise, (body, metadata) = _timed(serialise, model, SIGNING_KEY, identity)
        t_load, loaded = _timed(load_verified, body, metadata, SIGNING_KEY)
        model_key = f"{retrain.model_prefix(iid)}{RUN_ID}.joblib"
        t_score, flagged = _timed(
            flagged_alerts, loaded, recent, config, iid, granularity, model_key, settings.training_days
        )
        t_score_read, _ = _timed(retrain.read_window, ports, settings, iid, lookback_start, as_of)
        if first:
            info = {
                "history_objects": objects,
                "history_objects_steady": steady_objects,
                "history_rows_read": len(frame_rows),
                "features": frame.names,
                "training_rows": model.training_rows,
                "training_days_usable": outcome.training_days,
                "periods_scored": len(recent),
                "alerts_flagged_last_day": len(flagged),
                "score_job_history_objects": scored.history_objects,
                "score_job_rows_scored": scored.rows_scored,
                "model_joblib_bytes": len(body),
                "model_metadata_bytes": len(json.dumps(metadata, indent=1).encode()),
            }
            continue
        for name, value in (
            ("retrain_job", elapsed), ("retrain_job_steady", steady), ("score_job_cold_cache", cold),
            ("score_job_warm_cache", warm), ("read_window", t_read), ("read_window_steady", t_steady_read),
            ("feature_frame", t_features), ("train", t_train),
            ("serialise", t_serialise), ("load_verified", t_load), ("score_last_day", t_score),
            ("score_read_window", t_score_read),
        ):  # fmt: skip
            times[name].append(value)
    phases = ("read_window", "feature_frame", "train", "serialise", "load_verified", "score_last_day")
    phase_sum = sum(_median(times[p]) for p in phases)
    return {
        **info,
        "repeats": repeats,
        "seconds": {name: _summary(values) for name, values in times.items()},
        "phases_sum_median_seconds": round(phase_sum, 4),
        "note": "memory ports; phases timed separately in the same rounds as the whole job; the job "
        "also writes the model, metadata, pointer and run record, prunes and checks the ledger. "
        "retrain_job is the first night (it reads the raw history and compacts its closed days); "
        "retrain_job_steady is the next night on the compacted days",
    }


# ---------------------------------------------------------------------------------------- peak memory


def _child(args: Sequence[str]) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'core'}",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "JOBLIB_MULTIPROCESSING": "0",  # as the template sets it for the retrainer
    }
    code = CHILD.format(imports=CHILD_IMPORTS)
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def peak_memory(history: History, runs: int) -> dict[str, Any]:
    """Peak RSS (VmHWM) of a fresh interpreter running one retrain job, and of one that only imports."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "history.pickle"
        with saved.open("wb") as f:
            pickle.dump(
                {
                    "objects": {(DATA_BUCKET, k): b for k, b in history.objects.items()},
                    "integration_id": history.integration_id,
                    "state_blob": history.state_blob,
                    "as_of": history.as_of.isoformat(),
                    "signing_key": SIGNING_KEY,
                    "bucket": DATA_BUCKET,
                    "training_days": history.training_days,
                    "run_id": RUN_ID,
                },
                f,
            )
        jobs, imports = [], []
        for _ in range(runs):  # interleaved, so both see the same machine
            jobs.append(_child([str(saved)]))
            imports.append(_child([]))
    if any(j.get("status") != "trained" for j in jobs):
        raise RuntimeError(f"the memory child did not train: {jobs}")
    job_mb = _median([j["peak_rss_kb"] / 1024 for j in jobs])
    base_mb = _median([i["peak_rss_kb"] / 1024 for i in imports])
    return {
        "runs": runs,
        "retrain_job_peak_rss_mb": round(job_mb, 1),
        "imports_only_peak_rss_mb": round(base_mb, 1),
        "job_above_imports_mb": round(job_mb - base_mb, 1),
        "cold_import_seconds": round(_median([i["import_seconds"] for i in imports]), 3),
        "child_job_seconds": round(_median([j["job_seconds"] for j in jobs]), 3),
        "imports": CHILD_IMPORTS.removeprefix("import "),
        "note": "VmHWM (peak resident set since exec) of fresh interpreters, median over runs; the job child "
        "also holds the history objects it was handed (as a Lambda holds what it read)",
    }


# --------------------------------------------------------------------------------- moto: S3 and fan-out


class _CpuCountingObjects:
    """S3Objects whose GETs add up the CPU their calling threads spend (botocore, not moto's server)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cpu = 0.0
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str) -> bytes:
        started = time.thread_time()
        body: bytes = self.inner.get(bucket, key)
        spent = time.thread_time() - started
        with self._lock:
            self.cpu += spent
        return body

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def moto_read(stack: Any, history: History, repeats: int) -> dict[str, Any]:
    """read_window with S3Objects against the local stack's DataBucket (moto on loopback, not S3).

    Besides the wall time, the CPU of the reading threads alone (listing, botocore's requests, gzip
    and CSV parsing; not moto's server threads, which run in this process too): what a job spends on
    the read whatever the store's latency.
    """
    from kpi_sentinel.adapters.aws import S3Objects
    from kpi_sentinel.forest.retrain import READ_THREADS, ForestSettings, daily_prefix, read_window
    from kpi_sentinel.ports import ForestPorts

    bucket = stack.physical["DataBucket"]
    s3 = stack.client("s3")
    put_seconds, _ = _timed(
        lambda: _parallel(
            lambda kb: s3.put_object(Bucket=bucket, Key=kb[0], Body=kb[1], ContentType="application/gzip"),
            list(history.objects.items()),
        )
    )
    base = memory_ports(history)
    settings = ForestSettings(bucket, training_days=history.training_days)
    as_of, iid = history.as_of, history.integration_id
    windows = {
        "retrain": as_of - timedelta(days=1 + settings.training_days),  # first night: raw history
        "retrain_steady": as_of - timedelta(days=1 + settings.training_days),  # compacted days
        "score": as_of - timedelta(minutes=settings.score_lookback_minutes),
    }
    wall: dict[str, list[float]] = {name: [] for name in windows}
    cpu: dict[str, list[float]] = {name: [] for name in windows}
    objects: dict[str, int] = {}
    compacted = daily_prefix(iid)
    for n in range(repeats + 1):
        # Every round starts from the first night: the previous round's compaction is removed.
        stale = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=compacted).get("Contents", [])]
        for i in range(0, len(stale), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[i : i + 1000]]})
        for name, start in windows.items():
            store = _CpuCountingObjects(S3Objects())
            ports = ForestPorts(
                store, base.state, base.control, base.ledger, base.publisher, base.clock, base.signing_key
            )
            main_cpu = time.thread_time()
            t, (_frame, objects[name]) = _timed(read_window, ports, settings, iid, start, as_of)
            if n:  # the first round warms the connection pool and is not counted
                wall[name].append(t)
                cpu[name].append(time.thread_time() - main_cpu + store.cpu)
    if objects["retrain"] != len(history.objects):
        raise RuntimeError(f"read {objects['retrain']} objects from moto, stored {len(history.objects)}")
    return {
        "objects": objects["retrain"],
        "steady_objects": objects["retrain_steady"],
        "score_window_objects": objects["score"],
        "bytes": history.history_bytes,
        "read_threads": READ_THREADS,
        "repeats": repeats,
        "retrain_window_seconds": _summary(wall["retrain"]),
        "retrain_window_client_cpu_seconds": _summary(cpu["retrain"]),
        "steady_window_seconds": _summary(wall["retrain_steady"]),
        "steady_window_client_cpu_seconds": _summary(cpu["retrain_steady"]),
        "score_window_seconds": _summary(wall["score"]),
        "score_window_client_cpu_seconds": _summary(cpu["score"]),
        "put_seconds_untimed_setup": round(put_seconds, 2),
        "note": "moto server on loopback in this process (about 8 ms of server work per request, its "
        "threads sharing the GIL with the 16 readers): not S3's latency, which is unmeasured here. "
        "client CPU: thread CPU of the reading threads only",
    }


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any], threads: int = 8) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fn, items))


def integration_ids(n: int) -> list[str]:
    return [f"bench-{i:06d}" for i in range(n)]


def tier_of(i: int) -> str:
    return "business" if i % 10 == 0 else "standard"  # 10%: every tenth integration


def index_item(integration_id: str, tier: str, granularity: int, last_sync_at: int) -> dict[str, Any]:
    """A state header item as DynamoState.commit writes it (a one-chunk placeholder blob)."""
    from kpi_sentinel.forest.planner import shard_of

    return {
        "pk": {"S": f"integration#{integration_id}"},
        "sk": {"S": "state"},
        "version": {"N": "1"},
        "chunks": {"N": "1"},
        "blob": {"B": b"\0" * 64},
        "last_sync": {"S": f"syncs/{integration_id}/bench.csv#v1"},
        # The ActiveIntegrations index attributes, exactly as DynamoState.commit writes them.
        "active_shard": {"S": shard_of(integration_id)},
        "integration_id": {"S": integration_id},
        "last_sync_at": {"N": str(last_sync_at)},
        "tier": {"S": tier},
        "granularity": {"N": str(granularity)},
    }


def seed_index(stack: Any, n: int) -> float:
    """BatchWriteItem N state header items (25 per call, 8 threads); returns the seconds it took."""
    table = stack.physical["StateTable"]
    dynamodb = stack.client("dynamodb")
    now = int(time.time())
    items = [
        index_item(iid, tier_of(i), 300 if i % 5 == 0 else 3600, now - (i % 3600))
        for i, iid in enumerate(integration_ids(n))
    ]
    batches = [items[i : i + 25] for i in range(0, len(items), 25)]

    def write(batch: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {table: [{"PutRequest": {"Item": item}} for item in batch]}
        for _ in range(8):
            request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not request:
                return
            time.sleep(0.1)
        raise RuntimeError("DynamoDB kept items unprocessed while seeding the index")

    seconds, _ = _timed(_parallel, write, batches)
    return seconds


def _queue_count(stack: Any, url: str) -> int:
    attrs = stack.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@contextmanager
def moto_sends_without_queue_scan() -> Iterator[None]:
    """moto (5.2) reads ``queue.attributes`` in every SendMessage, to see whether a *FIFO* queue
    deduplicates by content, and computing them counts the queue's messages by scanning all of them:
    N sends into one queue cost O(N^2) (5,000 took about 8 minutes here; 50,000 would take hours).
    For a standard queue that lookup always finds nothing, so inside SendMessage it is answered with
    no attributes; every other reader (GetQueueAttributes included) gets moto's own answer."""
    from moto.sqs import models

    sending = threading.local()
    original_send = models.SQSBackend.send_message
    original_attributes = models.Queue.attributes

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        sending.on = True
        try:
            return original_send(self, *args, **kwargs)
        finally:
            sending.on = False

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(sending, "on", False) and not self.fifo_queue:
            return {}
        result: dict[str, Any] = original_attributes.fget(self)  # type: ignore[attr-defined]
        return result

    models.SQSBackend.send_message = send_message  # type: ignore[method-assign]
    models.Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        models.SQSBackend.send_message = original_send  # type: ignore[method-assign]
        models.Queue.attributes = original_attributes  # type: ignore[method-assign]


class _CallCpu:
    """CPU the calling threads spend inside boto3 API calls (from parameter handling to the parsed
    response): the planner's own work per request, without moto's server threads. Registered on the
    default boto3 session, so the clients the handler creates after its cache reset carry it."""

    EVENTS = (("provide-client-params", "_start"), ("after-call", "_stop"), ("after-call-error", "_stop"))

    def __init__(self) -> None:
        import boto3

        self.cpu, self.calls = 0.0, 0
        self._lock, self._local = threading.Lock(), threading.local()
        self._events = boto3._get_default_session().events
        for event, method in self.EVENTS:
            self._events.register(event, getattr(self, method), unique_id=f"bench-{method}-{event}")

    def close(self) -> None:
        for event, method in self.EVENTS:
            self._events.unregister(event, unique_id=f"bench-{method}-{event}")

    def _start(self, **_: Any) -> None:
        self._local.started = time.thread_time()

    def _stop(self, **_: Any) -> None:
        spent = time.thread_time() - getattr(self._local, "started", time.thread_time())
        with self._lock:
            self.cpu += spent
            self.calls += 1

    def reset(self) -> None:
        with self._lock:
            self.cpu, self.calls = 0.0, 0


def _plan_once(
    stack: Any, event_name: str, expected: int, mode: str, meter: _CallCpu, purge_after: bool
) -> dict[str, Any]:
    queue = "RetrainQueue" if mode == "retrain" else "ScoringQueue"
    url = stack.queue_url(queue)
    sqs = stack.client("sqs")
    if _queue_count(stack, url):
        raise RuntimeError(f"{queue} is not empty before the planner runs")
    meter.reset()
    seconds, result = _timed(stack.trigger, PLANNER, event_name)
    cpu, calls = meter.cpu, meter.calls
    count = _queue_count(stack, url)
    if result["enqueued"] != expected or count != expected:
        raise RuntimeError(
            f"{event_name}: planner enqueued {result['enqueued']}, the queue holds {count}, expected {expected}"
        )
    sample = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for message in sample:
        job = json.loads(message["Body"])
        if job["mode"] != mode or job["run_id"] != result["run_id"] or not job["integration_id"]:
            raise RuntimeError(f"{event_name}: unexpected job {job}")
    if purge_after:  # SQS (and moto) allow one purge per queue every 60 s: only between the runs
        sqs.purge_queue(QueueUrl=url)
    return {
        "enqueued": result["enqueued"],
        "queue_count": count,
        "by_tier": result["by_tier"],
        "seconds": round(seconds, 3),
        "jobs_per_second": round(expected / seconds) if seconds else None,
        "aws_calls": calls,
        "client_cpu_seconds": round(cpu, 2),
    }


def fanout(stack: Any, n: int) -> dict[str, Any]:
    """Seed N integrations, then the real planner for both schedules; the index read timed alone too."""
    from kpi_sentinel.adapters import aws

    spec = stack.functions[PLANNER]
    spec.environment.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"})
    stack.handler(PLANNER)  # import the handler now, so the timed runs are warm-container runs
    seed_seconds = seed_index(stack, n)
    meter = _CallCpu()
    aws.client.cache_clear()  # the index read alone gets clients that carry the meter
    business = sum(1 for i in range(n) if tier_of(i) == "business")
    since = time.time() - float(spec.environment.get("ACTIVE_WITHIN_DAYS", "7")) * 86400
    index = aws.DynamoActiveIndex(stack.physical["StateTable"])
    meter.reset()
    read_seconds, found = _timed(lambda: sum(1 for _ in index.active(since)))
    read_cpu, read_calls = meter.cpu, meter.calls
    if found != n:
        meter.close()
        raise RuntimeError(f"the index gave {found} active integrations, seeded {n}")
    try:
        with moto_sends_without_queue_scan():
            nightly = _plan_once(stack, "NightlyRetrain", n, "retrain", meter, purge_after=True)
            scoring = _plan_once(stack, "BusinessTierScoring", business, "score", meter, purge_after=False)
    finally:
        meter.close()
    return {
        "integrations": n,
        "business_tier": business,
        "seed_seconds_untimed_setup": round(seed_seconds, 2),
        "index_read_seconds": round(read_seconds, 3),
        "index_read_client_cpu_seconds": round(read_cpu, 2),
        "index_read_calls": read_calls,
        "nightly_retrain": nightly,
        "business_tier_scoring": scoring,
        "planner_memory_mb": PLANNER_MEMORY_MB,
        "planner_timeout_seconds": LAMBDA_TIMEOUT_SECONDS,
        "note": "one run each (the index read alone too) through the real handler, warm (imported "
        "beforehand), against moto on loopback in this process (moto's server threads share the GIL "
        "with the planner's); jobs counted with ApproximateNumberOfMessages and a sample checked. "
        "client CPU: the planner's threads inside its AWS calls. AWS latencies are unmeasured here",
    }


# ------------------------------------------------------------------------------------------ projection


def _bound(retrain_s: float, score_s: float, basis: str) -> dict[str, Any]:
    gb = MEMORY_MB / 1024
    business = int(PROJECTED_INTEGRATIONS * BUSINESS_SHARE)
    night = {}
    for concurrency in (MAX_CONCURRENCY, 100):
        wall = PROJECTED_INTEGRATIONS * retrain_s / concurrency
        night[str(concurrency)] = {
            "night_wall_seconds": round(wall),
            "night_wall_hours": round(wall / 3600, 2),
            "scoring_schedules_fired_during_night": int(wall // 1800),
            "business_scoring_run_seconds": round(business * score_s / concurrency, 1),
        }
    score_gbs = business * score_s * gb
    return {
        "basis": basis,
        "retrain_seconds_per_job": round(retrain_s, 4),
        "score_seconds_per_job": round(score_s, 4),
        "by_concurrency": night,
        "business_scoring_run_seconds_at_scoring_concurrency": round(
            business * score_s / SCORING_CONCURRENCY
        ),
        "retrain_gb_seconds_per_night": round(PROJECTED_INTEGRATIONS * retrain_s * gb),
        "business_scoring_gb_seconds_per_run": round(score_gbs),
        "business_scoring_gb_seconds_per_day": round(score_gbs * SCORING_RUNS_PER_DAY),
    }


def projection(
    job: dict[str, Any], memory: dict[str, Any] | None, read: dict[str, Any] | None
) -> dict[str, Any]:
    """The night and the business tier for 50,000 integrations, from this run's medians.

    Lower bound: the memory-port job with its in-memory read replaced by the CPU the reading threads
    spent reading from moto (the store's latency fully hidden behind 16 threads). Upper bound: the
    read replaced by moto's wall time. Without a moto read (--skip-fanout): the memory-port job alone.
    """
    s = {name: v["median"] for name, v in job["seconds"].items()}
    retrain_base = s["retrain_job"] - s["read_window"]
    score_base = s["score_job_cold_cache"] - s["score_read_window"]
    bounds: dict[str, Any] = {}
    if read is None:
        bounds["memory_ports"] = _bound(
            s["retrain_job"], s["score_job_cold_cache"], "memory-port jobs (no network read measured)"
        )
    else:
        bounds["lower"] = _bound(
            retrain_base + read["retrain_window_client_cpu_seconds"]["median"],
            score_base + read["score_window_client_cpu_seconds"]["median"],
            "memory-port job, its read replaced by the readers' CPU on the moto read (latency hidden)",
        )
        bounds["upper"] = _bound(
            retrain_base + read["retrain_window_seconds"]["median"],
            score_base + read["score_window_seconds"]["median"],
            "memory-port job, its read replaced by the moto read's wall time",
        )
        # Every night after the first: the closed days are compacted, one object per day.
        steady_base = s["retrain_job_steady"] - s["read_window_steady"]
        bounds["steady_lower"] = _bound(
            steady_base + read["steady_window_client_cpu_seconds"]["median"],
            score_base + read["score_window_client_cpu_seconds"]["median"],
            "nights after the first (compacted days): steady memory-port job, its read replaced by "
            "the readers' CPU on the moto read",
        )
        bounds["steady_upper"] = _bound(
            steady_base + read["steady_window_seconds"]["median"],
            score_base + read["score_window_seconds"]["median"],
            "nights after the first (compacted days): steady memory-port job, its read replaced by "
            "the moto read's wall time",
        )
    gb = MEMORY_MB / 1024
    peak = memory["retrain_job_peak_rss_mb"] if memory else None
    cold = f"{memory['cold_import_seconds']:.2f} s" if memory else "not measured"
    return {
        "integrations": PROJECTED_INTEGRATIONS,
        "business_tier": int(PROJECTED_INTEGRATIONS * BUSINESS_SHARE),
        "memory_mb": MEMORY_MB,
        "bounds": bounds,
        "peak_rss_mb_vs_memory": None if peak is None else f"{peak:.0f} of {MEMORY_MB} MB",
        "assumptions": [
            f"Every one of the {PROJECTED_INTEGRATIONS:,} integrations is like the measured one "
            f"({job['history_objects']:,} history objects on the first night, "
            f"{job['history_objects_steady']:,} once compacted; {len(job['features'])} features); integrations "
            "syncing every 5 minutes write up to 12x the objects per day: not measured.",
            "Seconds are this machine's (a shared 2-core box, one job on one core, Python "
            f"{platform.python_version()}). Lambda allots CPU in proportion to memory (AWS documents one "
            f"vCPU at 1,769 MB); how a Lambda vCPU at {MEMORY_MB} MB compares with this core is unmeasured, "
            "so no factor is applied.",
            "S3's latency is unmeasured: the bounds bracket it between fully hidden (lower) and moto's "
            "loopback wall time (upper).",
            "Wall time = jobs x seconds per job / concurrency, all jobs alike: queue polling, the "
            f"planner's fan-out, cold starts (import {cold} here, about one per container) and retries "
            "are left out.",
            f"GB-seconds = jobs x seconds per job x {gb:.1f} GB (RetrainerMemorySize {MEMORY_MB} MB); "
            "init time and request charges are not counted.",
            "Score jobs run with an empty model cache (a container serving many of the 5,000 business "
            "integrations rarely holds the model: it caches 32).",
            "Business-tier score jobs have their own ScoringQueue and event source, so a scoring run never "
            f"waits behind the night's backlog; at ScoringMaxConcurrency ({SCORING_CONCURRENCY}) a run takes "
            "business_scoring_run_seconds_at_scoring_concurrency, which must stay under the 30-minute "
            "schedule (the per-concurrency figures show the same run at the retrain concurrencies).",
        ],
    }


# ---------------------------------------------------------------------------------------------- output


def print_report(results: dict[str, Any]) -> None:
    job, mem, read, fan, proj = (
        results.get(k) for k in ("job", "memory", "moto_read", "fanout", "projection")
    )
    assert job is not None
    assert proj is not None
    s = job["seconds"]
    print(f"isolation forest, one integration: {results['parameters']['days']} days hourly, "
          f"{len(job['features'])} features ({', '.join(job['features'])})")  # fmt: skip
    print(f"  history: {job['history_objects']:,} objects, {results['history']['bytes'] / 1e6:.1f} MB gzip, "
          f"{job['history_rows_read']:,} total rows kept of them; {job['training_rows']:,} training rows over "
          f"{job['training_days_usable']} usable days; {job['periods_scored']} periods scored")  # fmt: skip
    print(f"  {'memory ports, seconds':<36}{'median':>9}{'min':>9}   ({job['repeats']} repeats)")
    rows = (
        ("retrain job, first night", "retrain_job"), ("retrain job, next nights", "retrain_job_steady"),
        ("  read_window raw (memory)", "read_window"), ("  read_window compacted", "read_window_steady"),
        ("  feature_frame", "feature_frame"), ("  train (PCA + 100 trees)", "train"),
        ("  serialise (joblib + sign)", "serialise"), ("  load_verified", "load_verified"),
        ("  score last day + explain", "score_last_day"),
        ("score job, empty model cache", "score_job_cold_cache"),
        ("  read_window of its hour (memory)", "score_read_window"),
        ("score job, warm model cache", "score_job_warm_cache"),
    )  # fmt: skip
    for label, key in rows:
        print(f"  {label:<36}{s[key]['median']:>9.4f}{s[key]['min']:>9.4f}")
    print(f"  {'  (retrain phases, sum of medians)':<36}{job['phases_sum_median_seconds']:>9.4f}")
    print(f"  model: {job['model_joblib_bytes'] / 1024:.0f} KiB joblib, {job['model_metadata_bytes'] / 1024:.1f} KiB "
          "metadata")  # fmt: skip
    if mem:
        print(f"  peak RSS: retrain job {mem['retrain_job_peak_rss_mb']:.0f} MB, imports only "
              f"{mem['imports_only_peak_rss_mb']:.0f} MB (the job adds {mem['job_above_imports_mb']:.0f} MB); "
              f"cold import {mem['cold_import_seconds']:.2f} s  (median of {mem['runs']} fresh interpreters)")  # fmt: skip
    if read:
        rw, rc = read["retrain_window_seconds"], read["retrain_window_client_cpu_seconds"]
        sw, sc = read["score_window_seconds"], read["score_window_client_cpu_seconds"]
        print(f"  moto on loopback (not S3), read_window with S3Objects, {read['read_threads']} threads, "
              f"median of {read['repeats']}:")  # fmt: skip
        print(f"    retrain window {read['objects']:,} objects: wall {rw['median']:.2f} s, readers' CPU "
              f"{rc['median']:.2f} s = {rw['median'] / s['train']['median']:.1f}x / "
              f"{rc['median'] / s['train']['median']:.1f}x train")  # fmt: skip
        tw, tc = read["steady_window_seconds"], read["steady_window_client_cpu_seconds"]
        print(f"    compacted window {read['steady_objects']:,} objects: wall {tw['median']:.2f} s, readers' "
              f"CPU {tc['median']:.2f} s")  # fmt: skip
        print(f"    score window {read['score_window_objects']} objects: wall {sw['median'] * 1000:.0f} ms, "
              f"readers' CPU {sc['median'] * 1000:.0f} ms")  # fmt: skip
    if fan:
        nr, bt = fan["nightly_retrain"], fan["business_tier_scoring"]
        print(f"planner fan-out against the local stack (moto), {fan['integrations']:,} integrations "
              f"(seeding {fan['seed_seconds_untimed_setup']:.1f} s, not counted), one run each:")  # fmt: skip
        print(f"  index read alone      {fan['index_read_seconds']:8.2f} s  {fan['integrations']:>7,} active "
              f"integrations (16 shard queries; planner-side CPU {fan['index_read_client_cpu_seconds']:.2f} s)")  # fmt: skip
        for label, run in (("NightlyRetrain", nr), ("BusinessTierScoring", bt)):
            print(f"  {label:<20}  {run['seconds']:8.2f} s  {run['enqueued']:>7,} jobs enqueued, queue holds "
                  f"{run['queue_count']:,}; {run['aws_calls']:,} AWS calls, planner-side CPU "
                  f"{run['client_cpu_seconds']:.1f} s")  # fmt: skip
        share = PLANNER_MEMORY_MB / 1769
        print(f"  (planner: {fan['planner_memory_mb']} MB, about {share:.2f} of a vCPU as AWS documents it, "
              f"timeout {fan['planner_timeout_seconds']} s)")  # fmt: skip
    print(f"projection: {proj['integrations']:,} integrations ({proj['business_tier']:,} business tier), "
          f"{proj['memory_mb']} MB retrainer")  # fmt: skip
    for name, bound in proj["bounds"].items():
        print(f"  {name}: {bound['basis']}")
        print(f"    {bound['retrain_seconds_per_job']:.3f} s per retrain job, {bound['score_seconds_per_job']:.3f} s "
              "per score job")  # fmt: skip
        for concurrency, c in bound["by_concurrency"].items():
            print(f"    concurrency {concurrency:>3}: night {c['night_wall_hours']:5.2f} h "
                  f"({c['scoring_schedules_fired_during_night']} scoring schedules fire meanwhile); "
                  f"a business scoring run {c['business_scoring_run_seconds']:.0f} s")  # fmt: skip
        print(f"    a business scoring run on its own queue at concurrency {SCORING_CONCURRENCY}: "
              f"{bound['business_scoring_run_seconds_at_scoring_concurrency']} s")  # fmt: skip
        print(f"    GB-s: retrain {bound['retrain_gb_seconds_per_night']:,} per night; business scoring "
              f"{bound['business_scoring_gb_seconds_per_run']:,} per run, "
              f"{bound['business_scoring_gb_seconds_per_day']:,} per day (48 runs)")  # fmt: skip
    if proj["peak_rss_mb_vs_memory"]:
        print(f"  peak memory of a retrain job: {proj['peak_rss_mb_vs_memory']}")
    print("  assumptions:")
    for line in proj["assumptions"]:
        print(f"   - {line}")


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median)")
    parser.add_argument("--integrations", type=int, default=PROJECTED_INTEGRATIONS,
                        help="integrations the planner fans out to on the local stack")  # fmt: skip
    parser.add_argument("--days", type=int, default=91, help="days of hourly history (the last is scored)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--skip-fanout", action="store_true", help="no local stack: no moto read, no fan-out")
    parser.add_argument("--memory-runs", type=int, default=3, help="fresh interpreters for peak memory")
    args = parser.parse_args(argv)
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    history = build_history(args.days)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "shared, noisy machine: medians over repeats; ratios compare figures of one run",
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            "days": args.days,
            "repeats": args.repeats,
            "integrations": None if args.skip_fanout else args.integrations,
            "memory_runs": args.memory_runs,
            "integration": INTEGRATION,
            "training_days": history.training_days,
        },
        "history": {
            "objects": len(history.objects),
            "bytes": history.history_bytes,
            "sync_files": history.sync_files,
            "generated_by": "kpi_sentinel.synthetic.demo_dataset -> sync.process_sync on memory ports",
            "generate_seconds_untimed_setup": round(history.generate_seconds, 2),
        },
    }
    results["job"] = time_job(history, args.repeats)
    results["memory"] = peak_memory(history, args.memory_runs) if args.memory_runs > 0 else None
    results["moto_read"] = results["fanout"] = None
    if not args.skip_fanout:
        from kpi_sentinel.local.stack import local_stack

        with local_stack() as stack:
            results["moto_read"] = moto_read(stack, history, max(1, min(args.repeats, 5)))
            results["fanout"] = fanout(stack, args.integrations)
    results["projection"] = projection(results["job"], results["memory"], results["moto_read"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    try:
        shown = args.out.resolve().relative_to(ROOT)
    except ValueError:
        shown = args.out
    print(f"results: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
