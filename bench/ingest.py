"""Ingest benchmark: samples and log lines per second through the project's ingest path.

Baselines are measured in the same run on the same machine, so the ratios hold even on a
noisy box:

- ``ingest.samples_per_s``: a batch of samples (1,000 series) through ``store_samples``
  (validation, series resolution, duplicate-skipping bulk insert, one transaction) into a
  fresh SQLite database; ``ingest.raw_samples_per_s``: the same rows with plain
  ``sqlite3.executemany`` into the same table (same schema and pragmas, series pre-created).
- ``logs.lines_per_s``: a generated service log through ``tail_file`` with the component's
  template annotator, end to end (read, decode, learn the file's format, split header,
  parse timestamp and level, mine the template, commit lines, offsets and templates);
  ``logs.regex_lines_per_s``: reading the same file and matching each line with one
  compiled regex.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import best_of
from storage.engine import make_engine, sqlite_url_for
from storage.metrics import SeriesKey, SeriesResolver, labels_key
from storage.migrate import ensure_schema
from tasks.ingest.logtail import TailSettings, tail_file
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples
from tasks.ingest.templating import TemplateAnnotator


def sample_frame(n_series: int, n_points: int, t0_ms: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    comp = np.repeat([f"c{i // 10}" for i in range(n_series)], n_points)
    metric = np.repeat([f"m{i % 10}" for i in range(n_series)], n_points)
    labels = np.repeat([labels_key({"shard": str(i % 3)}) for i in range(n_series)], n_points)
    ts = np.tile(t0_ms + np.arange(n_points, dtype=np.int64) * 10_000, n_series)
    return pd.DataFrame(
        {
            "component": comp,
            "metric": metric,
            "labels": labels,
            "ts": ts,
            "value": rng.normal(size=n_series * n_points),
            "kind": "gauge",
        }
    )


def bench_samples(n_series: int, n_points: int, repeat: int) -> dict[str, float]:
    t0_ms = int(time.time() * 1000) - n_points * 10_000
    frame = sample_frame(n_series, n_points, t0_ms)
    n = len(frame)
    with tempfile.TemporaryDirectory() as tmp:
        # Both paths start from the same database: schema from our migrations and the
        # series already registered, as in steady state where every scrape hits known series.
        template = Path(tmp) / "template.db"
        engine = make_engine(sqlite_url_for(template))
        ensure_schema(engine)
        keys = frame[["component", "metric", "labels"]].drop_duplicates()
        with engine.begin() as conn:
            ids = SeriesResolver().resolve(
                conn, [SeriesKey(*k) for k in keys.itertuples(index=False)]
            )
        engine.dispose()

        timings: list[float] = []
        for i in range(repeat):
            path = Path(tmp) / f"ours-{i}.db"
            path.write_bytes(template.read_bytes())
            engine = make_engine(sqlite_url_for(path))
            ensure_schema(engine)
            t = time.perf_counter()
            # A fresh resolver per run, as each ingest run has: it looks every series up.
            report = store_samples(engine, frame, IngestReport("bench"), resolver=SeriesResolver())
            timings.append(time.perf_counter() - t)
            assert report.stored == n, report.summary()
            engine.dispose()
        ours_s = min(timings)

        sid = np.repeat(
            np.array([ids[SeriesKey(*k)] for k in keys.itertuples(index=False)]), n_points
        )
        rows = list(zip(sid.tolist(), frame["ts"].tolist(), frame["value"].tolist(), strict=True))
        raw_times: list[float] = []
        for i in range(repeat):
            path = Path(tmp) / f"raw-{i}.db"
            path.write_bytes(template.read_bytes())
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            t = time.perf_counter()
            conn.executemany("INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)", rows)
            conn.commit()
            raw_times.append(time.perf_counter() - t)
            conn.close()
        raw_s = min(raw_times)
    return {
        "ingest.samples": n,
        "ingest.samples_per_s": round(n / ours_s),
        "ingest.raw_samples_per_s": round(n / raw_s),
        "ingest.ratio_vs_raw": round(raw_s / ours_s, 3),
    }


LINE = re.compile(r"^(\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) \[([^\]]+)\] (.*)$")


def write_log(path: Path, n: int) -> None:
    levels = ["INFO"] * 8 + ["WARNING", "ERROR"]
    with path.open("w") as fh:
        for i in range(n):
            ts = pd.Timestamp(1_700_000_000 + i // 20, unit="s").strftime("%Y-%m-%dT%H:%M:%S")
            fh.write(
                f"{ts}.{i % 1000:03d}Z {levels[i % 10]} [proof_engine] request {i} "
                f"served in {i % 97} ms for client 10.0.{i % 255}.{i % 7}\n"
            )


def bench_logs(n_lines: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "svc.log"
        write_log(log, n_lines)
        timings: list[float] = []
        cpu: list[float] = []
        for i in range(repeat):
            engine = make_engine(sqlite_url_for(Path(tmp) / f"logs-{i}.db"))
            ensure_schema(engine)
            c = time.process_time()
            t = time.perf_counter()
            annotator = TemplateAnnotator.load(engine, "proof_engine")
            report = tail_file(
                engine, log, "proof_engine", TailSettings(from_start=True), annotator
            )
            timings.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            assert report.stored == n_lines, report.summary()
            engine.dispose()

        def regex_scan() -> None:
            matched = 0
            with log.open("rb") as fh:
                for raw in fh:
                    if LINE.match(raw.decode("utf-8", "replace")):
                        matched += 1
            assert matched == n_lines

        regex_s = best_of(regex_scan, repeat)
    ours_s = min(timings)
    return {
        "logs.lines": n_lines,
        "logs.lines_per_s": round(n_lines / ours_s),
        # CPU time of this process: what the path costs when the machine is not shared
        # (wall-clock figures on a loaded 2-core box are several times lower).
        "logs.cpu_lines_per_s": round(n_lines / min(cpu)),
        "logs.regex_lines_per_s": round(n_lines / regex_s),
        "logs.ratio_vs_regex": round(regex_s / ours_s, 3),
    }


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "ingest.samples_per_s": "ingest.raw_samples_per_s",
    "logs.lines_per_s": "logs.regex_lines_per_s",
}


def run(quick: bool = False) -> dict[str, float]:
    if quick:
        figures = bench_samples(1000, 100, repeat=2)
        figures.update(bench_logs(50_000, repeat=2))
    else:
        figures = bench_samples(1000, 300, repeat=3)
        figures.update(bench_logs(200_000, repeat=3))
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
