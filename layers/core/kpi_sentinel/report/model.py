"""What a built report is: its sections per integration, its numbers, its plots and its files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from kpi_sentinel.report.data import Problem
from kpi_sentinel.report.stats import (
    Contributor,
    Incident,
    PrecisionStats,
    SlaStats,
    SuppressedCounts,
    counts_by,
)

REPORT_FILES = {
    "index.html": "text/html; charset=utf-8",
    "alerts.csv": "text/csv; charset=utf-8",
    "summary.json": "application/json",
}


@dataclass(frozen=True)
class ReportSettings:
    max_plotted_integrations: int = 40
    max_plots_per_integration: int = 6
    max_alert_rows: int = 200
    top_contributors: int = 10


@dataclass(frozen=True)
class MetricPlot:
    metric: str
    png: bytes
    periods: int
    flagged: int


@dataclass(frozen=True)
class IntegrationReport:
    integration_id: str
    requested: bool  # named explicitly by whoever asked for the report
    alerts: tuple[dict[str, Any], ...]  # most severe first
    labels: Mapping[str, str]  # alert id -> operator label
    contributors: tuple[Contributor, ...]
    incidents: tuple[Incident, ...]
    precision: PrecisionStats | None  # None: no label store
    suppressed: SuppressedCounts
    plots: tuple[MetricPlot, ...]
    unplotted_metrics: tuple[str, ...]  # metrics with history beyond max_plots_per_integration
    history_note: str  # why there are no plots, or ""

    @property
    def sla(self) -> SlaStats:
        return SlaStats.of(self.incidents)

    @property
    def severity_counts(self) -> dict[str, int]:
        return counts_by(self.alerts, "severity")

    def rank(self) -> tuple[Any, ...]:
        counts = self.severity_counts
        return (
            -counts["critical"],
            -counts["warning"],
            -len(self.alerts),
            -len(self.incidents),
            self.integration_id,
        )


@dataclass(frozen=True)
class ReportResult:
    start: date
    end: date
    generated_at: datetime
    integrations: tuple[IntegrationReport, ...]  # most severe first
    alerts: tuple[dict[str, Any], ...]
    incidents: tuple[Incident, ...] | None  # None: no incident store configured
    labels_available: bool
    suppressed: SuppressedCounts
    problems: tuple[Problem, ...]
    settings: ReportSettings
    files: Mapping[str, bytes] = field(default_factory=dict)  # name -> content, see REPORT_FILES

    @property
    def name(self) -> str:
        """``2026-11-24`` for one day, ``2026-11-17_2026-11-23`` for a range."""
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()}_{self.end.isoformat()}"

    @property
    def prefix(self) -> str:
        return f"reports/{self.name}/"

    @property
    def precision(self) -> PrecisionStats | None:
        if not self.labels_available:
            return None
        return PrecisionStats.combine(i.precision for i in self.integrations if i.precision is not None)

    @property
    def sla(self) -> SlaStats | None:
        return None if self.incidents is None else SlaStats.of(self.incidents)
