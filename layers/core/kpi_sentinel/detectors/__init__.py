"""Detectors: pure numerics over many series at once, driven period by period by the scorer."""

from __future__ import annotations

from typing import Protocol

from kpi_sentinel.detectors.ewma import BoolArray, FloatArray, IntArray, StepResult


class Detector(Protocol):
    """What :class:`kpi_sentinel.scoring.IntegrationState` needs from a detector.

    :class:`~kpi_sentinel.detectors.ewma.SeasonalEWMA` is the production one; the quality benchmark
    drives naive baselines through the same scorer code with this protocol.
    """

    alpha: float
    threshold: float
    warmup: int | None
    transform_: IntArray
    last_index_: IntArray

    def resize(self, n_series: int, transforms: list[str] | None = None) -> Detector: ...

    def select(self, keep: IntArray) -> Detector: ...

    def step(
        self,
        period_index: int,
        values: FloatArray,
        floor_sd: FloatArray | None = None,
        learn: BoolArray | None = None,
    ) -> StepResult: ...
