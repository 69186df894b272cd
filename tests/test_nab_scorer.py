"""The NAB scorer against hand-computed cases, NAB's own unit-test cases and a literal port.

Hand-computed values use NAB's formulas directly: a detection on the first row of a window is
worth ``tpWeight``; one at relative position ``p`` is worth ``scaledSigmoid(p) / maxTP``; a
false positive ``d`` rows after a window of ``w`` rows costs ``scaledSigmoid(d / (w - 1))``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.backtest.nab import (
    MAX_TP,
    PROFILES,
    CorpusScore,
    combine,
    load_windows,
    null_score,
    optimize_threshold,
    perfect_score,
    probation_length,
    scaled_sigmoid,
    score_corpus,
    score_detections,
    score_file,
    sweep_rows,
    sweep_thresholds,
    window_labels,
)
from tasks.backtest.replay import (
    Replayed,
    cross_validate,
    evaluate,
    load_corpus,
    replay,
    score_replayed,
    two_fold_split,
    write_result_file,
)
from tasks.detection.base import BaseDetector, DetectionResult

UNIT = {"tp": 1.0, "fp": 1.0, "fn": 1.0}
STANDARD = PROFILES["standard"]


def stamps(n: int, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="5min")


def windows_at(ts: pd.DatetimeIndex, *spans: tuple[int, int]) -> list[tuple]:
    return [(ts[a], ts[b]) for a, b in spans]


def detections(n: int, *rows: int) -> np.ndarray:
    out = np.zeros(n)
    out[list(rows)] = 1.0
    return out


def unit_cost():
    from tasks.backtest.nab import CostMatrix

    return CostMatrix("unit", UNIT["tp"], UNIT["fp"], UNIT["fn"])


def score1(n, spans, rows, profile=None, probation=0.0):
    ts = stamps(n)
    flags = detections(n, *rows).astype(bool)
    return score_file(ts, flags, windows_at(ts, *spans), profile or unit_cost(), probation)


# --- the reward curve -------------------------------------------------------------------


def test_scaled_sigmoid_landmarks():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.5) == -1.0


def test_probation_length_is_15_percent_capped_at_750():
    assert probation_length(4032) == 604
    assert probation_length(1243) == 186
    assert probation_length(100_000) == 750
    assert probation_length(0) == 0


def test_profiles_match_nab_config():
    assert (STANDARD.tp_weight, STANDARD.fp_weight, STANDARD.fn_weight) == (1.0, 0.11, 1.0)
    low_fp, low_fn = PROFILES["reward_low_fp"], PROFILES["reward_low_fn"]
    assert (low_fp.fp_weight, low_fp.fn_weight) == (0.22, 1.0)
    assert (low_fn.fp_weight, low_fn.fn_weight) == (0.11, 2.0)


# --- single-file cases ------------------------------------------------------------------


def test_null_case_scores_zero():
    s = score1(10, [], [])
    assert s.score == 0.0
    assert (s.tn, s.tp, s.fp, s.fn) == (10, 0, 0, 0)


def test_missed_window_costs_fn_weight():
    s = score1(100, [(30, 39)], [])
    assert s.score == -1.0
    assert (s.tn, s.tp, s.fp, s.fn) == (90, 0, 0, 10)


def test_detection_at_window_start_earns_tp_weight():
    s = score1(10, [(4, 5)], [4])
    assert s.score == pytest.approx(1.0)
    assert (s.tn, s.tp, s.fp, s.fn) == (8, 1, 0, 1)


def test_detection_at_window_end_earns_little():
    # position = -(right - i + 1) / width = -1/10 at the last row of a 10-row window
    s = score1(100, [(30, 39)], [39])
    assert s.score == pytest.approx(scaled_sigmoid(-0.1) / MAX_TP)
    assert 0.0 < s.score < 0.3


def test_detection_mid_window():
    # row 34 of [30, 39]: position -(39 - 34 + 1) / 10 = -0.6
    s = score1(100, [(30, 39)], [34])
    assert s.score == pytest.approx(scaled_sigmoid(-0.6) / MAX_TP)


def test_earlier_detection_scores_higher():
    assert score1(10, [(4, 5)], [4]).score > score1(10, [(4, 5)], [5]).score


def test_only_first_detection_in_window_counts():
    one = score1(10, [(4, 5)], [4])
    two = score1(10, [(4, 5)], [4, 5])
    assert one.score == two.score
    assert (two.tp, two.fn) == (2, 0)


def test_left_edge_worth_the_same_whatever_the_width():
    assert score1(10, [(4, 5)], [4]).score == pytest.approx(score1(10, [(3, 5)], [3]).score)


def test_false_positive_before_any_window_costs_fp_weight():
    s = score1(1000, [], [0])
    assert s.score == -1.0
    s = score1(1000, [(500, 509)], [0])
    assert s.score == pytest.approx(-1.0 - 1.0)  # the FP and the missed window


def test_false_positive_after_window_is_weighted_by_distance():
    # window [30, 34] (5 rows); FP at 37 is 3 rows after its end: 3 / (5 - 1) = 0.75
    near = score1(100, [(30, 34)], [30, 37])
    assert near.score == pytest.approx(1.0 + scaled_sigmoid(0.75))
    far = score1(100, [(30, 34)], [30, 80])
    assert far.score == pytest.approx(1.0 - 1.0)  # > 3 widths away: full FP cost
    assert score1(10, [(3, 4)], [5]).score > score1(10, [(3, 4)], [6]).score


def test_nab_scoring_all_metrics_case():
    # NAB's testScoringAllMetrics: 2 windows of 5 in 100 rows, TP, extra TP and FP.
    s = score1(100, [(30, 34), (65, 69)], [30, 31, 37])
    assert s.score == pytest.approx(-0.9540, abs=1e-4)
    assert (s.tn, s.tp, s.fp, s.fn) == (89, 2, 1, 8)


def test_tp_at_right_edge_plus_fp_just_after_cancel_out():
    # NAB's testTruePositiveAtRightEdgeOfWindow (fpWeight 1).
    tp = score1(1000, [(450, 549)], [549])
    fp = score1(1000, [(450, 549)], [550])
    assert tp.score + fp.score + 1.0 == pytest.approx(0.0, abs=1e-3)


def test_probationary_rows_are_ignored():
    # 15% of 100 rows = 15 rows of probation: a detection at row 3 is not scored.
    assert score1(100, [], [3], probation=0.15).score == 0.0
    assert score1(100, [], [15], probation=0.15).score == -1.0


def test_window_inside_probation_is_neither_tp_nor_fn():
    ts = stamps(100)
    sw = sweep_rows(ts, detections(100), windows_at(ts, (2, 5)), "f", 0.15)
    assert sw.n_windows == 0
    assert score_detections([sw], 0.5, unit_cost()).score == 0.0
    # NAB still counts it in the perfect score (label-file windows).
    assert perfect_score([sw], STANDARD) == 1.0


def test_profiles_scale_the_costs():
    ts = stamps(100)
    missed = sweep_rows(ts, detections(100), windows_at(ts, (50, 59)), "f", 0.0)
    assert score_detections([missed], 0.5, "reward_low_fn").score == -2.0
    fp = sweep_rows(ts, detections(100, 10), [], "f", 0.0)
    assert score_detections([fp], 0.5, "reward_low_fp").score == pytest.approx(-0.22)
    assert score_detections([fp], 0.5, "standard").score == pytest.approx(-0.11)


def test_repeated_timestamps_use_first_occurrence_of_window_end():
    ts = pd.DatetimeIndex(list(stamps(10)) + list(stamps(10)[-1:]) + list(stamps(5, "2024-02-01")))
    windows = [(ts[4], ts[9])]
    sw = sweep_rows(ts, np.zeros(len(ts)), windows, "f", 0.0)
    assert sw.window_id.tolist()[:10] == [-1] * 4 + [0] * 6
    assert sw.window_id[10] == -1  # the repeat of the end timestamp is after the window


def test_unknown_window_end_is_an_error():
    ts = stamps(10)
    with pytest.raises(ValueError, match="window end"):
        sweep_rows(ts, np.zeros(10), [(ts[2], pd.Timestamp("2030-01-01"))], "f", 0.0)


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        sweep_rows(stamps(3), [0.0, np.nan, 0.0], [], "f")


# --- corpus, normalisation, threshold sweep -------------------------------------------


def make_files(rng: np.random.Generator, n_files: int = 4, n: int = 300):
    files = []
    for k in range(n_files):
        ts = stamps(n, f"2024-0{k + 1}-01")
        spans = [(120, 149)] if k % 2 == 0 else [(80, 99), (200, 229)]
        scores = np.round(rng.random(n), 2)
        files.append(sweep_rows(ts, scores, windows_at(ts, *spans), f"f{k}"))
    return files


def test_null_detector_normalises_to_zero_and_perfect_to_hundred():
    ts = stamps(300)
    wins = windows_at(ts, (120, 149), (200, 229))
    null = sweep_rows(ts, np.zeros(300), wins, "f")
    perfect = sweep_rows(ts, detections(300, 120, 200), wins, "f")
    for profile in PROFILES:
        assert score_corpus([null], 0.5, profile).normalized == 0.0
        assert score_corpus([perfect], 0.5, profile).normalized == pytest.approx(100.0)
        assert null_score([null], profile) == -2.0 * PROFILES[profile].fn_weight


def test_sweep_matches_direct_scoring_at_every_threshold():
    files = make_files(np.random.default_rng(1))
    for profile in PROFILES:
        for row in sweep_thresholds(files, profile)[::7]:
            direct = score_detections(files, row.threshold, profile)
            assert direct.score == pytest.approx(row.score)
            assert (direct.tp, direct.fp, direct.fn, direct.tn) == (row.tp, row.fp, row.fn, row.tn)


def nab_calc_score_by_threshold(files, cost):
    """Literal transcription of ``Sweeper.calcScoreByThreshold`` over concatenated files."""
    rows = []
    for f in files:
        for i in range(len(f.anomaly_scores)):
            if not f.scorable[i]:
                continue
            wid = int(f.window_id[i])
            name = None if wid < 0 else f"{f.name}|{wid}"
            value = f.tp_unit[i] * cost.tp_weight if name else f.fp_unit[i] * cost.fp_weight
            rows.append((float(f.anomaly_scores[i]), value, name))
    rows = sorted(rows, key=lambda r: r[0], reverse=True)
    parts = {"fp": 0.0}
    for _, _, name in rows:
        if name is not None:
            parts[name] = -cost.fn_weight
    out = []
    cur = 1.1
    for score, value, name in rows:
        if score != cur:
            out.append((cur, sum(parts.values())))
            cur = score
        if name is None:
            parts["fp"] += value
        else:
            parts[name] = max(parts[name], value)
    out.append((cur, sum(parts.values())))
    return out


def test_vectorised_sweep_equals_nab_literal_port():
    files = make_files(np.random.default_rng(7), n_files=3, n=250)
    for profile in PROFILES:
        ours = [(r.threshold, r.score) for r in sweep_thresholds(files, profile)]
        theirs = nab_calc_score_by_threshold(files, PROFILES[profile])
        assert len(ours) == len(theirs)
        for (t1, s1), (t2, s2) in zip(ours, theirs, strict=True):
            assert t1 == t2
            assert s1 == pytest.approx(s2, abs=1e-9)


def test_optimiser_takes_the_best_and_prefers_higher_threshold_on_ties():
    ts = stamps(100)
    scores = np.zeros(100)
    scores[50] = 0.9  # TP at the window start
    scores[60] = 0.8  # in the window, adds nothing
    scores[10] = 0.7  # FP
    sw = sweep_rows(ts, scores, windows_at(ts, (50, 69)), "f", 0.0)
    best = optimize_threshold([sw], "standard")
    assert best.threshold == 0.9
    assert best.score == pytest.approx(1.0)


def test_combining_folds_equals_scoring_them_together():
    files = make_files(np.random.default_rng(3))
    whole = score_corpus(files, 0.6, "standard")
    halves = [score_corpus(files[:2], 0.6, "standard"), score_corpus(files[2:], 0.6, "standard")]
    parts = combine(halves)
    assert isinstance(parts, CorpusScore)
    assert parts.raw == pytest.approx(whole.raw)
    assert parts.normalized == pytest.approx(whole.normalized)
    assert sum(whole.per_file.values()) == pytest.approx(whole.raw)


def test_window_labels_and_loading(tmp_path: Path):
    ts = stamps(10)
    path = tmp_path / "w.json"
    path.write_text(
        json.dumps({"a/b.csv": [[f"{ts[2]}.000000", f"{ts[4]}.000000"]], "a/c.csv": []})
    )
    windows = load_windows(path)
    assert windows["a/c.csv"] == []
    assert window_labels(ts, windows["a/b.csv"]).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]


# --- replay -----------------------------------------------------------------------------


class SpikeDetector(BaseDetector):
    """Alarms on values above ``level``: enough to exercise the replay plumbing."""

    name = "spike"

    def __init__(self, level: float = 5.0) -> None:
        self.level = level

    def fit(self, history: pd.Series) -> SpikeDetector:
        return self

    def score(self, window: pd.Series) -> DetectionResult:
        s = (window > self.level).astype(float) * 0.9
        return DetectionResult(s, [])


def write_corpus(root: Path, n_files: int = 4, n: int = 400) -> dict[str, list]:
    """A tiny NAB-layout corpus: one spike inside each file's window."""
    windows = {}
    for k in range(n_files):
        cat = "catA" if k % 2 == 0 else "catB"
        ts = stamps(n, f"2024-0{k + 1}-01")
        values = np.ones(n)
        values[250] = 10.0
        (root / "data" / cat).mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
            root / "data" / cat / f"f{k}.csv", index=False
        )
        windows[f"{cat}/f{k}.csv"] = [[f"{ts[240]}.000000", f"{ts[279]}.000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return windows


def test_replay_writes_nab_result_files(tmp_path: Path):
    write_corpus(tmp_path / "nab")
    corpus = load_corpus(tmp_path / "nab")
    assert [f.key for f in corpus] == ["catA/f0.csv", "catA/f2.csv", "catB/f1.csv", "catB/f3.csv"]
    results = replay(SpikeDetector(), corpus, out_dir=tmp_path / "out")
    path = tmp_path / "out" / "spike" / "catA" / "spike_f0.csv"
    df = pd.read_csv(path)
    assert list(df.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(df) == 400
    assert df["label"].sum() == 40
    assert df["anomaly_score"].max() == pytest.approx(0.9)
    again = write_result_file(tmp_path / "again", "spike", results[0])
    assert again.read_text() == path.read_text()
    parallel = replay(SpikeDetector(), corpus, n_jobs=2)
    assert all((a.scores == b.scores).all() for a, b in zip(parallel, results, strict=True))


def test_evaluate_fixed_and_held_out_threshold(tmp_path: Path):
    write_corpus(tmp_path / "nab")
    fixed = evaluate(SpikeDetector(), tmp_path / "nab", threshold=0.5)
    assert set(fixed) == {"standard", "reward_low_fp", "reward_low_fn"}
    # Each spike sits 10 rows into a 40-row window: NAB's reward for position -30/40.
    expected = 100 * (scaled_sigmoid(-0.75) / MAX_TP + 1) / 2
    assert fixed["standard"] == pytest.approx(expected, rel=1e-3)
    held = evaluate(
        SpikeDetector(), tmp_path / "nab", threshold=None, tune_files=["catA/f0.csv", "catB/f1.csv"]
    )
    assert held["standard"] == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="tune_files"):
        evaluate(SpikeDetector(), tmp_path / "nab", threshold=None)
    with pytest.raises(ValueError, match="overlap"):
        evaluate(
            SpikeDetector(),
            tmp_path / "nab",
            threshold=None,
            tune_files=["catA/f0.csv"],
            files=["catA/f0.csv"],
        )


def test_cross_validation_uses_the_other_fold(tmp_path: Path):
    write_corpus(tmp_path / "nab")
    corpus = load_corpus(tmp_path / "nab")
    folds = two_fold_split(corpus)
    assert folds == (["catA/f0.csv", "catB/f1.csv"], ["catA/f2.csv", "catB/f3.csv"])
    results = replay(SpikeDetector(), corpus)
    cv = cross_validate(results, folds)
    for i, fold in enumerate(folds):
        other = [r for r in results if r.file.key not in fold]
        tuned = optimize_threshold([r.sweep() for r in other], "standard").threshold
        assert cv.thresholds[i]["standard"] == tuned
    total = combine([cv.fold_scores[0]["standard"], cv.fold_scores[1]["standard"]])
    assert cv.combined["standard"].normalized == pytest.approx(total.normalized)
    at_05 = score_replayed(results, 0.5)["standard"]
    assert at_05.fp == 0
    assert isinstance(results[0], Replayed)


# --- the real data set ------------------------------------------------------------------


def nab_root() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    root = Path(os.environ.get("SELFHEAL_DATASETS", default)) / "nab"
    if not (root / "data").is_dir():
        pytest.skip(f"NAB data set not found at {root}")
    return root


def test_real_labels_line_up_with_rows():
    root = nab_root()
    corpus = load_corpus(root)
    assert len(corpus) == 28
    sweeps = [Replayed(f, np.zeros(len(f.values))).sweep() for f in corpus]
    assert sum(s.n_label_windows for s in sweeps) == 36
    assert sum(s.n_windows for s in sweeps) == 36  # no window falls inside probation
    assert null_score(sweeps, "standard") == -36.0
    assert perfect_score(sweeps, "reward_low_fn") == 36.0
    for f, s in zip(corpus, sweeps, strict=True):
        labels = window_labels(f.timestamps, f.windows)
        assert ((s.window_id >= 0).astype(int) == labels).all(), f.key
        assert math.isfinite(s.tp_unit.sum())
