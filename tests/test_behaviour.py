"""The relation detector: a relation that held on the history and breaks alarms; a pair that
only looked related for part of the history is not watched."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.detection.behaviour import RelationDetector

STEP = pd.Timedelta(seconds=10)


def frame(x: np.ndarray, y: np.ndarray, start: str = "2026-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=len(x), freq=STEP, tz="UTC")
    return pd.DataFrame({"c/requests:rate": x, "c/cpu:rate": y}, index=index)


def load(n: int, rng: np.random.Generator) -> np.ndarray:
    """Requests per second wandering with the load (a random walk around 100)."""
    return 100 + np.cumsum(rng.normal(0, 2, n))


def test_a_relation_that_held_all_history_alarms_when_it_breaks() -> None:
    rng = np.random.default_rng(1)
    x = load(400, rng)
    y = 0.02 * x + rng.normal(0, 0.02, 400)  # CPU follows the requests
    y[370:] += 0.6  # then CPU rises while requests do not: the relation broke
    data = frame(x, y)
    det = RelationDetector().fit(data.iloc[:360])
    assert [(r.x, r.y) for r in det.relations_] == [("c/requests:rate", "c/cpu:rate")]
    quiet = det.score(data.iloc[360:370])
    assert quiet.anomalies == []
    broken = det.score(data.iloc[360:])
    assert len(broken.anomalies) == 1
    a = broken.anomalies[0]
    assert a.kind == "behaviour" and a.signature == "relation c/requests:rate ~ c/cpu:rate"
    # Alarmed after ``persistence`` off-relation points, not at the first one.
    assert a.ts == data.index[370 + det.persistence - 1]


def test_a_pair_that_broke_inside_the_history_is_not_watched() -> None:
    """Two gauges correlated over the hour, but one moved without the other half way
    through (free memory and page cache when a process allocates): not a relation."""
    rng = np.random.default_rng(2)
    x = load(360, rng)
    y = 0.5 * x + rng.normal(0, 0.05, 360)
    y[200:] -= 10  # a third factor moved y alone, inside the history
    data = frame(x, y)
    assert abs(np.corrcoef(x, y)[0, 1]) >= 0.7  # the plain correlation test would keep it
    assert RelationDetector().fit(data).relations_ == []
    assert len(RelationDetector(validate=False).fit(data).relations_) == 1


def test_uncorrelated_series_are_never_watched() -> None:
    rng = np.random.default_rng(3)
    data = frame(load(300, rng), rng.normal(5, 1, 300))
    assert RelationDetector().fit(data).relations_ == []
