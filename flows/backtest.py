"""``selfheal backtest``: replay labelled CSVs (NAB layout) or stored series through a detector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.backtest.replay import (
    cross_validate,
    load_corpus,
    replay,
    score_replayed,
    two_fold_split,
)
from tasks.detection.registry import default_registry
from tasks.plugins import PluginLike


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs; values are JSON when they parse (numbers, lists, null)."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--param {pair!r} must look like name=value")
        key, raw = pair.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def backtest_nab(
    data: Path,
    labels: Path | None,
    detector: str = "default",
    params: dict[str, Any] | None = None,
    custom: Sequence[str | PluginLike] | None = None,
    threshold: float | None = None,
    out: Path | None = None,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """NAB scores of a detector over a NAB-layout folder.

    Without ``threshold`` the files are split in two halves; each half is scored with the
    thresholds NAB's optimiser picked on the other half, and the raw scores are combined:
    the threshold is chosen on one set of files and held fixed on another. The scores at
    the detector's own alarm threshold (0.5, what NAB's scorer gives on the ``--out``
    files) are reported beside them.
    """
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    if labels is not None and not labels.is_file():
        raise FileNotFoundError(f"--labels {labels} not found")
    det = default_registry(custom or []).create(detector, params)
    corpus = load_corpus(data, labels)
    if not corpus:
        raise FileNotFoundError(f"no <category>/<file>.csv under {data}")
    results = replay(det, corpus, out_dir=out, n_jobs=n_jobs)
    fixed = {k: round(s.normalized, 2) for k, s in score_replayed(results, 0.5).items()}
    report: dict[str, Any] = {
        "detector": detector,
        "params": det.get_params(),
        "files": len(corpus),
        "windows": sum(len(f.windows) for f in corpus),
    }
    if threshold is not None:
        scores = score_replayed(results, threshold)
        report.update({k: round(s.normalized, 2) for k, s in scores.items()})
        report["threshold"] = threshold
    else:
        cv = cross_validate(results, two_fold_split(corpus))
        report.update({k: round(s.normalized, 2) for k, s in cv.combined.items()})
        report["threshold"] = "2-fold: tuned on one half of the files, held fixed on the other"
        report["fold_thresholds"] = [{k: round(v, 4) for k, v in t.items()} for t in cv.thresholds]
    report["at_threshold_0.5"] = fixed
    if out is not None:
        report["result_files"] = str(out / det.name)
    return report


def backtest_series(
    values: pd.Series,
    detector: str = "default",
    params: dict[str, Any] | None = None,
    custom: Sequence[str | PluginLike] | None = None,
    fit_fraction: float = 0.15,
) -> pd.DataFrame:
    """Replay one series in streaming order: fit on the first part, score the rest."""
    det = default_registry(custom or []).create(detector, params)
    n_fit = int(len(values) * fit_fraction)
    det.fit(values.iloc[:n_fit])
    result = det.score(values.iloc[n_fit:])
    frame = pd.DataFrame({"timestamp": values.index, "value": values.to_numpy()})
    frame["anomaly_score"] = [0.0] * n_fit + list(result.scores.to_numpy())
    frame["alarm"] = frame["anomaly_score"] >= 0.5
    return frame
