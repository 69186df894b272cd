"""Thirty minutes of a real exporter's own metrics, replayed through the cycle's detection.

``data/node_exporter_self.txt.gz`` was recorded once from this project's CI machine: a real
``prometheus-node-exporter`` scraped every 10 s for 30 minutes, keeping the families every
exporter publishes about itself (``go_*``, ``process_*``, ``promhttp_*``, the scrape
bookkeeping and the build info), as exposition text. The test parses each scrape with the
ingest parser, stores it, and runs the detection cycle's steps every 30 s of the recording
(the plans ``flows.detect.shard_plans`` makes from the default configuration, then read,
derive, score, and group into issues with ``persist_detection``): none of it may open an
issue.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from flows.detect import grouping_policy, persist_detection, run_shard, shard_plans
from flows.runtime import open_runtime
from storage.engine import sqlite_url_for
from storage.issues import issues_frame
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.ingest.sources import up_sample
from tasks.ingest.store import store_samples

RECORDING = Path(__file__).parent / "data" / "node_exporter_self.txt.gz"
CYCLE_S = 30


def scrapes() -> Iterator[tuple[int, str]]:
    """(scrape time in ms, exposition text) of every recorded scrape."""
    ts: int | None = None
    lines: list[str] = []
    with gzip.open(RECORDING, "rt") as fh:
        for line in fh:
            if line.startswith("# scrape "):
                if ts is not None:
                    yield ts, "".join(lines)
                ts, lines = int(line.split()[2]), []
            else:
                lines.append(line)
    if ts is not None:
        yield ts, "".join(lines)


def replay(config_path: Path) -> pd.DataFrame:
    """Store the recording scrape by scrape, running a detection cycle every 30 s of it."""
    rt = open_runtime(config_path)
    try:
        policy = grouping_policy(rt.config)
        next_cycle: int | None = None
        for ts, text in scrapes():
            report = IngestReport("node")
            frame = pd.concat(
                [parse_exposition(text, "node", ts, report), up_sample("node", 1.0, ts)],
                ignore_index=True,
            )
            store_samples(rt.engine, frame, report, clock_ms=ts + 1000)
            assert report.rejected_total == 0, report.summary()
            next_cycle = ts if next_cycle is None else next_cycle
            if ts < next_cycle:
                continue
            next_cycle = ts + CYCLE_S * 1000
            now = datetime.fromtimestamp((ts + 1) / 1000, tz=UTC)
            for plan in shard_plans(rt, ts + 1):
                result = run_shard(rt.engine, plan)
                assert result.errors == []
                persist_detection(rt.engine, result.anomalies, result.watermarks, now, policy, {})
        return issues_frame(rt.engine)
    finally:
        rt.close()


@pytest.fixture
def recording() -> None:
    if not RECORDING.exists():
        pytest.skip(f"the recording {RECORDING} is missing")
    first, last = None, None
    for ts, _ in scrapes():
        first = first or ts
        last = ts
    assert first is not None and last is not None
    assert (last - first) / 60_000 >= 29, "the recording is shorter than 30 minutes"


def test_a_real_exporters_own_metrics_open_no_issue(recording: None, tmp_path: Path) -> None:
    config = tmp_path / "selfheal.json"
    config.write_text(json.dumps({"database_url": sqlite_url_for(tmp_path / "replay.db")}))
    issues = replay(config)
    assert issues.empty, issues[["component", "kind", "severity", "title"]].to_dict("records")
