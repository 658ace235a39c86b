"""What operators set through the API changes what the scorer does at its next sync (process_sync, memory ports).

Overrides (threshold, bad direction, floors) are laid over the explicit or inferred config; snoozes and
calendar events suppress alerts. One world holds both sides: the API writes into the MemoryControl the
scorer reads.
"""

from __future__ import annotations

import gzip
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kpi_sentinel.adapters.memory import MemoryObjects, MemoryPublisher, MemoryState
from kpi_sentinel.config import ConfigError, IntegrationConfig, MetricSpec, with_overrides
from kpi_sentinel.ports import ScorerPorts
from kpi_sentinel.scoring import IntegrationState
from kpi_sentinel.sync import ScorerSettings, SyncOutcome, SyncRef, process_sync

from tests.unit.operator_helpers import World, world

INGEST, DATA = "ingest-bucket", "data-bucket"
SETTINGS = ScorerSettings(ingest_bucket=INGEST, data_bucket=DATA)
T0 = datetime(2026, 9, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 1, tzinfo=UTC)
DIP = 4 * 24 + 12  # 2026-09-05 12:00
SHOP = "/v1/integrations/shop"
SHOP_OPS = "arn:aws:iam::123456789012:user/shop-ops"
SHOP_CONFIG = {
    "integration_id": "shop",
    "granularity": "hour",
    "season_length": 24,
    "warmup": 3,
    "dimensions": ["source"],
    "metrics": [{"name": "orders", "bad_direction": "down", "min_abs_change": 5, "min_volume": 10}],
}


def _csv(hours: range, dip: dict[int, float] | None = None) -> bytes:
    """Orders per hour from two sources with a daily profile; ``dip`` scales chosen hours down."""
    rng = np.random.default_rng(hours.start)
    lines = ["timestamp,source,orders"]
    for hour in hours:
        profile = 0.3 + 0.7 * (1 + math.cos(2 * math.pi * (hour % 24 - 14) / 24)) / 2
        for source, level in (("web", 200.0), ("app", 100.0)):
            orders = int(rng.poisson(level * profile) * (dip or {}).get(hour, 1.0))
            stamp = (T0 + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(f"{stamp},{source},{orders}")
    return ("\n".join(lines) + "\n").encode()


HISTORY = _csv(range(4 * 24))
CRATER = _csv(range(4 * 24, DIP + 1), dip={DIP: 0.1})  # a 90% drop at 12:00
SLUMP = _csv(range(4 * 24, DIP + 2), dip={DIP: 0.8, DIP + 1: 0.8})  # 20% down for two hours


@dataclass
class Scorer:
    """The scorer's side of an operator world."""

    operator: World
    objects: MemoryObjects
    state: MemoryState
    publisher: MemoryPublisher
    who: str = SHOP_OPS

    @property
    def ports(self) -> ScorerPorts:
        return ScorerPorts(self.objects, self.state, self.operator.control, self.publisher, lambda: NOW)

    def sync(self, name: str, body: bytes) -> SyncOutcome:
        key = f"syncs/shop/{name}.csv"
        self.objects.put(INGEST, key, body, "text/csv")
        return process_sync(SyncRef(INGEST, key, size=len(body), version="v1"), self.ports, SETTINGS)

    def alerts(self, metric: str = "orders") -> list[dict[str, Any]]:
        return [dict(a) for a in self.publisher.published if a["metric"] == metric]

    def state_config(self) -> IntegrationConfig:
        blob = self.state.items["shop"].blob
        assert blob is not None
        return IntegrationState.from_bytes(blob).config

    def total_scores(self) -> dict[str, float]:
        """period_start -> score of the orders total, from the history the scorer wrote."""
        frames = [
            pd.read_csv(io.BytesIO(gzip.decompress(self.objects.get(DATA, k))))
            for k in self.objects.keys(DATA, "history/")
        ]
        rows = pd.concat(frames)
        total = rows[(rows["metric"] == "orders") & rows["dimension"].isna()]
        return dict(zip(total["period_start"], total["score"], strict=True))


def _scorer(explicit: bool = True) -> Scorer:
    operator = world(NOW)
    operator.scopes.put_scope(SHOP_OPS, ["shop"])
    if explicit:
        operator.control.configs["shop"] = SHOP_CONFIG
    return Scorer(operator, MemoryObjects(), MemoryState(), MemoryPublisher())


def _call(scorer: Scorer, method: str, target: str, body: Any = None) -> Any:
    answer = scorer.operator.call(method, target, body, who=scorer.who)
    assert answer.status < 300, answer.body
    return answer.body


def _at(hour: int) -> str:
    return (T0 + timedelta(hours=hour)).isoformat()


# --- the config merge -----------------------------------------------------------------------------------


def test_given_overrides_when_laid_over_a_config_then_fields_win_one_by_one_and_none_keeps_the_config() -> (
    None
):
    base = IntegrationConfig(
        "shop",
        metrics=(MetricSpec("orders", "down", 5.0, 10.0), MetricSpec("clicks")),
        overrides={"orders": {"min_volume": 20.0}},  # an explicit config's own
    )
    merged = with_overrides(base, {"orders": {"threshold": 6.0, "bad_direction": "both", "min_volume": None}})
    orders = merged.metric("orders")
    assert orders == MetricSpec("orders", "both", 5.0, 20.0, 6.0)
    assert merged.threshold_for("orders") == 6.0
    assert merged.threshold_for("clicks") == merged.alert_threshold == 3.5
    assert merged.metrics == base.metrics  # the specs themselves are untouched
    assert IntegrationConfig.from_dict(merged.to_dict()) == merged  # the state round-trips it


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"threshold": 0}, "threshold"),
        ({"bad_direction": "left"}, "bad_direction"),
        ({"min_volume": -1}, "min_volume"),
        ({"window": 3}, "window"),
    ],
)
def test_given_an_unusable_override_when_merged_then_the_error_names_the_field(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"overrides.orders|{field}") as raised:
        with_overrides(IntegrationConfig("shop", metrics=(MetricSpec("orders"),)), {"orders": fields})
    assert field in str(raised.value)


# --- overrides at the next sync -------------------------------------------------------------------------


def test_given_no_override_when_the_crater_arrives_then_it_alerts_at_the_integrations_threshold() -> None:
    scorer = _scorer()
    scorer.sync("history", HISTORY)
    scorer.sync("today", CRATER)
    crater = [a for a in scorer.alerts() if a["period_start"] == _at(DIP) and a["dimension"] is None]
    assert len(crater) == 1
    assert crater[0]["threshold"] == 3.5
    assert crater[0]["severity"] == "critical"


def test_given_a_threshold_override_via_the_api_when_the_next_sync_is_scored_then_it_uses_it() -> None:
    scorer = _scorer()
    scorer.sync("history", HISTORY)
    _call(scorer, "PUT", f"{SHOP}/overrides/orders", {"threshold": 100, "reason": "known flaky feed"})
    outcome = scorer.sync("today", CRATER)
    assert outcome.status == "scored"
    assert scorer.alerts() == []
    assert scorer.state_config().threshold_for("orders") == 100.0


def test_given_a_bad_direction_override_when_the_crater_arrives_then_it_is_only_info() -> None:
    scorer = _scorer()
    scorer.sync("history", HISTORY)
    _call(scorer, "PUT", f"{SHOP}/overrides/orders", {"bad_direction": "up"})
    scorer.sync("today", CRATER)
    crater = [a for a in scorer.alerts() if a["period_start"] == _at(DIP) and a["dimension"] is None]
    assert [(a["severity"], a["bad_direction"]) for a in crater] == [("info", "up")]


def test_given_a_volume_floor_override_when_the_crater_arrives_then_nothing_alerts() -> None:
    scorer = _scorer()
    scorer.sync("history", HISTORY)
    _call(scorer, "PUT", f"{SHOP}/overrides/orders", {"min_volume": 1e9})
    scorer.sync("today", CRATER)
    assert scorer.alerts() == []


def test_given_a_lower_threshold_override_when_a_slump_below_the_default_arrives_then_it_alerts_at_it() -> (
    None
):
    # Given the slump scored without an override does not alert (it stays under 3.5 sd)
    plain = _scorer()
    plain.sync("history", HISTORY)
    plain.sync("today", SLUMP)
    scores = plain.total_scores()
    slump = [abs(scores[_at(h)]) for h in (DIP, DIP + 1)]
    assert plain.alerts() == []
    assert max(slump) < 3.5
    # When an operator lowers the metric's threshold under the slump's scores
    threshold = round(0.8 * min(slump), 3)
    lowered = _scorer()
    lowered.sync("history", HISTORY)
    _call(lowered, "PUT", f"{SHOP}/overrides/orders", {"threshold": threshold})
    lowered.sync("today", SLUMP)
    # Then the slump's second hour alerts (its streak counted against the metric's own threshold)
    found = {a["period_start"]: a for a in lowered.alerts() if a["dimension"] is None}
    assert _at(DIP + 1) in found
    assert found[_at(DIP + 1)]["threshold"] == threshold
    assert {a["threshold"] for a in lowered.alerts()} == {threshold}


def test_given_an_inferred_config_when_an_override_is_removed_then_the_next_sync_forgets_it() -> None:
    scorer = _scorer(explicit=False)
    _call(scorer, "PUT", f"{SHOP}/overrides/orders", {"threshold": 100})
    scorer.sync("history", HISTORY)
    assert scorer.state_config().inferred
    assert scorer.state_config().threshold_for("orders") == 100.0
    _call(scorer, "DELETE", f"{SHOP}/overrides/orders")
    scorer.sync("today", CRATER)
    remembered = scorer.state_config()
    assert remembered.inferred
    assert remembered.overrides == {}
    assert remembered.threshold_for("orders") == remembered.alert_threshold == 3.5


def test_given_an_unusable_stored_override_when_syncing_then_it_is_ignored_and_nothing_is_quarantined() -> (
    None
):
    scorer = _scorer()
    scorer.operator.control.overrides["shop"] = {
        "orders": {"metric": "orders", "threshold": -3, "version": 1}
    }
    scorer.sync("history", HISTORY)
    outcome = scorer.sync("today", CRATER)
    assert outcome.status == "scored"
    assert any(a["period_start"] == _at(DIP) for a in scorer.alerts())


# --- snoozes and calendar at the next sync --------------------------------------------------------------


def test_given_a_snooze_via_the_api_when_the_crater_arrives_then_its_alerts_are_suppressed() -> None:
    scorer = _scorer()
    scorer.sync("history", HISTORY)
    _call(
        scorer, "POST", f"{SHOP}/snoozes", {"metric": "orders", "duration_minutes": 60, "reason": "migration"}
    )
    outcome = scorer.sync("today", CRATER)
    assert [a for a in scorer.alerts() if a["period_start"] == _at(DIP)] == []
    assert outcome.alerts_suppressed >= 1


def test_given_a_campaign_via_the_api_when_its_hours_are_scored_then_they_alert_nothing() -> None:
    scorer = _scorer()
    scorer.sync("history", HISTORY)
    event = {"kind": "maintenance", "name": "checkout freeze", "start": _at(DIP), "end": _at(DIP + 1)}
    _call(scorer, "POST", f"{SHOP}/calendar", event)
    outcome = scorer.sync("today", CRATER)
    assert [a for a in scorer.alerts() if a["period_start"] == _at(DIP)] == []
    assert outcome.alerts_suppressed >= 1
