"""Learned log formats: level normalisation, timestamps, garbage tolerance."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.logs.lineparse import (
    LEVELS,
    LogFormat,
    learn_format,
    normalise_level,
    parse_span,
    span_kinds,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dt(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, sec, us, tzinfo=UTC)


def _ts(text: str, dayfirst: bool = False) -> datetime | None:
    toks = text.split()
    kinds = span_kinds(toks)
    if kinds is None:
        return None
    value = parse_span(toks, kinds, dayfirst, NOW)
    return None if value is None else datetime.fromtimestamp(value, UTC)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", _dt(2024, 5, 1, 10)),
        ("2024-05-01T12:00:00+02:00", _dt(2024, 5, 1, 10)),
        ("2024-05-01T10:00:00.123456789Z", _dt(2024, 5, 1, 10, 0, 0, 123456)),
        ("2024/05/01 10:00:00,5", _dt(2024, 5, 1, 10, 0, 0, 500000)),
        ("1714557600", _dt(2024, 5, 1, 10)),
        ("1714557600123", _dt(2024, 5, 1, 10, 0, 0, 123000)),
        ("240501 100000", _dt(2024, 5, 1, 10)),
        ("Wed May 1 10:00:00 2024", _dt(2024, 5, 1, 10)),
        ("5/1/2024 10:00:00 PM", _dt(2024, 5, 1, 22)),
    ],
)
def test_timestamp_shapes(text: str, expected: datetime) -> None:
    assert _ts(text) == expected


def test_yearless_stamps_roll_back_only_for_future_dates() -> None:
    assert _ts("Mar 1 11:00:00") == _dt(2026, 3, 1, 11)
    # Within a day ahead (timezone skew) stays in this year; further ahead is last year.
    assert _ts("Mar 1 23:00:00") == _dt(2026, 3, 1, 23)
    assert _ts("Mar 5 00:00:00") == _dt(2025, 3, 5)
    assert _ts("Feb 29 00:00:00") == _dt(2024, 2, 29)  # 2026 is not a leap year


def test_day_first_dates_are_learned_from_the_file() -> None:
    lines = [f"{d}/03/2026 10:00:0{d % 10} ERROR disk {d} failed" for d in range(10, 29)]
    fmt = learn_format(lines, NOW)
    assert fmt.dayfirst
    ts, level, msg = fmt.split(lines[3], NOW)
    assert ts == _dt(2026, 3, 13, 10, 0, 3).timestamp()
    assert (level, msg) == ("ERROR", "disk 13 failed")


@pytest.mark.parametrize(
    "text", ["", "nope", "2024-13-45T99:99:99", "Feb 31 10:00:00", "99999999999999999999"]
)
def test_bad_timestamps_are_none(text: str) -> None:
    assert _ts(text) is None


GARBAGE = [
    "",
    " \t ",
    "\x00\xff\xfe binary",
    bytes(random.Random(1).randrange(256) for _ in range(512)).decode("latin-1"),
    "{" * 5000,
    '{"msg": ' * 2000,
    "[" + "a " * 50_000,
    "1" * 100_000,
    "Jan 99 99:99:99 host tag: x",
    "<999>1 bad",
    "\ud800\udfff",
]


def test_garbage_never_raises() -> None:
    fmt = learn_format(GARBAGE, NOW)
    for line in GARBAGE:
        _, level, msg = fmt.split(line, NOW)
        assert level in (None, *LEVELS)
        assert isinstance(msg, str)
    good = learn_format([f"2026-01-01 00:00:0{i} INFO ok {i}" for i in range(9)], NOW)
    for line in GARBAGE:
        assert isinstance(good.split(line, NOW)[2], str)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=120), min_size=1, max_size=8))
def test_never_raises_on_arbitrary_text(lines: list[str]) -> None:
    fmt = learn_format(lines, NOW)
    for line in lines:
        ts, level, _ = fmt.split(line, NOW)
        assert level in (None, *LEVELS)
        assert ts is None or isinstance(ts, float)


# Stamps in one second, then variations next to the fraction: a fraction longer than the 9
# digits read, letters or a superscript after it, another separator, no fraction, another
# zone, decimal digits that are not ASCII.
_SECOND_SHAPES = [
    "2026-01-01T10:00:00.5Z",
    "2026-01-01T10:00:00.123Z",
    "2026-01-01T10:00:00.123456789Z",
    "2026-01-01T10:00:00.1234567891Z",
    "2026-01-01T10:00:00.41Z",
    "2026-01-01T10:00:00.1aZ",
    "2026-01-01T10:00:00.\u00b2Z",
    "2026-01-01T10:00:00,25Z",
    "2026-01-01T10:00:00Z",
    "2026-01-01T10:00:00.7+02:00",
    "2026-01-01T10:00:00.7+0200",
    "2026-01-01T10:00:00.\u0663\u0661Z",
    "2026-01-01T10:00:00.Z",
    "2026-01-01T10:00:01.999Z",
    "2026-01-01T10:00:0x.1Z",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_SECOND_SHAPES), min_size=1, max_size=30))
def test_a_stamp_reads_the_same_whatever_line_came_before(stamps: list[str]) -> None:
    # A format remembers the last stamp's second to read the next ones faster; every line
    # must still split as it does on a fresh copy of the format that remembers nothing.
    fmt = learn_format([f"{s} INFO [main] job {i} done" for i, s in enumerate(_SECOND_SHAPES)], NOW)
    assert fmt.ts_cols == (0,)
    for i, stamp in enumerate(stamps):
        line = f"{stamp} INFO [main] job {i} done"
        fresh = LogFormat.from_state(fmt.to_state())
        assert fresh is not None
        assert fmt.split(line, NOW) == fresh.split(line, NOW)


def test_loghub_levels_and_timestamps() -> None:
    env = os.environ.get("SELFHEAL_DATASETS")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    path = root / "loghub" / "BGL_2k.log"
    if not path.is_file():
        pytest.skip(f"Loghub data set not found at {root / 'loghub'}")
    lines = [x.split(" ", 1)[1] for x in path.read_text(errors="replace").splitlines()]
    fmt = learn_format(lines, NOW)
    parsed = [fmt.split(line, NOW) for line in lines]
    assert all(ts is not None for ts, _, _ in parsed)
    assert sum(level == "CRITICAL" for _, level, _ in parsed) == 347  # the FATAL lines
    hdfs = (root / "loghub" / "HDFS_2k.log").read_text(encoding="utf-8").splitlines()
    fmt = learn_format(hdfs, NOW)
    assert all(fmt.split(line, NOW)[0] is not None for line in hdfs)
