"""NAB benchmark of the default detector on the development split (``shared/datasets/nab``).

What the numbers mean (all NAB-normalised: 0 = a detector that never fires, 100 = perfect):

``nab.standard``, ``nab.reward_low_fp``, ``nab.reward_low_fn``
    The honest, held-out number. The files are split in two folds by file (alternating
    within each category); for each fold NAB's threshold optimiser runs on the *other* fold
    and the threshold is then held fixed on this one. The raw scores of both folds are added
    and normalised once over the whole corpus, as NAB does for its totals.
``nab.<profile>.fold_a`` / ``.fold_b``
    The same, per fold (each normalised over its own files); ``.threshold_a`` is the
    threshold tuned on fold b and held fixed on fold a, and vice versa.
``nab.standard_fixed05``
    Threshold 0.5, the detector's own alarm decision. This is what NAB's official scorer
    prints for the result files the replay writes, with a fixed threshold of 0.5.
``nab.standard_optimised``
    NAB's own protocol: threshold optimised on the very files it is scored on (optimistic).
``nab.baseline.windowed_gaussian_standard``
    NAB's windowed-Gaussian baseline, run here on the same files and scored with NAB's own
    protocol (optimised threshold), i.e. how the NAB scoreboard would list it.
    ``..._heldout`` is the baseline under the same two-fold protocol as ``nab.standard``.
``nab.ratio_vs_windowed_gaussian``
    ``nab.standard`` / ``nab.baseline.windowed_gaussian_standard``: our held-out score
    against the baseline's optimistic one, so the ratio errs against us.
``nab.seconds``
    Wall time of replaying and scoring the default detector.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from time import perf_counter

from bench.common import datasets_root
from tasks.backtest.nab import optimize_threshold
from tasks.backtest.replay import (
    PROFILE_KEYS,
    NabFile,
    Replayed,
    cross_validate,
    load_corpus,
    replay,
    score_replayed,
    two_fold_split,
)
from tasks.detection.timeseries.default import DefaultDetector
from tasks.detection.timeseries.gaussian import WindowedGaussianDetector


def quick_subset(corpus: list[NabFile], per_category: int = 2) -> list[NabFile]:
    """The first files of each category: both folds keep an anomalous and a clean file."""
    seen: dict[str, int] = {}
    out = []
    for f in corpus:
        if seen.get(f.category, 0) < per_category:
            out.append(f)
            seen[f.category] = seen.get(f.category, 0) + 1
    return out


def _optimised_standard(results: list[Replayed]) -> float:
    """NAB's protocol: optimise the threshold on these files and score them with it."""
    sweeps = [r.sweep() for r in results]
    best = optimize_threshold(sweeps, "standard")
    return score_replayed(results, best.threshold)["standard"].normalized


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "nab.standard": "nab.baseline.windowed_gaussian_standard",
}


def run(quick: bool = False, out_dir: str | Path | None = None) -> dict[str, float]:
    """Replay the default detector and the baseline over the NAB split; flat metric dict."""
    root = datasets_root() / "nab"
    if not (root / "data").is_dir():
        raise FileNotFoundError(f"NAB data set not found at {root}")
    corpus = load_corpus(root)
    if quick:
        corpus = quick_subset(corpus)
    folds = two_fold_split(corpus)

    start = perf_counter()
    results = replay(DefaultDetector(), corpus, out_dir=out_dir)
    cv = cross_validate(results, folds)
    fixed = score_replayed(results, 0.5)
    seconds = perf_counter() - start

    out: dict[str, float] = {}
    for key in PROFILE_KEYS:
        out[f"nab.{key}"] = cv.combined[key].normalized
        out[f"nab.{key}.fold_a"] = cv.fold_scores[0][key].normalized
        out[f"nab.{key}.fold_b"] = cv.fold_scores[1][key].normalized
        out[f"nab.{key}.threshold_a"] = cv.thresholds[0][key]
        out[f"nab.{key}.threshold_b"] = cv.thresholds[1][key]
        out[f"nab.{key}_fixed05"] = fixed[key].normalized
    out["nab.standard_optimised"] = _optimised_standard(results)
    out["nab.seconds"] = seconds
    out["nab.files"] = float(len(corpus))

    baseline = replay(WindowedGaussianDetector(), corpus, out_dir=out_dir)
    base_score = _optimised_standard(baseline)
    out["nab.baseline.windowed_gaussian_standard"] = base_score
    out["nab.baseline.windowed_gaussian_standard_heldout"] = (
        cross_validate(baseline, folds).combined["standard"].normalized
    )
    out["nab.ratio_vs_windowed_gaussian"] = (
        out["nab.standard"] / base_score if base_score > 0 else float("nan")
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 files instead of 28")
    parser.add_argument("--out", type=Path, help="also write NAB result files here")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, out_dir=args.out), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
