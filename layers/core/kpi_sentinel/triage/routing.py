"""Routing rules: which team owns an alert, how urgent it is (P1–P4) and how soon it must be acknowledged.

The rules are a JSON document, version 1 (the packaged default is ``rules.json`` beside this module)::

    {
      "version": 1,
      "teams": ["revenue", "acquisition", "support-ops", "integrations"],
      "sla_minutes": {"P1": 15, "P2": 60, "P3": 240, "P4": 1440},
      "families": {"revenue": ["ngr", "ggr", "deposits", "ftds"], "acquisition": ["clicks", "signups"]},
      "rules": [
        {"name": "push-campaigns", "match": {"dimension_values": {"source": ["telegram-push"]}},
         "team": "acquisition"},
        {"name": "business-critical", "match": {"tier": ["business"], "severity": ["critical"]},
         "priority": "P1", "sla_minutes": 10}
      ],
      "default": {"team": "integrations", "priority": "P3"}
    }

**Evaluation.** Rules are tried in order. The team comes from the first matching rule that names a
team; the priority, with its SLA, from the first matching rule that names a priority; the default
fills in whatever no rule named. A rule that names both is plain "first match wins", and a default
route always exists. A rule's ``sla_minutes`` overrides the SLA of its priority level.

**Match fields** (all optional and ANDed; an empty ``match`` matches every alert). Each is a non-empty
list of exact strings (no globs) whose values are alternatives:

* ``integration_id``, ``segment``, ``tier``, ``detector``, ``metric``, ``severity`` — the alert's field
  is one of the values;
* ``family`` — the alert's metric family (see :meth:`RoutingRules.family_of`) is one of the values;
* ``scope`` — ``total`` (the alert is about a metric's total, ``dimension`` null) or ``slice``;
* ``dimension`` — the alert's own dimension or any contributor's dimension is one of the values;
* ``dimension_values`` — an object ``{dimension: [values]}``: the alert's own ``(dimension,
  dimension_value)`` or any contributor's ``(dimension, value)`` is listed.

**Families** group metrics that describe one business process (``ngr``, ``deposits`` and ``ftds`` are
all revenue): alerts of one family and integration are grouped into one incident. A metric listed in
no family is its own family; isolation-forest alerts (one model over many metrics) form the family
``multivariate``.

Loading validates everything and raises :class:`RulesError` naming the rule (index and name) and the
field. Rules come from the packaged file or, per deployment, from S3 or SSM Parameter Store through a
:class:`~kpi_sentinel.ports.RulesSource`; :class:`RulesCache` keeps them for a while in a warm container.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from kpi_sentinel.parsing import INTEGRATION_ID
from kpi_sentinel.ports import RulesSource

log = logging.getLogger(__name__)

RULES_VERSION: Final = 1
PRIORITIES: Final = ("P1", "P2", "P3", "P4")  # most urgent first
TIERS: Final = ("standard", "business")
SEVERITIES: Final = ("info", "warning", "critical")  # least severe first
DETECTORS: Final = ("ewma", "isolation_forest", "missing_data")
SCOPES: Final = ("total", "slice")
MULTIVARIATE: Final = "multivariate"
PACKAGED: Final = "packaged:kpi_sentinel/triage/rules.json"

_TOP_FIELDS: Final = ("version", "description", "teams", "sla_minutes", "families", "rules", "default")
_RULE_FIELDS: Final = ("name", "description", "match", "team", "priority", "sla_minutes")
_DEFAULT_FIELDS: Final = ("description", "team", "priority", "sla_minutes")
_LIST_MATCHES: Final = (
    "integration_id", "segment", "tier", "detector", "metric", "family", "severity", "scope", "dimension",
)  # fmt: skip
_ENUMS: Final[Mapping[str, tuple[str, ...]]] = {
    "tier": TIERS,
    "detector": DETECTORS,
    "severity": SEVERITIES,
    "scope": SCOPES,
}


class RulesError(ValueError):
    """A routing rules document that cannot be used; the message names the rule and the field.

    ``rule_index``/``rule_name`` are set when the problem is inside one rule, ``field`` is the dotted
    path of the offending field (e.g. ``match.severity``).
    """

    def __init__(
        self, source: str, field_name: str, problem: str, rule_index: int | None = None, rule_name: str = ""
    ) -> None:
        where = ""
        if rule_index is not None:
            where = f"rules[{rule_index}]" + (f" {rule_name!r}" if rule_name else "") + ": "
        super().__init__(f"{source}: {where}field {field_name!r}: {problem}")
        self.source = source
        self.field = field_name
        self.rule_index = rule_index
        self.rule_name = rule_name


def priority_rank(priority: str) -> int:
    """0 for P1 (most urgent) to 3 for P4."""
    return PRIORITIES.index(priority)


def more_urgent(a: str, b: str) -> str:
    """The more urgent of two priorities.

    >>> more_urgent("P3", "P2")
    'P2'
    """
    return a if priority_rank(a) <= priority_rank(b) else b


@dataclass(frozen=True)
class Match:
    """One rule's conditions; an empty tuple means "any"."""

    values: Mapping[str, frozenset[str]] = field(default_factory=dict)
    dimension_values: frozenset[tuple[str, str]] = frozenset()

    def matches(self, alert: Mapping[str, Any], family: str) -> bool:
        facts = {
            "integration_id": alert.get("integration_id"),
            "segment": alert.get("segment"),
            "tier": alert.get("tier"),
            "detector": alert.get("detector"),
            "metric": alert.get("metric"),
            "family": family,
            "severity": alert.get("severity"),
            "scope": "total" if alert.get("dimension") is None else "slice",
        }
        for name, allowed in self.values.items():
            if name == "dimension":
                if not allowed & {d for d, _ in slices(alert)}:
                    return False
            elif facts[name] not in allowed:
                return False
        return not self.dimension_values or bool(self.dimension_values & slices(alert))


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    team: str | None
    priority: str | None
    sla_minutes: int | None


@dataclass(frozen=True)
class Route:
    """Where an alert goes: its team, priority and minutes to acknowledge, and which rules decided."""

    team: str
    priority: str
    sla_minutes: int
    team_rule: str  # the rule's name, or "default"
    priority_rule: str


@dataclass(frozen=True)
class RoutingRules:
    teams: tuple[str, ...]
    sla_minutes: Mapping[str, int]
    family_by_metric: Mapping[str, str]
    rules: tuple[Rule, ...]
    default: Route
    source: str = PACKAGED

    def family_of(self, alert: Mapping[str, Any]) -> str:
        """The alert's metric family: ``multivariate`` for isolation forests, else its metric's family.

        A metric listed in no family is its own family.
        """
        if alert.get("detector") == "isolation_forest":
            return MULTIVARIATE
        metric = str(alert.get("metric"))
        return self.family_by_metric.get(metric, metric)

    def route(self, alert: Mapping[str, Any]) -> Route:
        """The alert's route (see the module docstring for how rules combine)."""
        family = self.family_of(alert)
        team: tuple[str, str] | None = None
        priority: tuple[str, int, str] | None = None
        for rule in self.rules:
            if (rule.team is None or team) and (rule.priority is None or priority):
                continue
            if not rule.match.matches(alert, family):
                continue
            if rule.team is not None and team is None:
                team = (rule.team, rule.name)
            if rule.priority is not None and priority is None:
                sla = rule.sla_minutes or self.sla_minutes[rule.priority]
                priority = (rule.priority, sla, rule.name)
            if team and priority:
                break
        team = team or (self.default.team, "default")
        priority = priority or (self.default.priority, self.default.sla_minutes, "default")
        return Route(
            team=team[0], priority=priority[0], sla_minutes=priority[1], team_rule=team[1],
            priority_rule=priority[2],
        )  # fmt: skip

    def sla_for(self, priority: str) -> int:
        return self.sla_minutes[priority]


def slices(alert: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """The alert's own ``(dimension, value)`` and its contributors' (those with string fields)."""
    found: set[tuple[str, str]] = set()
    if isinstance(alert.get("dimension"), str) and isinstance(alert.get("dimension_value"), str):
        found.add((alert["dimension"], alert["dimension_value"]))
    contributors = alert.get("contributors")
    for c in contributors if isinstance(contributors, list) else ():
        if isinstance(c, Mapping) and isinstance(c.get("dimension"), str) and isinstance(c.get("value"), str):
            found.add((c["dimension"], c["value"]))
    return frozenset(found)


# --- loading and validation ----------------------------------------------------------------------------


def load_rules(text: str | bytes, source: str = "rules") -> RoutingRules:
    """Parse and validate a rules document; raises :class:`RulesError` naming what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesError(source, "(document)", f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except UnicodeDecodeError as exc:
        raise RulesError(source, "(document)", "not UTF-8 text") from exc
    return parse_rules(raw, source)


def default_rules() -> RoutingRules:
    """The rules shipped with the package (``kpi_sentinel/triage/rules.json``)."""
    text = resources.files("kpi_sentinel.triage").joinpath("rules.json").read_text(encoding="utf-8")
    return load_rules(text, PACKAGED)


def _strings(
    value: Any, source: str, field_name: str, index: int | None = None, name: str = ""
) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RulesError(source, field_name, f"must be a list, got {type(value).__name__}", index, name)
    if not value:
        raise RulesError(source, field_name, "must not be an empty list", index, name)
    for n, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise RulesError(
                source, f"{field_name}[{n}]", f"must be a non-empty string, got {item!r}", index, name
            )
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise RulesError(source, field_name, f"duplicate value(s) {duplicates}", index, name)
    return tuple(value)


def _minutes(value: Any, source: str, field_name: str, index: int | None = None, name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RulesError(
            source, field_name, f"must be a positive whole number of minutes, got {value!r}", index, name
        )
    return value


def _object(
    value: Any, source: str, field_name: str, index: int | None = None, name: str = ""
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RulesError(source, field_name, f"must be an object, got {type(value).__name__}", index, name)
    return value


def _unknown(
    value: Mapping[str, Any],
    allowed: Sequence[str],
    source: str,
    prefix: str,
    index: int | None = None,
    name: str = "",
) -> None:
    for key in value:
        if key not in allowed:
            raise RulesError(
                source, f"{prefix}{key}", f"unknown field (allowed: {', '.join(allowed)})", index, name
            )


def parse_rules(raw: Any, source: str = "rules") -> RoutingRules:
    """Validate a decoded rules document (see the module docstring for the format)."""
    doc = _object(raw, source, "(document)")
    _unknown(doc, _TOP_FIELDS, source, "")
    if "version" not in doc:
        raise RulesError(source, "version", f"is required (this loader reads version {RULES_VERSION})")
    if doc["version"] != RULES_VERSION or isinstance(doc["version"], bool):
        raise RulesError(source, "version", f"must be {RULES_VERSION}, got {doc['version']!r}")
    if "description" in doc and not isinstance(doc["description"], str):
        raise RulesError(source, "description", "must be a string")
    if "teams" not in doc:
        raise RulesError(source, "teams", "is required")
    teams = _strings(doc["teams"], source, "teams")
    sla = _sla_levels(doc.get("sla_minutes"), source)
    family_by_metric = _families(doc.get("families", {}), source)
    if "rules" not in doc:
        raise RulesError(source, "rules", "is required (it may be an empty list)")
    if not isinstance(doc["rules"], list):
        raise RulesError(source, "rules", f"must be a list, got {type(doc['rules']).__name__}")
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, raw_rule in enumerate(doc["rules"]):
        rule = _rule(raw_rule, index, source, teams, family_by_metric)
        if rule.name in names:
            raise RulesError(
                source, "name", f"duplicate rule name (also rules[{names[rule.name]}])", index, rule.name
            )
        names[rule.name] = index
        rules.append(rule)
    if "default" not in doc:
        raise RulesError(source, "default", "is required: the route of alerts no rule matches")
    default = _object(doc["default"], source, "default")
    _unknown(default, _DEFAULT_FIELDS, source, "default.")
    for required in ("team", "priority"):
        if required not in default:
            raise RulesError(source, f"default.{required}", "is required")
    team = _team(default["team"], teams, source, "default.team")
    priority = _priority(default["priority"], source, "default.priority")
    minutes = sla[priority]
    if "sla_minutes" in default:
        minutes = _minutes(default["sla_minutes"], source, "default.sla_minutes")
    return RoutingRules(
        teams=teams,
        sla_minutes=sla,
        family_by_metric=family_by_metric,
        rules=tuple(rules),
        default=Route(team, priority, minutes, "default", "default"),
        source=source,
    )


def _sla_levels(raw: Any, source: str) -> dict[str, int]:
    if raw is None:
        raise RulesError(
            source, "sla_minutes", f"is required: minutes to acknowledge for {', '.join(PRIORITIES)}"
        )
    levels = _object(raw, source, "sla_minutes")
    _unknown(levels, PRIORITIES, source, "sla_minutes.")
    sla: dict[str, int] = {}
    for level in PRIORITIES:
        if level not in levels:
            raise RulesError(source, f"sla_minutes.{level}", "is required")
        sla[level] = _minutes(levels[level], source, f"sla_minutes.{level}")
    for urgent, relaxed in itertools.pairwise(PRIORITIES):
        if sla[urgent] > sla[relaxed]:
            raise RulesError(
                source,
                f"sla_minutes.{urgent}",
                f"{sla[urgent]} minutes is longer than {relaxed}'s {sla[relaxed]}: a more urgent level "
                "must not allow more time",
            )
    return sla


def _families(raw: Any, source: str) -> dict[str, str]:
    families = _object(raw, source, "families")
    family_by_metric: dict[str, str] = {}
    for name, metrics in families.items():
        if not name:
            raise RulesError(source, "families", "a family name must not be empty")
        if name == MULTIVARIATE:
            raise RulesError(
                source, f"families.{name}", "is reserved for isolation-forest alerts (choose another name)"
            )
        for metric in _strings(metrics, source, f"families.{name}"):
            if metric in family_by_metric:
                raise RulesError(
                    source,
                    f"families.{name}",
                    f"metric {metric!r} is already in family {family_by_metric[metric]!r}",
                )
            family_by_metric[metric] = name
    return family_by_metric


def _team(
    value: Any, teams: Sequence[str], source: str, field_name: str, index: int | None = None, name: str = ""
) -> str:
    if not isinstance(value, str) or value not in teams:
        raise RulesError(
            source, field_name, f"unknown team {value!r} (teams: {', '.join(teams)})", index, name
        )
    return value


def _priority(value: Any, source: str, field_name: str, index: int | None = None, name: str = "") -> str:
    if not isinstance(value, str) or value not in PRIORITIES:
        raise RulesError(
            source, field_name, f"bad priority {value!r} (one of {', '.join(PRIORITIES)})", index, name
        )
    return value


def _rule(
    raw: Any, index: int, source: str, teams: Sequence[str], family_by_metric: Mapping[str, str]
) -> Rule:
    rule = _object(raw, source, "(rule)", index)
    name = rule.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(source, "name", f"every rule needs a non-empty name, got {name!r}", index)
    _unknown(rule, _RULE_FIELDS, source, "", index, name)
    if "description" in rule and not isinstance(rule["description"], str):
        raise RulesError(source, "description", "must be a string", index, name)
    if "match" not in rule:
        raise RulesError(source, "match", "is required (use {} to match every alert)", index, name)
    match = _match(rule["match"], index, name, source, family_by_metric)
    if "team" not in rule and "priority" not in rule:
        raise RulesError(source, "team", "a rule must name a team, a priority or both", index, name)
    team = _team(rule["team"], teams, source, "team", index, name) if "team" in rule else None
    priority = _priority(rule["priority"], source, "priority", index, name) if "priority" in rule else None
    minutes = None
    if "sla_minutes" in rule:
        if priority is None:
            raise RulesError(source, "sla_minutes", "needs a priority in the same rule", index, name)
        minutes = _minutes(rule["sla_minutes"], source, "sla_minutes", index, name)
    return Rule(name=name, match=match, team=team, priority=priority, sla_minutes=minutes)


def _match(raw: Any, index: int, name: str, source: str, family_by_metric: Mapping[str, str]) -> Match:
    match = _object(raw, source, "match", index, name)
    _unknown(match, (*_LIST_MATCHES, "dimension_values"), source, "match.", index, name)
    values: dict[str, frozenset[str]] = {}
    for key in _LIST_MATCHES:
        if key not in match:
            continue
        items = _strings(match[key], source, f"match.{key}", index, name)
        allowed = _ENUMS.get(key)
        for n, item in enumerate(items):
            if allowed is not None and item not in allowed:
                raise RulesError(
                    source,
                    f"match.{key}[{n}]",
                    f"unknown value {item!r} (one of {', '.join(allowed)})",
                    index,
                    name,
                )
            if key == "integration_id" and not INTEGRATION_ID.fullmatch(item):
                raise RulesError(
                    source,
                    f"match.integration_id[{n}]",
                    f"{item!r} is not an integration id ([A-Za-z0-9][A-Za-z0-9_-]{{0,63}}, no globs)",
                    index,
                    name,
                )
            if key == "family" and item in family_by_metric and item not in family_by_metric.values():
                raise RulesError(
                    source,
                    f"match.family[{n}]",
                    f"{item!r} is a metric of family {family_by_metric[item]!r}; match that family or "
                    f"use match.metric",
                    index,
                    name,
                )
        values[key] = frozenset(items)
    pairs: set[tuple[str, str]] = set()
    if "dimension_values" in match:
        by_dimension = _object(match["dimension_values"], source, "match.dimension_values", index, name)
        if not by_dimension:
            raise RulesError(source, "match.dimension_values", "must not be an empty object", index, name)
        for dimension, dim_values in by_dimension.items():
            if not dimension:
                raise RulesError(
                    source, "match.dimension_values", "a dimension name must not be empty", index, name
                )
            field_name = f"match.dimension_values.{dimension}"
            pairs.update((dimension, v) for v in _strings(dim_values, source, field_name, index, name))
    return Match(values=values, dimension_values=frozenset(pairs))


# --- sources and cache ---------------------------------------------------------------------------------


def is_location(location: str) -> bool:
    """Whether ``location`` is a rules location a :class:`~kpi_sentinel.ports.RulesSource` reads."""
    if location.startswith("s3://"):
        bucket, _, key = location.removeprefix("s3://").partition("/")
        return bool(bucket and key)
    return location.startswith("ssm:/") and len(location) > len("ssm:/")


class RulesCache:
    """The routing rules of this deployment, re-read at most every ``ttl_seconds``.

    Without a ``location`` the packaged rules are used. A rules document that fails to load or to pass
    ``check`` (e.g. a team without an outbound queue) raises on the first load; later, the last good
    rules stay in use, the error is logged, and the next call after ``retry_seconds`` tries again, so a
    bad edit never stops triage that was already running.
    """

    def __init__(
        self,
        location: str | None,
        source: RulesSource | None,
        ttl_seconds: float = 300.0,
        check: Callable[[RoutingRules], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        retry_seconds: float = 30.0,
    ) -> None:
        if location is not None:
            if not is_location(location):
                raise RulesError(
                    location, "ROUTING_RULES", "must be s3://<bucket>/<key> or ssm:/<parameter name>"
                )
            if source is None:
                raise ValueError(f"rules location {location} needs a RulesSource to read it")
        self.location = location
        self.source = source
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        self.check = check
        self.monotonic = monotonic
        self._rules: RoutingRules | None = None
        self._next_load = 0.0

    def _load(self) -> RoutingRules:
        if self.location is None or self.source is None:
            rules = default_rules()
        else:
            rules = load_rules(self.source.read(self.location), self.location)
        if self.check is not None:
            self.check(rules)
        return rules

    def get(self) -> RoutingRules:
        now = self.monotonic()
        if self._rules is not None and now < self._next_load:
            return self._rules
        try:
            rules = self._load()
        except Exception:
            if self._rules is None:
                raise
            log.exception(
                "routing rules could not be reloaded; keeping the last good rules",
                extra={"location": self.location, "rules_source": self._rules.source},
            )
            self._next_load = now + min(self.retry_seconds, self.ttl_seconds)
            return self._rules
        self._rules = rules
        self._next_load = now + self.ttl_seconds
        return rules
