"""Train, score and explain an integration's isolation forest; store it signed, load it verified.

A stored model is two objects: ``<version>.joblib`` (the fitted scikit-learn estimator, joblib,
compress=3) and ``<version>.json`` (its metadata: features and their fitted transform, training
window, row count, score threshold, library versions, the SHA-256 of the joblib bytes, and an
HMAC-SHA256 over all of that keyed by the deployment's signing secret).

Unpickling runs code, so nothing is handed to ``joblib.load`` before the digest matches the bytes, the
HMAC matches the metadata, and the libraries that wrote it are the ones loading it. A model failing any
check raises :class:`ModelRefused`; the caller falls back to the EWMA alone.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import platform
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from kpi_sentinel.forest.features import FeatureFrame, FeatureSpace, FloatArray

FORMAT = "kpi-sentinel-iforest/1"
DEFAULT_TREES = 100
DEFAULT_PERCENTILE = 1.0


class ModelRefused(Exception):
    """A stored model that must not be loaded (tampered, unsigned, or written by other libraries)."""


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def incompatibility(stored: Mapping[str, str], running: Mapping[str, str]) -> str | None:
    """Why a model written with ``stored`` versions cannot be loaded under ``running``, or None.

    scikit-learn must match exactly (its pickles are only supported by the version that wrote them);
    numpy and joblib by major.minor; Python by major.minor (pickle protocol and bytecode).
    """
    rules = {"scikit-learn": 3, "numpy": 2, "joblib": 2, "python": 2}
    for name, parts in rules.items():
        have, want = running.get(name, ""), stored.get(name)
        if want is None:
            return f"metadata does not record the {name} version"
        if have.split(".")[:parts] != want.split(".")[:parts]:
            return f"written with {name} {want}, running {have}"
    return None


def seed_for(integration_id: str) -> int:
    """The forest's random seed: fixed per integration, so a retrain on the same data is identical."""
    return zlib.crc32(integration_id.encode())


@dataclass
class ForestModel:
    forest: Pipeline  # whitening PCA, then the isolation forest
    space: FeatureSpace
    threshold: float  # rows whose score_samples value is below it are anomalies
    percentile: float
    training_rows: int
    min_training_score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.space.names

    def scores(self, frame: FeatureFrame) -> FloatArray:
        """scikit-learn's ``score_samples``: lower is more anomalous (about -0.3 normal, -0.7 rare)."""
        if len(frame) == 0:
            return np.zeros(0)
        result: FloatArray = self.forest.score_samples(self.space.transform(frame))
        return result


def train(
    frame: FeatureFrame,
    integration_id: str,
    percentile: float = DEFAULT_PERCENTILE,
    trees: int = DEFAULT_TREES,
) -> ForestModel:
    """Fit the transform and the forest on ``frame``, without its calendar periods and the periods the
    EWMA alerted on (known breaks would teach the forest that breaks are normal).

    The threshold is the ``percentile``-th percentile of the training rows' scores: on data like the
    training window, about ``percentile`` % of periods alert.
    """
    if not 0 < percentile < 50:
        raise ValueError(f"score threshold percentile must be in (0, 50), got {percentile}")
    training = training_rows(frame)
    if len(training) == 0 or not training.names:
        raise ValueError(f"{integration_id}: no usable training rows")
    space = FeatureSpace.fit(training)
    x = space.transform(training)
    seed = seed_for(integration_id)
    # Whitening first: features move together (clicks drive signups drive deposits), so a break of
    # that structure — clicks normal, conversions cratering — is far out along a minor principal axis
    # even when no single feature is extreme. Axis-parallel isolation trees cannot see it in the raw
    # features. Directions with no variance in training are dropped (whitening would divide by 0).
    rank = int((PCA(random_state=seed).fit(x).explained_variance_ > 1e-9).sum()) or 1
    forest = Pipeline(
        [
            ("whiten", PCA(n_components=rank, whiten=True, random_state=seed)),
            ("forest", IsolationForest(n_estimators=trees, random_state=seed, n_jobs=1)),
        ]
    )
    forest.fit(x)
    scores = forest.score_samples(x)
    return ForestModel(
        forest=forest,
        space=space,
        threshold=float(np.percentile(scores, percentile)),
        percentile=percentile,
        training_rows=len(training),
        min_training_score=float(scores.min()),
    )


def training_rows(frame: FeatureFrame) -> FeatureFrame:
    keep = ~frame.calendar
    if frame.alerted is not None:
        keep &= ~frame.alerted
    return frame.subset(keep)


def contributions(model: ForestModel, z: FloatArray) -> list[tuple[str, float]]:
    """Features ranked by how far the row sits from their training distribution (signed robust z)."""
    ranked = sorted(zip(model.features, (float(v) for v in z), strict=True), key=lambda kv: -abs(kv[1]))
    return ranked


# ------------------------------------------------------------------------------------------ storage


def _canonical(metadata: Mapping[str, Any]) -> bytes:
    unsigned = {k: v for k, v in metadata.items() if k != "hmac"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()


def sign(metadata: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(metadata), hashlib.sha256).hexdigest()


def serialise(model: ForestModel, key: bytes, identity: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """``(joblib bytes, signed metadata)``; ``identity`` adds integration, version and window fields."""
    buffer = io.BytesIO()
    joblib.dump(model.forest, buffer, compress=3)
    body = buffer.getvalue()
    metadata: dict[str, Any] = {
        "format": FORMAT,
        **identity,
        "features": model.features,
        "feature_space": model.space.to_dict(),
        "training_rows": model.training_rows,
        "threshold": model.threshold,
        "threshold_percentile": model.percentile,
        "min_training_score": model.min_training_score,
        "trees": len(model.forest.named_steps["forest"].estimators_),
        "library_versions": library_versions(),
        "sha256": hashlib.sha256(body).hexdigest(),
        "size_bytes": len(body),
    }
    metadata["hmac"] = sign(metadata, key)
    return body, metadata


def load_verified(body: bytes, metadata: Mapping[str, Any], key: bytes) -> ForestModel:
    """The model, once digest, HMAC and library versions check out; else :class:`ModelRefused`."""
    if metadata.get("format") != FORMAT:
        raise ModelRefused(f"unknown model format {metadata.get('format')!r}")
    claimed = metadata.get("hmac")
    if not isinstance(claimed, str) or not hmac.compare_digest(claimed, sign(metadata, key)):
        raise ModelRefused("metadata HMAC does not verify (tampered metadata or another signing key)")
    if not hmac.compare_digest(str(metadata.get("sha256", "")), hashlib.sha256(body).hexdigest()):
        raise ModelRefused("SHA-256 of the model file does not match its metadata (tampered model file)")
    why = incompatibility(metadata.get("library_versions", {}), library_versions())
    if why:
        raise ModelRefused(f"incompatible model: {why}")
    # Unpickling runs code: reached only once the digest, the HMAC and the versions have checked out.
    forest = joblib.load(io.BytesIO(body))
    if not isinstance(forest, Pipeline) or not isinstance(forest.steps[-1][1], IsolationForest):
        raise ModelRefused(f"model file holds a {type(forest).__name__}, not a whitening isolation forest")
    return ForestModel(
        forest=forest,
        space=FeatureSpace.from_dict(metadata["feature_space"]),
        threshold=float(metadata["threshold"]),
        percentile=float(metadata["threshold_percentile"]),
        training_rows=int(metadata["training_rows"]),
        min_training_score=float(metadata["min_training_score"]),
        metadata=dict(metadata),
    )
