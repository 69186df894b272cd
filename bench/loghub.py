"""Loghub 2k benchmark through the product's own path: grouping accuracy and BGL alerts.

In-sample figures: the three samples in ``$SELFHEAL_DATASETS/loghub`` (BGL, HDFS, Linux)
were used while developing the log path; other public samples are kept back.

- ``loghub.ga.<name>``: the sample is written to a file (BGL without its leading alert
  label, which must never reach the product), tailed by ``tail_file`` with the
  component's annotator into a fresh SQLite database (header format learned from the
  file, templates mined from the message), and the template ids *stored* on the events
  are scored against the ground-truth ``EventId`` with logparser's grouping accuracy.
- ``bgl.alert_*``: the stored BGL events are replayed through the cycle's own log step
  (``tasks.detection.logs_step.replay``: 30 s cycles of event time) and its per-line
  decision is scored against the label column.
- ``loghub.anomalies.<name>``: anomaly records the cycle's log step raises over the
  replayed sample (one per signature or template per 30 s cycle).
- ``loghub.lines_per_s``: lines per second of the whole tail path over the three samples
  (read, learn format, split, mine, store), against a plain regex scan of the same lines.

Run ``python -m bench.loghub`` (``--quick`` for a shorter timing loop); it prints a flat
JSON dict of metrics.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path

import pandas as pd

from bench.common import best_of, datasets_root
from storage.engine import make_engine, sqlite_url_for
from storage.logs import read_log_events
from storage.migrate import ensure_schema
from tasks.detection.logs_step import LogDetectionSettings, replay
from tasks.ingest.logtail import TailSettings, tail_file
from tasks.ingest.templating import TemplateAnnotator

DATASETS = ("BGL", "HDFS", "Linux")
CYCLE_S = 30.0


def load_raw_lines(name: str, root: Path | None = None) -> list[str]:
    """Raw lines of ``<name>_2k.log`` (CRLF stripped; BGL's label token kept)."""
    path = (root or datasets_root()) / "loghub" / f"{name}_2k.log"
    with path.open(encoding="utf-8", errors="replace", newline=None) as fh:
        return fh.read().splitlines()


def strip_label(line: str) -> tuple[str, str]:
    """Split a BGL line into (label token, rest): the label must never reach a detector."""
    label, _, rest = line.partition(" ")
    return label, rest


def product_input(name: str, lines: Sequence[str]) -> list[str]:
    """What the product is given: raw lines, minus the alert label for BGL."""
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


def ingest(lines: Sequence[str], tmp: Path, component: str) -> tuple[pd.DataFrame, object]:
    """Write ``lines`` to a file and tail it into a fresh database; (events, engine)."""
    log = tmp / f"{component}.log"
    log.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    engine = make_engine(sqlite_url_for(tmp / f"{component}.db"))
    ensure_schema(engine)
    annotator = TemplateAnnotator.load(engine, component)
    report = tail_file(engine, log, component, TailSettings(from_start=True), annotator)
    if report.stored != len(lines):
        raise RuntimeError(f"{component}: stored {report.stored} of {len(lines)} lines")
    events = read_log_events(engine, 0).sort_values("byte_offset", ignore_index=True)
    return events, engine


def evaluate_ga(name: str) -> float:
    """Grouping accuracy of the template ids stored by the real ingest path."""
    return evaluate(name)[0]


def evaluate(name: str) -> tuple[float, int]:
    """(grouping accuracy of the stored template ids, anomalies the cycle's log step
    raises when the sample is replayed in 30 s cycles)."""
    lines = product_input(name, load_raw_lines(name))
    with tempfile.TemporaryDirectory() as tmp:
        events, engine = ingest(lines, Path(tmp), name.lower())
        found = replay(engine, name.lower(), LogDetectionSettings(), CYCLE_S)  # type: ignore[arg-type]
        engine.dispose()  # type: ignore[attr-defined]
    truth = [row["EventId"] for row in load_structured(name)]
    return grouping_accuracy(truth, events["template_id"].tolist()), len(found.anomalies)


def alert_scores(raw: Sequence[str]) -> dict[str, float]:
    """Precision/recall/F1 of the cycle's per-line decision against BGL's label column."""
    labels = [strip_label(x)[0] for x in raw]
    with tempfile.TemporaryDirectory() as tmp:
        events, engine = ingest([strip_label(x)[1] for x in raw], Path(tmp), "bgl")
        decided = replay(engine, "bgl", LogDetectionSettings(), CYCLE_S).lines  # type: ignore[arg-type]
        engine.dispose()  # type: ignore[attr-defined]
    alert_ids = set(decided.loc[decided["alert"].notna(), "id"])
    flagged = [i in alert_ids for i in events["id"]]
    tp = fp = fn = 0
    for label, flag in zip(labels, flagged, strict=True):
        actual = label != "-"
        tp += flag and actual
        fp += flag and not actual
        fn += actual and not flag
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"bgl.alert_precision": precision, "bgl.alert_recall": recall, "bgl.alert_f1": f1}


_BASELINE_RE = re.compile(r"\d+")


def throughput(samples: dict[str, list[str]], repeat: int) -> tuple[float, float]:
    """(tail path lines/s, plain regex scan lines/s), best of ``repeat`` runs each.

    Only ``tail_file`` is timed (the database and its schema are made beforehand): read,
    learn each file's format, split, mine, store lines, offsets and templates.
    """
    total = sum(len(v) for v in samples.values())
    best = float("inf")
    for r in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            prepared = []
            for name, lines in samples.items():
                log = Path(tmp) / f"{name}.log"
                log.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
                engine = make_engine(sqlite_url_for(Path(tmp) / f"{name}-{r}.db"))
                ensure_schema(engine)
                prepared.append((name, log, engine))
            t = time.perf_counter()
            for name, log, engine in prepared:
                annotator = TemplateAnnotator.load(engine, name)
                tail_file(engine, log, name, TailSettings(from_start=True), annotator)
            best = min(best, time.perf_counter() - t)
            for _, _, engine in prepared:
                engine.dispose()

    def scan() -> None:
        sub = _BASELINE_RE.sub
        for lines in samples.values():
            for line in lines:
                sub("<*>", line)

    return total / best, total / best_of(scan, repeat)


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "loghub.lines_per_s": "loghub.regex_lines_per_s",
}


def run(quick: bool = False) -> dict[str, float]:
    """Compute every benchmark metric (in sample: these three samples were used to develop)."""
    results: dict[str, float] = {}
    samples: dict[str, list[str]] = {}
    for name in DATASETS:
        ga, anomalies = evaluate(name)
        results[f"loghub.ga.{name.lower()}"] = ga
        results[f"loghub.anomalies.{name.lower()}"] = anomalies
        samples[name] = product_input(name, load_raw_lines(name))
    ours, scanned = throughput(samples, 2 if quick else 5)
    results["loghub.lines_per_s"] = ours
    results["loghub.regex_lines_per_s"] = scanned
    results["loghub.ratio_vs_regex"] = ours / scanned
    results.update(alert_scores(load_raw_lines("BGL")))
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2, sort_keys=True))
