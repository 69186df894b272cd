"""parse_log_line / split_header: formats, level normalisation, garbage tolerance."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.logs.lineparse import (
    LEVELS,
    ParsedLine,
    normalise_level,
    parse_log_line,
    parse_timestamp,
    split_header,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dt(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, sec, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "ts", "level", "message"),
    [
        # ISO-8601 variants
        ("2024-05-01T10:00:00Z [ERROR] boom", _dt(2024, 5, 1, 10), "ERROR", "boom"),
        ("2024-05-01T12:00:00+02:00 WARN hot", _dt(2024, 5, 1, 10), "WARNING", "hot"),
        (
            "2024-05-01T10:00:00.123456789Z INFO x",
            _dt(2024, 5, 1, 10, 0, 0, 123456),
            "INFO",
            "x",
        ),
        (
            "2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.App: Created app",
            _dt(2015, 10, 18, 18, 1, 47, 978000),
            "INFO",
            "Created app",
        ),
        (
            "2024-01-02 03:04:05,123 - myapp.db - ERROR - connection refused",
            _dt(2024, 1, 2, 3, 4, 5, 123000),
            "ERROR",
            "connection refused",
        ),
        # syslog, year inferred
        (
            "Feb 28 20:56:39 host sshd[42]: Accepted key",
            _dt(2026, 2, 28, 20, 56, 39),
            None,
            "Accepted key",
        ),
        (
            "Nov 28 20:56:39 host kernel: Out of memory: Kill process 1",
            _dt(2025, 11, 28, 20, 56, 39),
            None,
            "Out of memory: Kill process 1",
        ),
        (
            "<11>Feb  1 00:00:01 host app[7]: disk gone",
            _dt(2026, 2, 1, 0, 0, 1),
            "ERROR",
            "disk gone",
        ),
        ("Feb  1 00:00:01 host app[7]: ERROR: x y", _dt(2026, 2, 1, 0, 0, 1), "ERROR", "x y"),
        # epoch, BGL, HDFS
        (
            "1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 "
            "R02-M1-N0-C:J12-U11 RAS KERNEL FATAL data TLB error interrupt",
            _dt(2005, 6, 3, 22, 42, 50),
            "CRITICAL",
            "data TLB error interrupt",
        ),
        (
            "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 done",
            _dt(2008, 11, 9, 20, 36, 15),
            "INFO",
            "PacketResponder 1 done",
        ),
        ("1700000000123 started", _dt(2023, 11, 14, 22, 13, 20, 123000), None, "started"),
        # JSON and logfmt
        (
            '{"ts": "2024-05-01T10:00:00Z", "level": "warn", "msg": "slow"}',
            _dt(2024, 5, 1, 10),
            "WARNING",
            "slow",
        ),
        (
            '{"timestamp": 1714557600, "severity": "FATAL", "message": "dead"}',
            _dt(2024, 5, 1, 10),
            "CRITICAL",
            "dead",
        ),
        (
            '{"time": "2024-05-01T10:00:00Z", "level": 50, "msg": "req", "error": "timeout"}',
            _dt(2024, 5, 1, 10),
            "ERROR",
            "req error=timeout",
        ),
        (
            'ts=2024-05-01T10:00:00Z level=error msg="disk full" path=/var',
            _dt(2024, 5, 1, 10),
            "ERROR",
            "disk full path=/var",
        ),
        # Apache / bracketed
        (
            "[Sun Dec 04 04:47:44 2005] [error] mod_jk child in error state 6",
            _dt(2005, 12, 4, 4, 47, 44),
            "ERROR",
            "mod_jk child in error state 6",
        ),
        ("[crit] kernel bug", None, "CRITICAL", "kernel bug"),
        ("plain message without header", None, None, "plain message without header"),
    ],
)
def test_formats(line: str, ts: datetime | None, level: str | None, message: str) -> None:
    assert parse_log_line(line, now=NOW) == ParsedLine(ts, level, message)


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("FATAL", "CRITICAL"),
        ("SEVERE", "ERROR"),
        ("WARN", "WARNING"),
        ("err", "ERROR"),
        ("crit", "CRITICAL"),
        ("emerg", "CRITICAL"),
        ("notice", "INFO"),
        ("trace", "DEBUG"),
        ("[Error]", "ERROR"),
        ("<3>", "ERROR"),
        (7, "DEBUG"),
        (30, "INFO"),
        (60, "CRITICAL"),
        ("bogus", None),
        (None, None),
        (True, None),
    ],
)
def test_normalise_level(raw: object, level: str | None) -> None:
    assert normalise_level(raw) == level


def test_syslog_year_rolls_back_only_for_future_dates() -> None:
    assert parse_timestamp("Mar  1 11:00:00", now=NOW) == _dt(2026, 3, 1, 11)
    # Within a day ahead (timezone skew) stays in this year; further ahead is last year.
    assert parse_timestamp("Mar  1 23:00:00", now=NOW) == _dt(2026, 3, 1, 23)
    assert parse_timestamp("Mar  5 00:00:00", now=NOW) == _dt(2025, 3, 5)
    assert parse_timestamp("Feb 29 00:00:00", now=NOW) == _dt(2024, 2, 29)  # 2026 not leap


def test_timestamps_are_utc_aware() -> None:
    for text in ("2024-05-01 10:00:00", "2024-05-01T10:00:00+05:30", "1714557600", "081109 203615"):
        ts = parse_timestamp(text, now=NOW)
        assert ts is not None
        assert ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["", "nope", "2024-13-45T99:99:99", "Feb 31 10:00:00", "99999999999999999999", None]
)
def test_bad_timestamps_are_none(text: str | None) -> None:
    assert parse_timestamp(text, now=NOW) is None


def test_split_header_keeps_message_verbatim() -> None:
    split = split_header("Jun 14 15:16:01 combo logrotate: ALERT exited abnormally with [1]")
    assert split.message == "ALERT exited abnormally with [1]"
    assert split.level_text is None  # a bare ALERT at the start of prose is not a level


def test_garbage_never_raises() -> None:
    rng = random.Random(1)
    samples = [
        "",
        " \t ",
        "\x00\xff\xfe binary",
        bytes(rng.randrange(256) for _ in range(512)).decode("latin-1"),
        "{" * 5000,
        '{"msg": ' * 2000,
        "[" + "a " * 500_000,
        "1" * 1_000_000,
        "Jan 99 99:99:99 host tag: x",
        "<999>1 bad",
        "\ud800\udfff",
    ]
    for line in samples:
        parsed = parse_log_line(line)
        assert isinstance(parsed, ParsedLine)
        assert parsed.level in (None, *LEVELS)
    assert parse_log_line(None) == ParsedLine(None, None, "")  # type: ignore[arg-type]
    assert parse_log_line(b"bytes") == ParsedLine(None, None, "")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_arbitrary_text(line: str) -> None:
    parsed = parse_log_line(line)
    assert parsed.level in (None, *LEVELS)
    assert parsed.ts is None or parsed.ts.tzinfo is not None


def test_loghub_levels_and_timestamps() -> None:
    env = os.environ.get("SELFHEAL_DATASETS")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    path = root / "loghub" / "BGL_2k.log"
    if not path.is_file():
        pytest.skip(f"Loghub data set not found at {root / 'loghub'}")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    parsed = [parse_log_line(line.split(" ", 1)[1]) for line in lines]
    assert all(p.ts is not None for p in parsed)
    assert sum(p.level == "CRITICAL" for p in parsed) == 347  # the FATAL lines
    hdfs = (root / "loghub" / "HDFS_2k.log").read_text(encoding="utf-8").splitlines()
    assert all(parse_log_line(line).ts is not None for line in hdfs)
