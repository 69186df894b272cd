"""Probe results stored as series: ``probe_ok{probe=NAME}`` (1 passed, 0 failed) and
``probe_duration_seconds{probe=NAME}`` per component, so the dashboard, notebooks, tuning
and detection read them like any scraped series."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Engine, text

from storage.metrics import SeriesKey, SeriesResolver, insert_samples, labels_key

PROBE_OK_METRIC = "probe_ok"
PROBE_LATENCY_METRIC = "probe_duration_seconds"


class ProbeResult(Protocol):
    """What is stored of one probe run (tasks.probes.spec.ProbeResult has it)."""

    @property
    def component(self) -> str: ...
    @property
    def probe(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def ts_ms(self) -> int: ...


def save_probe_results(
    engine: Engine, results: Sequence[ProbeResult], resolver: SeriesResolver | None = None
) -> int:
    """Store the results in one transaction; returns the number of new samples."""
    if not results:
        return 0
    resolver = resolver or SeriesResolver()
    rows: list[tuple[SeriesKey, int, float]] = []
    for r in results:
        labels = labels_key({"probe": r.probe})
        rows.append((SeriesKey(r.component, PROBE_OK_METRIC, labels), r.ts_ms, float(r.ok)))
        rows.append((SeriesKey(r.component, PROBE_LATENCY_METRIC, labels), r.ts_ms, r.latency_s))
    with engine.begin() as conn:
        ids = resolver.resolve(conn, {k for k, _, _ in rows}, {k: "gauge" for k, _, _ in rows})
        return insert_samples(conn, [(ids[k], ts, v) for k, ts, v in rows])


def latest_probe_ms(engine: Engine) -> dict[tuple[str, str], int]:
    """(component, probe name) → epoch ms of its newest stored result."""
    sql = text(
        "SELECT c.name, s.labels, MAX(x.ts) FROM series s "
        "JOIN components c ON c.id = s.component_id "
        "JOIN samples x ON x.series_id = s.id "
        "WHERE s.metric = :metric GROUP BY c.name, s.labels"
    )
    out: dict[tuple[str, str], int] = {}
    with engine.connect() as conn:
        for name, labels, newest in conn.execute(sql, {"metric": PROBE_OK_METRIC}):
            probe = json.loads(labels or "{}").get("probe", "liveness")
            out[(str(name), str(probe))] = int(newest)
    return out
