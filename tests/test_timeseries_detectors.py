"""Time-series detectors: the shared contract, each method's own behaviour, and NAB."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from tasks.backtest.replay import cross_validate, load_corpus, replay, score_replayed
from tasks.detection.base import BaseDetector, as_series
from tasks.detection.timeseries._common import (
    calibrate,
    refractory,
    robust_z,
    sampling_interval,
    to_points,
)
from tasks.detection.timeseries.adaptive import AdaptiveThresholdDetector, _Rolling, _Seasonal
from tasks.detection.timeseries.default import DefaultDetector
from tasks.detection.timeseries.ensemble import EnsembleDetector
from tasks.detection.timeseries.esd import GeneralizedESDDetector, gesd_last, rosner_lambda
from tasks.detection.timeseries.gaussian import WindowedGaussianDetector, nab_gaussian_scores
from tasks.detection.timeseries.iforest import IsolationForestDetector
from tasks.detection.timeseries.relentropy import RelativeEntropyDetector
from tasks.detection.timeseries.zscore import RobustZScoreDetector
from tasks.severity import Severity

ALL = [
    DefaultDetector,
    RobustZScoreDetector,
    IsolationForestDetector,
    AdaptiveThresholdDetector,
    GeneralizedESDDetector,
    WindowedGaussianDetector,
    RelativeEntropyDetector,
    EnsembleDetector,
]
# Detectors whose fit() only keeps history: fit + score equals one pass over both.
ONE_PASS = [
    DefaultDetector,
    RobustZScoreDetector,
    GeneralizedESDDetector,
    WindowedGaussianDetector,
    RelativeEntropyDetector,
    EnsembleDetector,
]


def series(values, start: str = "2024-01-01", freq: str = "5min") -> pd.Series:
    values = np.asarray(values, dtype=float)
    idx = pd.date_range(start, periods=len(values), freq=freq, tz="UTC")
    return pd.Series(values, index=idx)


def noisy(n: int = 1500, seed: int = 0, level: float = 50.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, 1, n)


def daily(n: int, seed: int = 0, noise: float = 1.0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 50 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, noise, n)


# --- the contract -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
def test_is_a_scikit_learn_shaped_detector(cls):
    det = cls()
    assert isinstance(det, BaseDetector)
    assert det.name != "base"
    params = det.get_params()
    assert params
    twin = clone(det)
    assert twin.get_params() == params
    assert cls.__doc__ and "Parameters" in cls.__doc__


@pytest.mark.parametrize("cls", ALL)
def test_scores_in_unit_interval_and_anomalies_are_the_alarms(cls):
    values = noisy(1500)
    values[1200] += 40
    s = series(values)
    result = cls().fit(s.iloc[:1000]).score(s.iloc[1000:])
    scores = result.scores
    assert len(scores) == 500
    assert scores.index.equals(s.index[1000:])
    assert ((scores >= 0) & (scores <= 1)).all()
    alarms = scores[scores >= 0.5]
    assert [a.ts for a in result.anomalies] == list(alarms.index)
    for a in result.anomalies:
        assert a.detector == cls.name
        assert isinstance(a.severity, Severity)
        assert a.value == pytest.approx(s[a.ts])
        assert a.score == pytest.approx(scores[a.ts])


@pytest.mark.parametrize("cls", ALL)
def test_copes_with_nan(cls):
    values = noisy(1200)
    values[[5, 600, 601, 1100]] = np.nan
    s = series(values)
    result = cls().fit(s.iloc[:500]).score(s.iloc[500:])
    assert np.isfinite(result.scores).all()
    assert result.scores.iloc[100] == 0.0  # row 600 is NaN
    assert result.scores.iloc[101] == 0.0


@pytest.mark.parametrize("cls", ALL)
def test_constant_series_never_alarms(cls):
    s = series(np.full(1000, 45.0))
    result = cls().fit(s.iloc[:600]).score(s.iloc[600:])
    assert result.anomalies == []
    assert (result.scores < 0.5).all()


@pytest.mark.parametrize("cls", ALL)
def test_very_short_or_empty_history(cls):
    s = series(noisy(8))
    assert len(cls().fit(s.iloc[:3]).score(s.iloc[3:]).scores) == 5
    assert len(cls().fit(s.iloc[:0]).score(s.iloc[:1]).scores) == 1
    assert len(cls().score(s).scores) == 8  # score without fit = empty history
    empty = cls().fit(s).score(s.iloc[:0])
    assert len(empty.scores) == 0 and empty.anomalies == []


@pytest.mark.parametrize("cls", ALL)
def test_repeated_timestamps_and_plain_arrays(cls):
    s = series(noisy(900))
    idx = s.index.tolist()
    idx[400:411] = [idx[400]] * 11  # one timestamp repeated 11 times, as in two NAB files
    dup = pd.Series(s.to_numpy(), index=pd.DatetimeIndex(idx))
    assert len(cls().fit(dup.iloc[:300]).score(dup.iloc[300:]).scores) == 600
    plain = as_series(list(noisy(400)))
    assert len(cls().fit(plain.iloc[:300]).score(plain.iloc[300:]).scores) == 100


@pytest.mark.parametrize("cls", ALL)
def test_scores_are_causal(cls):
    """A point's score must not change when later points are appended."""
    values = daily(1400, seed=3)
    values[1000:1010] += 30
    values[700] = np.nan
    s = series(values)
    det = cls().fit(s.iloc[:200])
    full = det.score(s.iloc[200:]).scores
    for stop in (450, 801, 1005):
        prefix = det.score(s.iloc[200:stop]).scores
        np.testing.assert_allclose(prefix.to_numpy(), full.iloc[: stop - 200].to_numpy())


@pytest.mark.parametrize("cls", ONE_PASS)
def test_fit_then_score_equals_one_pass(cls):
    """``fit`` keeps only a tail of the history; that tail must be all ``score`` needs."""
    values = daily(6000, seed=5)
    values[[5510, 5800]] += 200
    values[5600:5700] += 50  # a burst, for detectors of distributions rather than points
    s = series(values)
    one_pass = cls().score(s).scores.iloc[5500:]
    det = cls().fit(s.iloc[:5500])
    if cls is not WindowedGaussianDetector:  # NAB's baseline is stateful from row 0
        assert len(det.history_) < 5500
    split = det.score(s.iloc[5500:]).scores
    assert (split >= 0.5).any()
    np.testing.assert_allclose(split.to_numpy(), one_pass.to_numpy())


@pytest.mark.parametrize("cls", ALL)
def test_overlapping_history_does_not_hide_the_window(cls):
    values = noisy(1500)
    values[1400] += 60
    if cls in (RelativeEntropyDetector,):  # it sees distributions, not single points
        values[1400:1460] += 60
    s = series(values)
    clean = cls().fit(s.iloc[:1300]).score(s.iloc[1300:])
    overlapping = cls().fit(s).score(s.iloc[1300:])
    assert s.index[1400] <= clean.anomalies[0].ts < s.index[1460]
    assert [a.ts for a in overlapping.anomalies] == [a.ts for a in clean.anomalies]
    if len(cls().fit(s).history_) == 1500:  # the whole history was kept: identical scores
        np.testing.assert_allclose(overlapping.scores.to_numpy(), clean.scores.to_numpy())


# --- shared helpers ---------------------------------------------------------------------


def test_spans_follow_the_sampling_interval():
    s30 = series(np.zeros(10), freq="30s")
    assert sampling_interval(s30.index) == pd.Timedelta("30s")
    assert to_points("2h", pd.Timedelta("30s")) == 240
    assert to_points("2h", pd.Timedelta("5min")) == 24
    assert to_points(7, pd.Timedelta("5min")) == 7
    assert sampling_interval(pd.RangeIndex(5)) == pd.Timedelta("5min")


def test_calibration_puts_the_alarm_at_one_half():
    out = calibrate(np.array([-1.0, 0.0, 2.0, 4.0, np.nan, np.inf]), 2.0)
    assert out[0] == 0.0 and out[1] == 0.0 and out[4] == 0.0
    assert out[2] == 0.5
    assert 0.5 < out[3] < out[5] <= 1.0


def test_refractory_keeps_one_alarm_per_incident():
    s = np.zeros(100)
    s[[10, 12, 30, 45]] = 0.9
    out = refractory(s, period=20)
    assert (np.flatnonzero(out >= 0.5) == [10, 45]).all()
    assert out[12] < 0.5 and out[30] < 0.5


def test_robust_z_ignores_the_outliers_it_measures():
    values = noisy(600)
    values[300:310] = 1000.0
    z = robust_z(values, 200, 30)
    assert abs(z[299]) < 5
    assert z[305] > 100  # the MAD was not inflated by the earlier outliers
    assert np.isnan(z[0])


# --- default ----------------------------------------------------------------------------


def test_default_flags_a_spike_with_severity():
    values = noisy(3000)
    values[2500] += 25
    s = series(values)
    result = DefaultDetector().fit(s.iloc[:2000]).score(s.iloc[2000:])
    assert [a.ts for a in result.anomalies] == [s.index[2500]]
    a = result.anomalies[0]
    assert a.severity >= Severity.HIGH
    assert a.details["feature"] == "value"
    assert a.details["novelty"] >= 0.2


def test_default_flags_a_level_shift_once():
    values = noisy(3000)
    values[2500:] -= 6  # inside the value range after a couple of points, not in the mean
    s = series(values)
    result = DefaultDetector().fit(s.iloc[:2000]).score(s.iloc[2000:])
    times = [a.ts for a in result.anomalies]
    assert len(times) == 1
    assert s.index[2500] <= times[0] <= s.index[2530]


def test_default_flags_a_missing_daily_peak_only_in_seasonal_series():
    values = daily(288 * 10, seed=1)
    peak = slice(288 * 8 + 40, 288 * 8 + 110)  # the top of day 8's wave stays at the mean
    values[peak] = 50 + np.random.default_rng(2).normal(0, 1, 70)
    s = series(values)
    result = DefaultDetector().fit(s.iloc[: 288 * 7]).score(s.iloc[288 * 7 :])
    assert result.anomalies
    first = result.anomalies[0]
    assert s.index[peak.start] <= first.ts <= s.index[peak.stop]
    assert first.details["feature"].startswith("change_since")
    clean = series(daily(288 * 10, seed=1))
    assert DefaultDetector().fit(clean.iloc[: 288 * 7]).score(clean.iloc[288 * 7 :]).anomalies == []


def test_default_refractory_and_new_incidents():
    values = noisy(4000)
    values[[3000, 3010]] += 30  # one incident: one alarm
    values[3600] += 30  # another incident half a day later
    s = series(values)
    result = DefaultDetector().fit(s.iloc[:2500]).score(s.iloc[2500:])
    assert [a.ts for a in result.anomalies] == [s.index[3000], s.index[3600]]


def test_default_rescoring_the_same_window_gives_the_same_result():
    # Its speed is measured by bench.detect (detect.score_s), beside a baseline.
    s = series(daily(4032 + 360))
    det = DefaultDetector().fit(s.iloc[:-360])
    first = det.score(s.iloc[-360:])
    again = det.score(s.iloc[-360:])
    assert np.array_equal(first.scores.to_numpy(), again.scores.to_numpy())


def test_default_caps_history_for_fine_grained_metrics():
    s = series(noisy(20_000), freq="30s")
    det = DefaultDetector().fit(s)
    assert len(det.history_) < 20_000
    assert len(det.history_) <= 8192 * 2 + 2000


# --- the other methods ------------------------------------------------------------------


def test_zscore_threshold_is_the_alarm_level():
    values = noisy(1000)
    values[900] += 12  # ~12 sigma
    s = series(values)
    hit = RobustZScoreDetector(threshold=8).fit(s.iloc[:800]).score(s.iloc[800:])
    assert [a.ts for a in hit.anomalies] == [s.index[900]]
    assert hit.anomalies[0].details["z"] > 8
    miss = RobustZScoreDetector(threshold=20).fit(s.iloc[:800]).score(s.iloc[800:])
    assert miss.anomalies == []


def test_iforest_caches_its_model_and_flags_a_jump():
    values = noisy(2500)
    values[2300:2310] += 15
    s = series(values)
    det = IsolationForestDetector().fit(s.iloc[:2000])
    assert det.model_ is not None
    result = det.score(s.iloc[2000:])
    assert any(s.index[2300] <= a.ts <= s.index[2310] for a in result.anomalies)
    assert all(a.ts >= s.index[2290] for a in result.anomalies)


def test_adaptive_learns_a_season_or_falls_back_to_rolling_quantiles():
    det = AdaptiveThresholdDetector()
    seasonal = series(daily(288 * 5))
    assert isinstance(det._train(seasonal.to_numpy(), seasonal.index), _Seasonal)
    flat = series(noisy(288 * 5))
    assert isinstance(det._train(flat.to_numpy(), flat.index), _Rolling)


def test_adaptive_flags_a_night_time_spike_a_static_band_would_miss():
    values = daily(288 * 6, seed=4)
    spike = 288 * 5 + 216  # the trough of the wave (value ~30)
    values[spike] += 25  # still below the daily peak of ~70
    s = series(values)
    result = AdaptiveThresholdDetector().fit(s.iloc[: 288 * 5]).score(s.iloc[288 * 5 :])
    assert [a.ts for a in result.anomalies] == [s.index[spike]]


def gesd_reference(x: np.ndarray, r: int, alpha: float) -> set[int]:
    """Rosner's procedure, one window at a time (the textbook loop)."""
    x = x.astype(float).copy()
    alive = list(range(len(x)))
    removed, stats_, crit = [], [], []
    for _ in range(r):
        vals = x[alive]
        mean, sd = vals.mean(), vals.std(ddof=1)
        k = int(np.argmax(np.abs(vals - mean)))
        stats_.append(abs(vals[k] - mean) / sd if sd > 0 else 0.0)
        crit.append(float(rosner_lambda(np.array([len(vals)]), alpha)[0]))
        removed.append(alive.pop(k))
    n_out = max((i + 1 for i in range(r) if stats_[i] > crit[i]), default=0)
    return set(removed[:n_out])


def test_gesd_matches_the_textbook_procedure():
    rng = np.random.default_rng(11)
    values = rng.normal(0, 1, 400)
    values[rng.choice(400, 25, replace=False)] += rng.choice([-6, 6, 9], 25)
    window, r = 50, 6
    _, flagged = gesd_last(values, window, r, 0.05)
    for row in range(0, len(values) - window + 1, 7):
        expected = (window - 1) in gesd_reference(values[row : row + window], r, 0.05)
        assert flagged[row] == expected, row


def test_rosner_critical_value_matches_published_table():
    # NIST/SEMATECH e-Handbook 1.3.5.17.3, n = 54, alpha = 0.05: lambda_1 = 3.158.
    assert float(rosner_lambda(np.array([54]), 0.05)[0]) == pytest.approx(3.158, abs=2e-3)


def test_esd_flags_an_outlier():
    values = noisy(1000)
    values[900] += 10
    s = series(values)
    result = GeneralizedESDDetector().fit(s.iloc[:800]).score(s.iloc[800:])
    assert [a.ts for a in result.anomalies] == [s.index[900]]


def nab_windowed_gaussian_literal(values, window: int, step: int) -> np.ndarray:
    """NAB's WindowedGaussianDetector.handleRecord, record by record."""
    data: list[float] = []
    buffer: list[float] = []
    mean, std = 0.0, 1.0
    out = []
    for v in values:
        score = 0.0
        if data:
            x = 2 * mean - v if v < mean else v
            score = 1 - 0.5 * math.erfc((x - mean) / std / math.sqrt(2))
        if len(data) < window:
            data.append(v)
            mean, std = float(np.mean(data)), float(np.std(data)) or 1e-6
        else:
            buffer.append(v)
            if len(buffer) == step:
                data = data[step:] + buffer
                buffer = []
                mean, std = float(np.mean(data)), float(np.std(data)) or 1e-6
        out.append(score)
    return np.array(out)


def test_windowed_gaussian_reproduces_nab():
    values = np.random.default_rng(5).normal(0, 1, 800).cumsum()
    np.testing.assert_allclose(
        nab_gaussian_scores(values, 60, 7), nab_windowed_gaussian_literal(values, 60, 7), atol=1e-12
    )


def test_windowed_gaussian_calibration_preserves_nab_order():
    values = np.random.default_rng(6).normal(0, 1, 500)
    values[400] = 50.0
    values[450] = 70.0  # both saturate NAB's score to 1.0: they must stay tied
    ours = WindowedGaussianDetector().score(series(values)).scores.to_numpy()
    nab = nab_gaussian_scores(values)
    order = np.argsort(nab, kind="stable")
    assert (np.diff(ours[order]) >= -1e-12).all()
    assert ours[400] == ours[450]


# --- NAB --------------------------------------------------------------------------------


def nab_root() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    root = Path(os.environ.get("SELFHEAL_DATASETS", default)) / "nab"
    if not (root / "data").is_dir():
        pytest.skip(f"NAB data set not found at {root}")
    return root


def test_default_detects_known_nab_anomalies():
    keys = [
        "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
        "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
        "artificialWithAnomaly/art_daily_jumpsdown.csv",
        "artificialNoAnomaly/art_daily_small_noise.csv",
    ]
    results = replay(DefaultDetector(), load_corpus(nab_root(), files=keys))
    scored = score_replayed(results, 0.5)["standard"]
    assert scored.per_file["realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"] > 0.5
    assert scored.per_file["artificialWithAnomaly/art_daily_jumpsdown.csv"] > 0.5
    assert scored.per_file["artificialNoAnomaly/art_daily_small_noise.csv"] > -0.5
    assert scored.normalized > 60


def test_default_nab_score_on_the_whole_split():
    """The acceptance bar: >= 50 held out (threshold tuned on the other fold), and at 0.5."""
    from tasks.backtest.replay import two_fold_split

    corpus = load_corpus(nab_root())
    results = replay(DefaultDetector(), corpus)
    cv = cross_validate(results, two_fold_split(corpus))
    assert cv.combined["standard"].normalized >= 50
    assert score_replayed(results, 0.5)["standard"].normalized >= 50
