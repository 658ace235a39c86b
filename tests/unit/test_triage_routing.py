"""Routing rules: the packaged table, how rules combine, validation errors, sources and the cache."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kpi_sentinel.adapters.memory import MemoryRulesSource
from kpi_sentinel.triage.messages import TeamQueuesError, parse_team_queues, queues_checker
from kpi_sentinel.triage.routing import (
    MULTIVARIATE,
    PACKAGED,
    PRIORITIES,
    RoutingRules,
    RulesCache,
    RulesError,
    default_rules,
    load_rules,
    parse_rules,
)

from tests.unit.triage_helpers import make_alert

BASE: dict[str, Any] = {
    "version": 1,
    "teams": ["revenue", "acquisition", "support-ops", "integrations"],
    "sla_minutes": {"P1": 15, "P2": 60, "P3": 240, "P4": 1440},
    "families": {"revenue": ["ngr", "deposits"], "acquisition": ["clicks"]},
    "rules": [],
    "default": {"team": "integrations", "priority": "P3"},
}


def rules_with(*rules: dict[str, Any], **top: Any) -> RoutingRules:
    doc = copy.deepcopy(BASE)
    doc["rules"] = list(rules)
    doc.update(top)
    return parse_rules(doc, "test-rules")


# --- the packaged rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "team", "priority"),
    [
        # acme-ads (metrics: clicks, signups, ftds, deposits, ngr; ratios signup_rate, conversion)
        (make_alert("ngr"), "revenue", "P3"),
        (make_alert("deposits", "source", "telegram-push", severity="critical"), "revenue", "P2"),
        (make_alert("ftds", "source", "telegram-push"), "revenue", "P4"),
        (make_alert("clicks", "source", "telegram-push", severity="critical"), "acquisition", "P2"),
        (make_alert("signups"), "acquisition", "P3"),
        (make_alert("signup_rate"), "acquisition", "P3"),
        (make_alert("conversion", "source", "email"), "acquisition", "P4"),
        # globex-traffic: the click spike on one campaign
        (
            make_alert("clicks", "campaign", "partner-network", integration="globex-traffic"),
            "acquisition",
            "P4",
        ),
        # initech-support (events: tickets by queue / tag, high_priority_rate)
        (make_alert("tickets", "queue", "payments", severity="critical"), "support-ops", "P2"),
        (make_alert("tickets", contributors=[("tag", "withdrawal")]), "support-ops", "P3"),
        (make_alert("high_priority_rate"), "support-ops", "P3"),
        (make_alert("events", "tag", "login"), "support-ops", "P4"),
        (make_alert("logins", "queue", "vip"), "support-ops", "P4"),  # not a known metric, but a queue slice
        # the isolation forest and freshness go to the integrations team whatever the metric
        (
            make_alert("ngr", detector="isolation_forest", contributors=[("feature", "ngr")]),
            "integrations",
            "P3",
        ),
        (make_alert("ngr", detector="missing_data", severity="critical"), "integrations", "P2"),
        # tier: business + critical is P1; a business slice warning is still P3
        (make_alert("ngr", severity="critical", tier="business"), "revenue", "P1"),
        (make_alert("clicks", "source", "email", tier="business"), "acquisition", "P3"),
        (
            make_alert("ngr", detector="isolation_forest", severity="critical", tier="business"),
            "integrations",
            "P1",
        ),
        # nothing names a team: the default
        (make_alert("widgets"), "integrations", "P3"),
    ],
)
def test_given_the_packaged_rules_when_demo_alerts_are_routed_then_they_reach_meaningful_teams(
    alert: dict[str, Any], team: str, priority: str
) -> None:
    rules = default_rules()
    route = rules.route(alert)
    assert (route.team, route.priority) == (team, priority)
    assert route.sla_minutes == rules.sla_minutes[priority]


def test_given_the_packaged_rules_then_they_load_from_the_package_with_every_team_and_level() -> None:
    rules = default_rules()
    assert rules.source == PACKAGED
    assert set(rules.teams) == {"revenue", "acquisition", "support-ops", "integrations"}
    assert [rules.sla_minutes[p] for p in PRIORITIES] == [15, 60, 240, 1440]
    assert rules.family_of(make_alert("ftds")) == "revenue"
    assert rules.family_of(make_alert("signup_rate")) == "acquisition"


# --- how rules combine -----------------------------------------------------------------------------------


def test_given_two_matching_rules_when_routed_then_the_first_match_wins() -> None:
    rules = rules_with(
        {"name": "push", "match": {"dimension_values": {"source": ["telegram-push"]}}, "team": "acquisition",
         "priority": "P2"},
        {"name": "revenue", "match": {"family": ["revenue"]}, "team": "revenue", "priority": "P4"},
    )  # fmt: skip
    route = rules.route(make_alert("ngr", "source", "telegram-push"))
    assert (route.team, route.priority, route.team_rule, route.priority_rule) == (
        "acquisition",
        "P2",
        "push",
        "push",
    )
    route = rules.route(make_alert("ngr", "source", "email"))
    assert (route.team, route.priority, route.team_rule) == ("revenue", "P4", "revenue")


def test_given_no_matching_rule_when_routed_then_the_default_route_applies() -> None:
    rules = rules_with(
        {"name": "clicks", "match": {"metric": ["clicks"]}, "team": "acquisition", "priority": "P1"}
    )
    route = rules.route(make_alert("ngr"))
    assert (route.team, route.priority, route.sla_minutes) == ("integrations", "P3", 240)
    assert route.team_rule == route.priority_rule == "default"


def test_given_team_and_priority_rules_when_routed_then_each_comes_from_its_first_match() -> None:
    rules = rules_with(
        {"name": "critical", "match": {"severity": ["critical"]}, "priority": "P2"},
        {"name": "revenue", "match": {"family": ["revenue"]}, "team": "revenue"},
        {"name": "late-team", "match": {}, "team": "acquisition", "priority": "P4"},
    )
    critical = rules.route(make_alert("ngr", severity="critical"))
    assert (critical.team, critical.priority) == ("revenue", "P2")
    assert (critical.team_rule, critical.priority_rule) == ("revenue", "critical")
    warning = rules.route(make_alert("ngr"))
    assert (warning.team, warning.priority, warning.priority_rule) == ("revenue", "P4", "late-team")
    other = rules.route(make_alert("widgets", severity="critical"))
    assert (other.team, other.priority) == ("acquisition", "P2")


def test_given_dimension_values_when_routed_then_the_own_slice_or_any_contributor_matches() -> None:
    rules = rules_with(
        {"name": "push", "match": {"dimension_values": {"source": ["telegram-push"], "campaign": ["x"]}},
         "team": "acquisition"},
    )  # fmt: skip
    assert rules.route(make_alert("ngr", "source", "telegram-push")).team == "acquisition"
    total = make_alert("ngr", contributors=[("source", "email"), ("source", "telegram-push")])
    assert rules.route(total).team == "acquisition"
    assert rules.route(make_alert("ngr", contributors=[("campaign", "x")])).team == "acquisition"
    # same value under another dimension, or another value: no match
    assert rules.route(make_alert("ngr", "campaign", "telegram-push")).team == "integrations"
    assert rules.route(make_alert("ngr", contributors=[("source", "email")])).team == "integrations"


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ({"tier": ["business"]}, make_alert(tier="business"), make_alert(tier="standard")),
        ({"segment": ["vip"]}, make_alert(segment="vip"), make_alert(segment="default")),
        ({"integration_id": ["acme-ads"]}, make_alert(), make_alert(integration="acme-ads-2")),
        ({"detector": ["missing_data"]}, make_alert(detector="missing_data"), make_alert()),
        ({"metric": ["ngr"]}, make_alert("ngr"), make_alert("deposits")),
        ({"family": ["revenue"]}, make_alert("deposits"), make_alert("clicks")),
        ({"family": [MULTIVARIATE]}, make_alert(detector="isolation_forest"), make_alert()),
        ({"family": ["tickets"]}, make_alert("tickets"), make_alert("ngr")),  # a metric in no family
        ({"severity": ["critical"]}, make_alert(severity="critical"), make_alert()),
        ({"scope": ["total"]}, make_alert(), make_alert("ngr", "source", "a")),
        ({"scope": ["slice"]}, make_alert("ngr", "source", "a"), make_alert()),
        ({"dimension": ["queue"]}, make_alert("x", contributors=[("queue", "q")]), make_alert("x", "tag", "q")),
        ({"tier": ["business"], "severity": ["critical"]}, make_alert(tier="business", severity="critical"),
         make_alert(tier="business")),
        ({}, make_alert("anything"), None),
    ],
)  # fmt: skip
def test_given_a_match_field_when_routed_then_only_alerts_with_that_property_match(
    match: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any] | None
) -> None:
    rules = rules_with({"name": "r", "match": match, "team": "revenue", "priority": "P1"})
    assert rules.route(hit).team_rule == "r"
    if miss is not None:
        assert rules.route(miss).team_rule == "default"


def test_given_a_rule_with_its_own_sla_when_routed_then_it_overrides_the_level() -> None:
    rules = rules_with({"name": "vip", "match": {"segment": ["vip"]}, "priority": "P2", "sla_minutes": 5})
    assert rules.route(make_alert(segment="vip")).sla_minutes == 5
    rules = rules_with(default={"team": "revenue", "priority": "P4", "sla_minutes": 2880})
    assert rules.route(make_alert()).sla_minutes == 2880


def test_given_an_alert_when_its_family_is_asked_then_families_the_forest_and_own_families_apply() -> None:
    rules = rules_with()
    assert rules.family_of(make_alert("deposits")) == "revenue"
    assert rules.family_of(make_alert("clicks", detector="isolation_forest")) == MULTIVARIATE
    assert rules.family_of(make_alert("tickets")) == "tickets"


_METRICS = ("ngr", "clicks", "tickets")
_RULE = st.fixed_dictionaries(
    {
        "severity": st.none() | st.lists(st.sampled_from(["warning", "critical"]), min_size=1, unique=True),
        "tier": st.none() | st.lists(st.sampled_from(["standard", "business"]), min_size=1, unique=True),
        "metric": st.none() | st.lists(st.sampled_from(_METRICS), min_size=1, unique=True),
        "team": st.none() | st.sampled_from(BASE["teams"]),
        "priority": st.none() | st.sampled_from(PRIORITIES),
    }
).filter(lambda r: r["team"] is not None or r["priority"] is not None)


@settings(max_examples=150, deadline=None)
@given(
    raw_rules=st.lists(_RULE, max_size=6),
    metric=st.sampled_from(_METRICS),
    severity=st.sampled_from(["warning", "critical"]),
    tier=st.sampled_from(["standard", "business"]),
)
def test_property_team_and_priority_come_from_the_first_rule_that_matches_and_names_them(
    raw_rules: list[dict[str, Any]], metric: str, severity: str, tier: str
) -> None:
    docs = []
    for n, r in enumerate(raw_rules):
        match = {k: r[k] for k in ("severity", "tier", "metric") if r[k] is not None}
        doc: dict[str, Any] = {"name": f"r{n}", "match": match}
        doc.update({k: r[k] for k in ("team", "priority") if r[k] is not None})
        docs.append(doc)
    rules = rules_with(*docs)
    alert = make_alert(metric, severity=severity, tier=tier)
    facts = {"severity": severity, "tier": tier, "metric": metric}
    matching = [d for d in docs if all(facts[k] in v for k, v in d["match"].items())]
    team = next((d["team"] for d in matching if "team" in d), "integrations")
    priority = next((d["priority"] for d in matching if "priority" in d), "P3")
    route = rules.route(alert)
    assert (route.team, route.priority, route.sla_minutes) == (team, priority, BASE["sla_minutes"][priority])


# --- validation ------------------------------------------------------------------------------------------


def _mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["rules"] = [
        {"name": "first", "match": {"severity": ["critical"]}, "priority": "P2"},
        {"name": "second", "match": {"family": ["revenue"]}, "team": "revenue"},
    ]
    change(doc)
    return doc


def _rule(n: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                doc["rules"][n].pop(key, None)
            else:
                doc["rules"][n][key] = value

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_rule(1, colour="red"), ("rules[1] 'second'", "field 'colour'", "unknown field")),
        (_rule(1, team="finance"), ("rules[1] 'second'", "field 'team'", "unknown team 'finance'")),
        (_rule(0, priority="P0"), ("rules[0] 'first'", "field 'priority'", "bad priority 'P0'")),
        (_rule(0, priority=2), ("rules[0] 'first'", "field 'priority'", "bad priority 2")),
        (_rule(0, match={"severity": []}), ("rules[0] 'first'", "field 'match.severity'", "empty list")),
        (_rule(0, match={"severity": "critical"}), ("rules[0] 'first'", "'match.severity'", "must be a list, got str")),
        (_rule(0, match={"severity": ["fatal"]}), ("rules[0] 'first'", "'match.severity[0]'", "unknown value 'fatal'")),
        (_rule(0, match={"tier": ["gold"]}), ("rules[0] 'first'", "'match.tier[0]'", "unknown value 'gold'")),
        (_rule(0, match={"scope": ["all"]}), ("rules[0] 'first'", "'match.scope[0]'", "unknown value 'all'")),
        (_rule(0, match={"colour": ["red"]}), ("rules[0] 'first'", "field 'match.colour'", "unknown field")),
        (_rule(0, match={"metric": ["ngr", "ngr"]}), ("rules[0] 'first'", "'match.metric'", "duplicate value")),
        (_rule(0, match={"metric": [""]}), ("rules[0] 'first'", "'match.metric[0]'", "non-empty string")),
        (_rule(0, match={"integration_id": ["acme-*"]}), ("rules[0] 'first'", "'match.integration_id[0]'", "no globs")),
        (_rule(0, match={"family": ["ngr"]}), ("rules[0] 'first'", "'match.family[0]'", "metric of family 'revenue'")),
        (_rule(0, match={"dimension_values": {}}), ("rules[0] 'first'", "'match.dimension_values'", "empty object")),
        (_rule(0, match={"dimension_values": {"source": "a"}}),
         ("rules[0] 'first'", "'match.dimension_values.source'", "must be a list")),
        (_rule(0, match=["severity"]), ("rules[0] 'first'", "field 'match'", "must be an object")),
        (_rule(0, match=None), ("rules[0] 'first'", "field 'match'", "is required")),
        (_rule(0, priority=None), ("rules[0] 'first'", "a team, a priority or both")),
        (_rule(1, sla_minutes=30), ("rules[1] 'second'", "field 'sla_minutes'", "needs a priority")),
        (_rule(0, sla_minutes=0), ("rules[0] 'first'", "field 'sla_minutes'", "positive whole number")),
        (_rule(0, sla_minutes=True), ("rules[0] 'first'", "field 'sla_minutes'", "positive whole number")),
        (_rule(1, name="first"), ("rules[1] 'first'", "field 'name'", "duplicate rule name (also rules[0])")),
        (_rule(1, name=""), ("rules[1]", "field 'name'", "non-empty name")),
        (lambda d: d["rules"].append("catch-all"), ("rules[2]", "field '(rule)'", "must be an object")),
        (lambda d: d.pop("default"), ("field 'default'", "is required")),
        (lambda d: d["default"].pop("priority"), ("field 'default.priority'", "is required")),
        (lambda d: d["default"].update(team="finance"), ("field 'default.team'", "unknown team 'finance'")),
        (lambda d: d["default"].update(owner="x"), ("field 'default.owner'", "unknown field")),
        (lambda d: d.update(colour="red"), ("field 'colour'", "unknown field")),
        (lambda d: d.pop("version"), ("field 'version'", "is required")),
        (lambda d: d.update(version=2), ("field 'version'", "must be 1, got 2")),
        (lambda d: d.update(teams=[]), ("field 'teams'", "empty list")),
        (lambda d: d.update(teams="revenue"), ("field 'teams'", "must be a list")),
        (lambda d: d.pop("rules"), ("field 'rules'", "is required")),
        (lambda d: d.update(rules={}), ("field 'rules'", "must be a list")),
        (lambda d: d["sla_minutes"].pop("P4"), ("field 'sla_minutes.P4'", "is required")),
        (lambda d: d["sla_minutes"].update(P2=-5), ("field 'sla_minutes.P2'", "positive whole number")),
        (lambda d: d["sla_minutes"].update(P5=1), ("field 'sla_minutes.P5'", "unknown field")),
        (lambda d: d["sla_minutes"].update(P1=90), ("field 'sla_minutes.P1'", "longer than P2's 60")),
        (lambda d: d.pop("sla_minutes"), ("field 'sla_minutes'", "is required")),
        (lambda d: d["families"].update(money=["ngr"]), ("field 'families.money'", "already in family 'revenue'")),
        (lambda d: d["families"].update(multivariate=["x"]), ("field 'families.multivariate'", "reserved")),
        (lambda d: d["families"].update(empty=[]), ("field 'families.empty'", "empty list")),
    ],
)  # fmt: skip
def test_given_a_broken_rules_document_when_loaded_then_the_error_names_the_rule_and_the_field(
    change: Callable[[dict[str, Any]], None], expected: tuple[str, ...]
) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(_mutated(change), "s3://ops/rules.json")
    message = str(caught.value)
    assert message.startswith("s3://ops/rules.json: ")
    for part in expected:
        assert part in message, message


def test_given_a_rule_error_then_its_attributes_name_the_rule_and_the_field() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(_mutated(_rule(1, team="finance")), "x")
    assert (caught.value.rule_index, caught.value.rule_name, caught.value.field) == (1, "second", "team")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{not json", "not valid JSON"), ("[]", "must be an object"), (b"\xff\xfe", "(document)")],
)
def test_given_text_that_is_not_a_rules_object_when_loaded_then_it_is_a_rules_error(
    text: str | bytes, expected: str
) -> None:
    with pytest.raises(RulesError, match="field '\\(document\\)'") as caught:
        load_rules(text, "ssm:/kpi/rules")
    assert expected in str(caught.value)


# --- sources, the cache and team queues ------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _doc(default_team: str = "integrations") -> str:
    doc = copy.deepcopy(BASE)
    doc["default"]["team"] = default_team
    return json.dumps(doc)


def test_given_a_rules_location_when_cached_then_it_is_read_again_only_after_the_ttl() -> None:
    source = MemoryRulesSource({"s3://ops/rules.json": _doc("revenue")})
    clock = FakeMonotonic()
    cache = RulesCache("s3://ops/rules.json", source, ttl_seconds=300, monotonic=clock)
    assert cache.get().default.team == "revenue"
    source.documents["s3://ops/rules.json"] = _doc("acquisition")
    clock.now += 299
    assert cache.get().default.team == "revenue"
    assert source.reads == 1
    clock.now += 2
    assert cache.get().default.team == "acquisition"
    assert source.reads == 2
    assert cache.get().source == "s3://ops/rules.json"


def test_given_a_bad_edit_after_good_rules_when_reloaded_then_the_last_good_rules_stay_and_it_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = MemoryRulesSource({"ssm:/kpi/rules": _doc("revenue")})
    clock = FakeMonotonic()
    cache = RulesCache("ssm:/kpi/rules", source, ttl_seconds=60, monotonic=clock, retry_seconds=10)
    cache.get()
    source.documents["ssm:/kpi/rules"] = _doc("nobody")
    clock.now += 61
    with caplog.at_level(logging.ERROR, logger="kpi_sentinel.triage.routing"):
        assert cache.get().default.team == "revenue"
    assert "keeping the last good rules" in caplog.text
    assert "unknown team 'nobody'" in caplog.text
    source.documents["ssm:/kpi/rules"] = _doc("acquisition")
    clock.now += 11  # retried after retry_seconds, not after the whole TTL
    assert cache.get().default.team == "acquisition"


def test_given_rules_that_never_loaded_when_asked_then_the_error_surfaces() -> None:
    cache = RulesCache("s3://ops/missing.json", MemoryRulesSource(), monotonic=FakeMonotonic())
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        cache.get()


def test_given_no_location_when_cached_then_the_packaged_rules_are_used() -> None:
    assert RulesCache(None, None).get().source == PACKAGED


@pytest.mark.parametrize("location", ["s3://bucket-only", "https://x/rules.json", "ssm:", "ssm:/"])
def test_given_a_bad_rules_location_when_configured_then_it_is_refused(location: str) -> None:
    with pytest.raises(RulesError, match="ROUTING_RULES"):
        RulesCache(location, MemoryRulesSource())


def test_given_team_queues_when_a_team_of_the_rules_has_none_then_the_error_names_the_team() -> None:
    queues = {
        t: f"https://sqs.eu-west-1.amazonaws.com/1/{t}" for t in ("revenue", "acquisition", "integrations")
    }
    with pytest.raises(TeamQueuesError, match="no queue for team\\(s\\) 'support-ops'"):
        parse_team_queues(json.dumps(queues), default_rules().teams)
    cache = RulesCache(None, None, check=queues_checker(queues))
    with pytest.raises(TeamQueuesError, match="'support-ops'"):
        cache.get()
    queues["support-ops"] = "https://sqs.eu-west-1.amazonaws.com/1/support"
    assert parse_team_queues(json.dumps(queues), default_rules().teams) == queues


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "not set"),
        ("", "not set"),
        ("{oops", "not valid JSON"),
        ('["https://q"]', "must be a JSON object"),
        ('{"revenue": 5}', "team 'revenue' has no queue URL"),
    ],
)
def test_given_a_malformed_team_queues_variable_then_the_error_says_what_is_wrong(
    text: str | None, expected: str
) -> None:
    with pytest.raises(TeamQueuesError, match=expected):
        parse_team_queues(text)
