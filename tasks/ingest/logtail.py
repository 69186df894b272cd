"""Tail a log file from its stored position without losing or duplicating lines.

- The position (generation, byte offset) commits in the same transaction as the lines it
  covers, batch by batch: a crash at any point resumes exactly where the last commit left.
- Rotation (the path now has another inode, or another head) is handled by finishing the
  old file if it can still be found beside the path (``app.log.1`` and similar), then
  starting the new file at offset 0 in a new generation.
- Truncation (the file is shorter than the offset) starts a new generation at offset 0.
- A partial last line (no newline yet) is left for the next run.
- Bytes that are not UTF-8 are replaced, not dropped; an over-long line is capped with a
  marker saying how many bytes were cut.
- A file seen for the first time is read from its end (its history is not news), unless
  ``from_start`` is set.
- Each file's header layout is learned from its own first lines
  (:func:`tasks.logs.lineparse.learn_format`), kept with the annotator's state and
  learned again when most recent lines stop fitting. The line's own timestamp is stored;
  a line without one is stamped with the read time, and the report says how many were.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine

from storage.logs import EventInsert, TailPosition, commit_batch, commit_rows, get_or_create_source
from tasks.ingest.records import IngestReport
from tasks.logs.lineparse import SAMPLE_LINES, LogFormat, learn_format

HEAD_BYTES = 256
READ_CHUNK = 1 << 20
LEVELS_KEPT = 16


class LineAnnotator(Protocol):
    """Labels lines (template mining), keeps each file's learned format, and saves both
    with each committed batch."""

    def label(self, message: str, ts_ms: int) -> int | None: ...

    def get_format(self, path: str) -> LogFormat | None: ...

    def set_format(self, path: str, fmt: LogFormat) -> None: ...

    def flush(self, conn: Connection) -> None: ...


@dataclass(frozen=True)
class TailSettings:
    batch_lines: int = 5000
    max_line_bytes: int = 16384
    max_bytes_per_run: int = 64 * 1024 * 1024
    from_start: bool = False  # read a file seen for the first time from its start


NO_TS_NOTE = "lines without a timestamp (stamped with the read time)"
FUTURE_NOTE = "lines stamped later than the read time (read time used; a local-time clock?)"
FUTURE_SLACK_MS = 300_000
RELEARN_NOTE = "header format learned again (lines stopped fitting)"


# (byte offset of the line's first byte, bytes it occupies with its newline, decoded
# text without the newline, bytes dropped from an over-long line)
TextLine = tuple[int, int, str, int]


def _head_hash(path: Path, length: int) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(length)).hexdigest()


def iter_lines(
    path: Path, start: int, max_line: int, max_bytes: int, final: bool = False
) -> Iterator[TextLine]:
    """Complete lines from ``start``, decoded; with ``final`` a last line without newline
    counts too. ASCII chunks (most logs) are decoded and split in one go."""
    with path.open("rb") as fh:
        fh.seek(start)
        pos = start  # offset of the first byte of ``pending``
        pending = b""
        cut = 0  # bytes of the current line beyond the cap (already discarded)
        read_total = 0
        while read_total < max_bytes:
            chunk = fh.read(min(READ_CHUNK, max_bytes - read_total))
            if not chunk:
                break
            read_total += len(chunk)
            buf = pending + chunk
            line_start = 0
            last = buf.rfind(b"\n")
            if last >= 0 and not cut and buf.isascii():
                text = buf[: last + 1].decode("ascii")
                if "\x00" in text:
                    text = text.replace("\x00", "\ufffd")
                lines = text.split("\n")
                lines.pop()
                if max(map(len, lines)) <= max_line:
                    strip_cr = "\r" in text
                    for line in lines:
                        size = len(line) + 1
                        yield pos, size, line.rstrip("\r") if strip_cr else line, 0
                        pos += size
                    line_start = last + 1
            while True:
                nl = buf.find(b"\n", line_start)
                if nl < 0:
                    break
                data = buf[line_start:nl]
                total_cut = cut
                if len(data) > max_line:
                    total_cut += len(data) - max_line
                    data = data[:max_line]
                size = nl + 1 - line_start + cut
                yield pos, size, _decode(data, total_cut), total_cut
                pos += size
                cut = 0
                line_start = nl + 1
            pending = buf[line_start:]
            if len(pending) > max_line:
                # Keep only the capped prefix in memory; remember how much was dropped.
                cut += len(pending) - max_line
                pending = pending[:max_line]
        if final and (pending or cut):
            yield pos, len(pending) + cut, _decode(pending, cut), cut


def _decode(data: bytes, cut: int) -> str:
    text = data.decode("utf-8", errors="replace").rstrip("\r")
    if cut:
        text += f" …[truncated {cut} bytes]"
    return text.replace("\x00", "\ufffd")


def _find_rotated(path: Path, inode: int) -> Path | None:
    """The file that used to be ``path``: same inode, name starting with the path's name."""
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return None
    for cand in candidates:
        if cand.name.startswith(path.name) and cand != path:
            try:
                if cand.stat().st_ino == inode:
                    return cand
            except OSError:
                continue
    return None


def tail_file(
    engine: Engine,
    path: str | Path,
    component: str,
    settings: TailSettings = TailSettings(),
    annotator: LineAnnotator | None = None,
    clock: Callable[[], float] = time.time,
    final: bool = False,
) -> IngestReport:
    """Read what is new in ``path`` and store it; returns counts, never raises on bad lines.

    ``final``: the file is complete, so a last line without a newline is read too (a live
    file's partial last line otherwise waits for its newline)."""
    p = Path(path)
    report = IngestReport(source=f"log {p}")
    with engine.begin() as conn:
        pos = get_or_create_source(conn, str(p), component)
    try:
        st = p.stat()
    except FileNotFoundError:
        # Mid-rotation the path may briefly not exist; finish the old file if it is there.
        if pos.inode is not None and (old := _find_rotated(p, pos.inode)) is not None:
            _drain(engine, old, pos, component, settings, annotator, clock, report, final=True)
        report.error = f"log file not found: {p}"
        return report
    except OSError as exc:
        report.error = f"cannot read log file {p}: {exc.strerror}"
        return report

    head_len = min(st.st_size, HEAD_BYTES)
    if pos.inode is None:
        pos.inode, pos.head_len = st.st_ino, head_len
        pos.head_hash = _head_hash(p, head_len)
        if not settings.from_start:
            pos.byte_offset = _end_of_last_line(p, st.st_size)
            if pos.byte_offset:
                report.notes["bytes skipped at first sight (read from the end)"] += pos.byte_offset
            with engine.begin() as conn:  # remember where reading starts
                commit_batch(conn, pos, component, [])
    else:
        same_file = st.st_ino == pos.inode and (
            pos.head_len == 0
            or (st.st_size >= pos.head_len and _head_hash(p, pos.head_len) == pos.head_hash)
        )
        if not same_file:
            if st.st_ino != pos.inode and (old := _find_rotated(p, pos.inode)) is not None:
                _drain(engine, old, pos, component, settings, annotator, clock, report, final=True)
            _new_generation(pos, st.st_ino, p, head_len)
        elif st.st_size < pos.byte_offset:
            _new_generation(pos, st.st_ino, p, head_len)
        elif pos.head_len < HEAD_BYTES and head_len > pos.head_len:
            pos.head_len, pos.head_hash = head_len, _head_hash(p, head_len)
    _drain(engine, p, pos, component, settings, annotator, clock, report, final=final)
    return report


def _end_of_last_line(path: Path, size: int) -> int:
    """Offset just after the last newline of the file (0 if there is none)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - READ_CHUNK)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
    return 0


def _head_lines(path: Path, settings: TailSettings) -> list[str]:
    """The file's first lines, to learn its format from."""
    out: list[str] = []
    for _, _, text, _ in iter_lines(path, 0, settings.max_line_bytes, 4 * 1024 * 1024):
        out.append(text)
        if len(out) >= SAMPLE_LINES:
            break
    return out


def _new_generation(pos: TailPosition, inode: int, path: Path, head_len: int) -> None:
    pos.inode = inode
    pos.generation += 1
    pos.byte_offset = 0
    pos.head_len = head_len
    pos.head_hash = _head_hash(path, head_len)


def _drain(
    engine: Engine,
    path: Path,
    pos: TailPosition,
    component: str,
    settings: TailSettings,
    annotator: LineAnnotator | None,
    clock: Callable[[], float],
    report: IngestReport,
    final: bool,
) -> None:
    batch: list[EventInsert] = []
    end = pos.byte_offset

    def flush() -> None:
        nonlocal batch
        pos.byte_offset = end
        with engine.begin() as conn:
            stored = commit_rows(conn, pos, batch)
            if annotator is not None:
                annotator.flush(conn)
        report.stored += stored
        report.duplicates += len(batch) - stored
        batch = []

    read_ms = int(clock() * 1000)
    now = datetime.fromtimestamp(read_ms / 1000, UTC)
    key = str(path if not final else pos.path)
    fmt = annotator.get_format(key) if annotator is not None else None
    if fmt is None or fmt.learned_from < SAMPLE_LINES:
        # Learned from the file's first lines; while the file is shorter than a full sample
        # (a new, empty or small file), learned again as it grows.
        head = _head_lines(path, settings)
        if fmt is None or len(head) > fmt.learned_from:
            fmt = learn_format(head, now)
            if annotator is not None:
                annotator.set_format(key, fmt)
    split = fmt.splitter()
    label = annotator.label if annotator is not None else None
    recent: deque[str] = deque(maxlen=SAMPLE_LINES)
    no_ts = future = 0
    future_ms = read_ms + FUTURE_SLACK_MS
    capped = 0
    max_batch = settings.batch_lines
    generation = pos.generation
    source_id = pos.source_id
    lines = iter_lines(
        path, pos.byte_offset, settings.max_line_bytes, settings.max_bytes_per_run, final
    )
    for offset, size, text, cut in lines:
        ts, level, message = split(text, now)
        if ts is None:
            ts_ms = read_ms
            no_ts += 1
        else:
            ts_ms = int(ts * 1000)
            if ts_ms > future_ms:  # detection would not see it until then
                ts_ms = read_ms
                future += 1
        template_id = label(message, ts_ms) if label is not None else None
        if cut:
            capped += 1
        batch.append((source_id, generation, offset, ts_ms, component, level, template_id, message))
        end = offset + size
        if fmt.recent_misses:
            recent.append(text)
            if fmt.stale():
                fmt = learn_format(list(recent), now)
                split = fmt.splitter()
                report.notes[RELEARN_NOTE] += 1
                if annotator is not None:
                    annotator.set_format(key, fmt)
        if len(batch) >= max_batch:
            flush()
    if batch or end != pos.byte_offset:
        flush()
    if no_ts:
        report.notes[NO_TS_NOTE] += no_ts
    if future:
        report.notes[FUTURE_NOTE] += future
    if capped:
        report.notes["lines capped at max_line_bytes"] += capped
