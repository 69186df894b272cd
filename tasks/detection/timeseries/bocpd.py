"""Bayesian online change-point detection (after Adams and MacKay, 2007).

Adams and MacKay ("Bayesian Online Changepoint Detection", arXiv:0710.3742) keep, at every
point, the posterior distribution of the *run length*: how many points ago the current regime
began. Each run length predicts the next value with the posterior predictive of a conjugate
model fitted to that run's points; a new value either extends every run (weighted by how well
that run predicted it, times ``1 - hazard``) or starts a new one (times ``hazard``). A value
that every long run finds implausible moves the posterior mass to short run lengths: a
change point.

Here the model is a Gaussian of unknown mean and variance (Normal-Gamma prior, Student-t
predictive) on the series' robust z-score against its trailing history, so one prior suits
every scale. The anomaly measure is the posterior probability that the current run began at
most ``recent`` points ago; it alarms (score 0.5) at ``alarm_probability``. Run lengths are
truncated at ``max_run`` (the longer ones are merged into the last), so each point costs
``O(max_run)``. One causal pass over the points, so it is causal by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln

from tasks.detection.timeseries._common import (
    Scored,
    SeriesDetector,
    Span,
    calibrate,
    refractory,
    robust_z,
    sampling_interval,
    to_points,
)


def run_length_change_probability(
    z: np.ndarray,
    hazard: float,
    recent: int,
    max_run: int,
    prior: tuple[float, float, float, float] = (0.0, 0.1, 1.0, 1.0),
) -> np.ndarray:
    """Per point, ``P(run length <= recent | z[:t+1])`` under the Normal-Gamma BOCPD model.

    ``prior`` is ``(mu0, kappa0, alpha0, beta0)``. NaN points are skipped (probability 0, no
    update).
    """
    mu0, k0, a0, b0 = prior
    log_h, log_1h = np.log(hazard), np.log1p(-hazard)
    log_r = np.zeros(1)
    mu, kappa = np.array([mu0]), np.array([k0])
    alpha, beta = np.array([a0]), np.array([b0])
    out = np.zeros(len(z))
    half_log_pi = 0.5 * np.log(np.pi)
    for t, x in enumerate(z.tolist()):
        if x != x:  # NaN
            continue
        df = 2.0 * alpha
        scale2 = beta * (kappa + 1.0) / (alpha * kappa)
        log_pred = (
            gammaln(0.5 * (df + 1.0))
            - gammaln(0.5 * df)
            - half_log_pi
            - 0.5 * np.log(df * scale2)
            - 0.5 * (df + 1.0) * np.log1p((x - mu) ** 2 / (df * scale2))
        )
        joint = log_r + log_pred
        change = np.logaddexp.reduce(joint) + log_h
        log_r = np.concatenate([[change], joint + log_1h])
        d = x - mu
        mu = np.concatenate([[mu0], (kappa * mu + x) / (kappa + 1.0)])
        beta = np.concatenate([[b0], beta + kappa * d * d / (2.0 * (kappa + 1.0))])
        kappa = np.concatenate([[k0], kappa + 1.0])
        alpha = np.concatenate([[a0], alpha + 0.5])
        if len(log_r) > max_run:  # merge the longest runs' mass into the last kept one
            log_r[max_run - 1] = np.logaddexp(log_r[max_run - 1], log_r[max_run])
            log_r, mu, beta = log_r[:max_run], mu[:max_run], beta[:max_run]
            kappa, alpha = kappa[:max_run], alpha[:max_run]
        log_r -= np.logaddexp.reduce(log_r)
        # mass of runs that began 1..recent points ago (run 0 is the prior's constant hazard)
        out[t] = float(np.exp(log_r[1 : recent + 2]).sum())
    return out


class BayesianChangePointDetector(SeriesDetector):
    """Bayesian online change-point detection on the robust z-score.

    Parameters
    ----------
    hazard:
        Prior probability that a new regime starts at any point (``1 / expected run``).
    recent:
        A change counts while the most probable run began at most this many points ago.
    alarm_probability:
        Posterior probability of a recent change that scores 0.5.
    max_run:
        Run lengths kept (longer ones are merged): the cost per point.
    scale_window:
        Trailing span of the robust z-score the model runs on.
    refractory:
        After an alarm, scores are damped for this span (one change, one alarm).
    min_points:
        Points of history before anything can alarm.
    """

    name = "bocpd"

    def __init__(
        self,
        hazard: float = 1e-3,
        recent: int = 5,
        alarm_probability: float = 0.9,
        max_run: int = 300,
        scale_window: Span = "1D",
        refractory: Span = "12h",
        min_points: int = 200,
    ) -> None:
        self.hazard = hazard
        self.recent = recent
        self.alarm_probability = alarm_probability
        self.max_run = max_run
        self.scale_window = scale_window
        self.refractory = refractory
        self.min_points = min_points

    def _history_span(self, interval: pd.Timedelta) -> int:
        # The run-length posterior is a state: replaying this much history rebuilds it.
        return 2 * to_points(self.scale_window, interval) + int(self.max_run) + int(self.min_points)

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        minp = max(int(self.min_points), 2)
        z = robust_z(values, to_points(self.scale_window, interval, minimum=2), minp)
        z = np.clip(z, -50.0, 50.0)
        p = run_length_change_probability(
            z, float(self.hazard), max(int(self.recent), 0), max(int(self.max_run), 2)
        )
        p = np.clip(p, 0.0, 1.0 - 1e-12)
        a = float(self.alarm_probability)
        odds = (p / (1.0 - p)) / (a / (1.0 - a))
        # the model starts when the z-score does; its first runs are short by construction
        modelled = np.cumsum(np.isfinite(z))
        odds = np.where(modelled > 10 * max(int(self.recent), 5), odds, 0.0)
        scores = refractory(calibrate(odds, 1.0), to_points(self.refractory, interval, 0))
        return Scored(scores, z, {"change_probability": p})
