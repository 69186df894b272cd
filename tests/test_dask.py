"""Detection shards spread over a real Dask cluster (prefect-dask), same results as threads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storage.engine import make_engine, sqlite_url_for
from storage.issues import anomalies_frame, issues_frame
from storage.migrate import ensure_schema
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


def seed(db_url: str) -> None:
    """Ten components; in five of them the latest point of one series is far off."""
    engine = make_engine(db_url)
    ensure_schema(engine)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    rng = np.random.default_rng(7)
    frames = []
    for c in range(10):
        for m in range(3):
            values = 100 + rng.normal(0, 1, 240)
            if m == 0 and c % 2 == 0:
                values[-1] = 200.0
            ts = now_ms - (239 - np.arange(240)) * 10_000
            frames.append(
                pd.DataFrame(
                    {
                        "component": f"c{c}",
                        "metric": f"m{m}",
                        "labels": "{}",
                        "ts": ts.astype("int64"),
                        "value": values,
                        "kind": "gauge",
                    }
                )
            )
    store_samples(engine, pd.concat(frames, ignore_index=True), IngestReport("t"))
    engine.dispose()


def config(tmp_path: Path, db_url: str, address: str | None) -> Path:
    detection: dict[str, object] = {"shard_size": 3, "behaviour": False, "group_wait": 0}
    if address:
        detection["dask_address"] = address
    path = tmp_path / f"c-{bool(address)}.json"
    path.write_text(json.dumps({"database_url": db_url, "detection": detection}))
    return path


def test_shards_on_dask_find_what_threads_find(
    prefect_server: None, cluster: str, tmp_path: Path
) -> None:
    from flows.detect import detect

    found = {}
    for address in (None, cluster):
        db = sqlite_url_for(tmp_path / f"{bool(address)}.db")
        seed(db)
        result = detect(str(config(tmp_path, db, address)))
        engine = make_engine(db)
        try:
            anomalies = anomalies_frame(engine)
            found[bool(address)] = sorted(
                set(zip(anomalies["component"], anomalies["signature"], strict=True))
            )
            assert len(issues_frame(engine)) == len(result["new_issues"])
        finally:
            engine.dispose()
    assert found[True] == found[False]
    assert {c for c, _ in found[True]} == {"c0", "c2", "c4", "c6", "c8"}


def test_missing_prefect_dask_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from flows.detect import detect_shards_on_dask

    real = builtins.__import__

    def no_dask(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("prefect_dask"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(RuntimeError, match="prefect-dask is not installed"):
        detect_shards_on_dask("sqlite:///x.db", [], "tcp://127.0.0.1:1")
