"""Threshold tuning on in-memory adapters: a labelled fixture whose right threshold is known by hand, the
skips and their reasons, operators' overrides, bounds, the audit entry, idempotence, and a property test
of the choice itself."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kpi_sentinel.adapters.memory import MemoryObjects, MemoryState, MemoryTuning
from kpi_sentinel.alerts import alert_id
from kpi_sentinel.handlers import tuning as handler
from kpi_sentinel.operator_jobs.schedule import BadJobEvent
from kpi_sentinel.operator_jobs.thresholds import Bounds, Labelled, choose, evaluate
from kpi_sentinel.operator_jobs.tuning import (
    TuningOutcome,
    TuningSettings,
    merge_tuned,
    record_key,
    tune,
)
from kpi_sentinel.ports import ActiveIntegration, TunedThreshold, TuningPorts
from kpi_sentinel.sync import HISTORY_COLUMNS

IID = "acme-ads"
DATA = "data"
AS_OF = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
SETTINGS = TuningSettings(data_bucket=DATA)
# The hand-worked fixture (hourly: the default threshold is 3.5): four false positives just past the
# threshold, three true positives well past it, one "expected" move (a campaign) in between.
FALSE = (3.6, -3.8, 4.1, 4.4)
TRUE = (-5.2, 6.0, -7.5)
EXPECTED = (4.0,)


def _period(n: int) -> str:
    """The start of the n-th hour of the 28 days before AS_OF."""
    return (AS_OF - timedelta(days=28) + timedelta(hours=n)).isoformat()


@dataclass
class World:
    objects: MemoryObjects = field(default_factory=MemoryObjects)
    store: MemoryTuning = field(default_factory=MemoryTuning)
    state: MemoryState = field(default_factory=MemoryState)
    now: datetime = AS_OF + timedelta(minutes=3)

    def __post_init__(self) -> None:
        self.state.index[IID] = ActiveIntegration(IID, "standard", 3600, AS_OF.timestamp() - 600)

    @property
    def ports(self) -> TuningPorts:
        return TuningPorts(self.state, self.store, self.objects, lambda: self.now)

    def history(
        self,
        metric: str,
        scores: dict[int, float],
        labels: dict[int, str] | None = None,
        on_slice: bool = False,
        slice_values: tuple[str, str] = ("10", "10"),
    ) -> None:
        """History objects (as the scorer writes them, one per day) of ``metric`` over the window:
        ``scores`` by hour index (others get small scores), ``labels`` by hour index (alerted periods),
        on the metric's total, or with ``on_slice`` on its slice source=email (observed and expected
        ``slice_values``; the other series then scores 9.9 throughout, past every threshold)."""
        labels = labels or {}
        by_day: dict[str, list[list[str]]] = defaultdict(list)
        for n in range(28 * 24):
            start = _period(n)
            score = scores.get(n, round(2.4 * math.sin(n * 1.3), 3))  # |score| < 2.5: never alerts
            severity = "warning" if n in labels else ""
            labelled = [str(score), "scored", severity]
            other = ["9.9", "scored", "warning"]
            total, part = (other, labelled) if on_slice else (labelled, other)
            by_day[start[:10]].append(
                [start, IID, metric, "", "", "100", "100", "90", "110", *total, "k", ""]
            )
            observed, expected = slice_values
            by_day[start[:10]].append(
                [start, IID, metric, "source", "email", observed, expected, "9", "11", *part, "k", ""]
            )
            if n in labels:
                dimension, value = ("source", "email") if on_slice else ("", "")
                self.store.put_label(IID, alert_id(IID, "ewma", metric, dimension, value, start), labels[n])
        self.put_history(metric, by_day)

    def put_history(self, metric: str, by_day: dict[str, list[list[str]]]) -> None:
        """One history object per day, as the scorer writes them."""
        for day, rows in by_day.items():
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(HISTORY_COLUMNS)
            writer.writerows(rows)
            key = f"history/integration={IID}/date={day}/{metric}.csv.gz"
            self.objects.put(DATA, key, gzip.compress(text.getvalue().encode()), "application/gzip")

    def run(self, tuning: TuningSettings = SETTINGS, as_of: datetime = AS_OF) -> TuningOutcome:
        return tune(as_of, self.ports, tuning)

    def record(self, as_of: datetime = AS_OF) -> dict[str, Any]:
        run = as_of.strftime("%Y%m%dT%H%MZ")
        record: dict[str, Any] = json.loads(self.objects.get(DATA, record_key(IID, run)))
        return record


def _labelled_fixture(
    world: World, metric: str = "ngr", on_slice: bool = False, slice_values: tuple[str, str] = ("10", "10")
) -> None:
    scores: dict[int, float] = {}
    labels: dict[int, str] = {}
    hour = 30
    for values, label in ((FALSE, "false_positive"), (TRUE, "true_positive"), (EXPECTED, "expected")):
        for value in values:
            scores[hour], labels[hour] = value, label
            hour += 37
    scores[600] = 4.6  # past the current threshold but never labelled: operators label a sample
    world.history(metric, scores, labels, on_slice, slice_values)


# --- the labelled fixture -------------------------------------------------------------------------------


def test_given_the_labelled_fixture_when_tuned_then_the_threshold_is_the_one_worked_out_by_hand() -> None:
    """At 3.5 the four false positives and three true positives all fire: precision 3/7 < 0.5. Raising
    the threshold must keep every true positive (never above 5.2); the nearest threshold that reaches
    precision 0.5 excludes the false positive at 3.6 and keeps the one at 3.8: midway, 3.7 (3/6)."""
    world = World()
    _labelled_fixture(world)
    outcome = world.run()
    stored = world.store.tuned[(IID, "ngr")]
    assert (stored.threshold, stored.previous, stored.version) == (3.7, 3.5, 1)
    assert outcome.thresholds_tuned == 1
    assert outcome.changes == [{"integration_id": IID, "metric": "ngr", "old": 3.5, "new": 3.7}]
    [metric] = world.record()["metrics"]
    assert metric["status"] == "tuned"
    assert metric["labels"] == {"true_positive": 3, "false_positive": 4, "expected": 1}
    assert (metric["before"]["precision"], metric["after"]["precision"]) == (0.4286, 0.5)
    assert (metric["before"]["recall"], metric["after"]["recall"]) == (1.0, 1.0)


def test_given_a_stricter_precision_floor_when_tuned_then_every_false_positive_is_cut_but_no_true_one() -> (
    None
):
    world = World()
    _labelled_fixture(world)
    world.run(replace(SETTINGS, precision_floor=0.9))
    # Just past the last false positive (4.4): midway to the next period that scored, an unlabelled 4.6.
    assert world.store.tuned[(IID, "ngr")].threshold == 4.5


def test_given_a_change_when_tuned_then_its_audit_entry_says_who_what_and_on_which_evidence() -> None:
    world = World()
    _labelled_fixture(world)
    world.run()
    [(integration, audit)] = world.store.audit
    assert integration == IID
    assert audit["sk"] == f"audit#{audit['audit_id']}"
    assert audit["audit_id"].startswith(f"{world.now.isoformat(timespec='seconds')}#")
    assert audit["who"] == "threshold-tuning"
    assert (audit["kind"], audit["subject"], audit["metric"]) == ("threshold_tuned", "ngr", "ngr")
    assert (audit["old"], audit["new"]) == ({"threshold": 3.5}, {"threshold": 3.7})
    assert audit["run_id"] == "20261125T0200Z"
    assert "raised from 3.5 to 3.7" in audit["reason"]
    evidence = audit["evidence"]
    assert evidence["labels"] == {"true_positive": 3, "false_positive": 4, "expected": 1}
    assert evidence["before"]["precision"] == 0.4286
    assert evidence["after"] == {
        "threshold": 3.7,
        "true_positives": 3,
        "false_positives": 3,
        "added_unlabelled": 0,
        "precision": 0.5,
        "recall": 1.0,
    }
    assert evidence["precision_floor"] == 0.5
    assert evidence["bounds"] == [2.5, 8.0]
    assert evidence["window_start"] == (AS_OF - timedelta(days=28)).isoformat()


def test_given_a_tuned_threshold_when_the_job_reruns_then_nothing_changes_and_nothing_is_audited() -> None:
    world = World()
    _labelled_fixture(world)
    world.run()
    again = world.run()  # a retried invocation
    tomorrow = world.run(as_of=AS_OF + timedelta(days=1))  # the next night, same labels
    assert world.store.tuned[(IID, "ngr")].version == 1
    assert len(world.store.audit) == 1
    assert again.thresholds_tuned == tomorrow.thresholds_tuned == 0
    [metric] = world.record(AS_OF + timedelta(days=1))["metrics"]
    assert metric["status"] == "unchanged"
    assert "already keeps recall 1.00 at precision 0.50" in metric["reason"]


def test_given_a_missed_true_positive_when_tuned_then_the_threshold_is_lowered_paying_for_the_alerts_it_adds() -> (
    None
):
    """Tuned earlier to 5.0, a true positive at 4.2 was labelled (it fired before): lowering to 4.2
    catches it; the unlabelled period at 4.5 it would add counts as a false positive: 3 / 6 = 0.5."""
    world = World()
    world.history(
        "ngr",
        {10: 4.2, 50: 6.1, 90: 7.0, 130: 5.5, 170: 5.7, 210: 4.5, 250: 2.9},
        {
            10: "true_positive",
            50: "true_positive",
            90: "true_positive",
            130: "false_positive",
            170: "false_positive",
        },
    )
    world.store.tuned[(IID, "ngr")] = TunedThreshold("ngr", 5.0, 3.5, "2026-11-01T02:00:00+00:00", "r", 1)
    world.run()
    stored = world.store.tuned[(IID, "ngr")]
    assert (stored.threshold, stored.previous, stored.version) == (4.2, 5.0, 2)
    audit = world.store.audit[-1][1]
    assert audit["evidence"]["after"]["added_unlabelled"] == 1
    assert "lowered from 5 to 4.2" in audit["reason"]


# --- skips ----------------------------------------------------------------------------------------------


def test_given_too_few_labels_when_tuned_then_the_metric_is_skipped_with_the_reason() -> None:
    world = World()
    world.history(
        "ngr",
        {30: 3.6, 60: 3.9, 90: 6.0, 120: 7.0},
        {30: "false_positive", 60: "false_positive", 90: "true_positive", 120: "true_positive"},
    )
    outcome = world.run()
    record = world.record()
    assert world.store.tuned == {}
    assert world.store.audit == []
    assert outcome.integrations_skipped == 1
    assert record["status"] == "skipped"
    assert "4 labelled alert(s)" in record["reason"]
    assert "fewer than the 5 needed" in record["reason"]


def test_given_labels_without_a_false_positive_when_tuned_then_the_metric_is_skipped_with_the_reason() -> (
    None
):
    world = World()
    world.history(
        "ngr", {30 * n: 4.0 + n for n in range(1, 6)}, {30 * n: "true_positive" for n in range(1, 6)}
    )
    world.run()
    [metric] = world.record()["metrics"]
    assert metric["status"] == "skipped"
    assert metric["reason"] == "too few labels in the last 28 days: 0 false positive(s), needs 1"
    assert world.store.tuned == {}


def test_given_an_operators_override_when_tuned_then_it_is_untouched_and_the_reason_says_so() -> None:
    world = World()
    _labelled_fixture(world)
    world.store.overrides[(IID, "ngr")] = 6.0
    outcome = world.run()
    [metric] = world.record()["metrics"]
    assert metric["status"] == "skipped"
    assert metric["reason"] == "an operator's override sets threshold 6 for ngr: tuning never changes it"
    assert world.store.tuned == {}
    assert world.store.audit == []
    assert outcome.metrics_skipped == 1


def test_given_a_per_metric_threshold_in_the_config_when_tuned_then_it_counts_as_the_operators() -> None:
    world = World()
    _labelled_fixture(world)
    world.store.configs[IID] = {"metrics": [{"name": "ngr", "threshold": 4.0}], "threshold": 3.0}
    world.run()
    [metric] = world.record()["metrics"]
    assert metric["reason"] == "the integration config sets threshold 4 for ngr: tuning never changes it"


def test_given_a_config_threshold_for_the_integration_when_tuned_then_it_is_where_tuning_starts() -> None:
    world = World()
    _labelled_fixture(world)
    world.store.configs[IID] = {"threshold": 3.55}
    world.run()
    assert world.store.tuned[(IID, "ngr")].previous == 3.55


def test_given_labels_of_other_detectors_and_old_periods_when_tuned_then_they_are_not_used() -> None:
    world = World()
    _labelled_fixture(world)
    world.store.put_label(IID, "isolation_forest-" + "a" * 32, "false_positive")  # another detector
    world.store.put_label(
        IID, alert_id(IID, "ewma", "ngr", "source", "nowhere", _period(30)), "true_positive"
    )
    world.store.put_label(IID, alert_id(IID, "ewma", "ngr", "", "", _period(-48)), "true_positive")  # too old
    world.run()
    record = world.record()
    assert (record["labels"], record["labels_matched"], record["labels_unmatched"]) == (10, 8, 2)
    assert world.store.tuned[(IID, "ngr")].threshold == 3.7


def test_given_the_labels_on_a_slice_when_tuned_then_they_tune_the_metrics_threshold_as_on_its_total() -> (
    None
):
    """A slice alert is judged against its metric's threshold: the hand-worked fixture on the slice
    source=email gives the same threshold."""
    world = World()
    _labelled_fixture(world, on_slice=True)
    world.run()
    record = world.record()
    assert (record["labels_matched"], record["labels_unmatched"]) == (8, 0)
    assert world.store.tuned[(IID, "ngr")].threshold == 3.7


def test_given_unlabelled_periods_below_the_floors_when_lowering_then_they_do_not_count_as_added_alerts() -> (
    None
):
    """Lowering to 2.5 would add the unlabelled slice periods scoring 2.6; with their change (3 vs 10
    expected) under the metric's min_abs_change they could never alert, so they cost nothing."""
    world = World()
    scores = {30: 4.0, 67: -5.0, 104: 6.0, 141: 2.55, 178: 4.2}
    labels = {30: "false_positive", 67: "true_positive", 104: "true_positive", 141: "true_positive"}
    scores.update({n: 2.6 for n in range(200, 260)})  # unlabelled, just past 2.5
    labels[178] = "true_positive"
    world.history("ngr", scores, labels, on_slice=True, slice_values=("7", "10"))
    world.run()
    [metric] = world.record()["metrics"]
    # Without a config there are no floors: every unlabelled period counts, and lowering costs too much.
    assert (metric["status"], metric["unlabelled_periods"]) == ("unchanged", 2 * 28 * 24 - 5)
    world = World()
    world.history("ngr", scores, labels, on_slice=True, slice_values=("7", "10"))
    world.store.configs[IID] = {"metrics": [{"name": "ngr", "min_abs_change": 5}]}
    world.run()
    [metric] = world.record()["metrics"]
    assert metric["unlabelled_periods"] == 0
    assert world.store.tuned[(IID, "ngr")].threshold == 2.55


def test_given_bounds_that_exclude_the_needed_threshold_when_tuned_then_the_bound_holds_and_nothing_changes() -> (
    None
):
    world = World()
    _labelled_fixture(world)
    world.run(replace(SETTINGS, precision_floor=0.9, bounds=Bounds(2.5, 4.4)))
    [metric] = world.record()["metrics"]
    assert metric["status"] == "unchanged"
    assert metric["reason"].startswith("no threshold in [2.5, 4.4] reaches precision 0.9")
    assert world.store.tuned == {}


def test_given_an_integration_without_labels_when_tuned_then_it_costs_no_history_read_and_no_record() -> None:
    world = World()
    outcome = world.run()
    assert (outcome.integrations, outcome.without_labels, outcome.recorded) == (1, 1, 0)
    assert world.objects.keys(DATA, "tuning/") == []


def test_given_a_spent_time_budget_when_tuned_then_the_rest_is_left_for_the_next_night() -> None:
    world = World()
    _labelled_fixture(world)
    outcome = tune(AS_OF, world.ports, SETTINGS, should_stop=lambda: True)
    assert (outcome.unfinished, outcome.recorded) == (1, 0)


# --- the scorer's view ----------------------------------------------------------------------------------


def test_given_tuned_and_operator_thresholds_when_merged_for_the_scorer_then_the_operator_wins() -> None:
    overrides = {"ngr": {"min_volume": 5.0}, "ftds": {"threshold": 6.0}}
    tuned = {"ngr": 4.8, "ftds": 3.0, "clicks": 4.2, "deposits": 5.0}
    config = {"metrics": [{"name": "clicks", "threshold": 4.0}]}
    assert merge_tuned(overrides, tuned, config) == {
        "ngr": {"min_volume": 5.0, "threshold": 4.8},
        "ftds": {"threshold": 6.0},
        "deposits": {"threshold": 5.0},
    }


# --- the handler ----------------------------------------------------------------------------------------


def test_given_a_replay_event_with_integrations_when_handled_then_only_those_are_tuned() -> None:
    world = World()
    _labelled_fixture(world)
    result = handler.handle({"as_of": AS_OF.isoformat(), "integrations": ["globex"]}, world.ports, SETTINGS)
    assert result["integrations"] == 0
    result = handler.handle({"as_of": AS_OF.isoformat(), "integrations": [IID]}, world.ports, SETTINGS)
    assert result["thresholds_tuned"] == 1
    with pytest.raises(BadJobEvent, match="'integrations'"):
        handler.handle({"integrations": ["../etc"]}, world.ports, SETTINGS)


def test_given_bad_settings_in_the_environment_when_read_then_the_error_names_the_variable() -> None:
    assert TuningSettings.from_env({"DATA_BUCKET": DATA}) == SETTINGS
    with pytest.raises(ValueError, match="DATA_BUCKET"):
        TuningSettings.from_env({})
    with pytest.raises(ValueError, match="TUNING_PRECISION_FLOOR"):
        TuningSettings.from_env({"DATA_BUCKET": DATA, "TUNING_PRECISION_FLOOR": "1.5"})
    with pytest.raises(ValueError, match="TUNING_MIN_THRESHOLD 9 is above TUNING_MAX_THRESHOLD 8"):
        TuningSettings.from_env({"DATA_BUCKET": DATA, "TUNING_MIN_THRESHOLD": "9"})


# --- the choice, as a property --------------------------------------------------------------------------

scores = st.floats(min_value=0.0, max_value=12.0, allow_nan=False).map(lambda s: round(s, 3))


@settings(max_examples=300, deadline=None)
@given(
    labelled=st.lists(st.builds(Labelled, scores, st.booleans()), max_size=25),
    unlabelled=st.lists(scores, max_size=40),
    current=st.floats(min_value=1.0, max_value=10.0).map(lambda t: round(t, 2)),
    lower=st.floats(min_value=1.0, max_value=6.0).map(lambda t: round(t, 2)),
    width=st.floats(min_value=0.0, max_value=6.0).map(lambda t: round(t, 2)),
    floor=st.floats(min_value=0.0, max_value=1.0),
)
def test_the_chosen_threshold_respects_bounds_floor_and_recall_and_a_rerun_keeps_it(
    labelled: list[Labelled],
    unlabelled: list[float],
    current: float,
    lower: float,
    width: float,
    floor: float,
) -> None:
    bounds = Bounds(lower, round(lower + width, 2))
    choice = choose(current, labelled, unlabelled, bounds, floor)
    if not choice.changed:
        assert choice.threshold == current
        return
    assert bounds.lower <= choice.threshold <= bounds.upper
    after = evaluate(choice.threshold, current, labelled, unlabelled)
    assert after == choice.after
    assert after.precision is None or after.precision >= floor - 1e-9  # firing nothing meets any floor
    assert (after.recall or 0.0) >= (choice.before.recall or 0.0)  # no true positive caught now is lost
    caught = [i.strength for i in labelled if i.positive and i.strength >= current]
    assert not caught or choice.threshold <= min(caught)
    assert not choose(choice.threshold, labelled, unlabelled, bounds, floor).changed


def test_given_false_alarms_of_the_slow_chart_when_tuned_then_they_count_at_their_chart_score() -> None:
    """A period that alerted through the slow chart (|score| 1.8, sustained 2.7) fires at 2.5, not at
    2.8: the nearest threshold reaching precision 0.5 is 2.8, between the chart scores 2.7 and 2.9."""
    world = World()
    world.store.configs[IID] = {"threshold": 2.5}
    true_scores = {30: 4.5, 67: -5.0, 104: 6.0}
    false_charts = {141: 3.2, 178: 2.9, 215: 3.1, 252: 2.7}
    rows: dict[int, tuple[float, float]] = {n: (s, s) for n, s in true_scores.items()}
    rows.update({n: (1.8, c) for n, c in false_charts.items()})
    labels = {n: "true_positive" for n in true_scores} | {n: "false_positive" for n in false_charts}
    by_day: dict[str, list[list[str]]] = defaultdict(list)
    for n in range(28 * 24):
        start = _period(n)
        score, chart = rows.get(n, (round(2.4 * math.sin(n * 1.3), 3), 0.0))
        severity = "warning" if n in labels else ""
        row = [start, IID, "ngr", "", "", "100", "130", "90", "110", str(score), "scored", severity, "k"]
        by_day[start[:10]].append([*row, str(chart)])
        if n in labels:
            world.store.put_label(IID, alert_id(IID, "ewma", "ngr", "", "", start), labels[n])
    world.put_history("ngr", by_day)
    world.run()
    [metric] = world.record()["metrics"]
    # At 2.5 all seven fire (precision 3/7): judged by |score| alone, the false ones (1.8) would not.
    assert metric["before"]["false_positives"] == 4
    assert metric["status"] == "tuned"
    assert world.store.tuned[(IID, "ngr")].threshold == 2.8
    assert metric["after"]["precision"] == 0.5


def test_given_history_written_before_the_sustained_column_when_tuned_then_it_reads_as_scores_alone() -> None:
    world = World()
    _labelled_fixture(world)
    for key in world.objects.list(DATA, "history/"):
        text = gzip.decompress(world.objects.get(DATA, key)).decode()
        old = "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines()) + "\n"
        world.objects.put(DATA, key, gzip.compress(old.encode()), "application/gzip")
    world.run()
    assert world.record()["history_problems"] == []
    assert world.store.tuned[(IID, "ngr")].threshold == 3.7


def test_given_no_labelled_alert_fires_at_the_current_threshold_then_lowering_to_add_only_false_alarms_is_refused() -> (
    None
):
    """Found by the property test above: with the one true positive out of reach, every lower threshold
    only adds unlabelled periods (precision 0, meeting a floor of 0) and the current one fires nothing;
    a rerun from each lowered threshold lowered it again. Firing nothing raises no false alarm."""
    choice = choose(3.0, [Labelled(0.0, True)], [1.0, 2.0], Bounds(1.0, 3.0), 0.0)
    assert not choice.changed
    assert choice.threshold == 3.0
