"""The benchmark's scenario generator: reproducible, readable by the scorer, labelled as it says."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kpi_sentinel.config import IntegrationConfig, infer_config
from kpi_sentinel.parsing import infer_granularity, parse_sync_key, read_table, validate_rows
from kpi_sentinel.quality.labels import ANOMALY_KINDS, KnownEvent, Scenario, Suite, Window
from kpi_sentinel.quality.scenarios import START, generate_suite

MAX_BYTES = 2**31
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KEY_PATTERN = re.compile(
    r"^syncs/(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,63})/(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?P<ext>\.csv|\.csv\.gz|\.jsonl|\.jsonl\.gz)$"
)
ADS_METRICS = ("clicks", "signups", "ftds", "deposits", "ngr")
REVENUE_METRICS = ("signups", "deposits", "ngr")
DAY = 86400


@pytest.fixture(scope="module")
def small() -> Suite:
    return generate_suite(seed=1, size="small")


@pytest.fixture(scope="module")
def full() -> Suite:
    return generate_suite(seed=1, size="full")


# --- helpers ------------------------------------------------------------------------------------------


def _config(scenario: Scenario, columns: list[str], sample: list[dict[str, object]]) -> IntegrationConfig:
    """The config the scorer would use: the explicit one, else inferred from the first file."""
    if scenario.config is not None:
        return IntegrationConfig.from_dict(scenario.config, scenario.integration_id)
    return infer_config(scenario.integration_id, columns, sample)


def _read(
    scenario: Scenario, dimension_value: str | None = None
) -> tuple[IntegrationConfig, dict[int, list[dict[str, float]]]]:
    """Every row of every file, validated; per period index: one dict of values per row.

    Events rows get the value ``{"tickets": 1.0}`` (the count metric). With ``dimension_value`` only
    the rows of that segment are kept. Fails on any rejected row.
    """
    config: IntegrationConfig | None = None
    rows: dict[int, list[dict[str, float]]] = defaultdict(list)
    for drop in scenario.syncs:
        sync = parse_sync_key(drop.key)
        assert sync.integration_id == scenario.integration_id
        table = read_table(drop.body, sync, MAX_BYTES)
        if config is None:
            config = _config(scenario, table.columns, [dict(r) for r in table.sample()])
        valid, rejected = validate_rows(table, config, drop.key)
        assert rejected == [], (drop.key, rejected[:3])
        assert valid, drop.key
        for row in valid:
            if dimension_value is not None and dimension_value not in row.dimensions.values():
                continue
            period = int((row.timestamp - START).total_seconds()) // scenario.granularity_seconds
            values = dict(row.values) if config.shape == "metrics" else {config.count_metric: 1.0}
            rows[period].append(values)
    assert config is not None
    return config, rows


def _totals(scenario: Scenario, metric: str | None) -> dict[int, float]:
    """Per period index: the sum of ``metric`` over the rows, or the number of rows (``None``).

    A lighter read than :func:`_read` (no validation), for checks over the large full suite.
    """
    field = "created_at" if scenario.archetype == "tickets" else "timestamp"
    g = scenario.granularity_seconds
    origin = START.timestamp()
    totals: dict[int, float] = defaultdict(float)
    for drop in scenario.syncs:
        table = read_table(drop.body, parse_sync_key(drop.key), MAX_BYTES)
        for _, record in table.rows:
            period = int(datetime.fromisoformat(record[field]).timestamp() - origin) // g
            totals[period] += 1.0 if metric is None else float(record[metric])
    return totals


def _periods(scenario: Scenario, start: datetime, end: datetime) -> range:
    g = scenario.granularity_seconds
    return range(int((start - START).total_seconds()) // g, int((end - START).total_seconds()) // g)


def _spans(scenario: Scenario) -> list[tuple[int, int]]:
    labelled: Iterable[Window | KnownEvent] = [*scenario.windows, *scenario.known_events]
    return [(p.start, p.stop) for p in (_periods(scenario, x.start, x.end) for x in labelled)]


def _total(rows: dict[int, list[dict[str, float]]], metric: str, periods: range) -> float:
    return sum(values.get(metric, 0.0) for p in periods for values in rows.get(p, []))


def _check_spikes(scenario: Scenario) -> list[float]:
    """Ratio of each spike window's total to the median of the same phase in nearby clean seasons.

    Clean: the shifted span overlaps no window or known event and no level shift starts between it
    and the spike (the level would differ for a reason other than the spike).
    """
    spikes = [w for w in scenario.windows if w.kind == "spike"]
    if not spikes:
        return []
    n = len(_periods(scenario, scenario.start, scenario.end))
    season = scenario.season_length
    spans = _spans(scenario)
    metric = None if scenario.archetype == "tickets" else spikes[0].metrics[0]
    totals = _totals(scenario, metric)
    shifts = [_periods(scenario, w.start, w.end).start for w in scenario.windows if w.kind == "level_shift"]
    ratios = []
    for window in spikes:
        span = _periods(scenario, window.start, window.end)
        baseline = []
        for k in (-3, -2, -1, 1, 2, 3):
            a, b = span.start + k * season, span.stop + k * season
            if a < 0 or b > n or any(a < y and x < b for x, y in spans):
                continue
            if any(min(a, span.start) < s <= max(a, span.start) for s in shifts):
                continue
            baseline.append(sum(totals.get(p, 0.0) for p in range(a, b)))
        assert baseline, f"{window}: no clean season around it"
        ratios.append(sum(totals.get(p, 0.0) for p in span) / statistics.median(baseline))
    return ratios


def _fingerprint(suite: Suite) -> list[object]:
    return [
        (
            s.integration_id,
            [(d.key, d.body) for d in s.syncs],
            [w.to_dict() for w in s.windows],
            [e.to_dict() for e in s.known_events],
            json.dumps(s.config, sort_keys=True),
            json.dumps(s.notes, sort_keys=True),
        )
        for s in suite.scenarios
    ]


# --- determinism --------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_labels(small: Suite) -> None:
    assert _fingerprint(generate_suite(seed=1, size="small")) == _fingerprint(small)


def test_another_seed_gives_other_data_and_labels(small: Suite) -> None:
    other = generate_suite(seed=2, size="small")
    assert [s.integration_id for s in other.scenarios] == [s.integration_id for s in small.scenarios]
    assert {d.body for s in other.scenarios for d in s.syncs}.isdisjoint(
        {d.body for s in small.scenarios for d in s.syncs}
    )
    assert [w.to_dict() for w in other.windows] != [w.to_dict() for w in small.windows]


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_seed_is_reproducible_and_well_formed(seed: int) -> None:
    suite = generate_suite(seed=seed, size="small")
    assert _fingerprint(suite) == _fingerprint(generate_suite(seed=seed, size="small"))
    for scenario in suite.scenarios:
        _check_labels(scenario)
        _read(scenario)


def test_an_integration_depends_on_the_seed_and_its_id_only(small: Suite, full: Suite) -> None:
    """Its stream is derived from (seed, id): the suite around it does not change its parameters."""
    by_id = {s.integration_id: s for s in full.scenarios}
    params = ("segments", "low_volume_segment", "weekly_factors", "trend_per_day")
    for scenario in small.scenarios:
        twin = by_id[scenario.integration_id]
        assert {k: scenario.notes[k] for k in params} == {k: twin.notes[k] for k in params}


def test_bad_size_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        generate_suite(seed=1, size="medium")


# --- structure ----------------------------------------------------------------------------------------


def test_small_suite_has_every_granularity_and_archetype(small: Suite) -> None:
    combos = {(s.granularity_seconds, s.archetype) for s in small.scenarios}
    assert combos == {
        (86400, "ads"),
        (86400, "tickets"),
        (86400, "revenue"),
        (3600, "ads"),
        (3600, "tickets"),
        (3600, "revenue"),
        (300, "ads"),
    }
    assert any(s.config is None for s in small.scenarios)


def test_full_suite_composition(full: Suite) -> None:
    per_granularity = Counter(s.granularity_seconds for s in full.scenarios)
    assert per_granularity == {86400: 12, 3600: 12, 300: 12}
    seasons = {(s.granularity_seconds, s.season_length, s.seasonality) for s in full.scenarios}
    assert seasons == {(86400, 7, "weekly"), (3600, 168, "weekly"), (300, 288, "daily")}
    spans = {s.granularity_seconds: (s.end - s.start).days for s in full.scenarios}
    assert spans == {86400: 182, 3600: 63, 300: 21}
    ads = [s for s in full.scenarios if s.archetype == "ads"]
    assert 0.25 <= sum(s.config is None for s in ads) / len(ads) <= 0.4
    assert all(s.config is not None for s in full.scenarios if s.archetype != "ads")
    assert {s.archetype for s in full.scenarios if s.granularity_seconds == 300} == {"ads"}
    extensions = Counter(KEY_PATTERN.match(s.syncs[0].key)["ext"] for s in full.scenarios)  # type: ignore[index]
    assert set(extensions) == {".csv", ".csv.gz", ".jsonl", ".jsonl.gz"}


def test_every_kind_appears_at_least_eight_times_in_full(full: Suite) -> None:
    kinds = Counter(w.kind for w in full.windows)
    assert set(kinds) == set(ANOMALY_KINDS)
    assert min(kinds.values()) >= 8, kinds
    for scenario in full.scenarios:
        assert 2 <= len(scenario.windows) <= 4
    # Spread: every kind appears in every granularity that can carry it.
    where: dict[str, set[int]] = defaultdict(set)
    granularity = {s.integration_id: s.granularity_seconds for s in full.scenarios}
    for window in full.windows:
        where[window.kind].add(granularity[window.integration_id])
    for kind in ANOMALY_KINDS:
        assert where[kind] == ({86400, 3600} if kind == "ticket_surge" else {86400, 3600, 300}), kind


def test_keys_ids_and_drop_order(small: Suite) -> None:
    for scenario in small.scenarios:
        assert ID_PATTERN.fullmatch(scenario.integration_id)
        dates = []
        for drop in scenario.syncs:
            match = KEY_PATTERN.match(drop.key)
            assert match, drop.key
            assert match["id"] == scenario.integration_id
            dates.append(match["date"])
            parse_sync_key(drop.key)
        assert dates == sorted(dates)
        assert len(set(dates)) == len(dates)
        step = 7 if scenario.granularity_seconds == DAY else 1
        for a, b in pairwise(dates):
            gap = (datetime.fromisoformat(b) - datetime.fromisoformat(a)).days
            assert gap % step == 0
            assert gap >= step


def test_notes_are_json(small: Suite) -> None:
    for scenario in small.scenarios:
        json.dumps(scenario.notes)
        json.dumps(scenario.config)


# --- readable by the scorer -----------------------------------------------------------------------------


def test_every_file_parses_with_no_rejected_row(small: Suite) -> None:
    for scenario in small.scenarios:
        _, rows = _read(scenario)
        assert rows
        for period in rows:
            assert 0 <= period < len(_periods(scenario, scenario.start, scenario.end))


def test_inferred_configs_match_the_explicit_ones(full: Suite) -> None:
    """Inference must read the ads files as an operator would configure them."""
    explicit = next(s for s in full.scenarios if s.archetype == "ads" and s.config is not None)
    reference = IntegrationConfig.from_dict(explicit.config or {}, "x")
    for scenario in (s for s in full.scenarios if s.config is None):
        drop = scenario.syncs[0]
        table = read_table(drop.body, parse_sync_key(drop.key), MAX_BYTES)
        inferred = infer_config(scenario.integration_id, table.columns, table.sample())
        valid, rejected = validate_rows(table, inferred, drop.key)
        assert not rejected
        assert infer_granularity([r.timestamp for r in valid]) == scenario.granularity_seconds
        assert (
            replace(inferred, granularity_seconds=scenario.granularity_seconds).season
            == scenario.season_length
        )
        assert inferred.dimensions == reference.dimensions
        assert inferred.metrics == reference.metrics
        assert inferred.ratios == reference.ratios


def test_explicit_configs_describe_the_files(small: Suite) -> None:
    for scenario in small.scenarios:
        if scenario.config is None:
            continue
        config = IntegrationConfig.from_dict(scenario.config)
        assert config.integration_id == scenario.integration_id
        assert config.granularity_seconds == scenario.granularity_seconds
        assert config.season == scenario.season_length
        if scenario.archetype == "tickets":
            assert (config.shape, config.count_metric) == ("events", "tickets")
            assert (config.timestamp_field, config.tags_field) == ("created_at", "tags")
        else:
            expected = ADS_METRICS if scenario.archetype == "ads" else REVENUE_METRICS
            assert tuple(m.name for m in config.metrics) == expected
            directions = {m.name: m.bad_direction for m in config.metrics}
            assert directions.get("clicks", "both") == "both"
            assert {d for n, d in directions.items() if n != "clicks"} == {"down"}


def test_metric_rows_are_complete(small: Suite) -> None:
    """One row per segment and period (zeros included) outside missing data; counts are integers."""
    for scenario in small.scenarios:
        if scenario.archetype == "tickets":
            continue
        segments = list(scenario.notes["segments"])
        n = len(_periods(scenario, scenario.start, scenario.end))
        missing = {
            p
            for w in scenario.windows
            if w.kind == "missing_data"
            for p in _periods(scenario, w.start, w.end)
        }
        _, rows = _read(scenario)
        assert set(rows) == set(range(n)) - missing
        for values in rows.values():
            assert len(values) == len(segments)
            for row in values:
                assert set(row) >= {"signups", "deposits", "ngr"}
                assert all(row[m] == int(row[m]) for m in row if m != "ngr")


def test_low_volume_segments_have_a_handful_per_period(small: Suite) -> None:
    for scenario in small.scenarios:
        if scenario.archetype == "tickets":
            continue
        low = scenario.notes["low_volume_segment"]
        metric = "clicks" if scenario.archetype == "ads" else "deposits"
        _, rows = _read(scenario, dimension_value=low)
        per_period = statistics.mean(_total(rows, metric, range(p, p + 1)) for p in rows)
        assert 0.5 <= per_period <= 20, (scenario.integration_id, per_period)


# --- labels ---------------------------------------------------------------------------------------------


def _check_labels(scenario: Scenario) -> None:
    g = scenario.granularity_seconds
    warmup = 2 * scenario.season_length * g + 2 * DAY
    labelled: list[Window | KnownEvent] = sorted(
        [*scenario.windows, *scenario.known_events], key=lambda x: x.start
    )
    assert 2 <= len(scenario.windows) <= 4
    for item in labelled:
        assert item.integration_id == scenario.integration_id
        assert item.start.utcoffset() == UTC.utcoffset(None)
        assert item.end.utcoffset() == UTC.utcoffset(None)
        assert scenario.start <= item.start < item.end <= scenario.end
        assert (item.start - scenario.start).total_seconds() % g == 0
        assert (item.end - scenario.start).total_seconds() % g == 0
    for window in scenario.windows:
        assert window.kind in ANOMALY_KINDS
        assert (window.start - scenario.start).total_seconds() >= warmup
        assert window.metrics
        assert (window.dimension is None) == (window.value is None)
    for a, b in pairwise(labelled):
        assert (b.start - a.end).total_seconds() >= DAY, (a, b)  # no overlap, a day apart


def test_windows_and_known_events_are_well_placed(small: Suite, full: Suite) -> None:
    for scenario in [*small.scenarios, *full.scenarios]:
        _check_labels(scenario)
    assert Counter(e.kind for e in full.known_events).keys() == {"holiday", "campaign"}


def test_window_contents_match_their_kind(full: Suite) -> None:
    for window in full.windows:
        if window.kind == "suspicious_traffic":
            assert window.metrics == ("clicks", "conversion", "signup_rate")
            assert window.dimension == "source"
        elif window.kind == "conversion_crater":
            assert window.metrics == ("ftds", "conversion", "deposits", "ngr")
        elif window.kind == "ticket_surge":
            assert window.metrics == ("tickets",)
            assert window.dimension in ("queue", "tag")
        elif window.kind == "source_crater":
            assert window.dimension in ("source", "country")
            assert "ngr" in window.metrics


# --- the injections are in the data ----------------------------------------------------------------------


def test_spikes_are_far_above_the_same_phase_in_other_seasons(small: Suite, full: Suite) -> None:
    ratios = [r for s in [*small.scenarios, *full.scenarios] for r in _check_spikes(s)]
    assert len(ratios) >= 8
    assert min(ratios) >= 1.3, sorted(ratios)[:5]


def test_missing_data_periods_have_no_rows(small: Suite, full: Suite) -> None:
    scenarios = [
        s for s in [*small.scenarios, *full.scenarios] if any(w.kind == "missing_data" for w in s.windows)
    ]
    assert scenarios
    for scenario in scenarios:
        rows = _totals(scenario, None)
        for window in (w for w in scenario.windows if w.kind == "missing_data"):
            periods = _periods(scenario, window.start, window.end)
            assert 3 <= len(periods) <= 12
            assert not any(rows.get(p) for p in periods)
            if scenario.archetype != "tickets":
                assert rows.get(periods.start - 1)
                assert rows.get(periods.stop)
