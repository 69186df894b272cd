"""Header formats learned from a file's own lines, for layouts written for this test.

No layout below is known to the parser by name: each test writes a file in one layout,
lets ``tail_file`` learn its format, and checks the stored message (header removed),
timestamp and level.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from storage.logs import read_log_events
from tasks.ingest.logtail import FUTURE_NOTE, NO_TS_NOTE, TailSettings, tail_file
from tasks.ingest.templating import TemplateAnnotator
from tasks.logs.lineparse import LogFormat, learn_format

T0 = datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
MESSAGES = [
    "worker pool resized to 8 threads",
    "cache warmed with 1200 entries",
    "connection refused by upstream db-2",
    "disk usage at 71 percent",
    "request 4411 finished in 35 ms",
]
LEVELS = ["INFO", "DEBUG", "ERROR", "WARNING", "INFO"]
WINDOWS_LEVELS = {"INFO": "Information", "DEBUG": "Verbose", "ERROR": "Error", "WARNING": "Warning"}


def _rows(n: int = 60) -> list[tuple[datetime, str, str]]:
    return [
        (T0 + timedelta(seconds=7 * i, milliseconds=13 * i), LEVELS[i % 5], MESSAGES[i % 5])
        for i in range(n)
    ]


def _ms(t: datetime) -> str:
    return f"{t.microsecond // 1000:03d}"


LAYOUTS = {
    # name: (line maker, timestamp resolution in seconds, has level)
    "syslog": (
        lambda t, lv, m, i: f"{t:%b} {t.day:2d} {t:%H:%M:%S} node-{i % 3} svc[{100 + i}]: {m}",
        1.0,
        False,
    ),
    "iso_level": (lambda t, lv, m, i: f"{t:%Y-%m-%dT%H:%M:%S}.{_ms(t)}Z {lv} {m}", 0.001, True),
    "bracketed_level": (
        lambda t, lv, m, i: f"[{t:%Y-%m-%d %H:%M:%S}] [{lv.lower()}] {m}",
        1.0,
        True,
    ),
    "epoch": (lambda t, lv, m, i: f"{t.timestamp():.3f} {lv} {m}", 0.001, True),
    "java_thread": (
        lambda t, lv, m, i: (
            f"{t:%Y-%m-%d %H:%M:%S},{_ms(t)} [pool-{i % 4} thread-{i % 7}] {lv:<5} "
            f"com.example.store.Engine - {m}"
        ),
        0.001,
        True,
    ),
    "windows": (
        lambda t, lv, m, i: (
            f"{t.month}/{t.day}/{t.year} {int(t.strftime('%I'))}:{t:%M:%S} {t:%p} "
            f"{WINDOWS_LEVELS[lv]} "
            f"{m}"
        ),
        1.0,
        True,
    ),
    "key_value": (
        lambda t, lv, m, i: f'when={t:%Y-%m-%dT%H:%M:%S}Z sev={lv.lower()} text="{m}" req={i}',
        1.0,
        True,
    ),
    "json_lines": (
        lambda t, lv, m, i: json.dumps(
            {"at": t.timestamp(), "lvl": lv.lower(), "what": m, "worker": i % 3}
        ),
        0.001,
        True,
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_learned_format_splits_header_and_reads_timestamp(
    sqlite_engine: Engine, tmp_path: Path, layout: str
) -> None:
    make, resolution, has_level = LAYOUTS[layout]
    rows = _rows()
    log = tmp_path / f"{layout}.log"
    log.write_text("".join(make(t, lv, m, i) + "\n" for i, (t, lv, m) in enumerate(rows)))
    annotator = TemplateAnnotator.load(sqlite_engine, "svc")
    report = tail_file(sqlite_engine, log, "svc", TailSettings(from_start=True), annotator)
    assert report.stored == len(rows)
    assert report.notes.get(NO_TS_NOTE, 0) == 0, report.notes
    df = read_log_events(sqlite_engine, 0).sort_values("byte_offset", ignore_index=True)
    for i, (t, lv, m) in enumerate(rows):
        msg = df["message"][i]
        # The message is what follows the header: never a timestamp, level or thread.
        assert msg.startswith(m), (layout, msg)
        assert abs(df["ts"][i] - pd.Timestamp(t)) <= pd.Timedelta(seconds=resolution), layout
        if has_level:
            assert df["level"][i] == lv, (layout, df["level"][i])
    # Five messages, five templates: no header field leaked into the mined text.
    assert df["template_id"].nunique() == 5, layout


def test_format_is_kept_per_file_and_learned_again_when_the_file_changes(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    log = tmp_path / "a.log"
    rows = _rows(250)  # more than a full sample: the format is settled
    make_a = LAYOUTS["iso_level"][0]
    log.write_text("".join(make_a(t, lv, m, i) + "\n" for i, (t, lv, m) in enumerate(rows)))
    ann = TemplateAnnotator.load(sqlite_engine, "svc")
    tail_file(sqlite_engine, log, "svc", TailSettings(from_start=True), ann)
    # Saved with the component's state and reloaded.
    again = TemplateAnnotator.load(sqlite_engine, "svc")
    fmt = again.get_format(str(log))
    assert fmt is not None and fmt.kind == "columns" and fmt.level_col is not None
    # The application switches to JSON lines: most lines stop fitting, the format is
    # learned again and later lines are split right.
    make_b = LAYOUTS["json_lines"][0]
    more = _rows(900)
    with log.open("a") as fh:
        fh.write("".join(make_b(t, lv, m, i) + "\n" for i, (t, lv, m) in enumerate(more)))
    report = tail_file(sqlite_engine, log, "svc", TailSettings(from_start=True), again)
    assert report.notes["header format learned again (lines stopped fitting)"] == 1
    df = read_log_events(sqlite_engine, 0).sort_values("byte_offset", ignore_index=True)
    assert df["message"].iloc[-1].startswith(more[-1][2])
    assert df["level"].iloc[-1] == more[-1][1]


def test_a_file_empty_at_first_sight_gets_its_format_once_it_has_lines(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    log = tmp_path / "new.log"
    log.write_text("")
    ann = TemplateAnnotator.load(sqlite_engine, "svc")
    tail_file(sqlite_engine, log, "svc", TailSettings(), ann)
    make = LAYOUTS["bracketed_level"][0]
    rows = _rows(30)
    log.write_text("".join(make(t, lv, m, i) + "\n" for i, (t, lv, m) in enumerate(rows)))
    ann = TemplateAnnotator.load(sqlite_engine, "svc")
    report = tail_file(sqlite_engine, log, "svc", TailSettings(), ann)
    assert report.stored == 30 and not report.notes.get(NO_TS_NOTE)
    df = read_log_events(sqlite_engine, 0).sort_values("byte_offset", ignore_index=True)
    assert df["message"].tolist() == [m for _, _, m in rows]


def test_lines_without_a_timestamp_get_the_read_time_and_are_counted(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    log = tmp_path / "plain.log"
    log.write_text("starting up\nready to serve\n")
    report = tail_file(sqlite_engine, log, "svc", TailSettings(from_start=True), None, lambda: 1e9)
    assert report.notes[NO_TS_NOTE] == 2
    df = read_log_events(sqlite_engine, 0)
    assert (df["ts"] == pd.Timestamp(1e9, unit="s", tz="UTC")).all()


def test_lines_stamped_in_the_future_get_the_read_time(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    log = tmp_path / "ahead.log"
    ahead = datetime.now(UTC) + timedelta(hours=2)  # a clock in local time, say
    log.write_text("".join(f"{ahead:%Y-%m-%d %H:%M:%S} INFO tick {i}\n" for i in range(5)))
    report = tail_file(sqlite_engine, log, "svc", TailSettings(from_start=True), None, lambda: 1e9)
    assert report.notes[FUTURE_NOTE] == 5
    df = read_log_events(sqlite_engine, 0)
    assert (df["ts"] == pd.Timestamp(1e9, unit="s", tz="UTC")).all()


def test_continuation_lines_keep_their_text() -> None:
    lines = [f"2026-03-14 09:00:{i:02d} ERROR job {i} failed" for i in range(20)]
    fmt = learn_format(lines)
    now = datetime.now(UTC)
    ts, level, msg = fmt.split("    at com.example.Job.run(Job.java:42)", now)
    assert (ts, level, msg) == (None, None, "at com.example.Job.run(Job.java:42)")
    restored = LogFormat.from_state(json.loads(json.dumps(fmt.to_state())))
    assert restored is not None
    assert restored.split(lines[3], now)[1:] == ("ERROR", "job 3 failed")


def test_a_burst_of_one_message_does_not_become_a_header_column() -> None:
    # A small log, then 300 lines of one exception: the exception's name ends in ":" in
    # almost every line, but it is the message's first word, not a tag column.
    head = [
        "2026-12-07T05:53:48.639Z INFO [repo] config loaded: pool_size=8 timeout_ms=500",
        "2026-12-07T05:53:48.646Z INFO [repo] repo listening on 127.0.0.1:32871",
        "2026-12-07T05:56:06.531Z INFO [repo] fault injected: error_burst",
    ]
    burst = [
        f"2026-12-07T05:56:06.{546 + i % 400:03d}Z ERROR [repo] java.lang.OutOfMemoryError: "
        f"Java heap space (block {i})"
        for i in range(300)
    ]
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    for lines in (head, head + burst):
        fmt = learn_format(lines, now)
        assert fmt.tag_col is None, fmt.describe()
        assert fmt.split(burst[7], now)[2].startswith("java.lang.OutOfMemoryError: Java heap")
        assert fmt.split(head[2], now)[2] == "fault injected: error_burst"
