"""Detector warm-up made visible: which candidate series do not have enough history yet
for the time-series detectors (they skip those), and when the last of them will."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from tasks.detection.candidates import is_candidate


@dataclass(frozen=True)
class Warmup:
    learning: int  # candidate series below ``min_points``
    series: int  # candidate series with recent samples
    until: datetime | None  # when the last learning series should have enough points
    min_points: int

    def as_dict(self) -> dict[str, object]:
        return {
            "learning": self.learning,
            "series": self.series,
            "until": self.until.isoformat() if self.until else None,
            "min_points": self.min_points,
        }


def warmup(
    history: pd.DataFrame,
    min_points: int,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Warmup:
    """``history``: series_id, metric, kind, n, first_ms, last_ms (storage.warmup)."""
    if history.empty:
        return Warmup(0, 0, None, min_points)
    skip = ("_bucket",)
    keep = history[
        history["metric"].map(lambda m: not m.endswith(skip) and is_candidate(m, include, exclude))
    ]
    if keep.empty:
        return Warmup(0, 0, None, min_points)
    # A counter's rate has one point less than its samples.
    points = keep["n"] - (keep["kind"] == "counter").astype(int)
    learning = keep[points < min_points]
    until = None
    if not learning.empty:
        step = (learning["last_ms"] - learning["first_ms"]) / (learning["n"] - 1).clip(lower=1)
        missing = min_points - points[learning.index]
        eta_ms = (learning["last_ms"] + missing * step.where(learning["n"] > 1)).max()
        if pd.notna(eta_ms):
            until = datetime.fromtimestamp(float(eta_ms) / 1000, tz=UTC)
    return Warmup(len(learning), len(keep), until, min_points)
