"""The Numenta Anomaly Benchmark (NAB v1.1) scorer, ported from ``nab/sweeper.py``.

Why a port and not a re-derivation: NAB numbers are only comparable with the published
scoreboard if every quirk is kept. The ones that matter:

* The probationary period is ``min(floor(0.15 * rows), 0.15 * 5000)`` rows; those rows are
  dropped before scoring, and a window with no row after probation is neither a TP nor a FN.
* A row inside a window scores ``scaledSigmoid(-(right - i + 1) / width) * tpWeight / maxTP``
  (``maxTP = scaledSigmoid(-1)``), so a detection on the first row of a window is worth exactly
  ``tpWeight`` and one on the last row ``~0.1 * tpWeight``. Only the best (earliest)
  detection of a window counts; a missed window costs ``fnWeight``.
* Every detected row outside a window is a false positive worth
  ``scaledSigmoid(|prevRight - i| / (prevWidth - 1)) * fpWeight`` when a window precedes it
  (nearly free just after the window) and ``-fpWeight`` when none does.
* Windows are found by *timestamp equality*, entering at the first row equal to the window
  start and leaving at the first row equal to its end; ``right`` is the first row that carries
  the end timestamp (``list.index``), which matters for files with repeated timestamps.
* A detection is ``anomaly_score >= threshold``. The optimiser sweeps every distinct score of
  the whole corpus (plus 1.1 = "nothing detected") and keeps the best; ties go to the higher
  threshold, as Python's stable sort in NAB does.
* The reported score is ``100 * (raw - null) / (perfect - null)`` over the corpus, where the
  null detector detects nothing (``null = -fnWeight * windows``) and ``perfect = tpWeight *
  windows in the label file``.

All functions are pure; per-file geometry (:class:`SweepRows`) is computed once and reused for
every threshold and profile, which makes threshold optimisation a single vectorised sweep.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

PROBATION_PERCENT = 0.15
# NAB starts its sweep above any score so the first row is "nothing detected".
START_THRESHOLD = 1.1

Window = tuple[pd.Timestamp, pd.Timestamp]


@dataclass(frozen=True)
class CostMatrix:
    """One NAB application profile (``config/profiles.json``)."""

    nab_name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: Mapping[str, CostMatrix] = MappingProxyType(
    {
        "standard": CostMatrix("standard", 1.0, 0.11, 1.0),
        "reward_low_fp": CostMatrix("reward_low_FP_rate", 1.0, 0.22, 1.0),
        "reward_low_fn": CostMatrix("reward_low_FN_rate", 1.0, 0.11, 2.0),
    }
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's reward curve: ~+1 at the left edge of a window, 0 at its right edge, -1 far after."""
    if relative_position > 3.0:
        return -1.0
    return 2.0 * sigmoid(-5.0 * relative_position) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_length(n_rows: int, probation_percent: float = PROBATION_PERCENT) -> int:
    """Rows ignored at the start of a file (``nab.util.getProbationPeriod``)."""
    return int(min(math.floor(probation_percent * n_rows), probation_percent * 5000))


def load_windows(path: str | Path) -> dict[str, list[Window]]:
    """Read ``combined_windows.json``: ``{"category/file.csv": [[start, end], ...]}``."""
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    return {
        key: [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in windows]
        for key, windows in raw.items()
    }


def window_labels(
    timestamps: Sequence[pd.Timestamp] | pd.Index, windows: Sequence[Window]
) -> np.ndarray:
    """1 for rows with ``start <= ts <= end`` of some window (NAB's labeler), else 0."""
    ts = pd.DatetimeIndex(timestamps)
    labels = np.zeros(len(ts), dtype=np.int8)
    for start, end in windows:
        labels[(ts >= start) & (ts <= end)] = 1
    return labels


def _ns(ts: pd.Timestamp | str) -> int:
    """Nanoseconds since the epoch whatever the resolution pandas parsed the timestamp with."""
    return int(pd.Timestamp(ts).as_unit("ns").value)


@dataclass(frozen=True)
class SweepRows:
    """``Sweeper.calcSweepScore`` for one file, kept profile-independent.

    ``tp_unit`` is ``scaledSigmoid(position) / maxTP`` for rows inside a window and
    ``fp_unit`` the unweighted false-positive value for rows outside; a profile multiplies them
    by its weights. ``window_id`` is the file-local window number or -1 outside windows;
    ``scorable`` is False during probation.
    """

    name: str
    anomaly_scores: np.ndarray
    window_id: np.ndarray
    scorable: np.ndarray
    tp_unit: np.ndarray
    fp_unit: np.ndarray
    n_label_windows: int

    @property
    def n_windows(self) -> int:
        """Windows with at least one row after probation: the ones NAB can count as FN."""
        ids = self.window_id[self.scorable]
        return int(np.unique(ids[ids >= 0]).size)


def sweep_rows(
    timestamps: Sequence[pd.Timestamp] | pd.Index,
    anomaly_scores: Sequence[float] | np.ndarray,
    windows: Sequence[Window],
    name: str = "",
    probation_percent: float = PROBATION_PERCENT,
) -> SweepRows:
    """Port of ``Sweeper.calcSweepScore``: the row walk is kept literal to keep its quirks."""
    ts = pd.DatetimeIndex(timestamps).as_unit("ns").asi8
    scores = np.asarray(anomaly_scores, dtype=float)
    if len(ts) != len(scores):
        raise ValueError(f"{name}: {len(ts)} timestamps but {len(scores)} anomaly scores")
    if np.isnan(scores).any():
        raise ValueError(f"{name}: anomaly scores contain NaN")
    n = len(ts)
    first_index: dict[int, int] = {}
    for i, t in enumerate(ts.tolist()):
        first_index.setdefault(t, i)
    limits = [(_ns(a), _ns(b)) for a, b in windows]

    window_id = np.full(n, -1, dtype=np.int64)
    tp_unit = np.zeros(n)
    fp_unit = np.zeros(n)
    pending = 0
    cur: tuple[int, int] | None = None
    cur_id = -1
    cur_right = cur_width = 0.0
    prev_right: float | None = None
    prev_width = 0.0
    for i, t in enumerate(ts.tolist()):
        if pending < len(limits) and t == limits[pending][0]:
            cur = limits[pending]
            cur_id = pending
            pending += 1
            if cur[1] not in first_index:
                raise ValueError(
                    f"{name}: window end {pd.Timestamp(cur[1], unit='ns')} is not a row"
                )
            cur_right = float(first_index[cur[1]])
            cur_width = cur_right - first_index[cur[0]] + 1
        if cur is not None:
            window_id[i] = cur_id
            tp_unit[i] = scaled_sigmoid(-(cur_right - i + 1) / cur_width) / MAX_TP
        elif prev_right is None:
            fp_unit[i] = -1.0
        elif prev_width <= 1:
            # NAB divides by zero here (a one-row window); treat the FP as far away.
            fp_unit[i] = -1.0
        else:
            fp_unit[i] = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1))
        if cur is not None and t == cur[1]:
            prev_right, prev_width = float(i), cur_width
            cur = None
            cur_id = -1
    scorable = np.arange(n) >= probation_length(n, probation_percent)
    return SweepRows(name, scores, window_id, scorable, tp_unit, fp_unit, len(limits))


@dataclass(frozen=True)
class ThresholdScore:
    """Raw NAB score and row counts when ``anomaly_score >= threshold`` is a detection."""

    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.tn + self.fp + self.fn


def _profile(profile: str | CostMatrix) -> CostMatrix:
    if isinstance(profile, CostMatrix):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown NAB profile {profile!r} (expected {sorted(PROFILES)})") from None


@dataclass(frozen=True)
class _Stacked:
    """Scorable rows of several files, with windows renumbered to be unique."""

    scores: np.ndarray
    gid: np.ndarray
    value: np.ndarray
    n_windows: int


def _stack(files: Sequence[SweepRows], cost: CostMatrix) -> _Stacked:
    scores, gids, values = [], [], []
    offset = 0
    n_windows = 0
    for f in files:
        m = f.scorable
        wid = f.window_id[m]
        inside = wid >= 0
        scores.append(f.anomaly_scores[m])
        gids.append(np.where(inside, wid + offset, -1))
        values.append(
            np.where(inside, f.tp_unit[m] * cost.tp_weight, f.fp_unit[m] * cost.fp_weight)
        )
        offset += max(f.n_label_windows, 1)
        n_windows += f.n_windows
    if not scores:
        empty = np.zeros(0)
        return _Stacked(empty, np.zeros(0, dtype=np.int64), empty, 0)
    return _Stacked(np.concatenate(scores), np.concatenate(gids), np.concatenate(values), n_windows)


def sweep_thresholds(files: Sequence[SweepRows], profile: str | CostMatrix) -> list[ThresholdScore]:
    """Port of ``Sweeper.calcScoreByThreshold`` over all files at once (vectorised).

    Returns one row per distinct anomaly score, highest threshold first, starting with 1.1
    (nothing detected); each row scores the detections ``anomaly_score >= threshold``.
    """
    cost = _profile(profile)
    st = _stack(files, cost)
    order = np.argsort(-st.scores, kind="stable")
    s = st.scores[order]
    gid = st.gid[order]
    val = st.value[order]
    inside = gid >= 0
    delta = np.where(inside, 0.0, val)
    # Each window contributes max(-fnWeight, best detected row): add the increments of its
    # running maximum in threshold order.
    if inside.any():
        pos = np.flatnonzero(inside)
        run = pd.Series(val[pos]).groupby(gid[pos]).cummax().to_numpy()
        run = np.maximum(run, -cost.fn_weight)
        prev = pd.Series(run).groupby(gid[pos]).shift(1).fillna(-cost.fn_weight).to_numpy()
        delta[pos] = run - prev
    base = -cost.fn_weight * st.n_windows
    total = base + np.cumsum(delta)
    tp_cum = np.cumsum(inside)
    fp_cum = np.cumsum(~inside)
    n_in = int(inside.sum())
    n_out = len(s) - n_in
    rows = [ThresholdScore(START_THRESHOLD, base, 0, n_out, 0, n_in)]
    if len(s):
        last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
        for k in last.tolist():
            tp, fp = int(tp_cum[k]), int(fp_cum[k])
            rows.append(ThresholdScore(float(s[k]), float(total[k]), tp, n_out - fp, fp, n_in - tp))
    return rows


def score_detections(
    files: Sequence[SweepRows], threshold: float, profile: str | CostMatrix
) -> ThresholdScore:
    """Raw NAB score of the corpus when rows with ``anomaly_score >= threshold`` are detections.

    Equals summing ``Sweeper.scoreDataSet`` over the files (NAB's ``scoreCorpus``).
    """
    cost = _profile(profile)
    st = _stack(files, cost)
    hit = st.scores >= threshold
    inside = st.gid >= 0
    fp_score = float(st.value[hit & ~inside].sum())
    tp_score = 0.0
    detected = np.unique(st.gid[hit & inside])
    for g in detected.tolist():
        tp_score += max(-cost.fn_weight, float(st.value[hit & (st.gid == g)].max()))
    fn_score = -cost.fn_weight * (st.n_windows - len(detected))
    tp = int((hit & inside).sum())
    fp = int((hit & ~inside).sum())
    return ThresholdScore(
        float(threshold),
        tp_score + fp_score + fn_score,
        tp,
        int((~hit & ~inside).sum()),
        fp,
        int((~hit & inside).sum()),
    )


def score_file(
    timestamps: Sequence[pd.Timestamp] | pd.Index,
    detections: Sequence[bool] | np.ndarray,
    windows: Sequence[Window],
    profile: str | CostMatrix = "standard",
    probation_percent: float = PROBATION_PERCENT,
) -> ThresholdScore:
    """Raw NAB score of one file's binary detections (True/1 = the detector alarmed)."""
    flags = np.asarray(detections, dtype=float)
    return score_detections(
        [sweep_rows(timestamps, flags, windows, "file", probation_percent)], 0.5, profile
    )


def optimize_threshold(files: Sequence[SweepRows], profile: str | CostMatrix) -> ThresholdScore:
    """NAB's ``optimizeThreshold``: the best row of the corpus sweep (ties: higher threshold)."""
    rows = sweep_thresholds(files, profile)
    best = int(np.argmax([r.score for r in rows]))
    return rows[best]


@dataclass(frozen=True)
class CorpusScore:
    """A corpus scored for one profile at one threshold, with NAB's normalisation."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int
    tn: int
    per_file: dict[str, float] = field(default_factory=dict)

    @property
    def normalized(self) -> float:
        """``100 * (raw - null) / (perfect - null)``; NaN when the corpus has no window."""
        span = self.perfect - self.null
        return 100.0 * (self.raw - self.null) / span if span else float("nan")


def null_score(files: Sequence[SweepRows], profile: str | CostMatrix) -> float:
    """Raw score of a detector that never fires: every countable window is a miss."""
    return -_profile(profile).fn_weight * sum(f.n_windows for f in files)


def perfect_score(files: Sequence[SweepRows], profile: str | CostMatrix) -> float:
    """NAB's perfect score: ``tpWeight`` times the windows in the label file."""
    return _profile(profile).tp_weight * sum(f.n_label_windows for f in files)


def score_corpus(
    files: Sequence[SweepRows], threshold: float, profile: str | CostMatrix
) -> CorpusScore:
    """Score every file at one threshold and normalise over the corpus."""
    cost = _profile(profile)
    per_file = {f.name: score_detections([f], threshold, cost).score for f in files}
    total = score_detections(files, threshold, cost)
    return CorpusScore(
        profile=cost.nab_name,
        threshold=float(threshold),
        raw=total.score,
        null=null_score(files, cost),
        perfect=perfect_score(files, cost),
        tp=total.tp,
        fp=total.fp,
        fn=total.fn,
        tn=total.tn,
        per_file=per_file,
    )


def combine(parts: Sequence[CorpusScore]) -> CorpusScore:
    """Add corpus scores of disjoint file sets (e.g. the two folds of a cross-validation).

    NAB normalises the *sum* of raw scores, so folds are combined before normalising; the
    threshold of the result is NaN when the parts used different thresholds.
    """
    if not parts:
        raise ValueError("nothing to combine")
    thresholds = {p.threshold for p in parts}
    per_file: dict[str, float] = {}
    for p in parts:
        per_file.update(p.per_file)
    return CorpusScore(
        profile=parts[0].profile,
        threshold=thresholds.pop() if len(thresholds) == 1 else float("nan"),
        raw=sum(p.raw for p in parts),
        null=sum(p.null for p in parts),
        perfect=sum(p.perfect for p in parts),
        tp=sum(p.tp for p in parts),
        fp=sum(p.fp for p in parts),
        fn=sum(p.fn for p in parts),
        tn=sum(p.tn for p in parts),
        per_file=per_file,
    )
