"""Loghub 2k benchmark: template grouping accuracy, mining throughput, BGL alert detection.

Reads the raw ``.log`` files (headers included; BGL's leading alert-label token stripped)
from ``$SELFHEAL_DATASETS/loghub`` (default ``../shared/datasets`` next to the repo) and
scores against the ground-truth ``EventId`` / ``Label`` columns of the ``_structured.csv``
files. One miner configuration is used for every data set.

Run ``python -m bench.loghub`` (``--quick`` for a shorter timing loop); it prints a flat
JSON dict of metrics.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path

from bench.common import best_of, datasets_root
from tasks.logs.alerts import AlertDetector
from tasks.logs.templates import TemplateMiner

DATASETS = ("BGL", "HDFS", "Linux")


def load_raw_lines(name: str, root: Path | None = None) -> list[str]:
    """Raw lines of ``<name>_2k.log`` (CRLF stripped; BGL's label token kept)."""
    path = (root or datasets_root()) / "loghub" / f"{name}_2k.log"
    with path.open(encoding="utf-8", errors="replace", newline=None) as fh:
        return fh.read().splitlines()


def strip_label(line: str) -> tuple[str, str]:
    """Split a BGL line into (label token, rest): the label must never reach a detector."""
    label, _, rest = line.partition(" ")
    return label, rest


def miner_input(name: str, lines: Sequence[str]) -> list[str]:
    """What the miner is given: raw lines, minus the alert label for BGL."""
    return [strip_label(x)[1] for x in lines] if name == "BGL" else list(lines)


def load_structured(name: str, root: Path | None = None) -> list[dict[str, str]]:
    """Rows of ``<name>_2k.log_structured.csv``."""
    path = (root or datasets_root()) / "loghub" / f"{name}_2k.log_structured.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def grouping_accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Grouping accuracy as logpai/logparser's evaluator defines it.

    A line counts as correct only when the set of lines in its predicted group equals the
    set of lines sharing its ground-truth event; the score is the share of correct lines.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"length mismatch: {len(truth)} truth vs {len(predicted)} predicted")
    if not truth:
        return 0.0
    truth_sizes = Counter(truth)
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, p in enumerate(predicted):
        groups[p].append(i)
    correct = 0
    for members in groups.values():
        events = {truth[i] for i in members}
        if len(events) == 1 and truth_sizes[next(iter(events))] == len(members):
            correct += len(members)
    return correct / len(truth)


def evaluate_ga(name: str, miner: TemplateMiner | None = None) -> float:
    """Mine one data set's raw lines with a fresh (or given) miner and score GA."""
    miner = miner or TemplateMiner()
    lines = miner_input(name, load_raw_lines(name))
    predicted = [tid for tid, _ in miner.add_batch(lines)]
    truth = [row["EventId"] for row in load_structured(name)]
    return grouping_accuracy(truth, predicted)


def alert_scores(lines: Sequence[str]) -> dict[str, float]:
    """Precision/recall/F1 of the streaming alert detector against BGL's label column."""
    detector = AlertDetector()
    tp = fp = fn = 0
    for raw in lines:
        label, rest = strip_label(raw)
        flagged = detector.observe(rest).is_alert
        actual = label != "-"
        tp += flagged and actual
        fp += flagged and not actual
        fn += actual and not flagged
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"bgl.alert_precision": precision, "bgl.alert_recall": recall, "bgl.alert_f1": f1}


_BASELINE_RE = re.compile(r"\d+")


def throughput(lines: Sequence[str], repeat: int) -> tuple[float, float]:
    """(miner lines/s, plain regex scan lines/s), best of ``repeat`` runs each.

    Every miner run starts from a fresh miner (cold memo and tree), so the figure is what
    a first ingest of these lines costs; the baseline is one compiled ``re.sub`` per line,
    the floor for anything that looks at every line with a regex.
    """

    def mine() -> None:
        TemplateMiner().add_batch(lines)

    def scan() -> None:
        sub = _BASELINE_RE.sub
        for line in lines:
            sub("<*>", line)

    return len(lines) / best_of(mine, repeat), len(lines) / best_of(scan, repeat)


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "loghub.lines_per_s": "loghub.regex_lines_per_s",
}


def run(quick: bool = False) -> dict[str, float]:
    """Compute every benchmark metric; ``quick`` shortens the timing loops."""
    results: dict[str, float] = {}
    all_lines: list[str] = []
    for name in DATASETS:
        results[f"loghub.ga.{name.lower()}"] = evaluate_ga(name)
        all_lines.extend(miner_input(name, load_raw_lines(name)))
    mined, scanned = throughput(all_lines, 3 if quick else 15)
    results["loghub.lines_per_s"] = mined
    results["loghub.regex_lines_per_s"] = scanned
    results["loghub.ratio_vs_regex"] = mined / scanned
    results.update(alert_scores(load_raw_lines("BGL")))
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2, sort_keys=True))
