"""NAB benchmark of the metric detectors on the development split (``shared/datasets/nab``).

Every figure is NAB-normalised (0 = a detector that never fires, 100 = perfect) and scored at
threshold 0.5, the detectors' own alarm decision: what NAB's official scorer prints for the
result files ``selfheal backtest --out`` writes, with a fixed threshold of 0.5.

Out of sample (the headline):

``nab.standard_oos``, ``nab.reward_low_fp_oos``, ``nab.reward_low_fn_oos``
    Leave-one-family-out. The 28 files fall into 9 families (each artificial folder, and
    each CloudWatch metric kind: ``ec2_cpu_utilization``, ``rds_cpu_utilization``, ...;
    ``tasks.backtest.replay.series_family``). For each family, the candidate (a detector and
    its parameters, calibration included: the margin that puts its alarm at 0.5) with the
    best standard score on the *other* families is chosen, and that choice scores the family.
    Raw scores are added over the families and normalised once, as NAB does for totals. No
    choice sees the file it scores. (The candidate list and the detectors' design were made
    by people who have seen these files: that is the part no protocol removes.)
``nab.oos_agreement``
    Share of the families whose out-of-sample choice is the in-sample choice (1 = stable).

In sample (the files the choices were made on):

``nab.standard``, ``nab.reward_low_fp``, ``nab.reward_low_fn``
    The default detector with its shipped parameters. These parameters were chosen on these
    28 files, so this is an in-sample figure.
``nab.standard_insample_best``
    The best candidate on all 28 files (what in-sample selection would ship).
``nab.<name>.standard``
    Each registered detector with its own defaults (in sample, for comparison).
``nab.standard_optimised``
    NAB's own protocol: threshold optimised on the very files it is scored on (optimistic).
``nab.baseline.windowed_gaussian_standard``
    NAB's windowed-Gaussian baseline, scored the NAB way (threshold optimised on these files).

Speed:

``nab.rows_per_s``
    Rows per second of one replay of the 28 files by the default detector, one process
    (fastest of two; this machine is shared, so the figure is noisy).
``nab.seconds``
    Wall time of the whole benchmark.

Replays are cached per file and parameter set (in ``$SELFHEAL_BENCH_CACHE``, default a
temporary folder) under a hash of the detectors' source, so a rerun only replays what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from time import perf_counter

import numpy as np

from bench.common import datasets_root
from tasks.backtest.nab import optimize_threshold
from tasks.backtest.replay import (
    NabFile,
    Replayed,
    family_folds,
    load_corpus,
    replay,
    replay_file,
    score_replayed,
    select_in_sample,
    select_out_of_sample,
)
from tasks.detection.base import BaseDetector
from tasks.detection.registry import default_registry
from tasks.detection.timeseries.default import DefaultDetector
from tasks.detection.timeseries.ensemble import EnsembleDetector
from tasks.detection.timeseries.gaussian import WindowedGaussianDetector
from tasks.detection.timeseries.relentropy import RelativeEntropyDetector

SOURCE = Path(__file__).resolve().parents[1] / "tasks" / "detection" / "timeseries"


def candidates() -> dict[str, BaseDetector]:
    """What the out-of-sample selection chooses from, simplest (the shipped default) first.

    A small grid over the default detector's calibration (margin), range (quantile) and
    short-history widening (small_sample), and the ensemble of the default with the
    relative-entropy detector.
    """
    out: dict[str, BaseDetector] = {"default": DefaultDetector()}
    for small_sample in (0.0, 0.5, 1.0):
        for margin in (0.2, 0.35, 0.5):
            for quantile in (0.995, 0.999):
                if (margin, quantile, small_sample) != (0.2, 0.999, 0.0):
                    name = (
                        f"default(margin={margin},quantile={quantile},small_sample={small_sample})"
                    )
                    out[name] = DefaultDetector(
                        margin=margin, quantile=quantile, small_sample=small_sample
                    )
    for alpha in (1e-12, 1e-20):
        out[f"ensemble(default,relentropy(alpha={alpha}))"] = EnsembleDetector(
            [DefaultDetector(), RelativeEntropyDetector(alpha=alpha)], budget_cost=0.0
        )
    return out


def quick_subset(corpus: list[NabFile], per_category: int = 2) -> list[NabFile]:
    """The first files of each category: both folds keep an anomalous and a clean file."""
    seen: dict[str, int] = {}
    out = []
    for f in corpus:
        if seen.get(f.category, 0) < per_category:
            out.append(f)
            seen[f.category] = seen.get(f.category, 0) + 1
    return out


def _source_hash() -> str:
    digest = hashlib.sha1()
    for path in sorted(SOURCE.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached_replay(detector: BaseDetector, corpus: list[NabFile], cache: Path) -> list[Replayed]:
    """``replay`` with the scores of each file kept on disk per detector, parameters and code."""
    version = _source_hash()
    params = sorted((k, repr(v)) for k, v in detector.get_params(deep=False).items())
    out = []
    for f in corpus:
        key = f"{type(detector).__qualname__}|{params}|{version}|{f.key}|{len(f.values)}"
        path = cache / (hashlib.sha1(key.encode()).hexdigest()[:24] + ".npy")
        if path.exists():
            scores = np.load(path)
        else:
            scores = replay_file(detector, f)
            np.save(path, scores)
        out.append(Replayed(f, scores))
    return out


def _optimised_standard(results: list[Replayed]) -> float:
    """NAB's protocol: optimise the threshold on these files and score them with it."""
    sweeps = [r.sweep() for r in results]
    best = optimize_threshold(sweeps, "standard")
    return score_replayed(results, best.threshold)["standard"].normalized


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "nab.standard_oos": "nab.baseline.windowed_gaussian_standard",
}


def run(quick: bool = False, out_dir: str | Path | None = None) -> dict[str, float]:
    """Replay the candidates over the NAB split and score them in and out of sample."""
    root = datasets_root() / "nab"
    if not (root / "data").is_dir():
        raise FileNotFoundError(f"NAB data set not found at {root}")
    start = perf_counter()
    corpus = load_corpus(root)
    if quick:
        corpus = quick_subset(corpus)
    cache = Path(os.environ.get("SELFHEAL_BENCH_CACHE") or tempfile.gettempdir()) / "selfheal-nab"
    cache.mkdir(parents=True, exist_ok=True)

    out: dict[str, float] = {}
    rows = sum(len(f.values) for f in corpus)
    seconds = []
    for _ in range(2):  # speed of the shipped default, uncached
        t0 = perf_counter()
        shipped = replay(DefaultDetector(), corpus, out_dir=out_dir)
        seconds.append(perf_counter() - t0)
    out["nab.rows_per_s"] = rows / min(seconds)

    for key, s in score_replayed(shipped, 0.5).items():
        out[f"nab.{key}"] = s.normalized  # in sample
    out["nab.standard_optimised"] = _optimised_standard(shipped)

    replays = {name: cached_replay(det, corpus, cache) for name, det in candidates().items()}
    oos = select_out_of_sample(replays, family_folds(corpus))
    for key, s in oos.combined.items():
        out[f"nab.{key}_oos"] = s.normalized
    best = select_in_sample(replays)
    out["nab.standard_insample_best"] = score_replayed(replays[best], 0.5)["standard"].normalized
    out["nab.oos_agreement"] = float(np.mean([c == best for c in oos.chosen]))
    out["nab.oos_families"] = float(len(oos.folds))

    registry = default_registry()
    for name in registry.names():
        if name == "default":
            continue
        results = cached_replay(registry.create(name), corpus, cache)
        out[f"nab.{name}.standard"] = score_replayed(results, 0.5)["standard"].normalized

    baseline = replay(WindowedGaussianDetector(), corpus, out_dir=out_dir)
    base_score = _optimised_standard(baseline)
    out["nab.baseline.windowed_gaussian_standard"] = base_score
    out["nab.files"] = float(len(corpus))
    out["nab.seconds"] = perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 files instead of 28")
    parser.add_argument("--out", type=Path, help="also write NAB result files here")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, out_dir=args.out), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
