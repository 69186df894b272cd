"""Streaming replay of a detector over a NAB-layout folder, and NAB scoring of the replay.

A NAB corpus is ``<root>/data/<category>/<file>.csv`` (``timestamp,value``) plus
``<root>/labels/combined_windows.json``. Each file is replayed the way a live detector would
see it: the detector is fitted on nothing (or a short prefix) and then scores the rest in one
``score`` call, which is allowed because detector scores are causal by contract. Rows stay in
file order and repeated timestamps are kept, so result files line up row for row with the
input, as NAB's own scorer requires.

Scores are the detector's own ``[0, 1]`` scores, whose alarm decision is ``score >= 0.5``; the
result files therefore score the same in the official NAB scorer with a fixed threshold of 0.5
as in :func:`evaluate` with ``threshold=0.5``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from tasks.backtest.nab import (
    PROFILES,
    CorpusScore,
    SweepRows,
    Window,
    combine,
    load_windows,
    optimize_threshold,
    score_corpus,
    sweep_rows,
    window_labels,
)
from tasks.detection.base import BaseDetector

PROFILE_KEYS: tuple[str, ...] = tuple(PROFILES)


@dataclass(frozen=True)
class NabFile:
    """One data file: ``key`` is its path relative to ``data/`` (the label-file key)."""

    key: str
    timestamps: pd.DatetimeIndex
    values: np.ndarray
    windows: tuple[Window, ...]

    @property
    def category(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def series(self) -> pd.Series:
        return pd.Series(self.values, index=self.timestamps, name="value")


@dataclass(frozen=True)
class Replayed:
    """A file and the anomaly scores a detector gave its rows."""

    file: NabFile
    scores: np.ndarray

    def sweep(self) -> SweepRows:
        return sweep_rows(self.file.timestamps, self.scores, self.file.windows, self.file.key)


def resolve_paths(root: str | Path, windows_path: str | Path | None = None) -> tuple[Path, Path]:
    """Accept either the data set root (with ``data/`` and ``labels/``) or the data folder."""
    root = Path(root)
    data_dir = root / "data" if (root / "data").is_dir() else root
    if windows_path is None:
        base = root if (root / "data").is_dir() else root.parent
        windows_path = base / "labels" / "combined_windows.json"
    return data_dir, Path(windows_path)


def load_corpus(
    root: str | Path,
    windows_path: str | Path | None = None,
    files: Sequence[str] | None = None,
) -> list[NabFile]:
    """Read every ``<category>/<file>.csv`` (or only ``files``), sorted by key.

    Files missing from the label file get no window, like NAB's artificialNoAnomaly ones.
    """
    data_dir, wpath = resolve_paths(root, windows_path)
    windows = load_windows(wpath) if wpath.exists() else {}
    keys = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))
    if files is not None:
        wanted = set(files)
        missing = wanted - set(keys)
        if missing:
            raise FileNotFoundError(f"not in {data_dir}: {sorted(missing)}")
        keys = [k for k in keys if k in wanted]
    out = []
    for key in keys:
        df = pd.read_csv(data_dir / key)
        out.append(
            NabFile(
                key=key,
                timestamps=pd.DatetimeIndex(pd.to_datetime(df["timestamp"])),
                values=pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float),
                windows=tuple(windows.get(key, [])),
            )
        )
    return out


def replay_file(detector: BaseDetector, file: NabFile, fit_rows: int = 0) -> np.ndarray:
    """Fit a fresh clone on the first ``fit_rows`` rows, score the rest causally.

    Rows used for fitting get score 0 (NAB ignores them anyway when ``fit_rows`` stays inside
    the probationary period). Scores are clipped to [0, 1]; NaN becomes 0.
    """
    det = clone(detector)
    series = file.series()
    det.fit(series.iloc[:fit_rows])
    result = det.score(series.iloc[fit_rows:])
    scores = np.asarray(result.scores, dtype=float)
    if len(scores) != len(series) - fit_rows:
        raise ValueError(f"{det.name} returned {len(scores)} scores for {file.key}")
    scores = np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)
    return np.concatenate([np.zeros(fit_rows), scores])


def _replay_one(args: tuple[BaseDetector, NabFile, int]) -> Replayed:
    detector, file, fit_rows = args
    return Replayed(file, replay_file(detector, file, fit_rows))


def replay(
    detector: BaseDetector,
    files: Sequence[NabFile],
    *,
    fit_rows: int = 0,
    out_dir: str | Path | None = None,
    n_jobs: int = 1,
) -> list[Replayed]:
    """Replay ``detector`` over ``files``; optionally write NAB result files under ``out_dir``."""
    jobs = [(detector, f, fit_rows) for f in files]
    if n_jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            done = list(pool.map(_replay_one, jobs))
    else:
        done = [_replay_one(j) for j in jobs]
    if out_dir is not None:
        for r in done:
            write_result_file(out_dir, detector.name, r)
    return done


def write_result_file(out_dir: str | Path, detector_name: str, result: Replayed) -> Path:
    """Write ``<out>/<detector>/<category>/<detector>_<file>.csv`` in NAB's result format."""
    f = result.file
    path = Path(out_dir) / detector_name / f.category / f"{detector_name}_{f.filename}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "timestamp": f.timestamps.strftime("%Y-%m-%d %H:%M:%S"),
            "value": f.values,
            "anomaly_score": result.scores,
            "label": window_labels(f.timestamps, f.windows),
        }
    ).to_csv(path, index=False)
    return path


def score_replayed(
    results: Sequence[Replayed], thresholds: float | Mapping[str, float]
) -> dict[str, CorpusScore]:
    """Score replayed files for every profile at a fixed threshold (one, or one per profile)."""
    sweeps = [r.sweep() for r in results]
    out = {}
    for key in PROFILE_KEYS:
        t = thresholds if isinstance(thresholds, float | int) else thresholds[key]
        out[key] = score_corpus(sweeps, float(t), key)
    return out


def tune_thresholds(results: Sequence[Replayed]) -> dict[str, float]:
    """NAB's optimiser on these files: the best threshold for each profile."""
    sweeps = [r.sweep() for r in results]
    return {key: optimize_threshold(sweeps, key).threshold for key in PROFILE_KEYS}


def two_fold_split(files: Sequence[NabFile]) -> tuple[list[str], list[str]]:
    """Deterministic split by file, alternating within each category (sorted by key).

    Alternating inside categories keeps both halves alike (each gets anomalous and clean files)
    without looking at the labels beyond the folder a file sits in.
    """
    a: list[str] = []
    b: list[str] = []
    by_cat: dict[str, list[str]] = {}
    for f in sorted(files, key=lambda f: f.key):
        by_cat.setdefault(f.category, []).append(f.key)
    flip = 0
    for keys in by_cat.values():
        for k in keys:
            (a if flip % 2 == 0 else b).append(k)
            flip += 1
    return a, b


@dataclass(frozen=True)
class CrossValidation:
    """Per fold: thresholds tuned on the other fold and the fold's score with them held fixed."""

    folds: tuple[tuple[str, ...], ...]
    thresholds: tuple[dict[str, float], ...]
    fold_scores: tuple[dict[str, CorpusScore], ...]
    combined: dict[str, CorpusScore]


def cross_validate(results: Sequence[Replayed], folds: Sequence[Sequence[str]]) -> CrossValidation:
    """Tune on all folds but one, score that one; combine the raw scores before normalising."""
    by_key = {r.file.key: r for r in results}
    thresholds = []
    fold_scores = []
    for i, fold in enumerate(folds):
        train = [by_key[k] for j, other in enumerate(folds) if j != i for k in other]
        test = [by_key[k] for k in fold]
        t = tune_thresholds(train)
        thresholds.append(t)
        fold_scores.append(score_replayed(test, t))
    combined = {key: combine([fs[key] for fs in fold_scores]) for key in PROFILE_KEYS}
    return CrossValidation(
        folds=tuple(tuple(f) for f in folds),
        thresholds=tuple(thresholds),
        fold_scores=tuple(fold_scores),
        combined=combined,
    )


def evaluate(
    detector: BaseDetector,
    root: str | Path,
    windows_path: str | Path | None = None,
    *,
    threshold: float | None = 0.5,
    tune_files: Sequence[str] | None = None,
    files: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    n_jobs: int = 1,
) -> dict[str, float]:
    """NAB normalised scores ``{"standard", "reward_low_fp", "reward_low_fn"}`` of a detector.

    With a ``threshold`` it is used for every profile (0.5 = the detector's own alarm
    decision). With ``threshold=None`` NAB's optimiser picks one per profile on ``tune_files``
    and it is then held fixed on ``files`` (default: every other file), so the score is an
    honest held-out number.
    """
    corpus = load_corpus(root, windows_path)
    keys = [f.key for f in corpus]
    if threshold is None:
        if not tune_files:
            raise ValueError("threshold=None needs tune_files to optimise the threshold on")
        tune = set(tune_files)
        eval_keys = list(files) if files is not None else [k for k in keys if k not in tune]
        if tune & set(eval_keys):
            raise ValueError("tune_files and files overlap: the score would not be held out")
    else:
        tune = set()
        eval_keys = list(files) if files is not None else keys
    wanted = tune | set(eval_keys)
    done = replay(detector, [f for f in corpus if f.key in wanted], out_dir=out_dir, n_jobs=n_jobs)
    by_key = {r.file.key: r for r in done}
    test = [by_key[k] for k in eval_keys]
    if threshold is None:
        thresholds: float | dict[str, float] = tune_thresholds([by_key[k] for k in tune])
    else:
        thresholds = float(threshold)
    scored = score_replayed(test, thresholds)
    return {key: s.normalized for key, s in scored.items()}


# -- out-of-sample evaluation: every choice made without the scored files ----------------------

_FILE_ID = re.compile(r"_[0-9a-f]{6}$")


def series_family(key: str) -> str:
    """The family a NAB file belongs to, from its path alone (no label is read).

    Artificial files form one family per folder; a CloudWatch file's family is its metric
    kind, the file name without the trailing instance id (``ec2_cpu_utilization_24ae8d`` →
    ``realAWSCloudwatch/ec2_cpu_utilization``). Files of one family are alike (same metric,
    same generator), so holding out a whole family is stricter than holding out one file.
    """
    category, _, name = key.rpartition("/")
    if category.startswith("artificial"):
        return category
    stem = name.rsplit(".", 1)[0]
    return f"{category}/{_FILE_ID.sub('', stem)}"


def family_folds(files: Sequence[NabFile]) -> list[list[str]]:
    """Leave-one-family-out folds: one fold per :func:`series_family`, sorted."""
    folds: dict[str, list[str]] = {}
    for f in sorted(files, key=lambda f: f.key):
        folds.setdefault(series_family(f.key), []).append(f.key)
    return [folds[k] for k in sorted(folds)]


@dataclass(frozen=True)
class OutOfSample:
    """Scores of a selection made per fold on the other folds only, at threshold 0.5."""

    combined: dict[str, CorpusScore]
    chosen: tuple[str, ...]  # the candidate chosen for each fold, in fold order
    folds: tuple[tuple[str, ...], ...]


def select_out_of_sample(
    candidates: Mapping[str, Sequence[Replayed]],
    folds: Sequence[Sequence[str]],
    *,
    criterion: str = "standard",
    threshold: float = 0.5,
) -> OutOfSample:
    """Nested evaluation of "pick the best candidate, then alarm at ``threshold``".

    ``candidates`` maps a name (a detector and its parameters: everything that decides the
    scores, calibration included) to its replay of every file. For each fold the candidate
    with the best ``criterion`` score on all *other* folds is chosen (ties: the earlier
    candidate, so list the simpler ones first) and its replay of the fold is scored at
    ``threshold`` for every profile. Raw fold scores are added and normalised once over the
    corpus, as NAB does for totals. Nothing about a scored file is used to score it.
    """
    names = list(candidates)
    if not names:
        raise ValueError("no candidate to select from")
    by_name = {n: {r.file.key: r for r in candidates[n]} for n in names}
    sweeps = {n: {k: r.sweep() for k, r in by_name[n].items()} for n in names}
    parts: dict[str, list[CorpusScore]] = {key: [] for key in PROFILE_KEYS}
    chosen = []
    for i, fold in enumerate(folds):
        train = [k for j, other in enumerate(folds) if j != i for k in other]
        best_name, best = names[0], -np.inf
        for n in names:
            s = score_corpus([sweeps[n][k] for k in train], threshold, criterion)
            value = s.raw - s.null  # same files for every candidate: raw order = normalised
            if value > best + 1e-9:
                best_name, best = n, value
        chosen.append(best_name)
        test = [by_name[best_name][k] for k in fold]
        for key, s in score_replayed(test, threshold).items():
            parts[key].append(s)
    return OutOfSample(
        combined={key: combine(p) for key, p in parts.items()},
        chosen=tuple(chosen),
        folds=tuple(tuple(f) for f in folds),
    )


def select_in_sample(
    candidates: Mapping[str, Sequence[Replayed]], *, criterion: str = "standard"
) -> str:
    """The candidate with the best ``criterion`` score at 0.5 on every file (in sample)."""
    best_name, best = "", -np.inf
    for n, results in candidates.items():
        s = score_replayed(results, 0.5)[criterion]
        if s.raw - s.null > best + 1e-9:
            best_name, best = n, s.raw - s.null
    return best_name
