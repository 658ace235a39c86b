"""Use case: the freshness check — a ``missing_data`` alert when an expected sync has not arrived.

Runs every 5 minutes over the integrations of the state table's ActiveIntegrations index (the scorer
stamps ``last_sync_at``, the time of an integration's last committed sync, on every commit).

**When is a sync missing.** An integration's *cadence* is the integration config's
``expected_every_seconds`` when set (300 s to 7 days), else its granularity (5 min, hour, day). Its
*grace* is the config's ``freshness_grace_seconds`` when set (300 s to 7 days), else
``max(15 min, one cadence)``. Both belong under the config's ``extra`` (``{"extra":
{"expected_every_seconds": 86400}}``): the scorer's config refuses unknown top-level fields; they are
read at the top level too, for a config schema that adds them. The sync is missing once ``cadence + grace`` have passed
since the last sync: a 5-minute integration after 20 minutes of silence, an hourly one after 2 hours, a
daily one after 2 days.

**Severity.** ``warning`` when the sync is missing; ``critical`` once the silence reaches
``min(6 cadences, 24 h)`` but never sooner than one cadence after the warning: 30 minutes for a
5-minute integration, 6 hours for an hourly one, 3 days (two missed days) for a daily one. Each
outage is announced at most twice: the warning, then one escalation (an outage first seen already
that late gets the critical alert alone).

**The alert** (schema v1): detector ``missing_data``, metric ``sync``, no dimension, ``observed`` the
minutes since the last sync, ``expected`` the cadence in minutes, ``expected_upper`` the tolerated
silence (cadence + grace), ``score`` the silence in cadences, ``threshold`` the tolerated silence in
cadences, direction and bad direction ``up`` (a longer silence is the bad way), ``period_start`` the
last sync, ``period_end`` the check's time, ``source_key`` empty; summary "No sync from acme-ads for
3 h 10 min (expected every hour)". Extra fields: ``last_sync_at``, ``expected_by`` (when the sync
was due), ``outage_alert_id`` (the first alert of the outage) and, on an escalation, ``escalates``.
Nothing is fed to the EWMA detector: a silence is never scored as a drop to zero.

**Ids and exactly-once.** The outage is identified by its integration and its last sync: the warning's
id is :func:`kpi_sentinel.alerts.alert_id` of (integration, ``missing_data``, ``sync``, last sync
time), the escalation's and the resolution's add ``#critical`` and ``#resolved`` to that time. An
announced outage is stored (:class:`~kpi_sentinel.ports.FreshnessState`, conditional on its version)
after its alert is published, so a rerun every 5 minutes publishes nothing twice; if storing fails
after publishing, the next run publishes the same alert id again and consumers deduplicate on it.

**Resolution.** When an announced outage's integration has synced since (its ``last_sync_at`` moved),
an ``info`` alert with ``resolves`` (the outage's first alert id) and ``resolved_alert_ids`` (all of
its alerts) is published once — "Syncs from acme-ads resumed after 3 h 10 min" — and the outage is
deleted. A new silence after that is a new outage with new ids.

**Suppression.** No alert (and no escalation) while a snooze covers the integration's metric ``sync``
(or the whole integration), or while a calendar event of kind ``maintenance`` (of the integration or
global) is in progress; the silence is measured again from the end of a maintenance that ended since
the last sync. A suppressed outage is not stored: it is announced when the suppression ends, if the
silence lasts. Resolutions are never suppressed.

**Integrations that stopped long ago.** Only integrations whose last sync is within the active window
(``active_within_days``, 7 by default, as for the retrain planner) are checked, so an integration that
stopped earlier is never alerted at all, and one that stays silent is announced at most twice and then
drops out of the check when its last sync leaves the window. Its announced outage stays stored
(counted as ``abandoned`` on every run) so that, should it ever sync again, the resolution is still
published; the store's TTL removes it 90 days after its last sync.

**Cost.** An integration silent for less than :data:`SCREEN_SECONDS` cannot be late under any config, so
it costs no read beyond the index; the others' control items (config, snoozes, calendar) are read
through the :class:`~kpi_sentinel.ports.ControlStore`, in threads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kpi_sentinel.alert_ids import SCHEMA_VERSION, alert_id, snooze_matches
from kpi_sentinel.calendar import KnownEventSpan, parse_events
from kpi_sentinel.ports import ActiveIntegration, FreshnessPorts, Outage, StateConflict

log = logging.getLogger(__name__)

DETECTOR = "missing_data"
METRIC = "sync"
MAINTENANCE = "maintenance"
MIN_CADENCE_SECONDS = 300  # the smallest granularity, and the smallest configurable cadence
MIN_CONFIG_GRACE_SECONDS = 300
MAX_CONFIGURED_SECONDS = 7 * 86400
# No config can make a sync late before this much silence (unless the settings' minimum grace is
# shorter still): below it, an integration costs no read.
SCREEN_SECONDS = MIN_CADENCE_SECONDS + MIN_CONFIG_GRACE_SECONDS
TIERS = ("standard", "business")


@dataclass(frozen=True)
class FreshnessSettings:
    """How patient the check is; see the module docstring for what each setting means."""

    active_within_days: float = 7.0
    grace_min_seconds: int = 900
    grace_cadences: float = 1.0
    critical_cadences: float = 6.0
    critical_max_seconds: int = 86400
    threads: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FreshnessSettings:
        """From ``ACTIVE_WITHIN_DAYS``, ``GRACE_MIN_SECONDS``, ``GRACE_CADENCES``, ``CRITICAL_CADENCES``
        and ``CRITICAL_MAX_SECONDS`` (all optional); a bad value raises ValueError naming the variable."""
        defaults = cls()
        values: dict[str, float] = {}
        for name, attribute in (
            ("ACTIVE_WITHIN_DAYS", "active_within_days"),
            ("GRACE_MIN_SECONDS", "grace_min_seconds"),
            ("GRACE_CADENCES", "grace_cadences"),
            ("CRITICAL_CADENCES", "critical_cadences"),
            ("CRITICAL_MAX_SECONDS", "critical_max_seconds"),
        ):
            text = env.get(name)
            if text is None or text == "":
                values[attribute] = float(getattr(defaults, attribute))
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"environment variable {name} must be a number, got {text!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"environment variable {name} must be a positive number, got {text!r}")
            values[attribute] = value
        return cls(
            active_within_days=values["active_within_days"],
            grace_min_seconds=int(values["grace_min_seconds"]),
            grace_cadences=values["grace_cadences"],
            critical_cadences=values["critical_cadences"],
            critical_max_seconds=int(values["critical_max_seconds"]),
        )


@dataclass(frozen=True)
class Expectation:
    """How often an integration syncs and how long a silence is tolerated (seconds)."""

    cadence: int
    grace: int
    critical_after: int

    @property
    def due_after(self) -> int:
        return self.cadence + self.grace


def _configured(config: Mapping[str, Any] | None, name: str) -> Any:
    if not config:
        return None
    if config.get(name) is not None:
        return config[name]
    extra = config.get("extra")
    return extra.get(name) if isinstance(extra, Mapping) else None


def _seconds(config: Mapping[str, Any] | None, name: str, low: int, problems: list[str]) -> int | None:
    value = _configured(config, name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= MAX_CONFIGURED_SECONDS
    ):
        problems.append(
            f"integration config field {name!r} must be a number of seconds from {low} to "
            f"{MAX_CONFIGURED_SECONDS}, got {value!r:.40}; ignored"
        )
        return None
    return int(value)


def expectation(
    granularity: int, config: Mapping[str, Any] | None, settings: FreshnessSettings, problems: list[str]
) -> Expectation | None:
    """The integration's expectation, or None when neither its config nor its granularity gives a cadence.

    >>> e = expectation(3600, None, FreshnessSettings(), [])
    >>> (e.cadence, e.due_after, e.critical_after)
    (3600, 7200, 21600)
    >>> e = expectation(86400, None, FreshnessSettings(), [])
    >>> (e.due_after // 3600, e.critical_after // 3600)
    (48, 72)
    """
    cadence = _seconds(config, "expected_every_seconds", MIN_CADENCE_SECONDS, problems) or granularity
    if cadence <= 0:
        return None
    grace = _seconds(config, "freshness_grace_seconds", MIN_CONFIG_GRACE_SECONDS, problems)
    if grace is None:
        grace = max(settings.grace_min_seconds, math.ceil(settings.grace_cadences * cadence))
    critical = min(math.ceil(settings.critical_cadences * cadence), settings.critical_max_seconds)
    return Expectation(cadence, grace, max(critical, cadence + grace + cadence))


def duration_words(seconds: float) -> str:
    """A silence in words, to the minute below an hour, to the hour from a day on.

    >>> [duration_words(s) for s in (59, 600, 3600, 11400, 86400, 97200)]
    ['0 min', '10 min', '1 h', '3 h 10 min', '1 d', '1 d 3 h']
    """
    minutes = int(max(seconds, 0) // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 1440:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, rest = divmod(minutes // 60, 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def cadence_words(seconds: int) -> str:
    """A cadence in words.

    >>> [cadence_words(s) for s in (300, 3600, 7200, 86400, 90)]
    ['every 5 minutes', 'every hour', 'every 2 hours', 'every day', 'every 90 seconds']
    """
    for unit, one, many in ((86400, "day", "days"), (3600, "hour", "hours"), (60, "minute", "minutes")):
        if seconds % unit == 0:
            n = seconds // unit
            return f"every {one}" if n == 1 else f"every {n} {many}"
    return f"every {seconds} seconds"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def outage_alert_id(integration_id: str, last_sync_at: float, stage: str = "") -> str:
    """The id of an outage's alert: ``stage`` is ``""`` (the warning), ``critical`` or ``resolved``.

    >>> outage_alert_id("acme-ads", 1790000000.0)
    'missing_data-9377fd62f92e5fb0443fc028ac755776'
    """
    start = _iso(last_sync_at) + (f"#{stage}" if stage else "")
    return alert_id(integration_id, DETECTOR, METRIC, "", "", start)


def _alert(
    integration_id: str,
    tier: str,
    segment: str,
    last_sync_at: float,
    end: float,
    expect: Expectation,
    severity: str,
    stage: str,
    summary: str,
) -> dict[str, Any]:
    gap = end - last_sync_at
    observed, expected = round(gap / 60, 1), round(expect.cadence / 60, 1)
    return {
        "schema_version": SCHEMA_VERSION,
        "alert_id": outage_alert_id(integration_id, last_sync_at, stage),
        "integration_id": integration_id,
        "detector": DETECTOR,
        "metric": METRIC,
        "features": None,
        "dimension": None,
        "dimension_value": None,
        "period_start": _iso(last_sync_at),
        "period_end": _iso(end),
        "granularity_seconds": expect.cadence,
        "observed": observed,
        "expected": expected,
        "expected_lower": 0.0,
        "expected_upper": round(expect.due_after / 60, 1),
        "deviation": {
            "absolute": round(observed - expected, 1),
            "percent": round((observed - expected) / expected * 100, 2) if expected else None,
        },
        "score": round(gap / expect.cadence, 2),
        "sustained_score": None,
        "threshold": round(expect.due_after / expect.cadence, 2),
        "direction": "up",
        "bad_direction": "up",
        "severity": severity,
        "contributors": [],
        "summary": summary,
        "baseline": f"syncs expected {cadence_words(expect.cadence)}",
        "tier": tier if tier in TIERS else "standard",
        "segment": segment,
        "source_key": "",
        "last_sync_at": _iso(last_sync_at),
        "expected_by": _iso(last_sync_at + expect.cadence),
        "outage_alert_id": outage_alert_id(integration_id, last_sync_at),
    }


def missing_alert(
    active: ActiveIntegration, segment: str, now: float, expect: Expectation, severity: str
) -> dict[str, Any]:
    """The alert announcing (``warning``) or escalating (``critical``) an integration's silence."""
    summary = (
        f"No sync from {active.integration_id} for {duration_words(now - active.last_sync_at)} "
        f"(expected {cadence_words(expect.cadence)})"
    )
    stage = "critical" if severity == "critical" else ""
    return _alert(
        active.integration_id,
        active.tier,
        segment,
        active.last_sync_at,
        now,
        expect,
        severity,
        stage,
        summary,
    )


def resolution_alert(outage: Outage, resumed_at: float) -> dict[str, Any]:
    """The ``info`` alert closing ``outage``: the integration synced again at ``resumed_at``."""
    expect = Expectation(outage.cadence_seconds, 0, 0)
    gap = resumed_at - outage.last_sync_at
    summary = f"Syncs from {outage.integration_id} resumed after {duration_words(gap)}"
    alert = _alert(
        outage.integration_id,
        outage.tier,
        outage.segment,
        outage.last_sync_at,
        resumed_at,
        expect,
        "info",
        "resolved",
        summary,
    )
    alert["expected_upper"] = alert["expected"]
    alert["threshold"] = 1.0
    alert["resolves"] = outage.alert_ids[0] if outage.alert_ids else alert["outage_alert_id"]
    alert["resolved_alert_ids"] = list(outage.alert_ids)
    alert["resumed_at"] = _iso(resumed_at)
    return alert


@dataclass
class FreshnessOutcome:
    as_of: str
    active: int = 0
    screened: int = 0  # silent long enough to be looked at
    late: int = 0
    alerts_published: int = 0  # first announcements
    escalated: int = 0
    resolved: int = 0
    suppressed: int = 0
    already_announced: int = 0
    abandoned: int = 0  # announced outages whose integration left the active window
    conflicts: int = 0
    alert_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Verdict:
    """What one screened integration needs: nothing, or an alert and the outage to store after it."""

    status: str  # on_time | no_cadence | announced | suppressed | alert | escalate
    alert: dict[str, Any] | None = None
    outage: Outage | None = None
    expected_version: int = 0
    why: str = ""
    problems: tuple[str, ...] = ()


def _maintenance(events: Sequence[KnownEventSpan]) -> list[KnownEventSpan]:
    return [e for e in events if e.kind.lower() == MAINTENANCE]


def judge(
    active: ActiveIntegration,
    outage: Outage | None,
    now: float,
    ports: FreshnessPorts,
    settings: FreshnessSettings,
    stored_version: int = 0,
) -> _Verdict:
    """Decide about one integration silent for at least :data:`SCREEN_SECONDS` (reads, never writes).

    ``outage`` is its stored outage for the same last sync, if announced already; ``stored_version``
    the version of a stored outage of another last sync that a new one replaces (0: none).
    """
    iid = active.integration_id
    problems: list[str] = []
    config = ports.control.integration_config(iid)
    expect = expectation(active.granularity, config, settings, problems)
    if expect is None:
        return _Verdict(
            "no_cadence", why="no granularity and no expected_every_seconds", problems=(*problems,)
        )
    try:
        events = _maintenance(parse_events(ports.control.known_events(iid)))
    except ValueError as exc:
        problems.append(f"calendar unusable, checked without it: {exc}")
        events = []
    started = max([active.last_sync_at, *(e.end for e in events if active.last_sync_at < e.end <= now)])
    silence = now - started
    if silence < expect.due_after:
        return _Verdict("on_time", problems=(*problems,))
    severity = "critical" if silence >= expect.critical_after else "warning"
    if outage is not None and (outage.severity == "critical" or severity == "warning"):
        return _Verdict("announced", problems=(*problems,))
    current = next((e for e in events if e.start <= now < e.end), None)
    if current is not None:
        return _Verdict("suppressed", why=f"maintenance {current.name!r}", problems=(*problems,))
    segment = str((config or {}).get("segment") or "default")
    alert = missing_alert(active, segment, now, expect, severity)
    when = datetime.fromtimestamp(now, tz=UTC)
    snooze = next((s for s in ports.control.active_snoozes(iid, when) if snooze_matches(s, alert)), None)
    if snooze is not None:
        return _Verdict(
            "suppressed", why=f"snooze {snooze.get('snooze_id', '')}".strip(), problems=(*problems,)
        )
    if outage is None:
        stored = Outage(
            integration_id=iid,
            last_sync_at=active.last_sync_at,
            cadence_seconds=expect.cadence,
            alert_ids=(alert["alert_id"],),
            severity=severity,
            alerted_at=now,
            tier=alert["tier"],
            segment=segment,
            version=stored_version + 1,
        )
        return _Verdict("alert", alert, stored, stored_version, problems=(*problems,))
    alert["escalates"] = outage.alert_ids[0] if outage.alert_ids else alert["outage_alert_id"]
    stored = replace(
        outage,
        alert_ids=(*outage.alert_ids, alert["alert_id"]),
        severity=severity,
        version=outage.version + 1,
    )
    return _Verdict("escalate", alert, stored, outage.version, problems=(*problems,))


def check(as_of: datetime, ports: FreshnessPorts, settings: FreshnessSettings) -> FreshnessOutcome:
    """One run of the freshness check at ``as_of``: resolve, announce and escalate (see the module)."""
    now = as_of.timestamp()
    outcome = FreshnessOutcome(as_of=_iso(now))
    since = now - settings.active_within_days * 86400
    active = {a.integration_id: a for a in ports.index.active(since)}
    outcome.active = len(active)
    outages = {o.integration_id: o for o in ports.state.open_outages()}

    # Announced outages whose integration synced again: one resolution each, then the outage is gone.
    resolutions: list[tuple[Outage, dict[str, Any]]] = []
    for iid, outage in sorted(outages.items()):
        current = active.get(iid)
        if current is None:
            outcome.abandoned += 1
        elif current.last_sync_at > outage.last_sync_at:
            resolutions.append((outage, resolution_alert(outage, current.last_sync_at)))
    if resolutions:
        ports.publisher.publish([alert for _, alert in resolutions])
    for outage, alert in resolutions:
        outages.pop(outage.integration_id)
        try:
            ports.state.close(outage.integration_id, outage.version)
        except StateConflict:
            outcome.conflicts += 1
            log.info("outage changed meanwhile", extra={"integration": outage.integration_id})
            continue
        outcome.resolved += 1
        outcome.alert_ids.append(alert["alert_id"])
        log.info("syncs resumed", extra={"alert_id": alert["alert_id"], "summary": alert["summary"]})

    screen = MIN_CADENCE_SECONDS + min(MIN_CONFIG_GRACE_SECONDS, settings.grace_min_seconds)
    screened = sorted(
        (a for a in active.values() if now - a.last_sync_at >= screen),
        key=lambda a: a.integration_id,
    )
    outcome.screened = len(screened)

    def one(item: ActiveIntegration) -> _Verdict:
        outage = outages.get(item.integration_id)
        if outage is not None and outage.last_sync_at != item.last_sync_at:
            # Stored for another last sync (a replay of an earlier moment): a new outage replaces it.
            return judge(item, None, now, ports, settings, outage.version)
        return judge(item, outage, now, ports, settings)

    with ThreadPoolExecutor(max_workers=max(1, min(settings.threads, len(screened) or 1))) as pool:
        verdicts = list(zip(screened, pool.map(one, screened), strict=True))
    to_store: list[_Verdict] = []
    for item, verdict in verdicts:
        outcome.problems.extend(f"{item.integration_id}: {p}" for p in verdict.problems)
        if verdict.status == "no_cadence":
            outcome.problems.append(f"{item.integration_id}: not checked: {verdict.why}")
        if verdict.status not in ("on_time", "no_cadence"):
            outcome.late += 1
        if verdict.status == "announced":
            outcome.already_announced += 1
        elif verdict.status == "suppressed":
            outcome.suppressed += 1
            log.info("missing data suppressed", extra={"integration": item.integration_id, "by": verdict.why})
        elif verdict.alert is not None:
            to_store.append(verdict)
    if to_store:
        ports.publisher.publish([v.alert for v in to_store if v.alert is not None])
    for verdict in to_store:
        assert verdict.outage is not None
        assert verdict.alert is not None
        try:
            ports.state.save(verdict.outage, verdict.expected_version)
        except StateConflict:
            outcome.conflicts += 1
            log.info("outage stored meanwhile", extra={"integration": verdict.outage.integration_id})
            continue
        if verdict.status == "alert":
            outcome.alerts_published += 1
        else:
            outcome.escalated += 1
        outcome.alert_ids.append(verdict.alert["alert_id"])
        log.warning(
            "missing data", extra={"alert_id": verdict.alert["alert_id"], "summary": verdict.alert["summary"]}
        )
    return outcome
