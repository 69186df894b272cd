"""Replay a recorded Prometheus exporter through the detection cycle (tests and ``bench``).

A recording is gzip'd exposition text, one ``# scrape <ms>`` line before each scrape's
body. ``# TYPE`` lines may appear only in the first scrapes (recordings keep them once, to
stay small): every scrape is parsed with all the ``# TYPE`` lines seen so far, as the
exporter would have sent them. The replay stores each scrape with the ingest parser (plus
the scraper's ``up`` sample) and runs the cycle's detection steps every ``cycle_s`` of the
recording: the plans ``flows.detect.shard_plans`` makes from the configuration, then read,
derive, score, and group into issues with ``persist_detection``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from flows.detect import grouping_policy, persist_detection, run_shard, shard_plans
from flows.runtime import open_runtime
from storage.issues import AnomalyRecord, issues_frame
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.ingest.sources import up_sample
from tasks.ingest.store import store_samples

SCRAPE_MARK = "# scrape "


def scrapes(recording: Path) -> Iterator[tuple[int, str]]:
    """(scrape time in ms, exposition text with every ``# TYPE`` line seen so far)."""
    types: dict[str, str] = {}
    ts: int | None = None
    lines: list[str] = []

    def body() -> str:
        return "".join(types.values()) + "".join(lines)

    with gzip.open(recording, "rt") as fh:
        for line in fh:
            if line.startswith(SCRAPE_MARK):
                if ts is not None:
                    yield ts, body()
                ts, lines = int(line.split()[2]), []
            elif line.startswith("# TYPE "):
                types[line.split()[2]] = line
            elif not line.startswith("#"):
                lines.append(line)
    if ts is not None:
        yield ts, body()


def recorded_minutes(recording: Path) -> float:
    first = last = None
    for ts, _ in scrapes(recording):
        first = ts if first is None else first
        last = ts
    return 0.0 if first is None or last is None else (last - first) / 60_000


@dataclass
class Replay:
    """What a replay stored and found."""

    issues: pd.DataFrame
    anomalies: list[AnomalyRecord] = field(default_factory=list)
    series: int = 0  # stored series (the exporter's, and its ``up``)
    hours: float = 0.0  # span of the replayed cycles
    cycles: int = 0


def replay(
    config_path: Path,
    recording: Path,
    component: str = "node",
    cycle_s: int = 30,
    minutes: float | None = None,
) -> Replay:
    """Store ``recording`` scrape by scrape, running a detection cycle every ``cycle_s``
    (the first ``minutes`` of it when given)."""
    rt = open_runtime(config_path)
    try:
        policy = grouping_policy(rt.config)
        found: list[AnomalyRecord] = []
        series: set[tuple[str, str]] = set()
        first_cycle: int | None = None
        next_cycle: int | None = None
        last_cycle = 0
        cycles = 0
        start: int | None = None
        for ts, text in scrapes(recording):
            start = ts if start is None else start
            if minutes is not None and ts - start > minutes * 60_000:
                break
            report = IngestReport(component)
            frame = pd.concat(
                [parse_exposition(text, component, ts, report), up_sample(component, 1.0, ts)],
                ignore_index=True,
            )
            store_samples(rt.engine, frame, report, clock_ms=ts + 1000)
            if report.rejected_total:
                raise ValueError(f"{recording}: scrape at {ts}: {report.summary()}")
            series.update(zip(frame["metric"], frame["labels"].astype(str), strict=True))
            next_cycle = ts if next_cycle is None else next_cycle
            if ts < next_cycle:
                continue
            next_cycle = ts + cycle_s * 1000
            first_cycle = ts if first_cycle is None else first_cycle
            last_cycle, cycles = ts, cycles + 1
            now = datetime.fromtimestamp((ts + 1) / 1000, tz=UTC)
            for plan in shard_plans(rt, ts + 1):
                result = run_shard(rt.engine, plan)
                if result.errors:
                    raise RuntimeError(f"detection failed at {ts}: {result.errors}")
                found += result.anomalies
                persist_detection(rt.engine, result.anomalies, result.watermarks, now, policy, {})
        hours = (last_cycle - first_cycle) / 3_600_000 if first_cycle is not None else 0.0
        return Replay(issues_frame(rt.engine), found, len(series), hours, cycles)
    finally:
        rt.close()
