"""Real exporters' recordings, replayed through the cycle's detection.

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

import json
from pathlib import Path

import pytest

from storage.engine import sqlite_url_for
from tests.exporter_replay import recorded_minutes, replay

RECORDING = Path(__file__).parent / "data" / "node_exporter_self.txt.gz"
HOST_RECORDING = Path(__file__).parent / "data" / "node_exporter_host.txt.gz"


@pytest.fixture
def recording() -> Path:
    if not RECORDING.exists():
        pytest.skip(f"the recording {RECORDING} is missing")
    assert recorded_minutes(RECORDING) >= 29, "the recording is shorter than 30 minutes"
    return RECORDING


def test_a_real_exporters_own_metrics_open_no_issue(recording: Path, tmp_path: Path) -> None:
    config = tmp_path / "selfheal.json"
    config.write_text(json.dumps({"database_url": sqlite_url_for(tmp_path / "replay.db")}))
    issues = replay(config, recording).issues
    assert issues.empty, issues[["component", "kind", "severity", "title"]].to_dict("records")


def test_a_real_hosts_resource_series_are_context_not_issues(tmp_path: Path) -> None:
    """The first 20 minutes of a real host's node exporter (every family, recorded while
    this machine ran the benchmarks: two load changes): its memory, socket, disk and network
    series move to levels they had not had, which is no fault; they are context."""
    if not HOST_RECORDING.exists():
        pytest.skip(f"the recording {HOST_RECORDING} is missing")
    config = tmp_path / "selfheal.json"
    config.write_text(json.dumps({"database_url": sqlite_url_for(tmp_path / "replay.db")}))
    out = replay(config, HOST_RECORDING, minutes=20)
    kinds = {a.kind for a in out.anomalies}
    assert "context" in kinds  # the moves are seen, and kept
    assert kinds <= {"context"}, sorted({(a.kind, a.signature) for a in out.anomalies})
    assert out.issues.empty, out.issues[["kind", "signature"]].to_dict("records")
