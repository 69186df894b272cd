"""Behavioural detectors: a component's profile and the relations between metrics.

Both take a frame whose columns are series (``component/metric``) on a common time grid,
built by ``align``. They follow the detector shape (constructor parameters only,
``fit(history)``, ``score(window)``) with a frame instead of a single series.

- ``RelationDetector`` learns, for pairs of series, a linear relation ``y ≈ a + b·x`` that
  held on the history (|correlation| ≥ ``min_corr``) and alarms when the window's points
  leave it by more than ``threshold`` robust standard deviations for ``persistence``
  points in a row: a stable relation broke (repository latency against proof-engine
  throughput, say), even if each series on its own stays in its usual range.
- ``ProfileDetector`` learns each series' normal range and alarms when several of a
  component's series leave it at the same time: the component as a whole behaves unlike
  itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.detection.base import Anomaly, BaseDetector, DetectionResult
from tasks.severity import Severity

MAD_TO_SIGMA = 1.4826


def align(series: dict[str, pd.Series], grid: str | pd.Timedelta | None = None) -> pd.DataFrame:
    """Put series on one time grid (bucket means; the grid is the typical sample spacing)."""
    if not series:
        return pd.DataFrame()
    if grid is None:
        gaps = [s.index.to_series().diff().median() for s in series.values() if len(s) > 2]
        gaps = [g for g in gaps if pd.notna(g) and g > pd.Timedelta(0)]
        grid = max(gaps) if gaps else pd.Timedelta(seconds=10)
    step = pd.Timedelta(grid)
    cols = {name: s.resample(step).mean() for name, s in series.items() if len(s)}
    return pd.DataFrame(cols).sort_index()


def _robust_scale(x: np.ndarray) -> float:
    med = np.nanmedian(x)
    mad = np.nanmedian(np.abs(x - med)) * MAD_TO_SIGMA
    return float(mad)


@dataclass(frozen=True)
class _Relation:
    x: str
    y: str
    intercept: float
    slope: float
    scale: float
    corr: float


class RelationDetector(BaseDetector):
    """Alarm when a relation between two series that held on the history breaks.

    Parameters
    ----------
    pairs:
        ``(x, y)`` column pairs to watch; ``None`` watches every pair of columns (up to
        ``max_pairs``, the most correlated first).
    min_corr:
        A relation is "stable" when |Pearson correlation| on the history is at least this.
    threshold:
        Residual size, in robust standard deviations, that counts as off the relation.
    persistence:
        Consecutive off-relation points needed to alarm (one bad scrape is not a break).
    min_points:
        History points needed to learn a relation.
    max_pairs:
        Watch at most this many pairs (the most correlated first).
    validate:
        Watch a relation only if, learnt on the older half of the history, it would not
        have alarmed on the newer half. Gauges that correlate over an hour without one
        holding the other (a host's free memory and page cache, which any process's
        allocation moves apart) break their "relation" all day; a relation that held all
        hour is one worth watching.
    """

    name = "relation"
    metric_patterns = ("*",)

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]] | None = None,
        min_corr: float = 0.7,
        threshold: float = 6.0,
        persistence: int = 3,
        min_points: int = 30,
        max_pairs: int = 30,
        validate: bool = True,
    ) -> None:
        self.pairs = pairs
        self.validate = validate
        self.min_corr = min_corr
        self.threshold = threshold
        self.persistence = persistence
        self.min_points = min_points
        self.max_pairs = max_pairs

    def fit(self, history: pd.DataFrame) -> RelationDetector:  # type: ignore[override]
        candidates = (
            list(self.pairs)
            if self.pairs is not None
            else list(itertools.combinations(history.columns, 2))
        )
        learnt: list[_Relation] = []
        for x, y in candidates:
            if x not in history or y not in history:
                continue
            both = history[[x, y]].dropna()
            if len(both) < self.min_points:
                continue
            xs, ys = both[x].to_numpy(float), both[y].to_numpy(float)
            if np.std(xs) == 0 or np.std(ys) == 0:
                continue
            corr = float(np.corrcoef(xs, ys)[0, 1])
            if not np.isfinite(corr) or abs(corr) < self.min_corr:
                continue
            if self.validate and not self._held_on_recent_half(x, y, xs, ys):
                continue  # it broke inside the history already: not a stable relation
            learnt.append(self._fit_pair(x, y, xs, ys, corr))
        learnt.sort(key=lambda r: -abs(r.corr))
        self.relations_ = learnt[: self.max_pairs]
        self.tail_ = history.tail(max(self.persistence - 1, 0))
        return self

    @staticmethod
    def _fit_pair(x: str, y: str, xs: np.ndarray, ys: np.ndarray, corr: float) -> _Relation:
        slope, intercept = np.polyfit(xs, ys, 1)
        resid = ys - (intercept + slope * xs)
        # The scale floor keeps a near-perfect historical fit from alarming on noise.
        scale = max(_robust_scale(resid), 0.05 * float(np.std(ys)), 1e-9)
        return _Relation(x, y, float(intercept), float(slope), scale, corr)

    def _held_on_recent_half(self, x: str, y: str, xs: np.ndarray, ys: np.ndarray) -> bool:
        """Learnt on the older half of the history, would the relation have stayed quiet on
        the newer half (no ``persistence`` points in a row off it)?"""
        half = len(xs) // 2
        if half < 2 or np.std(xs[:half]) == 0 or np.std(ys[:half]) == 0:
            return False
        old = self._fit_pair(x, y, xs[:half], ys[:half], 0.0)
        z = (ys[half:] - (old.intercept + old.slope * xs[half:])) / old.scale
        off = np.abs(z) > self.threshold
        run = np.convolve(off.astype(int), np.ones(self.persistence, dtype=int), mode="valid")
        return not bool((run >= self.persistence).any())

    def score(self, window: pd.DataFrame) -> DetectionResult:  # type: ignore[override]
        scores = pd.Series(0.0, index=window.index)
        anomalies: list[Anomaly] = []
        for rel in getattr(self, "relations_", []):
            if rel.x not in window or rel.y not in window:
                continue
            frame = (
                pd.concat([self.tail_, window])[[rel.x, rel.y]]
                if len(self.tail_)
                else window[[rel.x, rel.y]]
            )
            z = (frame[rel.y] - (rel.intercept + rel.slope * frame[rel.x])) / rel.scale
            off = (z.abs() > self.threshold).astype(float)
            # Rolling minimum of "off" = every point of the last ``persistence`` was off.
            run = off.rolling(self.persistence, min_periods=self.persistence).min().fillna(0)
            run = run.reindex(window.index).fillna(0)
            zw = z.reindex(window.index).abs().fillna(0)
            pair_score = np.clip(0.5 * zw / self.threshold, 0, 1).where(
                run > 0, np.minimum(0.49, 0.5 * zw / self.threshold)
            )
            scores = np.maximum(scores, pair_score)
            starts = run[(run > 0) & (run.shift(1, fill_value=0) == 0)]
            for ts in starts.index:
                zval = float(zw.loc[ts])
                sev = Severity.HIGH if zval >= 2 * self.threshold else Severity.MEDIUM
                anomalies.append(
                    Anomaly(
                        detector=self.name,
                        ts=ts,
                        score=float(min(1.0, 0.5 * zval / self.threshold)),
                        severity=sev,
                        value=float(window.loc[ts, rel.y]),
                        kind="behaviour",
                        signature=f"relation {rel.x} ~ {rel.y}",
                        details={
                            "x": rel.x,
                            "y": rel.y,
                            "z": round(zval, 2),
                            "corr": round(rel.corr, 3),
                            "slope": rel.slope,
                        },
                    )
                )
        return DetectionResult(pd.Series(scores, index=window.index), anomalies)


class ProfileDetector(BaseDetector):
    """Alarm when several series of a component leave their normal ranges together.

    Parameters
    ----------
    width:
        Half-width of a series' normal range in robust standard deviations around its
        median (with the history's 0.5 % and 99.5 % quantiles as the minimum range).
    min_fraction:
        Share of the component's series that must be out of range at once.
    min_series:
        ... and at least this many of them.
    persistence:
        Consecutive points needed.
    min_points:
        History points needed to learn a range.
    """

    name = "profile"
    metric_patterns = ("*",)

    def __init__(
        self,
        width: float = 6.0,
        min_fraction: float = 0.5,
        min_series: int = 2,
        persistence: int = 2,
        min_points: int = 30,
    ) -> None:
        self.width = width
        self.min_fraction = min_fraction
        self.min_series = min_series
        self.persistence = persistence
        self.min_points = min_points

    def fit(self, history: pd.DataFrame) -> ProfileDetector:  # type: ignore[override]
        ranges: dict[str, tuple[float, float]] = {}
        for col in history.columns:
            x = history[col].dropna().to_numpy(float)
            if len(x) < self.min_points:
                continue
            med = float(np.median(x))
            spread = max(_robust_scale(x), 1e-9 * (1 + abs(med)))
            lo = min(med - self.width * spread, float(np.quantile(x, 0.005)))
            hi = max(med + self.width * spread, float(np.quantile(x, 0.995)))
            ranges[col] = (lo, hi)
        self.ranges_ = ranges
        self.tail_ = history.tail(max(self.persistence - 1, 0))
        return self

    def score(self, window: pd.DataFrame) -> DetectionResult:  # type: ignore[override]
        ranges = getattr(self, "ranges_", {})
        cols = [c for c in window.columns if c in ranges]
        if len(cols) < self.min_series:
            return DetectionResult(pd.Series(0.0, index=window.index), [])
        frame = pd.concat([self.tail_, window])[cols] if len(self.tail_) else window[cols]
        lo = pd.Series({c: ranges[c][0] for c in cols})
        hi = pd.Series({c: ranges[c][1] for c in cols})
        out = (frame.lt(lo) | frame.gt(hi)) & frame.notna()
        count = out.sum(axis=1)
        fraction = count / len(cols)
        hit = (fraction >= self.min_fraction) & (count >= self.min_series)
        run = hit.astype(float).rolling(self.persistence, min_periods=self.persistence).min()
        run = run.reindex(window.index).fillna(0)
        frac_w = fraction.reindex(window.index).fillna(0)
        scores = (
            (0.5 * frac_w / self.min_fraction)
            .clip(0, 1)
            .where(run > 0, np.minimum(0.49, 0.5 * frac_w / self.min_fraction))
        )
        anomalies = []
        for ts in run[(run > 0) & (run.shift(1, fill_value=0) == 0)].index:
            names = [c for c in cols if bool(out.loc[ts, c])]
            sev = Severity.HIGH if frac_w.loc[ts] >= 0.8 else Severity.MEDIUM
            anomalies.append(
                Anomaly(
                    detector=self.name,
                    ts=ts,
                    score=float(scores.loc[ts]),
                    severity=sev,
                    kind="behaviour",
                    signature="profile",
                    details={"out_of_range": names, "fraction": round(float(frac_w.loc[ts]), 2)},
                )
            )
        return DetectionResult(scores, anomalies)
