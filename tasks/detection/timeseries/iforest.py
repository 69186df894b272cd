"""Isolation forest over short windowed features.

Why: a point can be unremarkable in value yet odd in context (a jump, a burst of volatility,
a level that does not match the recent mean). An isolation forest on ``[value, change,
trailing mean, trailing std]`` finds such combinations without assuming a distribution. The
forest is trained on the trailing history only (see ``_chunked``), and its anomaly scores
are calibrated against the scores of that same history: a point alarms when it is more
isolated than the training points' upper quantile by ``margin`` of that quantile's distance
from their median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from tasks.detection.timeseries._chunked import ChunkedModelDetector
from tasks.detection.timeseries._common import (
    Scored,
    Span,
    calibrate,
    refractory,
    robust_z,
    sampling_interval,
    to_points,
)


def window_features(values: np.ndarray, k: int) -> np.ndarray:
    """Per point (causal): value, change from the previous point, trailing mean and std."""
    s = pd.Series(values)
    return np.column_stack(
        [
            values,
            s.diff().to_numpy(),
            s.rolling(k, min_periods=1).mean().to_numpy(),
            s.rolling(k, min_periods=2).std().to_numpy(),
        ]
    )


@dataclass(frozen=True)
class _Forest:
    forest: IsolationForest
    high: float
    median: float
    # Features that were constant in training, and their value: a forest cannot split on
    # them, so a point that leaves such a constant is scored as a step by hand.
    constant: np.ndarray
    constant_value: np.ndarray


class IsolationForestDetector(ChunkedModelDetector):
    """Isolation forest on windowed features, retrained on a trailing span.

    Parameters
    ----------
    feature_window:
        Span of the trailing mean/std features.
    train:
        Trailing span the forest is trained on.
    refit_every:
        How often (in time) the forest is retrained while replaying a long window.
    min_train:
        Points needed before the first forest is trained.
    n_estimators, max_samples, random_state:
        Passed to scikit-learn's ``IsolationForest`` (fixed seed: reproducible alarms).
    quantile, margin:
        Calibration: alarm when the anomaly score beats the training scores' ``quantile``
        by ``margin`` times that quantile's distance from their median.
    refractory:
        After an alarm, scores are damped for this span (one incident, one alarm).
    """

    name = "iforest"

    def __init__(
        self,
        feature_window: Span = "1h",
        train: Span = "7D",
        refit_every: Span = "1D",
        min_train: int = 200,
        n_estimators: int = 50,
        max_samples: int = 256,
        random_state: int = 0,
        quantile: float = 0.995,
        margin: float = 0.1,
        refractory: Span = "12h",
    ) -> None:
        self.feature_window = feature_window
        self.train = train
        self.refit_every = refit_every
        self.min_train = min_train
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.quantile = quantile
        self.margin = margin
        self.refractory = refractory

    def _history_span(self, interval: pd.Timedelta) -> int:
        return (
            to_points(self.train, interval)
            + to_points(self.feature_window, interval)
            + to_points(self.refractory, interval, minimum=0)
            + 1
        )

    def _train(self, values: np.ndarray, index: pd.Index) -> _Forest | None:
        k = to_points(self.feature_window, sampling_interval(index))
        feats = window_features(values, k)
        feats = feats[np.isfinite(feats).all(axis=1)]
        if len(feats) < max(int(self.min_train) // 2, 2):
            return None
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(feats)),
            random_state=self.random_state,
        ).fit(feats)
        train_scores = -forest.score_samples(feats)
        lo, hi = feats.min(axis=0), feats.max(axis=0)
        return _Forest(
            forest,
            float(np.quantile(train_scores, self.quantile)),
            float(np.median(train_scores)),
            constant=hi - lo <= 1e-9 * (1.0 + np.abs(hi)),
            constant_value=hi,
        )

    def _apply(
        self, model: _Forest, values: np.ndarray, index: pd.Index, lo: int, hi: int
    ) -> np.ndarray:
        k = to_points(self.feature_window, sampling_interval(index))
        first = max(0, lo - k)
        feats = window_features(values[first:hi], k)[lo - first :]
        out = np.full(hi - lo, np.nan)
        ok = np.isfinite(feats).all(axis=1)
        if ok.any():
            raw = -model.forest.score_samples(feats[ok])
            out[ok] = (raw - model.high) / max(model.high - model.median, 1e-9)
            if model.constant.any():
                const = feats[:, model.constant]
                tol = 1e-9 * (1.0 + np.abs(model.constant_value[model.constant]))
                left = (np.abs(const - model.constant_value[model.constant]) > tol).any(axis=1)
                out[ok & left] = np.fmax(out[ok & left], 4.0 * self.margin)
        return out

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        excess = self._excess(values, index, start, interval)
        scores = refractory(
            calibrate(excess, self.margin), to_points(self.refractory, interval, minimum=0)
        )
        z = robust_z(values, to_points("1D", interval, minimum=2), 30)
        return Scored(scores, z)
