"""Detector tuning: an Optuna NSGA-II study per detector family over its constructor parameters.

Why NSGA-II and two objectives: the NAB standard score already trades misses for false alarms
with fixed weights, but an operator cares about the false-alarm *rate* in its own right (pages
per day), and that trade-off moves with the deployment. So the study keeps the Pareto front of
(NAB standard score ↑, false alarms per day ↓), and :func:`pick` takes the best score on it;
the flow can pick differently from the same front. Detection delay is a *constraint*, not a
third objective: a detector that is late beyond ``max_delay_s`` is useless whatever its
score, while below the limit earlier is already rewarded by NAB's scoring curve. It reaches
NSGA-II through ``Trial.set_constraint`` (Optuna 5 deprecated ``constraints_func``; the sampler
reads the same constrained dominance from the stored constraint).

Where it searches: by default the trust region around the running configuration
(``trust=1.5``: each numeric parameter within a factor 1.5, see :func:`detector_space`),
not the family's global space. A night's labels hold few incidents, and a free search fits
them: on NAB, tuning one half of the files in the global space lost 5-30 points on the other
half; in the trust region it lost less and sometimes gained (``bench/tune.py`` reports both
directions). ``trust=None`` searches globally.

What is tuned is what runs: every trial builds the detector from the registry with the decoded
constructor parameters, replays it with the backtester (:func:`tasks.backtest.replay.replay_file`)
and counts a detection where the detector's *own* alarm decision fires (score ≥ 0.5), not at a
threshold optimised afterwards. The objectives:

``standard``
    NAB-normalised standard-profile score of the files at threshold 0.5 (0 = never fires,
    100 = perfect). With no window in the files (only negative evidence) it is 0 for everyone.
``false_alarms_per_day``
    Alarming rows outside every window, divided by the days of scored data (rows after NAB's
    probationary period). A row NAB would score as an almost free "late" detection just after
    a window still counts here: it is still a page.
``mean_delay_s``
    Over the windows that got a detection: time from the window's start to its first alarm.
    Missed windows are not in the mean (the standard score charges them); with no detected
    window the mean is 0.

Studies: one per (detector family, search-space version, data set), named by
:func:`detector_study_name`. The objective values only mean something for the data they were
computed on, so a study is tied to a *lineage* of data (:func:`corpus_lineage`): the same
series, whose values agree wherever the old and the new data overlap in time. Data that grew
(the next night's window: a day more, the oldest day dropped, new series added) continues
the study: trials accumulate and NSGA-II resumes from the stored generations, the old trials
acting as the warm start. Data that is truly different (no series in common, or the same
names with other values at the same times) is refused. A nightly run opens a study per
night's tag by default and warm-starts it with the running settings and ``seed_params``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState

from tasks.backtest.nab import (
    SweepRows,
    null_score,
    perfect_score,
    score_detections,
    sweep_rows,
)
from tasks.backtest.replay import NabFile, replay_file
from tasks.detection.base import BaseDetector
from tasks.detection.registry import DetectorRegistry, default_registry

ALARM = 0.5
STUDY_PREFIX = "selfheal-tune-detector-"
# Bumped whenever a search space changes meaning: old trials then live in old studies.
SPACE_VERSION = 2  # 2: spans in seconds (1: minutes and days)
# Replays of fewer rows than this per trial run in-process: a pool's pickling costs more.
PARALLEL_MIN_ROWS = 300_000
_LINEAGE_ATTR = "corpus_lineage"
# Points per series kept to recognise the same data later (JSON in the study's attributes).
LINEAGE_POINTS = 16
_SPACE_ATTR = "space"
_DAY_S = 86_400.0


# -- spans and search spaces -------------------------------------------------------------------


def span_seconds(span: str | pd.Timedelta) -> float:
    """Seconds in a span such as ``"10s"``, ``"30min"``, ``"2h"`` or ``"14D"``.

    Plain integers are point counts whose duration depends on the sampling interval, so they
    cannot be placed in a duration-based space: they raise ``ValueError``.
    """
    if isinstance(span, int | np.integer) and not isinstance(span, bool):
        raise ValueError(f"span {span!r} is a number of points, not a duration")
    return pd.Timedelta(span).total_seconds()


def seconds_span(seconds: int) -> str:
    """The shortest readable span for whole seconds: ``86400 → "1D"``, ``300 → "5min"``."""
    s = int(seconds)
    for unit, size in (("D", 86_400), ("h", 3_600), ("min", 60)):
        if s > 0 and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


@dataclass(frozen=True)
class _Family:
    """How one detector family maps to a search space and back.

    ``tails`` are quantile-like parameters whose trust region is taken on ``1 - value`` (a
    99.9th percentile moves to 99.85-99.93, not to 66-100).
    """

    space: Callable[[], dict[str, BaseDistribution]]
    encode: Callable[[Mapping[str, Any]], dict[str, Any]]
    decode: Callable[[Mapping[str, Any]], dict[str, Any]]
    tails: frozenset[str] = frozenset()


# Spans are whole seconds, so one space holds the cycle's configuration (an hour of history
# smoothed over 1 and 5 minutes, the demo's 10 and 30 seconds) as well as NAB's (two weeks,
# 30 min and 2 h): what is tuned round-trips to what runs. The bounds are wide on purpose;
# the trust region around the running configuration (:func:`detector_space`) is what keeps
# a night's search at the running configuration's scale.
_MINUTE, _HOUR, _DAY = 60, 3_600, 86_400


def _default_space() -> dict[str, BaseDistribution]:
    return {
        "history_s": IntDistribution(5 * _MINUTE, 28 * _DAY),
        "quantile": FloatDistribution(0.9, 0.9999),
        "margin": FloatDistribution(0.02, 4.0),
        "smooth_short_s": IntDistribution(0, 3 * _HOUR),
        "smooth_long_s": IntDistribution(0, 12 * _HOUR),
        "season": CategoricalDistribution(("1D", "off")),
        "season_min_autocorr": FloatDistribution(0.2, 0.95),
        "season_window_s": IntDistribution(_HOUR, 14 * _DAY),
        "refractory_s": IntDistribution(0, _DAY),
        "min_points": IntDistribution(5, 1000),
    }


def _default_encode(kw: Mapping[str, Any]) -> dict[str, Any]:
    spans = sorted(round(span_seconds(s)) for s in kw["smoothing"])
    season = kw["season"]
    return {
        "history_s": round(span_seconds(kw["history"])),
        "quantile": float(kw["quantile"]),
        "margin": float(kw["margin"]),
        "smooth_short_s": spans[0] if spans else 0,
        "smooth_long_s": spans[1] if len(spans) > 1 else 0,
        "season": "off" if season is None else seconds_span(round(span_seconds(season))),
        "season_min_autocorr": float(kw["season_min_autocorr"]),
        "season_window_s": round(span_seconds(kw["season_window"])),
        "refractory_s": round(span_seconds(kw["refractory"])),
        "min_points": int(kw["min_points"]),
    }


def _default_decode(v: Mapping[str, Any]) -> dict[str, Any]:
    spans = sorted({int(v["smooth_short_s"]), int(v["smooth_long_s"])} - {0})
    return {
        "history": seconds_span(int(v["history_s"])),
        "quantile": float(v["quantile"]),
        "margin": float(v["margin"]),
        "smoothing": tuple(seconds_span(m) for m in spans),
        "season": None if v["season"] == "off" else str(v["season"]),
        "season_min_autocorr": float(v["season_min_autocorr"]),
        "season_window": seconds_span(int(v["season_window_s"])),
        "refractory": seconds_span(int(v["refractory_s"])),
        "min_points": int(v["min_points"]),
    }


def _zscore_space() -> dict[str, BaseDistribution]:
    return {
        "window_s": IntDistribution(5 * _MINUTE, 3 * _DAY),
        "threshold": FloatDistribution(2.0, 20.0),
        "min_points": IntDistribution(5, 500),
        "refractory_s": IntDistribution(0, _DAY),
    }


def _zscore_encode(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "window_s": round(span_seconds(kw["window"])),
        "threshold": float(kw["threshold"]),
        "min_points": int(kw["min_points"]),
        "refractory_s": round(span_seconds(kw["refractory"])),
    }


def _zscore_decode(v: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "window": seconds_span(int(v["window_s"])),
        "threshold": float(v["threshold"]),
        "min_points": int(v["min_points"]),
        "refractory": seconds_span(int(v["refractory_s"])),
    }


FAMILIES: Mapping[str, _Family] = MappingProxyType(
    {
        "default": _Family(
            _default_space, _default_encode, _default_decode, frozenset({"quantile"})
        ),
        "zscore": _Family(_zscore_space, _zscore_encode, _zscore_decode),
    }
)


def _family(name: str) -> _Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(
            f"no search space for detector {name!r}; tunable: {', '.join(sorted(FAMILIES))}"
        ) from None


def _trust_bounds(
    value: float, dist: IntDistribution | FloatDistribution, factor: float, tail: bool
) -> tuple[float, float]:
    """``[value / factor, value * factor]`` (on ``1 - value`` for tails) within ``dist``."""
    if tail:
        t = 1.0 - value
        lo, hi = 1.0 - t * factor, 1.0 - t / factor
    elif value > 0:
        lo, hi = value / factor, value * factor
    else:  # an "off" value (0): allow switching it on at the small end of the range
        lo, hi = dist.low, dist.low + (dist.high - dist.low) * (factor - 1.0) / 10.0
    lo, hi = max(lo, dist.low), min(hi, dist.high)
    if lo >= hi:
        return dist.low, dist.high
    return lo, hi


def detector_space(
    name: str, around: Mapping[str, Any] | None = None, trust: float | None = None
) -> dict[str, BaseDistribution]:
    """The search space of a detector family: space parameter name → Optuna distribution.

    Space parameters are numeric stand-ins for the constructor's: spans are whole seconds
    (``refractory_s``, ``history_s``), the smoothing tuple is two spans where 0 means
    "absent", and ``season="off"`` means ``None``. :func:`decode_params` maps them back.

    With ``around`` (constructor parameters) and ``trust`` (a factor > 1) the space is the
    *trust region* around that configuration: each numeric parameter may move by at most that
    factor (on the tail ``1 - q`` for quantiles), within the family's global bounds. Why: with
    the few labelled incidents a night provides (NAB: ~18 windows per half) a free search
    overfits; on NAB, tuning one half in the global space lost 5-30 points on the other half,
    in a 1.5x trust region it mostly kept or gained (see ``bench/tune.py``). Nightly runs
    re-centre the region on what runs, so the configuration still moves, one step a night.
    """
    family = _family(name)
    space = family.space()
    if around is None or trust is None:
        return space
    if trust <= 1.0:
        raise ValueError("trust must be a factor > 1")
    centre = encode_params(name, around)
    out: dict[str, BaseDistribution] = {}
    for key, dist in space.items():
        if isinstance(dist, IntDistribution):
            lo, hi = _trust_bounds(centre[key], dist, trust, key in family.tails)
            low, high = math.floor(lo), math.ceil(hi)
            out[key] = IntDistribution(max(low, dist.low), min(high, dist.high))
        elif isinstance(dist, FloatDistribution):
            lo, hi = _trust_bounds(centre[key], dist, trust, key in family.tails)
            out[key] = FloatDistribution(lo, hi)
        else:
            out[key] = dist
    return out


def _constructor_defaults(name: str, registry: DetectorRegistry | None = None) -> dict[str, Any]:
    cls = (registry or default_registry()).get(name)
    return dict(cls().get_params(deep=False))


def _clip(value: Any, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return int(min(max(round(value), dist.low), dist.high))
    if isinstance(dist, FloatDistribution):
        return float(min(max(float(value), dist.low), dist.high))
    if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
        raise ValueError(f"{value!r} is not one of {dist.choices}")
    return value


def encode_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor parameters (missing ones at their defaults) → a point of the search space.

    Values outside the space are clipped to its bounds, and only the two shortest smoothing
    spans are kept, so ``decode_params(encode_params(p))`` equals ``p`` whenever ``p`` lies in
    the space (it does for the defaults).
    """
    kw = {**_constructor_defaults(name), **dict(params or {})}
    space = _family(name).space()
    encoded = _family(name).encode(kw)
    return {k: _clip(encoded[k], space[k]) for k in space}


def decode_params(
    name: str, values: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A point of the search space → constructor parameters, on top of ``base``.

    Constructor parameters the space does not cover (``max_points``, ``severity_window``…)
    keep their value from ``base`` or their default.
    """
    kw = {**_constructor_defaults(name), **dict(base or {})}
    missing = set(_family(name).space()) - set(values)
    full = {**encode_params(name, kw), **dict(values)} if missing else values
    kw.update(_family(name).decode(full))
    return kw


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def _from_json(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


# -- scoring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """A file with its NAB geometry computed once (the scores are swapped in per trial)."""

    file: NabFile
    geometry: SweepRows
    ts_ns: np.ndarray
    window_start_ns: np.ndarray
    days: float


def _prepare(files: Sequence[NabFile]) -> list[_Prepared]:
    out = []
    for f in files:
        geo = sweep_rows(f.timestamps, np.zeros(len(f.timestamps)), f.windows, f.key)
        mask = getattr(f, "scored", None)  # labelled series may leave unlabelled rows unscored
        if mask is not None:
            geo = replace(geo, scorable=geo.scorable & np.asarray(mask, dtype=bool))
        ts = pd.DatetimeIndex(f.timestamps).as_unit("ns").asi8
        starts = np.array([pd.Timestamp(a).as_unit("ns").value for a, _ in f.windows], np.int64)
        steps = np.diff(ts)
        step_s = float(np.median(steps[steps > 0])) / 1e9 if (steps > 0).any() else 0.0
        days = int(geo.scorable.sum()) * step_s / _DAY_S  # scored rows, not the span: masks
        out.append(_Prepared(f, geo, ts, starts, days))
    return out


def corpus_fingerprint(files: Sequence[NabFile]) -> str:
    """A short hash of the files' keys, rows, windows, scored masks and sampled values.

    Two runs over the same labelled data agree; new data or new labels give a new
    fingerprint, which is what a study must not silently mix.
    """
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.key):
        ts = pd.DatetimeIndex(f.timestamps).as_unit("ns").asi8
        h.update(f.key.encode())
        h.update(np.array([len(ts), ts[0] if len(ts) else 0, ts[-1] if len(ts) else 0]).tobytes())
        h.update(repr([(str(a), str(b)) for a, b in f.windows]).encode())
        mask = getattr(f, "scored", None)
        if mask is not None:
            h.update(np.packbits(np.asarray(mask, dtype=bool)).tobytes())
        h.update(np.nan_to_num(np.asarray(f.values, float)[:: max(len(ts) // 64, 1)]).tobytes())
    return h.hexdigest()[:12]


def _replay_chunk(args: tuple[BaseDetector, list[NabFile]]) -> list[np.ndarray]:
    detector, files = args
    return [replay_file(detector, f) for f in files]


class _Deadline(Exception):
    """The time budget ran out in the middle of a trial's replay."""


def _replay_scores(
    detector: BaseDetector,
    prepared: Sequence[_Prepared],
    pool: ProcessPoolExecutor | None,
    deadline: float | None,
    workers: int = 1,
) -> list[np.ndarray]:
    """Scores of every file; in chunks on ``pool`` when given, checking ``deadline`` as the
    chunks (or, in-process, the files) complete."""
    files = [p.file for p in prepared]
    if pool is None or len(files) < 2:
        out = []
        for f in files:
            if deadline is not None and time.monotonic() > deadline:
                raise _Deadline
            out.append(replay_file(detector, f))
        return out
    n_chunks = min(len(files), 4 * max(workers, 1))
    chunks = [files[i::n_chunks] for i in range(n_chunks)]
    futures = {pool.submit(_replay_chunk, (detector, c)): c for c in chunks}
    by_key: dict[str, np.ndarray] = {}
    try:
        for fut in as_completed(futures):
            for f, s in zip(futures[fut], fut.result(), strict=True):
                by_key[f.key] = s
            if deadline is not None and time.monotonic() > deadline and len(by_key) < len(files):
                raise _Deadline
    finally:
        for fut in futures:
            fut.cancel()
    return [by_key[f.key] for f in files]


def _metrics(prepared: Sequence[_Prepared], scores: Sequence[np.ndarray]) -> dict[str, float]:
    sweeps = [replace(p.geometry, anomaly_scores=s) for p, s in zip(prepared, scores, strict=True)]
    raw = score_detections(sweeps, ALARM, "standard").score
    null, perfect = null_score(sweeps, "standard"), perfect_score(sweeps, "standard")
    standard = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    false_alarms = 0
    delays: list[float] = []
    windows = 0
    days = 0.0
    for p, s in zip(prepared, scores, strict=True):
        g = p.geometry
        alarm = (s >= ALARM) & g.scorable
        false_alarms += int((alarm & (g.window_id < 0)).sum())
        windows += g.n_windows
        days += p.days
        rows = np.flatnonzero(alarm & (g.window_id >= 0))
        if len(rows):
            ids, first = np.unique(g.window_id[rows], return_index=True)
            delay_ns = p.ts_ns[rows[first]] - p.window_start_ns[ids]
            delays.extend((delay_ns / 1e9).tolist())
    return {
        "standard": float(standard),
        "false_alarms_per_day": false_alarms / days if days > 0 else float(false_alarms),
        "mean_delay_s": float(np.mean(delays)) if delays else 0.0,
        "false_alarms": float(false_alarms),
        "detected_windows": float(len(delays)),
        "windows": float(windows),
        "days": float(days),
        "raw": float(raw),
        "null": float(null),
        "perfect": float(perfect),
    }


def _build(detector: str, params: Mapping[str, Any], registry: DetectorRegistry) -> BaseDetector:
    return registry.create(detector, params)


def score_params(
    detector: str,
    params: Mapping[str, Any] | None,
    files: Sequence[NabFile],
    *,
    n_jobs: int = 1,
    registry: DetectorRegistry | None = None,
) -> dict[str, float]:
    """The tuning objectives of one parameter set on labelled files (no study involved).

    Returns ``standard``, ``false_alarms_per_day``, ``mean_delay_s`` plus the counts behind
    them (``false_alarms``, ``detected_windows``, ``windows``, ``days``) and the NAB raw,
    null and perfect scores (``raw``, ``null``, ``perfect``: sums over files, so scores of
    disjoint file sets can be added before normalising). ``params`` are constructor
    parameters; ``None`` means the defaults. Days of data are scored rows times the sampling
    interval, so rows a label mask leaves unscored do not dilute the false-alarm rate.
    """
    reg = registry or default_registry()
    det = _build(detector, params or {}, reg)
    prepared = _prepare(files)
    if n_jobs > 1 and len(files) > 1:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            scores = _replay_scores(det, prepared, pool, None, n_jobs)
    else:
        scores = _replay_scores(det, prepared, None, None)
    return _metrics(prepared, scores)


# -- studies -----------------------------------------------------------------------------------


def detector_study_name(detector: str, data_tag: str) -> str:
    """``selfheal-tune-detector-<family>-v<space version>-<data tag>``.

    ``data_tag`` names the labelled data the objectives are computed on: ``"nab-fold-a"``
    for a benchmark fold, the night's date for nightly tuning (``"2025-03-14"``), or
    :func:`corpus_fingerprint` of the files.
    """
    return f"{STUDY_PREFIX}{detector}-v{SPACE_VERSION}-{data_tag}"


def open_detector_study(
    storage: str | optuna.storages.BaseStorage | None,
    detector: str = "default",
    *,
    study_name: str | None = None,
    data_tag: str = "adhoc",
    population_size: int = 24,
    seed: int | None = None,
) -> optuna.Study:
    """Create or load the NSGA-II study (maximise standard, minimise false alarms per day).

    ``storage`` is a database URL (the system's own, as ``tasks.recovery.genetic`` does) or
    ``None`` for an in-memory study. The same name and storage load the existing study.
    The delay constraint reaches NSGA-II through ``Trial.set_constraint`` (Optuna 5's
    replacement of the deprecated ``constraints_func``): constrained dominance then ranks
    every feasible trial above every infeasible one.
    """
    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)
    return optuna.create_study(
        study_name=study_name or detector_study_name(detector, data_tag),
        storage=storage,
        sampler=sampler,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )


@dataclass(frozen=True)
class Candidate:
    """A trial of the study: constructor parameters and their objective values.

    ``params`` are ready for ``registry.create(detector, params)``; ``space_values`` is the
    same point in the search space's coordinates.
    """

    params: dict[str, Any]
    standard: float
    false_alarms_per_day: float
    mean_delay_s: float
    trial: int
    feasible: bool = True
    space_values: dict[str, Any] = field(default_factory=dict)


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported distribution {dist!r}")


def corpus_lineage(files: Sequence[NabFile], points: int = LINEAGE_POINTS) -> dict[str, Any]:
    """A few ``(ts_ns, value)`` points per file, evenly spread: what identifies the data.

    Unlike :func:`corpus_fingerprint` it survives growth: a later, longer window of the same
    series still holds most of these points with the same values.
    """
    out: dict[str, Any] = {}
    for f in files:
        ts = pd.DatetimeIndex(f.timestamps).as_unit("ns").asi8
        values = np.asarray(f.values, float)
        if not len(ts):
            continue
        idx = np.unique(np.linspace(0, len(ts) - 1, min(points, len(ts))).astype(int))
        out[f.key] = [[int(ts[i]), float(values[i])] for i in idx if math.isfinite(values[i])]
    return out


def lineage_conflict(known: Mapping[str, Any], files: Sequence[NabFile]) -> str | None:
    """Why ``files`` are not a continuation of the data ``known`` describes (None: they are).

    They are when they share at least one series with it and every stored point that falls on
    a timestamp of the new data has the same value there; at least one point must overlap, so
    two disjoint stretches of the same names are not taken for the same data.
    """
    by_key = {f.key: f for f in files}
    shared = [k for k in known if k in by_key]
    if not shared:
        return "no series in common"
    compared = 0
    for key in shared:
        f = by_key[key]
        ts = pd.DatetimeIndex(f.timestamps).as_unit("ns").asi8
        values = np.asarray(f.values, float)
        for at, value in known[key]:
            i = int(np.searchsorted(ts, at))
            if i < len(ts) and ts[i] == at:
                compared += 1
                if not np.isclose(values[i], value, rtol=1e-9, atol=1e-12):
                    return f"{key} has another value at {pd.Timestamp(at, tz='UTC')}"
    if not compared:
        return "the new data does not overlap the old in time"
    return None


def _check_lineage(study: optuna.Study, files: Sequence[NabFile]) -> None:
    known = study.user_attrs.get(_LINEAGE_ATTR)
    if known is not None:
        why = lineage_conflict(known, files)
        if why is not None:
            raise ValueError(
                f"study {study.study_name!r} was run on other data ({why}); its objective "
                "values would not be comparable. Open a study named for this data and pass "
                "its front as seed_params."
            )
    study.set_user_attr(_LINEAGE_ATTR, corpus_lineage(files))


def _study_space(
    study: optuna.Study,
    detector: str,
    base: Mapping[str, Any],
    trust: float | None,
    space: Mapping[str, BaseDistribution] | None,
) -> dict[str, BaseDistribution]:
    """The space of this study: given, else the one stored on first use, else a new one.

    Storing it keeps a resumed study in the space it started in even if the running
    configuration (the trust region's centre) changed in between.
    """
    if space is not None:
        return dict(space)
    stored = study.user_attrs.get(_SPACE_ATTR)
    if stored:
        return {k: json_to_distribution(v) for k, v in stored.items()}
    out = detector_space(detector, base if trust else None, trust)
    study.set_user_attr(_SPACE_ATTR, {k: distribution_to_json(d) for k, d in out.items()})
    return out


def _auto_jobs(prepared: Sequence[_Prepared], n_jobs: int | None) -> int:
    if n_jobs is not None:
        return max(int(n_jobs), 1)
    rows = sum(len(p.ts_ns) for p in prepared)
    if rows < PARALLEL_MIN_ROWS or len(prepared) < 2:
        return 1
    return max(min(os.cpu_count() or 1, 8), 1)


def tune_detector(
    study: optuna.Study,
    files: Sequence[NabFile],
    detector: str = "default",
    base_params: Mapping[str, Any] | None = None,
    timeout_s: float | None = 60.0,
    n_trials: int | None = None,
    max_delay_s: float | None = None,
    *,
    trust: float | None = 1.5,
    space: Mapping[str, BaseDistribution] | None = None,
    seed_params: Sequence[Mapping[str, Any]] = (),
    n_jobs: int | None = None,
    registry: DetectorRegistry | None = None,
) -> list[Candidate]:
    """Run (or continue) the study on ``files`` for ``timeout_s`` / ``n_trials``; return the front.

    ``base_params`` is the configuration that runs today (default: the constructor defaults).
    It is enqueued first, with any ``seed_params`` (e.g. last night's front), unless the study
    already evaluated it, so the front always holds what runs and a picked candidate is never
    worse than it on these files. The search space is the ``trust`` region around it
    (:func:`detector_space`; ``trust=None``: the family's global space) unless ``space`` is
    given. The time budget covers preparation and is checked between trials and between the
    files of a trial (a trial cut short is pruned), so the call returns within about one
    file's replay of ``timeout_s``. ``n_jobs`` > 1 replays each trial's files in a process
    pool kept for the whole call; ``None`` does so only when a trial replays enough rows to
    pay for the pickling (``PARALLEL_MIN_ROWS``).
    """
    optuna.logging.set_verbosity(logging.WARNING)
    started = time.monotonic()
    deadline = started + timeout_s if timeout_s is not None else None
    reg = registry or default_registry()
    base = {**_constructor_defaults(detector, reg), **dict(base_params or {})}
    prepared = _prepare(files)
    _check_lineage(study, files)
    study.set_user_attr("detector", detector)
    dims = _study_space(study, detector, base, trust, space)
    for params in (base, *seed_params):
        point = encode_params(detector, params)
        fixed = {k: _clip(point[k], dims[k]) for k in dims}
        study.enqueue_trial(fixed, skip_if_exists=True)
    jobs = _auto_jobs(prepared, n_jobs)
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        values = {name: _suggest(trial, name, dist) for name, dist in dims.items()}
        params = decode_params(detector, values, base)
        det = _build(detector, params, reg)
        try:
            scores = _replay_scores(det, prepared, pool, deadline, jobs)
        except _Deadline:
            raise optuna.TrialPruned("time budget exhausted during replay") from None
        m = _metrics(prepared, scores)
        excess = m["mean_delay_s"] - max_delay_s if max_delay_s is not None else -1.0
        trial.set_user_attr("params", _jsonable(params))
        trial.set_user_attr("mean_delay_s", m["mean_delay_s"])
        trial.set_user_attr("detected_windows", m["detected_windows"])
        trial.set_user_attr("false_alarms", m["false_alarms"])
        trial.set_constraint("delay", excess)
        return m["standard"], m["false_alarms_per_day"]

    try:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is None or remaining > 0:
            study.optimize(objective, n_trials=n_trials, timeout=remaining)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return pareto_front(study, max_delay_s)


def _candidate(t: FrozenTrial, max_delay_s: float | None) -> Candidate | None:
    if t.values is None or "params" not in t.user_attrs or math.isnan(t.values[0]):
        return None
    standard, fa = t.values
    delay = float(t.user_attrs.get("mean_delay_s", 0.0))
    if max_delay_s is not None:
        feasible = delay <= max_delay_s
    else:
        feasible = all(v <= 0.0 for v in t.constraints.values())
    return Candidate(
        params=_from_json(t.user_attrs["params"]),
        standard=float(standard),
        false_alarms_per_day=float(fa),
        mean_delay_s=delay,
        trial=t.number,
        feasible=feasible,
        space_values=dict(t.params),
    )


def _non_dominated(cands: Sequence[Candidate]) -> list[Candidate]:
    front: list[Candidate] = []
    seen: set[tuple[float, float]] = set()
    for c in sorted(cands, key=lambda c: (-c.standard, c.false_alarms_per_day, c.trial)):
        key = (c.standard, c.false_alarms_per_day)
        if key in seen:
            continue
        dominated = any(
            o.standard >= c.standard and o.false_alarms_per_day <= c.false_alarms_per_day
            for o in front
        )
        if not dominated:
            front.append(c)
            seen.add(key)
    return front


def candidates(study: optuna.Study, max_delay_s: float | None = None) -> list[Candidate]:
    """Every completed trial as a candidate (feasibility as in :func:`pareto_front`)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [c for t in trials if (c := _candidate(t, max_delay_s)) is not None]


def pareto_front(study: optuna.Study, max_delay_s: float | None = None) -> list[Candidate]:
    """The non-dominated feasible trials of the study, best standard score first.

    Feasibility is re-checked against ``max_delay_s`` when it is given (trials store their
    mean delay), so a stricter limit tonight applies to earlier trials as well; without it,
    each trial's recorded constraint counts. When no trial is feasible the front of the
    infeasible ones is returned, flagged ``feasible=False`` (:func:`pick` refuses them), so
    the caller can see how far off the limit is.
    """
    cands = candidates(study, max_delay_s)
    feasible = [c for c in cands if c.feasible]
    return _non_dominated(feasible if feasible else cands)


def pick(front: Sequence[Candidate]) -> Candidate:
    """Best standard score among the feasible candidates; ties go to fewer false alarms/day."""
    ok = [c for c in front if c.feasible]
    if not ok:
        raise ValueError("no feasible candidate: every trial violates the delay constraint")
    return min(ok, key=lambda c: (-c.standard, c.false_alarms_per_day, c.trial))
