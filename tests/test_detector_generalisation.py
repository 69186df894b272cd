"""Every registered detector: causal to the last row, and steps of constant gauges are changes.

Plus the out-of-sample NAB evaluation: folds by series family and a selection that never sees
the file it scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from tasks.backtest.nab import Window
from tasks.backtest.replay import (
    NabFile,
    Replayed,
    family_folds,
    score_replayed,
    select_in_sample,
    select_out_of_sample,
    series_family,
)
from tasks.detection.registry import default_registry
from tasks.detection.timeseries._common import STEP_Z, sampling_interval

REGISTRY = default_registry()
NAMES = REGISTRY.names()


def series(values, freq: str = "5min") -> pd.Series:
    values = np.asarray(values, dtype=float)
    idx = pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC")
    return pd.Series(values, index=idx)


def eventful(n: int = 2600, seed: int = 3) -> pd.Series:
    """Daily season, noise, a spike, a level shift, a variance change and an irregular gap."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, n)
    v[900] += 80
    v[1500:] += 15
    v[2100:2300] += rng.normal(0, 8, 200)
    # sampled every 5 minutes, then every 10: the whole file's median spacing (10 min) is not
    # the one its first rows show, so an interval read from the whole file would leak
    idx = pd.date_range("2024-01-01", periods=1000, freq="5min", tz="UTC")
    idx = idx.append(pd.date_range(idx[-1] + pd.Timedelta("10min"), periods=n - 1000, freq="10min"))
    return pd.Series(v, index=idx)


@pytest.mark.parametrize("name", NAMES)
def test_truncated_file_scores_its_prefix_like_the_full_file(name):
    """Scores of a file cut at several points equal the full run's scores on the prefix."""
    s = eventful()
    full = REGISTRY.create(name).score(s).scores.to_numpy()
    assert (full >= 0.5).any(), "the series should make every detector alarm somewhere"
    for cut in (40, 333, 901, 1501, 1800, 1801, 2222):
        part = REGISTRY.create(name).score(s.iloc[:cut]).scores.to_numpy()
        np.testing.assert_array_equal(part, full[:cut], err_msg=f"{name} cut at {cut}")


def test_sampling_interval_reads_only_the_start():
    s = eventful()
    # later, coarser sampling does not change the interval learned at the start
    assert sampling_interval(s.index) == pd.Timedelta("5min")
    assert sampling_interval(s.index[:200]) == sampling_interval(s.index)
    repeated = pd.DatetimeIndex(np.repeat(s.index[:100].to_numpy(), 3))
    assert sampling_interval(repeated) == pd.Timedelta("5min")


STEPS = {
    "up gauge 1 -> 0": np.r_[np.ones(800), np.zeros(400)],
    "gauge 0 -> 1": np.r_[np.zeros(800), np.ones(400)],
    "config 5 -> 7": np.r_[np.full(800, 5.0), np.full(400, 7.0)],
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(STEPS))
def test_step_out_of_a_constant_is_one_alarm_with_a_finite_severity(name, case):
    result = REGISTRY.create(name).score(series(STEPS[case]))
    scores = result.scores.to_numpy()
    assert np.isfinite(scores).all()
    assert scores[:800].max() < 0.5  # constant: nothing to say
    assert scores[800] >= 0.5, f"{name} misses the change of state at once"
    first = result.anomalies[0]
    assert first.ts == result.scores.index[800]
    assert abs(first.details["z"]) == pytest.approx(STEP_Z)  # a step, not 1/1e-9
    assert np.isfinite([a.details["z"] for a in result.anomalies]).all()
    assert len(result.anomalies) <= 2  # one change, not an alarm per point


@pytest.mark.parametrize("name", NAMES)
def test_rate_across_a_counter_reset_is_not_an_anomaly(name):
    """A counter's rate with the reset's interval left out (NaN, as a rate is derived)."""
    rng = np.random.default_rng(7)
    rate = 100 + rng.normal(0, 3, 2000)
    rate[1200] = np.nan  # the interval containing the reset has no rate
    scores = REGISTRY.create(name).score(series(rate)).scores.to_numpy()
    assert scores[1195:1260].max() < 0.5


# -- out-of-sample selection -------------------------------------------------------------------


def test_series_family_groups_by_metric_kind_and_artificial_folder():
    assert series_family("realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv") == (
        "realAWSCloudwatch/ec2_cpu_utilization"
    )
    assert series_family("realAWSCloudwatch/grok_asg_anomaly.csv") == (
        "realAWSCloudwatch/grok_asg_anomaly"
    )
    assert series_family("artificialNoAnomaly/art_noisy.csv") == "artificialNoAnomaly"


def _file(key: str, anomaly_at: int | None, n: int = 1000) -> NabFile:
    ts = pd.date_range("2024-01-01", periods=n, freq="5min")
    windows: tuple[Window, ...] = ()
    if anomaly_at is not None:
        windows = ((ts[anomaly_at - 20], ts[anomaly_at + 20]),)
    return NabFile(key, ts, np.zeros(n), windows)


def _alarm_at(f: NabFile, rows: list[int]) -> Replayed:
    s = np.zeros(len(f.values))
    s[rows] = 0.9
    return Replayed(f, s)


def test_out_of_sample_selection_never_uses_the_scored_fold():
    files = [_file(f"c/fam{i}_00000{i}.csv", 600) for i in range(3)]
    assert family_folds(files) == [[f.key] for f in files]
    # "early" detects in every file; "peek" alarms perfectly on file 0 only and falsely on
    # the others: chosen with file 0 in sample, it must not be chosen to score file 0.
    early = [_alarm_at(f, [585]) for f in files]
    peek = [_alarm_at(files[0], [581])] + [_alarm_at(f, [300, 400, 500]) for f in files[1:]]
    candidates = {"early": early, "peek": peek}
    oos = select_out_of_sample(candidates, family_folds(files))
    assert oos.chosen == ("early", "early", "early")
    assert oos.combined["standard"].normalized == pytest.approx(
        score_replayed(early, 0.5)["standard"].normalized
    )
    only_file0 = {"early": early[:1], "peek": peek[:1]}
    assert select_in_sample(only_file0) == "peek"


# -- the new detectors on synthetic shapes -----------------------------------------------------

N, AT = 4000, 3000  # two weeks of 5-minute points, the change after ~10 days


def shape(kind: str, seed: int = 11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N)
    v = 50 + rng.normal(0, 2, N)
    if kind == "level shift":
        v[AT:] += 8
    elif kind == "spike":
        v[AT] += 40
    elif kind == "variance change":
        v[AT:] = 50 + rng.normal(0, 8, N - AT)
    elif kind == "slow drift":
        v[AT:] += np.linspace(0, 30, N - AT)
    elif kind == "broken season":
        v = 50 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, N)
        v[AT : AT + 144] = 50 + rng.normal(0, 1, 144)  # half a day with no daily swing
    elif kind != "steady":
        raise ValueError(kind)
    return v


def alarms(name: str, kind: str) -> np.ndarray:
    return np.flatnonzero(REGISTRY.create(name).score(series(shape(kind))).scores >= 0.5)


def test_relentropy_sees_changes_of_distribution_not_single_points():
    for kind in ("level shift", "variance change", "slow drift", "broken season"):
        found = alarms("relentropy", kind)
        assert len(found) and AT <= found[0] < AT + 150, (kind, found)
        assert (found >= AT).all(), (kind, found)  # nothing before the change
    # one point does not change a 4-hour distribution: that is the default's job
    assert not len(alarms("relentropy", "spike"))
    assert not len(alarms("relentropy", "steady"))


def test_ensemble_sees_every_shape_early_and_adds_no_false_alarm_to_the_default():
    for kind in ("level shift", "spike", "variance change", "slow drift", "broken season"):
        found = alarms("ensemble", kind)
        assert (found >= AT).any() and AT <= found[found >= AT][0] < AT + 150, (kind, found)
        # before the change: only what the default member itself says (it reads the tails of
        # Gaussian noise as novel now and then); the relative-entropy member adds nothing
        assert set(found[found < AT]) <= set(alarms("default", kind)), (kind, found)
        # an incident: one alarm, or as many as the default gives a change that persists
        after = alarms("default", kind)
        assert len(found[found >= AT]) <= max(len(after[after >= AT]), 1) + 1, (kind, found)
    assert set(alarms("ensemble", "steady")) <= set(alarms("default", "steady"))


def test_ensemble_is_the_largest_member_score_with_one_refractory():
    from tasks.detection.timeseries.default import DefaultDetector
    from tasks.detection.timeseries.ensemble import EnsembleDetector, alarm_budget
    from tasks.detection.timeseries.relentropy import RelativeEntropyDetector

    s = series(shape("level shift"))
    members = [DefaultDetector(refractory=0), RelativeEntropyDetector(refractory=0)]
    both = EnsembleDetector(members, refractory=0).score(s).scores.to_numpy()
    each = [m.score(s).scores.to_numpy() for m in members]
    np.testing.assert_allclose(both, np.maximum(*each))
    # the budget: each alarm in the span raises the bar for the next one
    raw = np.array([0.0, 0.75, 0.0, 0.75, 0.75, 0.0])
    kept = alarm_budget(raw, span=10, cost=1.0)
    assert kept[1] == 0.75 and kept[3] < 0.75 and (kept < 0.75)[4]
    np.testing.assert_array_equal(alarm_budget(raw, span=10, cost=0.0), raw)


def test_default_widens_its_margin_while_the_history_is_short():
    from tasks.detection.timeseries.default import DefaultDetector

    s = series(shape("spike"))
    fixed = np.flatnonzero(DefaultDetector().score(s).scores >= 0.5)
    widened = np.flatnonzero(DefaultDetector(small_sample=1.0).score(s).scores >= 0.5)
    assert AT in fixed and AT in widened  # a real spike still alarms
    assert set(widened) <= set(fixed)
    early = fixed[fixed < 1000]  # a tail of the noise, novel only against a short history
    assert len(early) and not (widened < 1000).any()
    # with a full history the margin is the fixed one
    long = series(np.r_[shape("steady"), shape("spike")])
    a = DefaultDetector().score(long).scores.to_numpy()[N + 200 :]
    b = DefaultDetector(small_sample=1.0).score(long).scores.to_numpy()[N + 200 :]
    np.testing.assert_allclose(a, b)


def test_bocpd_finds_level_shifts_and_spikes_and_is_quiet_on_noise():
    for kind in ("level shift", "spike", "broken season"):
        found = alarms("bocpd", kind)
        assert len(found) and AT <= found[0] < AT + 150, (kind, found)
    # a change of variance or a slow drift is absorbed by the trailing z-score's scale before
    # the run-length posterior is sure: no alarm, and above all no false one
    for kind in ("steady", "variance change", "slow drift"):
        assert not (alarms("bocpd", kind) < AT).any()
    assert not len(alarms("bocpd", "steady"))


def test_bocpd_run_length_posterior_moves_to_the_change():
    from tasks.detection.timeseries.bocpd import run_length_change_probability

    rng = np.random.default_rng(2)
    z = np.r_[rng.normal(0, 1, 300), rng.normal(6, 1, 100)]
    p = run_length_change_probability(z, hazard=1e-3, recent=5, max_run=200)
    assert p[100:299].max() < 0.2  # one regime: long runs
    assert p[302:306].max() > 0.9  # a few points after the shift: a new run
    assert p[399] < 0.2  # and the new regime is a long run again


def test_forecast_residual_flags_what_its_forecast_misses():
    for kind in ("level shift", "spike", "variance change", "broken season"):
        found = alarms("forecast", kind)
        assert len(found) and AT <= found[0] < AT + 50, (kind, found)
        assert (found >= AT).all(), (kind, found)
    assert not len(alarms("forecast", "steady"))
    # a slow drift is what exponential smoothing follows by design: no alarm
    assert not len(alarms("forecast", "slow drift"))


def test_forecast_residual_learns_the_daily_season():
    """A daily cycle of amplitude 20 with noise 1: the seasonal model forecasts the swing; a
    level-only model chases it and makes larger errors."""
    from tasks.detection.timeseries.forecast import ForecastResidualDetector

    s = series(shape("broken season"))
    seasonal = ForecastResidualDetector().fit(s.iloc[:AT])
    assert seasonal.model_.gamma >= 0 and len(seasonal.model_.season) == 288
    plain = ForecastResidualDetector(season=None).fit(s.iloc[:AT])
    assert len(plain.model_.season) == 0 and plain.model_.scale > 1.2 * seasonal.model_.scale


def test_default_measures_a_flat_series_against_a_spread_relative_to_its_level():
    """Free inodes flat at 16 million that move by a few hundred are not news; a 0/1 gauge
    or a rate flat at 0 that moves is, whatever the floor."""
    from tasks.detection.timeseries.default import DefaultDetector

    rng = np.random.default_rng(3)
    inodes = 16_269_600 + np.round(rng.normal(0, 0.4, 1200)).clip(-1, 1)
    inodes[800:] -= 300  # files created: 0.002 % of the level
    floored = DefaultDetector(min_relative_spread=1e-3)
    assert (DefaultDetector().score(series(inodes)).scores >= 0.5).any()  # 1e-9 spread
    assert (floored.score(series(inodes)).scores < 0.5).all()
    big = inodes.copy()
    big[1000:] -= 200_000  # 1.2 % of the level: still a change
    assert (floored.score(series(big)).scores.to_numpy()[1000:1010] >= 0.5).any()
    # Its severity is measured against the same floor: 0.4 % of the level is an alarm,
    # graded low, not critical for being thousands of (tiny) spreads out.
    mid = inodes.copy()
    mid[1000:] -= 60_000
    assert DefaultDetector().score(series(mid)).anomalies[-1].severity.label == "critical"
    assert [a.severity.label for a in floored.score(series(mid)).anomalies] == ["low"]
    for case in ("up gauge 1 -> 0", "gauge 0 -> 1"):
        scores = floored.score(series(STEPS[case])).scores.to_numpy()
        assert scores[800] >= 0.5, case
    # the many-series path (vectorised without a season) uses the same floor
    cycle = DefaultDetector(season=None, min_points=60, min_relative_spread=1e-3)
    for values in (inodes, big):
        s = series(values)
        history, window = s.iloc[:990], s.iloc[990:]
        (many,) = cycle.score_many([history], [window])
        one = clone(cycle).fit(history).score(window)
        np.testing.assert_allclose(many.scores.to_numpy(), one.scores.to_numpy())
    assert (many.scores >= 0.5).any()


def test_contextual_sees_levels_and_orders_the_past_never_led_to():
    from tasks.detection.timeseries.contextual import levels_of, surprise

    for kind in ("level shift", "spike", "variance change", "slow drift", "broken season"):
        found = alarms("contextual", kind)
        assert len(found) and AT <= found[0] < AT + 250, (kind, found)
        assert (found >= AT).all(), (kind, found)  # nothing before the change
        assert len(found) <= 2, (kind, found)  # the rest period: one alarm per incident
    assert not len(alarms("contextual", "steady"))
    # The tails of the learned range stay in its end levels; far beyond is a level of its own.
    lv = levels_of(np.array([0.0, 0.99, 1.2, 1.6, -0.7, np.nan]), 0.0, 1.0, 8, far=0.5)
    np.testing.assert_array_equal(lv[:5], [0, 7, 7, 8, -1])
    assert np.isnan(lv[5])
    # An order the past never took: 0 1 0 1 ... then 0 0 (level 0 is known, its successor
    # after 0 is not); a context seen fewer than `support` times does not vote.
    seq = np.array([0, 1] * 20 + [0, 0], dtype=float)
    assert surprise(seq, 0, order=1, support=10)[-1] == 0.5  # order 0 knows 0, order 1 not
    assert surprise(seq[:6], 0, order=1, support=10)[3:].max() == 0.0
