"""The SLA check: escalate open incidents nobody acknowledged in time (scheduled every 5 minutes).

Each run first re-sends outboxes that crashed runs left behind (messages saved with an incident but
never confirmed sent, older than ``outbox_grace`` so a writer still sending is left alone), then finds
open, unacknowledged incidents whose ``due_at`` is at or before now (the Due index) and escalates each:

* below P1: the priority rises one level (P4 -> P3 -> P2 -> P1), ``due_at`` becomes now plus the new
  level's SLA, the escalation is recorded (reason ``sla``) and an ``escalated`` message goes to the team;
* at P1: the breach is announced once (reason ``sla_breached``) and the incident leaves the Due index,
  so it is not re-announced every 5 minutes.

So each level escalates once, one level per run, and a rerun at the same time does nothing more. An
incident that fails (e.g. its queue refuses the message) does not stop the others; the run then raises
at the end so the failure is visible, and the next run retries it (its outbox is swept).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from kpi_sentinel.ports import IncidentConflict
from kpi_sentinel.triage.incidents import TriagePorts, TriageSettings, deliver, escalate_for_sla
from kpi_sentinel.triage.routing import RoutingRules

log = logging.getLogger(__name__)


class SlaCheckFailed(RuntimeError):
    """Some incidents could not be escalated; the others were (see ``outcome``). The next run retries."""

    def __init__(self, message: str, outcome: SlaOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class SlaOutcome:
    at: str
    checked: int = 0  # incidents the Due index listed as due
    escalated: int = 0  # priority raised one level
    breached: int = 0  # P1 breaches announced
    unchanged: int = 0  # due when listed, but acknowledged, resolved or escalated meanwhile
    resent: int = 0  # messages of outboxes left behind, sent again
    messages_sent: int = 0  # escalation messages sent
    failed: list[str] = field(default_factory=list)  # incident ids
    incident_ids: list[str] = field(default_factory=list)  # escalated or breached


def check_sla(
    rules: RoutingRules, ports: TriagePorts, settings: TriageSettings, now: datetime | None = None
) -> SlaOutcome:
    """One run of the SLA check at ``now`` (the clock's time by default). See the module docstring."""
    now = ports.clock() if now is None else now
    outcome = SlaOutcome(at=now.isoformat())
    for stored in list(ports.incidents.pending_outboxes(now - settings.outbox_grace)):
        incident = stored.record["incident_id"]
        try:
            outcome.resent += deliver(ports, stored.record, list(stored.outbox))
        except Exception:
            log.exception("could not re-send an incident's outbox", extra={"incident_id": incident})
            outcome.failed.append(incident)
    for found in list(ports.incidents.due(now)):
        incident = found.record["incident_id"]
        outcome.checked += 1
        try:
            reason = _escalate(incident, rules, ports, settings, now, outcome)
        except Exception:
            log.exception("could not escalate an overdue incident", extra={"incident_id": incident})
            outcome.failed.append(incident)
            continue
        if reason is None:
            outcome.unchanged += 1
        else:
            outcome.incident_ids.append(incident)
            if reason == "sla_breached":
                outcome.breached += 1
            else:
                outcome.escalated += 1
    if outcome.failed:
        raise SlaCheckFailed(
            f"SLA check at {outcome.at}: {len(outcome.failed)} incident(s) failed "
            f"({', '.join(outcome.failed[:10])}); {outcome.escalated} escalated, {outcome.breached} breached",
            outcome,
        )
    return outcome


def _escalate(
    incident: str,
    rules: RoutingRules,
    ports: TriagePorts,
    settings: TriageSettings,
    now: datetime,
    outcome: SlaOutcome,
) -> str | None:
    for _ in range(settings.max_attempts):
        stored = ports.incidents.get(incident)  # the index is eventually consistent: decide on the item
        if stored is None:
            return None
        change = escalate_for_sla(stored.record, rules, now)
        if change is None:
            return None
        record, message = change
        outbox = [*stored.outbox, message]
        try:
            ports.incidents.save(record, stored.version, outbox)
        except IncidentConflict:
            continue
        outcome.messages_sent += deliver(ports, record, outbox)
        log.info(
            "incident escalated for its SLA",
            extra={"incident_id": incident, "priority": record["priority"], "reason": message["reason"]},
        )
        return str(message["reason"])
    raise IncidentConflict(
        f"incident {incident} kept changing; gave up after {settings.max_attempts} attempts"
    )
