"""NAB's windowed-Gaussian baseline (``nab/detectors/gaussian/windowedGaussian_detector.py``).

Kept as a yardstick: it is the simplest detector on the NAB scoreboard, so a new method is
reported as a ratio to it on the same files. NAB's rules are reproduced: the window grows to
``window`` points, then slides by ``step`` points at a time; a point is scored against the
mean and population standard deviation of the window *before* it (0 for the first point;
a zero deviation becomes 1e-6), and NAB's anomaly score is ``1 - Q(|z|)``, the Gaussian
two-sided tail, which saturates to exactly 1.0 in double precision for ``|z| > ~8.3``.

Only the calibration differs: NAB's score is at least 0.5 for every point, which would make
every point an alarm under this platform's ``score >= 0.5`` rule. The score reported here is
a monotone, tie-preserving transform of NAB's (0.5 at ``|z| = alarm_z``), so NAB's threshold
sweep selects exactly the same detections and scores exactly the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import erfc, erfcinv

from tasks.detection.timeseries._common import Scored, SeriesDetector, calibrate


def nab_gaussian_scores(values: np.ndarray, window: int = 6400, step: int = 100) -> np.ndarray:
    """NAB's anomaly scores, vectorised (same window bookkeeping as the streaming original)."""
    n = len(values)
    s = pd.Series(values)
    expanding_mean = s.expanding().mean().to_numpy()
    expanding_std = s.expanding().std(ddof=0).to_numpy()
    rolling_mean = s.rolling(window, min_periods=1).mean().to_numpy()
    rolling_std = s.rolling(window, min_periods=1).std(ddof=0).to_numpy()
    t = np.arange(n)
    # Before point t the window holds x[0:t] while it is filling (t <= window); afterwards it
    # was last rebuilt after the point u = window-1 + m*step (m >= 0) that precedes t.
    last = (window - 1) + ((t - 1 - (window - 1)) // step) * step
    filling = t <= window
    src = np.where(filling, t - 1, last)
    src = np.clip(src, 0, max(n - 1, 0))
    mean = np.where(filling, expanding_mean[src], rolling_mean[src])
    std = np.where(filling, expanding_std[src], rolling_std[src])
    std = np.where(std == 0.0, 1e-6, std)
    z = np.abs(values - mean) / std
    score = 1.0 - 0.5 * erfc(z / np.sqrt(2.0))
    if n:
        score[0] = 0.0
    return score


class WindowedGaussianDetector(SeriesDetector):
    """NAB's windowed-Gaussian baseline, calibrated so that ``score >= 0.5`` iff ``|z| >= alarm_z``.

    Parameters
    ----------
    window:
        Points in the Gaussian's window (NAB: 6400).
    step:
        Points the full window slides at a time (NAB: 100).
    alarm_z:
        ``|z|`` that maps to the 0.5 alarm level; irrelevant to NAB's tuned-threshold score.
    """

    name = "windowed_gaussian"

    learns_interval = False  # windows are point counts, as in NAB

    def __init__(self, window: int = 6400, step: int = 100, alarm_z: float = 4.0) -> None:
        self.window = window
        self.step = step
        self.alarm_z = alarm_z

    def _history_span(self, interval: pd.Timedelta) -> int:
        # The streaming original is stateful from the first point of the file, so keep it all.
        return 10**9

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        nab = nab_gaussian_scores(values, int(self.window), int(self.step))
        # Invert NAB's score to |z| so saturated (tied) scores stay tied.
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.sqrt(2.0) * erfcinv(np.clip(2.0 * (1.0 - nab), 0.0, 1.0))
        z = np.where(np.isnan(values), 0.0, z)
        return Scored(calibrate(np.where(np.isinf(z), 1e12, z), self.alarm_z), z)
