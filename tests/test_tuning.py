"""Nightly tuning: detector NSGA-II studies, labels from recorded frames, recovery replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

from tasks.backtest.replay import NabFile, replay, score_replayed
from tasks.detection.timeseries.default import DefaultDetector
from tasks.tuning.detector import (
    Candidate,
    decode_params,
    detector_space,
    detector_study_name,
    encode_params,
    open_detector_study,
    pareto_front,
    pick,
    score_params,
    tune_detector,
)
from tasks.tuning.labels import (
    FALSE_ALARM,
    LabelledSeries,
    choose_step,
    label_spans,
    labelled_from_frames,
)
from tasks.tuning.recovery import (
    CrashLoop,
    RecoveryParams,
    RecoveryTimelines,
    open_recovery_study,
    recovery_study_name,
    replay_crash_loop,
    score_recovery,
    single_crashes,
    slower_on_single_crashes,
    synthetic_outages,
    timelines_from_history,
    tune_recovery,
)

T0 = pd.Timestamp("2025-03-01 00:00", tz="UTC")


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _files(n: int = 4, rows: int = 3000, freq: str = "5min", seed: int = 0) -> list[NabFile]:
    """Noisy daily cycles with one level shift each, windowed NAB-style."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2025-01-01", periods=rows, freq=freq)
    period = int(pd.Timedelta("1D") / pd.Timedelta(freq))
    out = []
    for i in range(n):
        v = 50 + 10 * np.sin(np.arange(rows) * 2 * np.pi / period) + rng.normal(0, 2, rows)
        at = int(rng.integers(rows // 2, rows - rows // 8))
        v[at : at + rows // 50] += 15 + 5 * i
        width = rows // 20
        out.append(
            NabFile(f"cat{i % 2}/f{i}.csv", ts, v, ((ts[at - width // 2], ts[at + width // 2]),))
        )
    return out


# -- search spaces -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["default", "zscore"])
def test_defaults_round_trip_through_the_space(family: str) -> None:
    """What is tuned is what runs: decoding the encoded defaults gives the defaults back."""
    from tasks.detection.registry import default_registry

    defaults = default_registry().get(family)().get_params()
    assert decode_params(family, encode_params(family)) == defaults
    region = detector_space(family, defaults, 1.5)
    for key, value in encode_params(family).items():
        assert region[key]._contains(region[key].to_internal_repr(value))


def _running_detectors() -> list[tuple[str, dict[str, Any]]]:
    from flows.config import CYCLE_DEFAULT_DETECTOR
    from flows.demo.platform.launcher import Platform
    from flows.demo.settings import demo_config

    demo = demo_config(Platform(Path("/nonexistent")), "sqlite://", mode="automated")
    demo_det = demo["detection"]["detectors"][0]
    return [
        (str(CYCLE_DEFAULT_DETECTOR["name"]), dict(CYCLE_DEFAULT_DETECTOR["params"])),  # type: ignore[call-overload]
        (demo_det["name"], dict(demo_det["params"])),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["cycle", "demo"])
def test_the_running_detectors_round_trip_through_the_space(which: int) -> None:
    """What a night tunes is what runs: the cycle's and the demo's settings (seconds of data,
    an hour of history) encode and decode to themselves, and their trust region is at their
    scale (an hour stays within the factor, not days)."""
    from tasks.detection.registry import default_registry

    name, params = _running_detectors()[which]
    running = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    expected = {**default_registry().get(name)().get_params(), **running}
    assert decode_params(name, encode_params(name, params), params) == expected
    region = detector_space(name, params, 1.5)
    history = pd.Timedelta(params["history"]).total_seconds()
    assert region["history_s"].low >= history / 1.5 - 1
    assert region["history_s"].high <= history * 1.5 + 1
    for key, value in encode_params(name, params).items():
        assert region[key]._contains(region[key].to_internal_repr(value)), key


def test_span_params_decode_to_span_strings() -> None:
    params = decode_params(
        "default",
        {
            **encode_params("default"),
            "smooth_short_s": 0,
            "smooth_long_s": 90 * 60,
            "season": "off",
            "refractory_s": 86_400,
        },
    )
    assert params["smoothing"] == ("90min",)
    assert params["season"] is None
    assert params["refractory"] == "1D"
    DefaultDetector(**params)  # constructible


def test_score_params_matches_the_backtester() -> None:
    files = _files(3)
    mine = score_params("default", None, files)
    theirs = score_replayed(replay(DefaultDetector(), files), 0.5)["standard"].normalized
    assert mine["standard"] == pytest.approx(theirs)


# -- (ii) studies resume -----------------------------------------------------------------------


def test_detector_study_resumes_on_the_same_storage(tmp_path: Path) -> None:
    url, files = _url(tmp_path), _files(3)
    name = detector_study_name("default", "test")
    assert name == "selfheal-tune-detector-default-v2-test"
    study = open_detector_study(url, "default", data_tag="test", seed=1)
    tune_detector(study, files, n_trials=4, timeout_s=None)
    assert len(study.trials) == 4
    again = open_detector_study(url, "default", data_tag="test", seed=2)
    front = tune_detector(again, files, n_trials=3, timeout_s=None)
    assert len(again.trials) == 7
    assert optuna.get_all_study_names(storage=url) == [name]
    assert front and all(isinstance(c, Candidate) for c in front)
    # the defaults were enqueued once, on the first call only
    defaults = encode_params("default")
    assert sum(1 for t in again.trials if t.params == defaults) == 1
    with pytest.raises(ValueError, match="other data"):
        tune_detector(again, _files(3, seed=5), n_trials=1, timeout_s=None)


def _window(files: list[NabFile], start: int, stop: int) -> list[NabFile]:
    """The same series seen through another window (as the next night's tuning sees them)."""
    return [
        NabFile(
            f.key,
            f.timestamps[start:stop],
            f.values[start:stop],
            tuple(
                w
                for w in f.windows
                if f.timestamps[start] <= w[0] and w[1] <= f.timestamps[stop - 1]
            ),
        )
        for f in files
    ]


def test_detector_study_continues_on_the_next_nights_data(tmp_path: Path) -> None:
    """A week-long window moved on by a day (one day dropped, one added, a series added)
    continues the study; the same names holding other values do not."""
    url = _url(tmp_path)
    week = _files(3, rows=8 * 288)  # eight days of 5-minute data; a night sees seven
    tonight, tomorrow = _window(week, 0, 7 * 288), _window(week, 288, 8 * 288)
    study = open_detector_study(url, "default", data_tag="nightly", seed=1)
    tune_detector(study, tonight, n_trials=3, timeout_s=None)
    grown = [*tomorrow, NabFile("cat9/new.csv", tomorrow[0].timestamps, tomorrow[0].values * 2, ())]
    again = open_detector_study(url, "default", data_tag="nightly", seed=2)
    tune_detector(again, grown, n_trials=2, timeout_s=None)
    assert len(again.trials) == 5
    other = [
        NabFile(f.key, f.timestamps, f.values + 1.0, f.windows) for f in _window(week, 288, 8 * 288)
    ]
    with pytest.raises(ValueError, match=r"other data .*has another value"):
        tune_detector(open_detector_study(url, "default", data_tag="nightly"), other, n_trials=1)
    renamed = [NabFile(f"x/{f.key}", f.timestamps, f.values, f.windows) for f in tomorrow]
    with pytest.raises(ValueError, match="no series in common"):
        tune_detector(open_detector_study(url, "default", data_tag="nightly"), renamed, n_trials=1)


def test_recovery_study_continues_when_incidents_are_added_and_refuses_others(
    tmp_path: Path,
) -> None:
    url = _url(tmp_path)
    first = CrashLoop("api", T0.to_pydatetime(), 400.0)
    later = CrashLoop("db", (T0 + pd.Timedelta("1D")).to_pydatetime(), 30.0)
    tune_recovery(open_recovery_study(url, data_tag="n"), RecoveryTimelines((first,)), n_trials=3)
    grown = RecoveryTimelines((first, later))
    assert tune_recovery(open_recovery_study(url, data_tag="n"), grown, n_trials=2).trials == 5
    unrelated = RecoveryTimelines((CrashLoop("cache", T0.to_pydatetime(), 10.0),))
    with pytest.raises(ValueError, match="no recorded incident in common"):
        tune_recovery(open_recovery_study(url, data_tag="n"), unrelated, n_trials=1)


def test_recovery_study_resumes_on_the_same_storage(tmp_path: Path) -> None:
    url = _url(tmp_path)
    timelines = RecoveryTimelines((CrashLoop("api", T0.to_pydatetime(), 400.0),))
    tag = timelines.fingerprint()
    first = tune_recovery(open_recovery_study(url, data_tag=tag), timelines, n_trials=5)
    second = tune_recovery(open_recovery_study(url, data_tag=tag), timelines, n_trials=5)
    assert (first.trials, second.trials) == (5, 10)
    assert optuna.get_all_study_names(storage=url) == [recovery_study_name(tag)]


# -- (iii) labels from frames ------------------------------------------------------------------


def _recorded_frames() -> dict[str, pd.DataFrame]:
    ts = pd.date_range(T0, periods=2 * 1440, freq="1min")
    rng = np.random.default_rng(3)
    series = pd.DataFrame(
        {
            "series_id": [1, 2, 3, 4],
            "component": ["api", "api", "api", "db"],
            "metric": ["cpu", "latency", "requests_total", "cpu"],
            "labels": [{}, {}, {"code": "200"}, {}],
            "kind": ["gauge", "gauge", "counter", "gauge"],
        }
    )
    parts = []
    for sid in (1, 2, 4):
        parts.append(
            pd.DataFrame({"series_id": sid, "ts": ts, "value": rng.normal(50, 2, len(ts))})
        )
    parts.append(
        pd.DataFrame({"series_id": 3, "ts": ts, "value": np.cumsum(rng.poisson(5, len(ts)))})
    )
    issues = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "component": ["api", "api", "db"],
            "kind": ["metric", "metric", "down"],
            "signature": ["latency", "cpu", "down"],
            "first_seen": [
                T0 + pd.Timedelta("20h"),
                T0 + pd.Timedelta("30h"),
                T0 + pd.Timedelta("40h"),
            ],
            "last_seen": [
                T0 + pd.Timedelta("20h10min"),
                T0 + pd.Timedelta("30h05min"),
                T0 + pd.Timedelta("40h"),
            ],
        }
    )
    return {
        "samples": pd.concat(parts, ignore_index=True),
        "series": series,
        "faults": pd.DataFrame(
            {
                "id": [7],
                "component": ["db"],
                "fault": ["failing_dependency"],
                "injected_at": [T0 + pd.Timedelta("10h")],
                "cleared_at": [pd.NaT],
                "detail": [{"affects": ["api"]}],
            }
        ),
        "issues": issues,
        "feedback": pd.DataFrame(
            {
                "issue_id": [1, 3],
                "verdict": ["true_positive", "true_positive"],
                "created_at": [T0 + pd.Timedelta("21h"), T0 + pd.Timedelta("41h")],
            }
        ),
        "approvals": pd.DataFrame(
            {
                "id": ["approval_a", "approval_b"],
                "issue_id": [2, 3],
                "component": ["api", "db"],
                "decision": ["rejected", "rejected"],
                "requested_at": [T0 + pd.Timedelta("30h01min"), T0 + pd.Timedelta("40h")],
                "decided_at": [T0 + pd.Timedelta("30h02min"), T0 + pd.Timedelta("42h")],
                "reason": ["False alarm: that was the nightly batch", "use a different action"],
            }
        ),
    }


def test_labels_from_fault_injections_feedback_and_a_false_alarm_rejection() -> None:
    f = _recorded_frames()
    spans = label_spans(f["faults"], f["issues"], f["feedback"], f["approvals"])
    kinds = {(s.source, s.component, s.kind, s.metric) for s in spans}
    assert ("fault", "db", "anomaly", None) in kinds and ("fault", "api", "anomaly", None) in kinds
    assert ("verdict", "api", "anomaly", "latency") in kinds  # the confirmed metric issue
    assert ("verdict", "api", "normal", "cpu") in kinds  # rejected as a false alarm
    # a rejection for another reason is no negative evidence: issue 3 stays confirmed
    assert ("verdict", "db", "anomaly", None) in kinds
    assert FALSE_ALARM.search("not a real problem") and not FALSE_ALARM.search("wrong action")

    files = labelled_from_frames(
        f["samples"], f["series"], f["faults"], f["issues"], f["feedback"], f["approvals"]
    )
    by_key = {x.key: x for x in files}
    assert set(by_key) == {
        "api/cpu",
        "api/latency",
        'api/requests_total:rate{"code":"200"}',
        "db/cpu",
    }
    cpu, latency = by_key["api/cpu"], by_key["api/latency"]
    assert isinstance(cpu, LabelledSeries) and cpu.scored is None
    fault_window = (T0 + pd.Timedelta("10h"), T0 + pd.Timedelta("10h12min"))  # +10 min +2 min tail
    assert cpu.windows == (fault_window,)
    assert cpu.normal == ((T0 + pd.Timedelta("29h45min"), T0 + pd.Timedelta("30h10min")),)
    assert latency.windows == (
        fault_window,
        (T0 + pd.Timedelta("19h45min"), T0 + pd.Timedelta("20h15min")),
    )
    assert latency.normal == ()
    for x in files:  # windows start and end on rows, as NAB's scorer needs
        for a, b in x.windows:
            assert a in x.timestamps and b in x.timestamps

    ignored = labelled_from_frames(
        f["samples"],
        f["series"],
        f["faults"],
        f["issues"],
        f["feedback"],
        f["approvals"],
        unlabelled="ignore",
    )
    cpu = {x.key: x for x in ignored}["api/cpu"]
    assert cpu.scored is not None and cpu.scored.sum() == 13 + 26  # window rows + normal rows
    score_params("default", None, ignored)  # the tuner honours the mask


def test_long_series_are_downsampled() -> None:
    index = pd.date_range(T0, periods=7 * 86_400 // 15, freq="15s")
    assert choose_step(index, 10_080) == "1min"
    assert choose_step(index[:5000], 10_080) is None


# -- (iv) the delay constraint -----------------------------------------------------------------


def _trial(
    number: int, standard: float, fa: float, delay: float, limit: float
) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"margin": 0.1 + number / 100},
        distributions={"margin": optuna.distributions.FloatDistribution(0.0, 1.0)},
        values=[standard, fa],
        user_attrs={"params": {"margin": 0.1 + number / 100}, "mean_delay_s": delay},
        system_attrs={"constraints:delay": delay - limit},
    )


def test_infeasible_candidates_are_not_picked() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(_trial(0, 90.0, 0.1, 7200.0, 3600.0))  # best score, too late
    study.add_trial(_trial(1, 70.0, 0.2, 600.0, 3600.0))
    study.add_trial(_trial(2, 70.0, 0.1, 1200.0, 3600.0))
    study.add_trial(_trial(3, 60.0, 0.0, 300.0, 3600.0))
    chosen = pick(pareto_front(study))
    assert chosen.trial == 2  # best feasible standard, tie to fewer false alarms
    # a stricter limit tonight applies to earlier trials through their recorded delay
    assert pick(pareto_front(study, max_delay_s=900.0)).trial == 1
    with pytest.raises(ValueError, match="no feasible"):
        pick(pareto_front(study, max_delay_s=60.0))


def test_nsga_ii_sees_the_delay_constraint() -> None:
    files = _files(3)
    study = open_detector_study(None, seed=3)
    tune_detector(study, files, n_trials=8, timeout_s=None, trust=None)
    delays = sorted(t.user_attrs["mean_delay_s"] for t in study.trials if t.values)
    limit = delays[len(delays) // 2]
    strict = open_detector_study(None, seed=3)
    front = tune_detector(strict, files, n_trials=8, timeout_s=None, trust=None, max_delay_s=limit)
    for t in strict.trials:
        if t.values is not None:
            assert t.constraints == {"delay": pytest.approx(t.user_attrs["mean_delay_s"] - limit)}
    chosen = pick(front)
    assert chosen.mean_delay_s <= limit
    assert all(c.feasible for c in front)


# -- (i) recovery replay of a recorded crash loop ----------------------------------------------


def _crash_loop_history() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What the system recorded: ``api`` down at T0, restarted with the default backoff at
    +30, +60, +90, +130, +210 s (all failing: its dependency was broken until +400 s), then
    the budget ran out and it came back at +1200 s when a person restarted it."""
    ts = pd.date_range(T0 - pd.Timedelta("5min"), T0 + pd.Timedelta("25min"), freq="15s")
    up = ((ts < T0) | (ts >= T0 + pd.Timedelta(seconds=1200))).astype(float)
    up_samples = pd.DataFrame({"component": "api", "ts": ts, "value": up})
    starts = [T0 + pd.Timedelta(seconds=s) for s in (30, 60, 90, 130, 210)]
    actions = pd.DataFrame(
        {
            "id": range(1, 6),
            "component": "api",
            "kind": "restart",
            "started_at": starts,
            "finished_at": [s + pd.Timedelta(seconds=30) for s in starts],
            "ok": False,
            "detail": [{"validation": {"ok": False, "health_wait_s": 30.0}}] * 5,
        }
    )
    faults = pd.DataFrame(
        {
            "id": [1],
            "component": ["api"],
            "fault": ["failing_dependency"],
            "injected_at": [T0 - pd.Timedelta(seconds=5)],
            "cleared_at": [T0 + pd.Timedelta(seconds=400)],
            "detail": [{}],
        }
    )
    return up_samples, actions, faults


def test_tuned_backoff_does_not_escalate_and_halves_down_time_on_a_recorded_crash_loop(
    tmp_path: Path,
) -> None:
    up, actions, faults = _crash_loop_history()
    loops = timelines_from_history(up, actions, faults)
    assert len(loops) == 1
    loop = loops[0]
    assert (loop.fixed_after_s, loop.first_restart_after_s) == (400.0, 30.0)
    default = replay_crash_loop(loop, RecoveryParams())
    assert default.restarts == len(actions) and default.escalated  # the replay is the history

    timelines = RecoveryTimelines(tuple(loops))
    study = open_recovery_study(_url(tmp_path), data_tag=timelines.fingerprint(), seed=0)
    # A trial count, not a time budget: the same search on a loaded machine.
    result = tune_recovery(study, timelines, n_trials=150, timeout_s=None)
    tuned = replay_crash_loop(loop, result.best)
    # Spacing restarts is bounded by the single-crash guard (the second restart of a quick
    # crash may not come later), so the search trades down time, not always a restart.
    assert tuned.restarts <= default.restarts
    assert tuned.unavailable_s < default.unavailable_s / 2
    assert not tuned.escalated
    assert result.improved and result.metrics["cost"] < result.current_metrics["cost"]


def test_a_promotable_backoff_heals_single_crashes_no_later_than_the_default(
    tmp_path: Path,
) -> None:
    """The recorded crash loop rewards waiting longer; with the common case in the corpus
    the tuned policy still heals every single crash as fast as the default, and a policy
    that would be slower on them is caught by the promotion guard."""
    up, actions, faults = _crash_loop_history()
    loops = timelines_from_history(up, actions, faults)
    timelines = RecoveryTimelines((*loops, *single_crashes()))
    study = open_recovery_study(_url(tmp_path), data_tag="singles", seed=0)
    result = tune_recovery(study, timelines, n_trials=120, timeout_s=None)
    assert result.best.base <= result.best.cap
    assert slower_on_single_crashes(result.best, RecoveryParams()) == []
    for crash in single_crashes():
        tuned = replay_crash_loop(crash, result.best)
        default = replay_crash_loop(crash, RecoveryParams())
        assert tuned.recovered_after_s <= default.recovered_after_s, crash
    # A short validation wait misjudges 20 s start-ups and restarts them again: refused.
    hasty = RecoveryParams(validation_timeout=10.0, base=60.0, cap=60.0)
    assert slower_on_single_crashes(hasty, RecoveryParams())


def test_timelines_without_fault_injection_use_the_restart_that_worked() -> None:
    up, actions, _ = _crash_loop_history()
    actions = actions.copy()
    actions.loc[4, "ok"] = True
    actions["detail"] = [
        *actions["detail"][:4],
        {"validation": {"ok": True, "health_wait_s": 12.0}},
    ]
    up["value"] = ((up["ts"] < T0) | (up["ts"] >= T0 + pd.Timedelta(seconds=225))).astype(float)
    (loop,) = timelines_from_history(up, actions)
    assert (loop.fixed_after_s, loop.startup_s) == (210.0, 12.0)
    outcome = replay_crash_loop(loop, RecoveryParams())
    assert outcome.restarts == 5 and not outcome.escalated
    assert outcome.unavailable_s == pytest.approx(222.0)


def test_breaker_replay_trades_failures_for_refusals() -> None:
    outages = RecoveryTimelines(outages=tuple(synthetic_outages(3, seed=1)))
    eager = score_recovery(RecoveryParams(wait_in_open=5.0), outages)
    patient = score_recovery(RecoveryParams(wait_in_open=300.0), outages)
    assert eager["failed_calls"] > patient["failed_calls"]
    assert eager["refused_calls"] < patient["refused_calls"]


def test_a_short_validation_wait_misjudges_good_restarts() -> None:
    loop = CrashLoop("api", datetime(2025, 1, 1, tzinfo=UTC), 0.0, 30.0, startup_s=45.0)
    short = replay_crash_loop(loop, RecoveryParams(validation_timeout=30.0))
    long = replay_crash_loop(loop, RecoveryParams(validation_timeout=60.0))
    assert short.misjudged >= 1 and short.restarts > long.restarts == 1
    assert long.unavailable_s == pytest.approx(75.0)
    assert timedelta(seconds=long.recovered_after_s) == timedelta(seconds=75)


# -- (v) time budget on ~100 series x 7 days of 1-minute data ----------------------------------


def test_a_week_of_100_series_is_tuned_within_the_time_budget() -> None:
    rng = np.random.default_rng(0)
    ts = pd.date_range("2025-01-01", periods=7 * 1440, freq="1min")
    files = []
    for i in range(100):
        v = 50 + 10 * np.sin(np.arange(len(ts)) * 2 * np.pi / 1440) + rng.normal(0, 2, len(ts))
        at = int(rng.integers(3000, 9000))
        v[at : at + 60] += 25
        files.append(NabFile(f"c{i % 10}/m{i}", ts, v, ((ts[at - 30], ts[at + 90]),)))
    study = open_detector_study(None, seed=0)
    budget = 15.0  # room for at least one replay of the week on a busy machine
    deadline = datetime.now() + timedelta(seconds=budget)  # Optuna stamps trials in local time
    front = tune_detector(study, files, timeout_s=budget)
    # The budget holds: no trial starts after it (one cut short by it is pruned).
    assert all(t.datetime_start is not None and t.datetime_start <= deadline for t in study.trials)
    assert front and pick(front).standard > 0
