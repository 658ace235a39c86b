"""Naive baseline detectors the seasonal EWMA must beat on the quality benchmark.

Both speak :class:`~kpi_sentinel.detectors.ewma.SeasonalEWMA`'s protocol
(:class:`kpi_sentinel.detectors.Detector`), so :class:`~kpi_sentinel.scoring.IntegrationState` drives
them unchanged:

* constructor keywords ``season_length``, ``alpha``, ``threshold``, ``warmup`` (and ``transform``, the
  default transform of new series), stored as given even where the baseline does not use them;
* ``transform_`` (int64 codes into ``TRANSFORMS``: 0 = ``ssqrt``, 1 = ``identity``), ``last_index_``,
  ``count_`` and ``n_series``; ``resize`` (grow only) and ``select`` keep them aligned with the
  learned state. The codes are bookkeeping for the caller (it reads them to find ratio series): the
  baselines always model the **raw values**;
* ``step(period_index, values, floor_sd=None, learn=None) -> StepResult``.

Step semantics, common to both:

* a series is *observed* when its value is not NaN and its ``last_index_`` is before
  ``period_index``; other series get NaN results, are not ready and are left untouched (late or
  repeated data never moves the state);
* observed series are scored against the state *before* this observation, then folded in (and
  ``last_index_`` set to ``period_index``), unless ``learn`` is given and False for them: then they are
  scored and nothing about them changes, ``last_index_`` included, as in ``SeasonalEWMA.step``;
* ``sd = max(sample sd (ddof=1), SD_FLOOR, floor_sd)``. ``floor_sd`` is per series, in the value's
  raw units (NaN entries are ignored); ``SD_FLOOR`` (1e-9) only keeps a constant series from dividing
  by zero: such a series then scores any change as enormous, as the naive approach would;
* ``expected`` is the mean, ``lower``/``upper`` = ``expected ∓ threshold·sd``, ``score`` =
  ``(value − expected) / sd`` (> 0 above the expectation). With fewer than two observations the sd
  (hence ``score``, ``lower``, ``upper``) is NaN; with none, ``expected`` is NaN too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from kpi_sentinel.detectors.ewma import TRANSFORMS, BoolArray, FloatArray, IntArray, StepResult

SD_FLOOR = 1e-9


class _Baseline:
    """Shared bookkeeping: hyperparameters, transform codes, ``last_index_``, ``count_`` and ``step``."""

    def __init__(
        self,
        season_length: int,
        alpha: float = 0.1,
        threshold: float = 3.0,
        warmup: int | None = None,
        transform: str = "ssqrt",
    ) -> None:
        if season_length < 1:
            raise ValueError(f"season_length must be at least 1, got {season_length}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.season_length = season_length
        self.alpha = alpha  # unused: kept for IntegrationState.reconfigure
        self.threshold = threshold
        self.warmup = warmup  # unused: readiness is the baseline's own (window / training)
        self.transform = transform
        self.transform_: IntArray = np.zeros(0, dtype=np.int64)
        self.last_index_: IntArray = np.zeros(0, dtype=np.int64)
        self.count_: IntArray = np.zeros(0, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return int(self.last_index_.shape[0])

    def resize(self, n_series: int, transforms: Sequence[str] | None = None) -> Self:
        """Grow to ``n_series`` series; the new ones start empty, with the given transform names."""
        have = self.n_series
        if n_series < have:
            raise ValueError("resize only grows; use select() to drop series")
        grow = n_series - have
        names = list(transforms) if transforms is not None else [self.transform] * grow
        if len(names) != grow or any(t not in TRANSFORMS for t in names):
            raise ValueError(f"need {grow} transforms from {TRANSFORMS}, got {names}")
        codes = np.array([TRANSFORMS.index(t) for t in names], dtype=np.int64)
        self.transform_ = np.concatenate([self.transform_, codes])
        self.last_index_ = np.concatenate([self.last_index_, np.full(grow, -1, dtype=np.int64)])
        self.count_ = np.concatenate([self.count_, np.zeros(grow, dtype=np.int64)])
        self._grow(grow)
        return self

    def select(self, keep: IntArray) -> Self:
        """Keep only the series at positions ``keep`` (in that order), with their state."""
        self.transform_ = self.transform_[keep]
        self.last_index_ = self.last_index_[keep]
        self.count_ = self.count_[keep]
        self._keep(keep)
        return self

    def step(
        self,
        period_index: int,
        values: FloatArray,
        floor_sd: FloatArray | None = None,
        learn: BoolArray | None = None,
    ) -> StepResult:
        """Score period ``period_index`` (NaN = no observation) and fold it in where ``learn`` allows."""
        n = self.n_series
        for name, array in (("values", values), ("floor_sd", floor_sd), ("learn", learn)):
            if array is not None and array.shape != (n,):
                raise ValueError(f"expected {n} {name}, got shape {array.shape}")
        observed = ~np.isnan(values) & (self.last_index_ < period_index)
        expected, sd, ready = self._estimate()
        floor = np.full(n, SD_FLOOR)
        if floor_sd is not None:
            np.maximum(floor, np.nan_to_num(floor_sd, nan=0.0), out=floor)
        sd = np.maximum(sd, floor)  # NaN (too few observations) stays NaN
        x = np.where(observed, values, np.nan)
        band = self.threshold * sd
        with np.errstate(invalid="ignore"):
            score = (x - expected) / sd
        nan = np.full(n, np.nan)
        result = StepResult(
            expected=np.where(observed, expected, nan),
            lower=np.where(observed, expected - band, nan),
            upper=np.where(observed, expected + band, nan),
            score=score,
            ready=observed & ready & ~np.isnan(score),
        )
        fold = observed if learn is None else observed & learn.astype(bool)
        self._learn(np.where(fold, x, 0.0), fold)
        self.last_index_[fold] = period_index
        return result

    # --- the model: state before this observation, and how one observation is folded in ---

    def _grow(self, grow: int) -> None:
        raise NotImplementedError

    def _keep(self, keep: IntArray) -> None:
        raise NotImplementedError

    def _estimate(self) -> tuple[FloatArray, FloatArray, BoolArray]:
        """``(expected, sd before floors, ready)`` per series from the learned state."""
        raise NotImplementedError

    def _learn(self, x: FloatArray, fold: BoolArray) -> None:
        """Fold ``x`` into the series where ``fold`` (``x`` is 0 elsewhere)."""
        raise NotImplementedError


class RollingZScore(_Baseline):
    """The notebook z-score: mean and sd (ddof=1) of the last ``window`` observations, no seasonality.

    State: a ring buffer ``buffer_`` of shape ``(window, n_series)`` (phase-major, like
    ``SeasonalEWMA.baseline_``); ``count_`` observations folded so far, the next one goes to row
    ``count_ % window``. A series is ready once ``window`` observations were folded.

    >>> d = RollingZScore(season_length=24, window=3).resize(1)
    >>> for t, y in enumerate([10.0, 12.0, 14.0]):
    ...     _ = d.step(t, np.array([y]))
    >>> r = d.step(3, np.array([18.0]))  # mean 12, sd 2: (18 - 12) / 2 = 3
    >>> float(r.expected[0]), float(r.score[0]), float(r.upper[0]), bool(r.ready[0])
    (12.0, 3.0, 18.0, True)
    """

    def __init__(
        self,
        season_length: int,
        alpha: float = 0.1,
        threshold: float = 3.0,
        warmup: int | None = None,
        transform: str = "ssqrt",
        window: int = 14,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 (the sd needs two observations), got {window}")
        self.window = window
        self.buffer_: FloatArray = np.zeros((window, 0), dtype=np.float64)
        super().__init__(season_length, alpha, threshold, warmup, transform)

    def _grow(self, grow: int) -> None:
        self.buffer_ = np.hstack([self.buffer_, np.zeros((self.window, grow), dtype=np.float64)])

    def _keep(self, keep: IntArray) -> None:
        self.buffer_ = self.buffer_[:, keep]

    def _estimate(self) -> tuple[FloatArray, FloatArray, BoolArray]:
        filled = np.minimum(self.count_, self.window)
        valid = np.arange(self.window)[:, None] < filled[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(valid, self.buffer_, 0.0).sum(axis=0) / filled  # 0/0 = NaN when empty
            deviation = np.where(valid, self.buffer_ - mean, 0.0)
            variance = (deviation * deviation).sum(axis=0) / np.maximum(filled - 1, 1)
        sd = np.where(filled >= 2, np.sqrt(variance), np.nan)
        return mean, sd, self.count_ >= self.window

    def _learn(self, x: FloatArray, fold: BoolArray) -> None:
        columns = np.flatnonzero(fold)
        self.buffer_[self.count_[columns] % self.window, columns] = x[columns]
        self.count_[columns] += 1


class StaticThreshold(_Baseline):
    """Mean and sd (ddof=1) of each series' first ``training`` observations, then frozen forever.

    ``training`` defaults to ``max(2 × season_length, 14)``. State: ``count_`` training observations
    folded (stops at ``training``), ``mean_`` and ``m2_`` (sum of squared deviations, Welford). A series
    is ready once trained; later observations are scored, never learned.

    >>> d = StaticThreshold(season_length=1, training=3).resize(1)
    >>> for t, y in enumerate([10.0, 12.0, 14.0, 100.0]):  # the 100 is scored, not learned
    ...     _ = d.step(t, np.array([y]))
    >>> r = d.step(4, np.array([8.0]))  # mean 12, sd 2: (8 - 12) / 2 = -2
    >>> float(r.expected[0]), float(r.score[0]), bool(r.ready[0]), int(d.count_[0])
    (12.0, -2.0, True, 3)
    """

    def __init__(
        self,
        season_length: int,
        alpha: float = 0.1,
        threshold: float = 3.0,
        warmup: int | None = None,
        transform: str = "ssqrt",
        training: int | None = None,
    ) -> None:
        if training is not None and training < 2:
            raise ValueError(f"training must be at least 2 (the sd needs two observations), got {training}")
        self.training = training
        self.mean_: FloatArray = np.zeros(0, dtype=np.float64)
        self.m2_: FloatArray = np.zeros(0, dtype=np.float64)
        super().__init__(season_length, alpha, threshold, warmup, transform)

    @property
    def training_periods(self) -> int:
        """Observations learned per series: ``training`` or ``max(2 × season_length, 14)``."""
        return self.training if self.training is not None else max(2 * self.season_length, 14)

    def _grow(self, grow: int) -> None:
        self.mean_ = np.concatenate([self.mean_, np.zeros(grow, dtype=np.float64)])
        self.m2_ = np.concatenate([self.m2_, np.zeros(grow, dtype=np.float64)])

    def _keep(self, keep: IntArray) -> None:
        self.mean_ = self.mean_[keep]
        self.m2_ = self.m2_[keep]

    def _estimate(self) -> tuple[FloatArray, FloatArray, BoolArray]:
        count = self.count_
        mean = np.where(count >= 1, self.mean_, np.nan)
        sd = np.where(count >= 2, np.sqrt(self.m2_ / np.maximum(count - 1, 1)), np.nan)
        return mean, sd, count >= self.training_periods

    def _learn(self, x: FloatArray, fold: BoolArray) -> None:
        fold = fold & (self.count_ < self.training_periods)
        count = self.count_ + fold
        delta = np.where(fold, x - self.mean_, 0.0)
        self.mean_ = self.mean_ + delta / np.maximum(count, 1)
        self.m2_ = self.m2_ + delta * np.where(fold, x - self.mean_, 0.0)
        self.count_ = count
