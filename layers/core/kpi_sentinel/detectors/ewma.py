"""Seasonal EWMA detector: each period is compared with the baseline of the same phase one season ago.

The detector tracks many series at once (one row each) and is pure numerics: no I/O, no pandas.

Model, in a variance-stabilising space chosen per series: ``ssqrt`` (sign(x)·sqrt(|x|)) for counts
and money, whose noise grows with volume like a Poisson count's, so quiet night hours and busy
afternoons share one variance; ``identity`` for ratios, whose sampling noise the caller bounds from
below with a binomial floor (see ``step``):

* ``baseline_[p, s]`` — the smoothed value of series *s* at seasonal phase *p* (phase-major, so
  one period's phase is a contiguous row), learned from the
  observations one, two, ... seasons ago (updated with ``seasonal_smoothing`` once per season).
  With a ``phase_window`` of *h* the expectation uses the average of the phases ``p - h .. p + h``
  (the season wraps around) instead of phase *p*'s alone, and phase *p* learns towards that average
  plus the cleaned residual: a seasonal profile is smooth at fine granularity, and one phase learned
  from a few seasons of low counts is mostly noise (5-minute data: 288 phases a day, a handful of
  events each), which the neighbours average out;
* ``mean_[s]`` — EWMA (``alpha``) of the seasonal residual ``y - baseline``: it carries trend and
  level changes that happened since the phase was last seen;
* ``var_[s]`` — EWMA of the squared deviations of that residual.

For period *t* with phase ``p = t mod season_length`` the expectation is ``baseline[p] + mean`` and the
score is the deviation in standard deviations. Once warmed up, an observation that is far out is
winsorised before it updates the state, so one spike does not blind the detector for days; a series
that stays out of band on one side for ``adapt_periods`` has a new level, which it then learns in full.
A phase's baseline absorbs ``seasonal_smoothing`` of the level correction when it is updated (not all
of it, which would count a level shift twice one season later). What an outlier taught its phase is
provisional (``undo_[p, s]``, the row before it): if the phase's next observation is back where the old
row expects, the old row returns, so three days of bot traffic leave no echo one season later.

The *slow chart* (``sustained`` in :class:`StepResult`) catches what the fast level absorbs: the
residual against the baseline and a slow level (``slow_alpha``, default ``alpha / 25``), smoothed over
a few periods (``chart_lambda``: an EWMA of weight λ averages about 2/λ - 1 periods, 7 at the default
0.25) and divided by its own running spread: slow drifts, and sustained moderate breaks that no single
period shows. A smaller λ averages longer: fewer, surer sustained alerts, later. The spread follows the
chart's normal swings quickly; ``chart_spread_growth`` (per period, None = unbounded) caps how fast it may
grow, so that a break lasting a few hours cannot teach the chart its own size before the chart says so.
The chart may alert a season after single periods may (:attr:`SeasonalEWMA.chart_warmup_updates`).

Sign convention: ``score_ > 0`` means above the expectation, ``< 0`` below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TRANSFORMS = ("ssqrt", "identity")


def ssqrt(values: FloatArray) -> FloatArray:
    """sign(x)·sqrt(|x|): stabilises Poisson-like variance, defined for zero and negatives."""
    return np.copysign(np.sqrt(np.abs(values)), values)


def ssquare(values: FloatArray) -> FloatArray:
    """The inverse of :func:`ssqrt`."""
    return np.copysign(values * values, values)


@dataclass(frozen=True)
class StepResult:
    """What the detector said about one period, per series (NaN where there was nothing to say)."""

    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    ready: BoolArray
    sustained: FloatArray | None = None  # the slow chart's score (see SeasonalEWMA); None if not tracked


class SeasonalEWMA:
    """EWMA level and variance of the seasonal residual, for many series at once.

    Hyperparameters are stored as given; learned state ends in ``_``; ``step`` and ``resize`` return
    the results or ``self``.

    A hand-computed example (identity transform, season of 2, alpha 0.5, naive seasonal baseline):

    >>> d = SeasonalEWMA(season_length=2, alpha=0.5, seasonal_smoothing=1.0, transform="identity",
    ...                  warmup=2).resize(1)
    >>> for t, y in enumerate([10.0, 20.0, 12.0, 20.0]):  # season 1 seeds, season 2 learns
    ...     _ = d.step(t, np.array([y]))
    >>> float(d.mean_[0]), float(d.var_[0])  # residuals 2 then 0: mean 1, var (1-1/2)(0+1/2·4) = 1
    (1.0, 1.0)
    >>> r = d.step(4, np.array([16.0]))  # expected = baseline 12 + mean 1 = 13; (16-13)/sqrt(1) = 3
    >>> float(r.expected[0]), float(r.score[0]), bool(r.ready[0])
    (13.0, 3.0, True)
    """

    def __init__(
        self,
        season_length: int,
        alpha: float = 0.1,
        variance_alpha: float | None = 0.02,
        seasonal_smoothing: float = 0.5,
        threshold: float = 3.0,
        warmup: int | None = None,
        sd_floor: float = 0.02,
        transform: str = "ssqrt",
        adapt_after: int | None = None,
        slow_alpha: float | None = None,
        chart_lambda: float = 0.25,
        phase_window: int = 0,
        chart_spread_growth: float | None = None,
    ) -> None:
        if season_length < 1:
            raise ValueError(f"season_length must be at least 1, got {season_length}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not 0.0 < seasonal_smoothing <= 1.0:
            raise ValueError(f"seasonal_smoothing must be in (0, 1], got {seasonal_smoothing}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if phase_window < 0:
            raise ValueError(f"phase_window must be at least 0, got {phase_window}")
        if chart_spread_growth is not None and chart_spread_growth <= 0:
            raise ValueError(f"chart_spread_growth must be positive or None, got {chart_spread_growth}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.season_length = season_length
        self.alpha = alpha
        self.variance_alpha = variance_alpha
        self.seasonal_smoothing = seasonal_smoothing
        self.threshold = threshold
        self.warmup = warmup
        self.sd_floor = sd_floor
        self.transform = transform
        self.adapt_after = adapt_after
        self.slow_alpha = slow_alpha
        self.chart_lambda = chart_lambda
        self.phase_window = phase_window
        self.chart_spread_growth = chart_spread_growth
        self.resize(0)

    @property
    def warmup_updates(self) -> int:
        """Residual updates a series needs before it may alert (default: a season's, at least 7).

        The first season only seeds the baselines, so a series may alert from its third season on:
        a baseline learned from one observation per phase alerts on its own noise (hourly data alerted
        9 times in its second week in the quality benchmark before this was a season, not a seventh).
        Learning turns robust sooner (:attr:`robust_updates`).
        """
        return self.warmup if self.warmup is not None else max(7, self.season_length)

    @property
    def chart_warmup_updates(self) -> int:
        """Residual updates a series needs before its slow chart may alert (default: a season more
        than :attr:`warmup_updates`; with an explicit ``warmup``, that).

        In a series' first alerting season its baselines hold one or two observations per phase and
        its slow level is still their running mean, so the chart wanders while single periods are
        already judged fairly: in the quality benchmark, hourly data's chart raised 9 false alarms in
        that week (its third) against 1 with this extra season, and no labelled window was lost.
        """
        if self.warmup is not None:
            return self.warmup
        return self.warmup_updates + self.season_length

    @property
    def robust_updates(self) -> int:
        """Residual updates after which outliers are clipped before they teach the state (a seventh of a
        season, at least 7, and never more than ``warmup_updates``): learning is robust well before a
        series may alert, so what it learns in its second season is not bent by one outlier."""
        return min(self.warmup_updates, max(7, self.season_length // 7))

    @property
    def adapt_periods(self) -> int:
        """Consecutive out-of-band periods on one side after which the new level is learned in full.

        Default: a seventh of a season, at least 3 (a day of hourly data, 3 days of daily data).
        """
        return self.adapt_after if self.adapt_after is not None else max(3, self.season_length // 7)

    @property
    def n_series(self) -> int:
        return int(self.mean_.shape[0])

    def resize(self, n_series: int, transforms: list[str] | None = None) -> SeasonalEWMA:
        """Grow to ``n_series`` series; the new ones start empty, with the given transforms."""
        old = getattr(self, "mean_", None)
        have = 0 if old is None else int(old.shape[0])
        if n_series < have:
            raise ValueError("resize only grows; use select() to drop series")
        grow = n_series - have
        names = transforms if transforms is not None else [self.transform] * grow
        if len(names) != grow or any(t not in TRANSFORMS for t in names):
            raise ValueError(f"need {grow} transforms from {TRANSFORMS}, got {names}")
        codes = np.array([TRANSFORMS.index(t) for t in names], dtype=np.int64)
        baseline = np.full((self.season_length, grow), np.nan, dtype=np.float64)
        zeros = np.zeros(grow, dtype=np.float64)
        if old is None:
            self.baseline_: FloatArray = baseline
            self.undo_: FloatArray = baseline.copy()
            self.mean_: FloatArray = zeros
            self.var_: FloatArray = zeros.copy()
            self.count_: IntArray = np.zeros(grow, dtype=np.int64)
            self.last_index_: IntArray = np.full(grow, -1, dtype=np.int64)
            self.transform_: IntArray = codes
            self.run_: IntArray = np.zeros(grow, dtype=np.int64)
            self.slow_: FloatArray = zeros.copy()
            self.chart_: FloatArray = zeros.copy()
            self.cvar_: FloatArray = zeros.copy()
        else:
            self.baseline_ = np.hstack([self.baseline_, baseline])
            self.undo_ = np.hstack([self.undo_, baseline])
            self.mean_ = np.concatenate([self.mean_, zeros])
            self.var_ = np.concatenate([self.var_, zeros])
            self.count_ = np.concatenate([self.count_, np.zeros(grow, dtype=np.int64)])
            self.last_index_ = np.concatenate([self.last_index_, np.full(grow, -1, dtype=np.int64)])
            self.transform_ = np.concatenate([self.transform_, codes])
            self.run_ = np.concatenate([self.run_, np.zeros(grow, dtype=np.int64)])
            self.slow_ = np.concatenate([self.slow_, zeros])
            self.chart_ = np.concatenate([self.chart_, zeros])
            self.cvar_ = np.concatenate([self.cvar_, zeros])
        return self

    def select(self, keep: IntArray) -> SeasonalEWMA:
        """Keep only the series at positions ``keep`` (in that order)."""
        self.baseline_ = self.baseline_[:, keep]
        self.undo_ = self.undo_[:, keep]
        self.mean_ = self.mean_[keep]
        self.var_ = self.var_[keep]
        self.count_ = self.count_[keep]
        self.last_index_ = self.last_index_[keep]
        self.transform_ = self.transform_[keep]
        self.run_ = self.run_[keep]
        self.slow_ = self.slow_[keep]
        self.chart_ = self.chart_[keep]
        self.cvar_ = self.cvar_[keep]
        return self

    def _smoothed_baseline(self, phase: int, raw: FloatArray) -> FloatArray:
        """The baseline the expectation uses at ``phase``, with ``raw`` as the phase's own row.

        The average of the seen phases within ``phase_window`` of ``phase`` (circularly: the season
        wraps), NaN where the phase itself was never seen; ``raw`` itself without a window.
        """
        h = min(self.phase_window, (self.season_length - 1) // 2)
        if h <= 0:
            return raw
        rows = self.baseline_[(phase + np.arange(-h, h + 1)) % self.season_length]
        rows[h] = raw  # a copy (fancy indexing): the phase's row as the caller has it
        seen = rows == rows  # NaN != NaN
        total = np.where(seen, rows, 0.0).sum(axis=0)
        count = np.maximum(seen.sum(axis=0), 1)
        return np.where(raw == raw, total / count, np.nan)

    def _settle_imprint(
        self, phase: int, y: FloatArray, takes: BoolArray, raw: FloatArray, base: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Undo an outlier's imprint on ``phase`` when, one season later, the series is back where it was.

        A period out of band still moves its phase's baseline (a clipped step, or in full once the series
        is judged to have a new level), so a three-day burst of bot traffic or a one-off payment leaves a
        wrong expectation at that phase for seasons to come: a false alarm on the other side one season
        later, repeated while the clipped learning unwinds it. Out of band means against the expectation
        or against the baseline and the slow level: in a two-hour burst of 5-minute data the fast level
        follows by clipped steps, and its later periods look in band while their rows learn the burst
        (one day later, the chart of the phases it taught read -9). So the row as it was before the outlier is
        kept (``undo_``) until the phase's next observation: if that is closer to the expectation the
        old row gives than to the current one, the old row is restored before scoring; either way the
        imprint is then settled. Returns the phase's row and the baseline the expectation uses.
        """
        undo = self.undo_[phase]
        pending = takes & (undo == undo)
        if not pending.any():
            return raw, base
        alternative = np.where(pending, undo, raw)
        alt_base = self._smoothed_baseline(phase, alternative)
        restore = pending & (np.abs(y - alt_base - self.mean_) < np.abs(y - base - self.mean_))
        self.undo_[phase] = np.where(takes, np.nan, undo)
        return np.where(restore, alternative, raw), np.where(restore, alt_base, base)

    def step(
        self,
        period_index: int,
        values: FloatArray,
        floor_sd: FloatArray | None = None,
        learn: BoolArray | None = None,
    ) -> StepResult:
        """Score period ``period_index`` (NaN = no observation for that series) and fold it in.

        ``floor_sd`` (transformed units, per series) bounds the standard deviation from below for this
        period, e.g. the binomial sampling noise of a ratio measured on few events.
        ``learn`` (per series, default all True): where False the observation is scored but not folded
        into the state, e.g. a holiday or a planned campaign from the calendar.
        Series whose last folded period is at or after ``period_index`` are left untouched (late or
        repeated data never moves a baseline twice); their result is NaN and not ready.
        """
        n = self.n_series
        if values.shape != (n,):
            raise ValueError(f"expected {n} values, got shape {values.shape}")
        if learn is not None and learn.shape != (n,):
            raise ValueError(f"expected {n} learn flags, got shape {learn.shape}")
        phase = period_index % self.season_length
        identity = self.transform_ == 1
        observed = (values == values) & (self.last_index_ < period_index)  # NaN != NaN
        x = np.where(observed, values, 0.0)
        y = np.where(identity, x, ssqrt(x))
        raw_base = self.baseline_[phase].copy()
        base = self._smoothed_baseline(phase, raw_base)
        takes = observed if learn is None else observed & learn
        raw_base, base = self._settle_imprint(phase, y, takes, raw_base, base)
        seeded = observed & (base == base)

        variance = np.maximum(self.var_, self.sd_floor**2)
        if floor_sd is not None:
            np.maximum(variance, floor_sd * floor_sd, out=variance)
        sd = np.sqrt(variance)
        center = base + self.mean_  # NaN where the phase was never seen
        deviation = np.where(seeded, y - center, 0.0)
        score = np.where(seeded, deviation / sd, np.nan)
        ready = seeded & (self.count_ >= self.warmup_updates)  # may alert
        robust = seeded & (self.count_ >= self.robust_updates)  # learns with outliers clipped

        band = self.threshold * sd
        # The slow chart: residual against the baseline and a slow level (``slow_alpha``), smoothed over a
        # few periods (``chart_lambda``) and scaled by its own running spread. It sees what the fast level
        # absorbs: slow drifts, and sustained moderate breaks that no single period shows.
        lam = self.chart_lambda
        slow_residual = np.where(seeded, y - base - self.slow_, 0.0)
        slow_z = slow_residual / sd
        limit = 2.0 * self.threshold
        chart = (1.0 - lam) * self.chart_ + lam * np.clip(slow_z, -limit, limit)
        chart_sd = np.sqrt(np.maximum(self.cvar_, lam / (2.0 - lam)))
        sustained = np.where(ready & (self.count_ >= self.chart_warmup_updates), chart / chart_sd, np.nan)
        if learn is not None:  # scored above; from here on only what may be learned
            observed = observed & learn
            seeded = seeded & learn
        # From ``robust_updates`` on, clip what an outlier may teach the state (robustness), unless the
        # series has stayed out of band on one side long enough to be a new level (adaptation); before,
        # learn freely.
        side = np.where(deviation > band, 1, np.where(deviation < -band, -1, 0)) * robust
        same = (side != 0) & (np.sign(self.run_) == side)
        self.run_ = np.where(seeded, np.where(same, self.run_ + side, side), self.run_)
        shifted = np.abs(self.run_) >= self.adapt_periods
        clipped = np.where(robust, np.clip(deviation, -band, band), deviation)
        taught = np.where(shifted, deviation, clipped)  # the variance only ever learns the clipped one
        # The phase's baseline moves towards the cleaned observation; the level correction stays in mean_.
        absorbed = np.where(seeded, self.seasonal_smoothing * (self.mean_ + taught), 0.0)
        # The phase's own baseline moves towards the cleaned observation ``base + mean_ + taught`` (with a
        # phase window, ``base`` is the neighbourhood's average, so the phase also moves towards it).
        cleaned = np.where(seeded, raw_base + self.seasonal_smoothing * (base - raw_base) + absorbed, y)
        start = 1.0 / (self.count_ + 1.0)  # the first updates are plain running averages
        rate = np.where(seeded, np.maximum(self.alpha, start), 0.0)
        var_alpha = self.alpha if self.variance_alpha is None else self.variance_alpha
        var_rate = np.where(seeded, np.maximum(var_alpha, start), 0.0)
        slow_rate = np.where(seeded, np.maximum(self.slow_alpha or self.alpha / 25.0, start), 0.0)
        slow_taught = np.where(robust, np.clip(slow_residual, -band, band), slow_residual)
        self.mean_ += rate * taught
        self.var_ = np.where(seeded, (1.0 - var_rate) * (self.var_ + var_rate * clipped * clipped), self.var_)
        # A level the fast path accepted as new is the slow path's level too; otherwise the slow level
        # follows slowly, less what the baselines absorbed (spread over the season's phases).
        slow = self.slow_ + slow_rate * slow_taught - absorbed / self.season_length
        self.slow_ = np.where(seeded, np.where(shifted, self.mean_, slow), self.slow_)
        learned_chart = np.where(
            robust, np.clip(chart, -self.threshold * chart_sd, self.threshold * chart_sd), chart
        )
        cvar = (1.0 - var_rate) * (self.cvar_ + var_rate * learned_chart * learned_chart)
        if self.chart_spread_growth is not None:  # from robust_updates on, the spread grows at a bounded pace
            cap = np.maximum(self.cvar_, lam / (2.0 - lam)) * (1.0 + self.chart_spread_growth)
            cvar = np.where(robust, np.minimum(cvar, cap), cvar)
        self.cvar_ = np.where(seeded, cvar, self.cvar_)
        self.chart_ = np.where(seeded, np.where(shifted, 0.0, chart), self.chart_)
        self.count_ += seeded
        # An outlier's imprint on its phase is provisional (see _settle_imprint): remember the row before it.
        # Out of band against the expectation, or against the baseline and the slow level: within a break
        # shorter than ``adapt_periods`` the fast level follows it by clipped steps, so later periods of
        # the break look in band while their rows still learn the break.
        broken = (np.abs(deviation) > band) | (np.abs(slow_residual) > band)
        imprinted = seeded & robust & broken  # learned (not a calendar period)
        self.undo_[phase] = np.where(imprinted, raw_base, self.undo_[phase])
        self.baseline_[phase] = np.where(observed, cleaned, raw_base)
        self.last_index_[observed] = period_index

        stacked = np.stack([center, center - band, center + band])
        with np.errstate(over="ignore", invalid="ignore"):
            inverse = np.where(identity, stacked, ssquare(stacked))
        return StepResult(
            expected=inverse[0],
            lower=inverse[1],
            upper=inverse[2],
            score=score,
            ready=ready,
            sustained=sustained,
        )
