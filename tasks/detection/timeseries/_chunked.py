"""Detectors whose model is trained on a trailing span and applied to the points after it.

Training a model per point is too slow and training once on everything would peek at the
future, so the model is retrained every ``refit_every`` points on the ``train`` points before
the chunk it scores. ``fit`` trains on the history and caches the model, so the live detection
cycle (one short window after a long history) pays for no training at all in ``score``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.detection.timeseries._common import SeriesDetector, Span, to_points


class ChunkedModelDetector(SeriesDetector):
    """Subclasses implement ``_train`` and ``_apply`` and take the constructor parameters
    ``train``, ``refit_every`` (spans) and ``min_train`` (points)."""

    train: Span
    refit_every: Span
    min_train: int
    # The fewest points a model may be trained on, whatever ``min_train`` says.
    min_train_floor = 2

    def _chunk_spans(self, interval: pd.Timedelta) -> tuple[int, int, int]:
        """``(train_points, refit_every_points, min_train_points)``."""
        return (
            to_points(self.train, interval, minimum=2),
            to_points(self.refit_every, interval),
            max(int(self.min_train), self.min_train_floor),
        )

    def _train(self, values: np.ndarray, index: pd.Index) -> Any | None:
        """Learn from ``values`` (the training span); ``None`` when there is too little data."""
        raise NotImplementedError

    def _apply(
        self, model: Any, values: np.ndarray, index: pd.Index, lo: int, hi: int
    ) -> np.ndarray:
        """Excess (>= 0 beyond normal, alarm at ``margin``) for positions ``lo:hi``; the whole
        series is passed so features can look back before ``lo``."""
        raise NotImplementedError

    def fit(self, history: pd.Series) -> ChunkedModelDetector:
        super().fit(history)
        values = self.history_.to_numpy(dtype=float)
        train, _, min_train = self._chunk_spans(self.interval_)
        ok = len(values) >= min_train
        self.model_ = self._train(values[-train:], self.history_.index[-train:]) if ok else None
        return self

    def _excess(
        self, values: np.ndarray, index: pd.Index, start: int, interval: pd.Timedelta
    ) -> np.ndarray:
        """Causal excess for every position from ``start`` on (NaN where no model exists)."""
        n = len(values)
        train, refit, min_train = self._chunk_spans(interval)
        excess = np.full(n, np.nan)
        lo = start
        cached = getattr(self, "model_", None)
        history = getattr(self, "history_", None)
        # The cached model was trained on exactly the history before the window; if score()
        # had to drop an overlap, that model saw window points and is not used.
        if cached is not None and history is not None and start == len(history) and start > 0:
            hi = min(n, lo + refit)
            excess[lo:hi] = self._apply(cached, values, index, lo, hi)
            lo = hi
        else:
            lo = max(start, min_train)
        while lo < n:
            hi = min(n, lo + refit)
            first = max(0, lo - train)
            model = self._train(values[first:lo], index[first:lo])
            if model is not None:
                excess[lo:hi] = self._apply(model, values, index, lo, hi)
            lo = hi
        return excess
