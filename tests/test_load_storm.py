"""A scaled-down storm and load run: grouping, limits, order and accounting under load.

The storm (``bench.storm``, 200 anomalies over 20 components, one issue each) runs real
``recover`` flow runs against the session's Prefect test server, holding slots of the
strict ``selfheal-recoveries`` limit. The load run (``bench.load``) pushes through the real
ingest path from a separate process while the detect step scans. No timing assertions:
``make bench`` measures those.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from bench.load import run_load
from bench.storm import (
    StormShape,
    component_name,
    expected_quarantined,
    peak_overlap,
    run_storm,
    storm_anomalies,
)
from storage.engine import make_engine, sqlite_url_for
from storage.models import Recovery

pytestmark = pytest.mark.slow

SHAPE = StormShape(components=20, per_component=10, max_concurrent=3)


def test_storm_shape_is_what_the_benchmark_says() -> None:
    cycles = storm_anomalies(SHAPE, datetime.now(UTC))
    anomalies = [a for _, batch in cycles for a in batch]
    assert len(anomalies) == 200
    assert len({a.component for a in anomalies}) == 20
    groups = Counter((a.component, a.kind, a.signature) for a in anomalies)
    assert len(groups) == 20  # one symptom a component, ten anomalies each
    assert set(groups.values()) == {10}
    assert len({k[1] for k in groups}) == 3  # metric, log and behaviour symptoms
    worst: dict[tuple[str, str, str], int] = {}
    order = ("low", "medium", "high", "critical")
    for a in anomalies:
        key = (a.component, a.kind, a.signature)
        worst[key] = max(worst.get(key, 0), order.index(a.severity))
    assert {order[s] for s in worst.values()} == set(order)  # every severity occurs
    assert sum(s == 3 for s in worst.values()) == 5  # components 0, 4, 8, 12, 16
    assert expected_quarantined(SHAPE) == {component_name(7), component_name(17)}


def test_peak_overlap() -> None:
    t = [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(10)]
    assert peak_overlap([]) == 0
    assert peak_overlap([(t[0], t[2]), (t[2], t[4])]) == 1  # touching is not overlapping
    assert peak_overlap([(t[0], t[5]), (t[1], t[3]), (t[2], t[4]), (t[6], t[7])]) == 3


def test_storm_groups_respects_the_limit_goes_critical_first_and_loses_nothing(
    prefect_server: None, tmp_path: Path
) -> None:
    result = run_storm(tmp_path, SHAPE, start_server=False)
    assert result.errors == []
    assert result.anomalies == 200
    # Grouping: one issue per (component, kind, signature), however many anomalies.
    assert result.max_issues_per_group == 1
    assert result.open_issues == result.groups == 20  # at most one per component
    # The limit: never more recoveries at once than allowed, by the records and by Prefect.
    assert result.recoveries >= result.outcome["healed"]
    assert result.peak_concurrent <= SHAPE.max_concurrent
    assert result.peak_limit_slots <= SHAPE.max_concurrent
    assert result.peak_concurrent >= 2  # they did overlap: the limit was exercised
    # Order: every critical issue launched before any lesser one; no severity inversions.
    severities = Counter(s for _, s in result.launches)
    assert severities["critical"] == 5  # components 0, 4, 8, 12, 16
    assert result.critical_first
    assert result.priority_inversions == 0
    # Nothing lost: healed, or quarantined exactly where the strategy fails.
    assert result.lost == 0
    assert result.outcome["awaiting_approval"] == 0  # automated mode asks nobody
    assert result.quarantined_components == expected_quarantined(SHAPE)
    # The strategy fails on components 7 and 17: their issues end quarantined.
    assert result.outcome["quarantined"] == 2
    assert result.outcome["healed"] == result.groups - 2
    engine = make_engine(sqlite_url_for(tmp_path / "storm.db"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Recovery.component, Recovery.status)).all()
    finally:
        engine.dispose()
    assert {s for _, s in rows} <= {"succeeded", "failed"}  # nothing left in flight
    failed = {c for c, s in rows if s == "failed"}
    assert failed == expected_quarantined(SHAPE)  # one failed attempt each, then skipped
    assert len([1 for _, s in rows if s == "failed"]) == len(failed)


def test_load_run_scans_while_the_gateway_pushes(tmp_path: Path) -> None:
    """Two components, short cycles: every push stored, every scan completed. (Two scans
    fit in 8 s on a quiet machine; a scan slower than 3 s on a loaded one leaves room for
    one, which is a timing, not a behaviour: bench.load measures the timings.)"""
    figures = run_load(tmp_path, n_components=2, duration_s=8.0, cycle_s=5.0)
    assert figures["load.series"] == 200
    assert figures["load.cycles"] in (1, 2)
    assert figures["load.ingest_samples_per_s"] > 0
    assert figures["load.idle_cycle_s"] > 0
    assert figures["load.samples_not_stored"] == 0  # every push stored in full
