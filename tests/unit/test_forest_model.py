"""The isolation forest: threshold, reproducibility, a correlated break, training exclusions, signed storage."""

from __future__ import annotations

import copy
import hashlib
import io
import pickle
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from kpi_sentinel.forest.features import FeatureFrame, FeatureKind
from kpi_sentinel.forest.model import (
    ForestModel,
    ModelRefused,
    contributions,
    incompatibility,
    library_versions,
    load_verified,
    serialise,
    sign,
    train,
)

IID = "acme-ads"
KEY = b"k" * 32
T0 = datetime(2026, 8, 1, tzinfo=UTC)
DAYS = 60
RATE = 0.08
KINDS: dict[str, FeatureKind] = {"clicks": "level", "signup_rate": "ratio", "signups": "level"}
IDENTITY = {"integration_id": IID, "version": "20260930T0200Z", "trained_at": "2026-09-30T02:00:00+00:00"}
BREAK_HOURS = range(10, 15)


def synthetic_frame(start: datetime, days: int, seed: int) -> FeatureFrame:
    """Hourly clicks with a daily profile and signups = clicks × a noisy signup rate (lognormal noise).

    ``expected`` is the noise-free seasonal baseline, as the scorer's EWMA would give it.
    """
    periods = pd.date_range(start, periods=days * 24, freq="h")
    n = len(periods)
    rng = np.random.default_rng(seed)
    hour = periods.hour.to_numpy()
    expected_clicks = 1000.0 * (0.2 + 0.8 * (1 + np.cos(2 * np.pi * (hour - 15) / 24)) / 2)
    clicks = expected_clicks * rng.lognormal(0.0, 0.05, n)
    rate = RATE * rng.lognormal(0.0, 0.03, n)
    observed = pd.DataFrame({"clicks": clicks, "signup_rate": rate, "signups": clicks * rate}, index=periods)
    expected = pd.DataFrame(
        {"clicks": expected_clicks, "signup_rate": np.full(n, RATE), "signups": expected_clicks * RATE},
        index=periods,
    )
    return FeatureFrame(
        periods, observed, expected, np.zeros(n, dtype=bool), dict(KINDS), np.zeros(n, dtype=bool)
    )


def funnel_break(frame: FeatureFrame, rows: Iterable[int], factor: float) -> FeatureFrame:
    """Clicks exactly as expected, signups and the signup rate × ``factor`` in ``rows``."""
    observed = frame.observed.copy()
    at = list(rows)
    observed.iloc[at, observed.columns.get_loc("clicks")] = frame.expected["clicks"].iloc[at].to_numpy()
    for name in ("signups", "signup_rate"):
        observed.iloc[at, observed.columns.get_loc(name)] = frame.expected[name].iloc[at].to_numpy() * factor
    return FeatureFrame(
        frame.periods, observed, frame.expected, frame.calendar.copy(), frame.kinds, frame.alerted
    )


def score_day(factor: float = 0.5, seed: int = 12) -> FeatureFrame:
    """The day after the training window, with a funnel break at 10:00-14:59 UTC."""
    return funnel_break(synthetic_frame(T0 + timedelta(days=DAYS), 1, seed), BREAK_HOURS, factor)


@pytest.fixture(scope="module")
def training() -> FeatureFrame:
    return synthetic_frame(T0, DAYS, seed=11)


@pytest.fixture(scope="module")
def model(training: FeatureFrame) -> ForestModel:
    return train(training, IID)


@pytest.fixture(scope="module")
def stored(model: ForestModel) -> tuple[bytes, dict[str, Any]]:
    return serialise(model, KEY, IDENTITY)


# --- threshold ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("percentile", "low", "high"), [(1.0, 0.003, 0.03), (5.0, 0.03, 0.08)])
def test_given_a_percentile_then_about_that_share_of_training_rows_score_below_the_threshold(
    training: FeatureFrame, percentile: float, low: float, high: float
) -> None:
    model = train(training, IID, percentile=percentile)

    share = float((model.scores(training) < model.threshold).mean())

    assert low <= share <= high
    assert model.percentile == percentile
    assert model.min_training_score <= model.threshold < 0


@pytest.mark.parametrize("percentile", [0.0, -1.0, 50.0, 75.0, float("nan")])
def test_given_an_invalid_percentile_when_trained_then_value_error(
    training: FeatureFrame, percentile: float
) -> None:
    with pytest.raises(ValueError, match="percentile must be in \\(0, 50\\)"):
        train(training, IID, percentile=percentile)


def test_given_only_calendar_periods_when_trained_then_value_error_names_the_integration(
    training: FeatureFrame,
) -> None:
    everything_known = FeatureFrame(
        training.periods,
        training.observed,
        training.expected,
        np.ones(len(training), dtype=bool),
        training.kinds,
        training.alerted,
    )

    with pytest.raises(ValueError, match=f"{IID}: no usable training rows"):
        train(everything_known, IID)


# --- reproducibility -------------------------------------------------------------------------------------


def test_given_the_same_frame_when_trained_twice_then_scores_model_file_and_metadata_are_identical(
    training: FeatureFrame, model: ForestModel, stored: tuple[bytes, dict[str, Any]]
) -> None:
    again = train(training, IID)
    body, metadata = serialise(again, KEY, IDENTITY)
    day = score_day()

    np.testing.assert_array_equal(again.scores(training), model.scores(training))
    np.testing.assert_array_equal(again.scores(day), model.scores(day))
    assert body == stored[0]
    assert metadata == stored[1]


def test_given_other_identity_fields_then_only_those_fields_and_the_hmac_differ(model: ForestModel) -> None:
    _, first = serialise(model, KEY, IDENTITY)
    _, second = serialise(model, KEY, {**IDENTITY, "trained_at": "2026-10-01T02:00:00+00:00"})

    assert {k for k in first if first[k] != second[k]} == {"trained_at", "hmac"}


# --- what it flags and why --------------------------------------------------------------------------------


def test_given_a_correlated_break_then_it_scores_below_the_threshold_and_the_funnel_leads(
    model: ForestModel,
) -> None:
    day = score_day()
    scores = model.scores(day)
    z = model.space.transform(day)

    flagged = set(np.flatnonzero(scores < model.threshold))

    assert set(BREAK_HOURS) <= flagged
    assert len(flagged - set(BREAK_HOURS)) <= 1  # a normal day stays (nearly) quiet
    for hour in BREAK_HOURS:
        ranked = contributions(model, z[hour])
        top, top_z = ranked[0]
        assert top in ("signup_rate", "signups")
        assert top_z < -3
        assert [abs(v) for _, v in ranked] == sorted((abs(v) for _, v in ranked), reverse=True)
        assert abs(dict(ranked)["clicks"]) < 1.5


def test_given_calendar_and_alerted_periods_then_they_are_left_out_of_training_entirely(
    training: FeatureFrame,
) -> None:
    calendar = np.zeros(len(training), dtype=bool)
    calendar[:48] = True
    alerted = np.zeros(len(training), dtype=bool)
    alerted[40:100] = True
    observed = training.observed.copy()
    observed.iloc[:100] *= 3.0  # a campaign and a break: if either were learned, the scale would show it
    frame = FeatureFrame(training.periods, observed, training.expected, calendar, training.kinds, alerted)

    model = train(frame, IID)
    clean = train(frame.subset(~(calendar | alerted)), IID)

    assert model.training_rows == len(training) - 100
    assert model.space == clean.space
    assert model.threshold == clean.threshold
    np.testing.assert_array_equal(model.scores(training), clean.scores(training))


# --- signed storage ---------------------------------------------------------------------------------------


def test_given_a_stored_model_when_loaded_with_the_key_then_it_scores_identically(
    model: ForestModel, stored: tuple[bytes, dict[str, Any]]
) -> None:
    body, metadata = stored
    day = score_day()

    loaded = load_verified(body, metadata, KEY)

    np.testing.assert_array_equal(loaded.scores(day), model.scores(day))
    assert loaded.threshold == model.threshold
    assert loaded.features == ["clicks", "signup_rate", "signups"]
    assert loaded.training_rows == model.training_rows
    assert loaded.metadata["version"] == IDENTITY["version"]
    assert metadata["sha256"] == hashlib.sha256(body).hexdigest()


def _flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


@pytest.mark.parametrize("at", [0, 1000, -1])
def test_given_a_flipped_byte_in_the_model_file_when_loaded_then_refused_for_its_sha256(
    stored: tuple[bytes, dict[str, Any]], at: int
) -> None:
    body, metadata = stored

    with pytest.raises(ModelRefused, match="SHA-256"):
        load_verified(_flip(body, at % len(body)), metadata, KEY)


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", -0.99), ("threshold_percentile", 0.01), ("features", ["clicks"]), ("training_rows", 1)],
)
def test_given_edited_metadata_when_loaded_then_refused_for_its_hmac(
    stored: tuple[bytes, dict[str, Any]], field: str, value: object
) -> None:
    body, metadata = stored

    with pytest.raises(ModelRefused, match="HMAC"):
        load_verified(body, {**metadata, field: value}, KEY)


def test_given_another_signing_key_or_no_hmac_when_loaded_then_refused(
    stored: tuple[bytes, dict[str, Any]],
) -> None:
    body, metadata = stored
    unsigned = {k: v for k, v in metadata.items() if k != "hmac"}

    with pytest.raises(ModelRefused, match="HMAC"):
        load_verified(body, metadata, b"another key".ljust(32, b"!"))
    with pytest.raises(ModelRefused, match="HMAC"):
        load_verified(body, unsigned, KEY)


def test_given_another_scikit_learn_version_in_signed_metadata_when_loaded_then_refused_as_incompatible(
    stored: tuple[bytes, dict[str, Any]],
) -> None:
    body, metadata = stored
    other = copy.deepcopy(metadata)
    major, minor, *_ = library_versions()["scikit-learn"].split(".")
    other["library_versions"]["scikit-learn"] = f"{major}.{int(minor) + 1}.0"
    other["hmac"] = sign(other, KEY)  # a genuine model from another deployment: only the versions differ

    with pytest.raises(ModelRefused, match="incompatible model: written with scikit-learn"):
        load_verified(body, other, KEY)


def test_given_an_unknown_format_when_loaded_then_refused_naming_it(
    stored: tuple[bytes, dict[str, Any]],
) -> None:
    body, metadata = stored
    other = {**metadata, "format": "kpi-sentinel-iforest/2"}
    other["hmac"] = sign(other, KEY)

    with pytest.raises(ModelRefused, match="unknown model format 'kpi-sentinel-iforest/2'"):
        load_verified(body, other, KEY)


UNPICKLED: list[str] = []


class _Payload:
    """A pickle that runs code when loaded (records it instead of doing harm)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (UNPICKLED.append, ("payload ran",))


def test_given_a_malicious_model_file_then_it_is_never_unpickled(
    stored: tuple[bytes, dict[str, Any]],
) -> None:
    _, metadata = stored
    payload = pickle.dumps(_Payload())
    forged = {**metadata, "sha256": hashlib.sha256(payload).hexdigest(), "size_bytes": len(payload)}
    forged["hmac"] = sign(forged, b"the attacker's own key".ljust(32, b"."))
    UNPICKLED.clear()

    with pytest.raises(ModelRefused, match="SHA-256"):
        load_verified(payload, metadata, KEY)  # swapped file, genuine metadata
    with pytest.raises(ModelRefused, match="HMAC"):
        load_verified(payload, forged, KEY)  # swapped file, metadata re-signed without the key

    assert UNPICKLED == []


def test_given_a_signed_file_that_is_not_a_forest_when_loaded_then_refused(
    stored: tuple[bytes, dict[str, Any]],
) -> None:
    _, metadata = stored
    buffer = io.BytesIO()
    joblib.dump({"not": "a model"}, buffer)
    body = buffer.getvalue()
    other = {**metadata, "sha256": hashlib.sha256(body).hexdigest(), "size_bytes": len(body)}
    other["hmac"] = sign(other, KEY)

    with pytest.raises(ModelRefused, match="holds a dict, not a whitening isolation forest"):
        load_verified(body, other, KEY)


RUNNING = {"python": "3.12.4", "scikit-learn": "1.9.1", "numpy": "2.4.6", "joblib": "1.6.0"}


@pytest.mark.parametrize(
    ("stored_versions", "problem"),
    [
        (RUNNING, None),
        ({**RUNNING, "numpy": "2.4.0", "joblib": "1.6.3", "python": "3.12.9"}, None),
        ({**RUNNING, "numpy": "2.3.6"}, "written with numpy 2.3.6, running 2.4.6"),
        ({**RUNNING, "joblib": "1.5.0"}, "written with joblib 1.5.0, running 1.6.0"),
        ({**RUNNING, "python": "3.13.0"}, "written with python 3.13.0, running 3.12.4"),
        ({**RUNNING, "scikit-learn": "1.9.0"}, "written with scikit-learn 1.9.0, running 1.9.1"),
        (
            {k: v for k, v in RUNNING.items() if k != "scikit-learn"},
            "does not record the scikit-learn version",
        ),
        ({k: v for k, v in RUNNING.items() if k != "numpy"}, "does not record the numpy version"),
    ],
)
def test_given_stored_library_versions_then_incompatibility_allows_patch_differences_only(
    stored_versions: dict[str, str], problem: str | None
) -> None:
    why = incompatibility(stored_versions, RUNNING)
    if problem is None:
        assert why is None
    else:
        assert why is not None
        assert problem in why
