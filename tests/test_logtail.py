"""Tailing logs: every line exactly once through partial lines, rotation, truncation, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from storage.logs import count_log_events, read_log_events
from tasks.ingest.logtail import TailSettings, tail_file

REPO = Path(__file__).resolve().parents[1]
# These tests read files from their first byte (a file seen for the first time is
# otherwise read from its end; see test_first_sight_reads_from_the_end).
START = TailSettings(from_start=True)


def messages(engine: Engine) -> list[str]:
    return read_log_events(engine, 0)["message"].tolist()


def test_partial_last_line_waits_for_its_newline(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\nthr")
    assert tail_file(engine, log, "c", START).stored == 2
    with log.open("ab") as fh:
        fh.write(b"ee\nfour\n")
    assert tail_file(engine, log, "c", START).stored == 2
    assert tail_file(engine, log, "c", START).stored == 0
    assert messages(engine) == ["one", "two", "three", "four"]


def test_timestamp_and_level_are_parsed(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(
        "2024-05-01T10:00:00.250Z ERROR [db] connection refused\n"
        + "".join(f"2024-05-01T10:00:0{i}.000Z INFO [db] query {i} done\n" for i in range(1, 6))
        + "no timestamp here\n"
    )
    tail_file(engine, log, "c", START)
    df = read_log_events(engine, 0).sort_values("byte_offset", ignore_index=True)
    assert df["ts"].iloc[0] == pd.Timestamp("2024-05-01T10:00:00.250Z")
    assert df["level"].tolist()[:2] == ["ERROR", "INFO"]
    assert df["message"].iloc[0] == "connection refused"
    assert pd.isna(df["level"].iloc[-1])
    # A line without a timestamp is stamped with the time it was read.
    assert abs(df["ts"].iloc[-1] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=1)


def test_invalid_utf8_kept_and_long_lines_capped(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    long_line = b"x" * 5000
    log.write_bytes(b"caf\xe9 \xff\xfe ok\n" + long_line + b"\nafter\n")
    report = tail_file(engine, log, "c", TailSettings(max_line_bytes=1000, from_start=True))
    assert report.stored == 3
    msgs = messages(engine)
    assert msgs[0] == "caf\ufffd \ufffd\ufffd ok"
    assert msgs[1] == "x" * 1000 + " …[truncated 4000 bytes]"
    assert msgs[2] == "after"
    assert report.notes["lines capped at max_line_bytes"] == 1


def test_overlong_line_split_across_reads(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"a\n" + b"y" * 3000)  # no newline yet: must not be stored
    tail_file(engine, log, "c", TailSettings(max_line_bytes=1000, from_start=True))
    with log.open("ab") as fh:
        fh.write(b"y" * 3000 + b"\nb\n")
    tail_file(engine, log, "c", TailSettings(max_line_bytes=1000, from_start=True))
    assert messages(engine) == ["a", "y" * 1000 + " …[truncated 5000 bytes]", "b"]


def test_rotation_by_rename_stores_every_line_once(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("l1\nl2\n")
    tail_file(engine, log, "c", START)
    with log.open("a") as fh:
        fh.write("l3\nl4\n")  # written before rotation, not yet read
    log.rename(tmp_path / "app.log.1")
    log.write_text("l5\n")
    tail_file(engine, log, "c", START)
    with log.open("a") as fh:
        fh.write("l6\n")
    tail_file(engine, log, "c", START)
    assert messages(engine) == ["l1", "l2", "l3", "l4", "l5", "l6"]


def test_rotation_with_same_size_is_still_detected(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("aaaa\n")
    tail_file(engine, log, "c", START)
    log.unlink()
    log.write_text("bbbb\ncccc\n")  # the inode number may even be reused
    tail_file(engine, log, "c", START)
    assert messages(engine) == ["aaaa", "bbbb", "cccc"]


def test_truncation_starts_over(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("first line that is long\nsecond\n")
    tail_file(engine, log, "c", START)
    with log.open("r+") as fh:  # copytruncate, then the writer goes on
        fh.truncate(0)
    with log.open("a") as fh:
        fh.write("after truncation\n")
    tail_file(engine, log, "c", START)
    assert messages(engine) == ["first line that is long", "second", "after truncation"]


def test_missing_file_is_reported_not_raised(engine: Engine, tmp_path: Path) -> None:
    report = tail_file(engine, tmp_path / "nope.log", "c", START)
    assert report.error and "not found" in report.error


KILL_SCRIPT = """
import sys
from storage.engine import make_engine
from tasks.ingest.logtail import TailSettings, tail_file
engine = make_engine(sys.argv[1])
tail_file(engine, sys.argv[2], "c", TailSettings(batch_lines=500, from_start=True))
"""


def test_sigkill_mid_batch_then_rerun_stores_each_line_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "big.log"
    n = 120_000
    with log.open("w") as fh:
        for i in range(n):
            fh.write(f"2024-05-01T10:00:00Z INFO line {i:07d} payload {'z' * (i % 40)}\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, db_url, str(log)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while count_log_events(engine) < 2000:  # a few batches committed, more in flight
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the ingest subprocess made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    partial = count_log_events(engine)
    assert 0 < partial < n, "the kill did not land mid-ingest; make the file larger"
    tail_file(engine, log, "c", START)
    df = read_log_events(engine, 0)
    assert len(df) == n
    assert df["byte_offset"].is_unique
    expected = [f"line {i:07d}" for i in range(n)]
    # The stored message is the line without its header ("line 0000042 payload zz").
    assert sorted(" ".join(m.split()[:2]) for m in df["message"]) == expected


def test_first_sight_reads_from_the_end(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old one\nold two\npart")
    report = tail_file(engine, log, "c")
    assert report.stored == 0
    assert report.notes["bytes skipped at first sight (read from the end)"] == 16
    with log.open("ab") as fh:
        fh.write(b"ial\nnew\n")
    assert tail_file(engine, log, "c").stored == 2
    assert messages(engine) == ["partial", "new"]
