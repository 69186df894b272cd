"""Log line headers learned from each file's own lines, not from a list of known formats.

A log file repeats one header layout on every line (timestamp, level, host, process or
thread, logger) in front of a free-text message. Instead of a format string per source,
:func:`learn_format` looks at a file's first lines and finds that layout by itself:

* **JSON objects** and **key=value** lines: the roles of the keys are found from their
  values (the key whose values parse as timestamps, the key whose values are level words,
  the key with the longest free-text values), not from their names;
* **columns** otherwise: each line is cut into tokens, and the token columns are
  aligned across lines. A column is the *level* when most of its tokens are level words;
  a column of tokens ending in ``:`` near the start is a tag or logger name, a column of
  one punctuation token a separator; a run of columns that parse together as a timestamp
  (tried as epoch numbers, date-first digit groups, day- or month-first digit groups,
  compact digit dates, month names, clock times) is the timestamp. The header ends after
  the last of those columns (plus bracketed fields right after it); the rest of the
  line is the message.

:class:`LogFormat` splits each line with what was learned: ``split(line)`` returns
``(ts_ms or None, level or None, message)``. Lines that do not fit (continuation lines,
stack traces) keep their whole text as message and no timestamp. A format counts its
misses; :meth:`LogFormat.stale` tells the caller to learn again when a file stopped
matching. Formats serialise to plain dicts, so they are stored per file with the rest of
the ingest state. Nothing here is named after, or written for, a particular system's log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

__all__ = [
    "LEVELS",
    "LogFormat",
    "learn_format",
    "normalise_level",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT_VERSION = 1

_LEVEL_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            ("trace", "debug", "dbg", "verbose", "fine", "finer", "finest", "all"), "DEBUG"
        ),
        **dict.fromkeys(("info", "information", "informational", "notice", "config"), "INFO"),
        **dict.fromkeys(("warn", "warning", "wrn"), "WARNING"),
        **dict.fromkeys(("error", "err", "eror", "severe", "failure", "fail", "failed"), "ERROR"),
        **dict.fromkeys(
            ("critical", "crit", "fatal", "emerg", "emergency", "alert", "panic"), "CRITICAL"
        ),
    }
)
_SYSLOG_SEVERITY = ("CRITICAL",) * 3 + ("ERROR", "WARNING", "INFO", "INFO", "DEBUG")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NUM = {m: i + 1 for i, m in enumerate(_MONTHS)}
_WEEKDAYS = frozenset(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))

MAX_HEADER = 14  # tokens looked at for a header
SAMPLE_LINES = 200  # lines a format is learned from
_SEPARATORS = frozenset(("-", "|", ":", "--", "::", ">", ">>", "-->", "=>", "—"))
# A bracketed field (may hold spaces) or a run of non-space characters.
_TOKEN_RE = re.compile(r"\[[^\[\]]*\]|\S+")
_STRIP = "[]()<>{},;"
_MISS: Any = object()


def normalise_level(value: Any) -> str | None:
    """Map a level spelling (``WARN``, ``[err]``, ``FATAL``, ``<3>``, 50) to one of :data:`LEVELS`.

    Numbers follow pino/bunyan (10 trace ... 60 fatal) above 7 and syslog priorities
    (0 emerg ... 7 debug) up to 7.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        n = int(value)
        if 0 <= n <= 7:
            return _SYSLOG_SEVERITY[n]
        if n >= 60:
            return "CRITICAL"
        if n >= 50:
            return "ERROR"
        if n >= 40:
            return "WARNING"
        if n >= 30:
            return "INFO"
        return "DEBUG" if n >= 10 else None
    if not isinstance(value, str):
        return None
    text = value.strip().strip("[]<>():").strip().lower()
    if text.isdigit():
        return normalise_level(int(text))
    return _LEVEL_ALIASES.get(text)


def _word_level(tok: str) -> str | None:
    """Level of a header token: a level word, bare or in brackets, never a number."""
    text = tok.strip(_STRIP + ":").lower()
    return _LEVEL_ALIASES.get(text)


# --- timestamps: one token at a time, by the shape of its digit groups --------------------
_DIGITS = re.compile(r"\d+")
_EPOCH_RE = re.compile(r"(\d{9,10}|\d{12,13})(?:\.(\d{1,9}))?")
_YMD_RE = re.compile(
    r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})"
    r"(?:[T _:.-](\d{1,2})[:.](\d{2})(?:[:.](\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)
_XXY_RE = re.compile(
    r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})"
    r"(?:[T _:.-](\d{1,2})[:.](\d{2})(?:[:.](\d{2})(?:[.,](\d{1,9}))?)?)?"
)
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?")
_COMPACT_DATE_RE = re.compile(r"(\d{2}|\d{4})(\d{2})(\d{2})")
_COMPACT_TIME_RE = re.compile(r"(\d{2})(\d{2})(\d{2})(?:[.,](\d{1,9}))?")
_DAY_RE = re.compile(r"\d{1,2}")
_YEAR_RE = re.compile(r"\d{4}")
_TZ_RE = re.compile(r"Z|UTC|GMT|[+-]\d{2}:?\d{2}")
# The fraction of a second: cut off before caching, so lines within one second share a
# cache entry. A "." or "," after hh:mm:ss (or after six digits), then its digits. The
# separator comes first so the engine skips to the next "." or "," instead of trying the
# look-behinds at every position (same matches as the look-behinds first, ~3x faster).
# Fraction digits -> their value (float("0." + digits)), shared by every format.
_FRACTIONS: dict[str, float] = {}
_FRACTION_RE = re.compile(r"[.,](?:(?<=\d\d[:.]\d\d[:.]\d\d.)|(?<=\d{6}.))(\d{1,9})")


def _kind(tok: str, prev: str | None) -> str | None:
    """What a token can be inside a timestamp, or None."""
    t = tok.strip(_STRIP)
    if not t:
        return None
    low = t.lower()
    if _EPOCH_RE.fullmatch(t):
        whole = int(t.split(".")[0])
        if 946_684_800 <= whole <= 4_102_444_800 or 946_684_800_000 <= whole <= 4_102_444_800_000:
            return "epoch"
    if _YMD_RE.fullmatch(t):
        return "ymd"
    if _XXY_RE.fullmatch(t):
        return "xxy"
    if _TIME_RE.fullmatch(t):
        return "time"
    if prev == "cdate" and _COMPACT_TIME_RE.fullmatch(t):
        return "ctime"
    if _COMPACT_DATE_RE.fullmatch(t) and len(t) in (6, 8):
        return "cdate"
    if low[:3] in _MONTH_NUM and low.isalpha() and len(low) in (3, 4, 5, 6, 7, 8, 9):
        return "mon"
    if low[:3] in _WEEKDAYS and low.isalpha():
        return "wday"
    if low in ("am", "pm"):
        return "ampm"
    if _TZ_RE.fullmatch(t):
        return "tz"
    if _DAY_RE.fullmatch(t) and prev in ("mon", "wday"):
        return "day"
    if _YEAR_RE.fullmatch(t) and prev in ("time", "day", "tz"):
        return "year"
    return None


_COMPLETE = ({"epoch"}, {"ymd"}, {"xxy"}, {"cdate", "ctime"}, {"mon", "day", "time"})


def span_kinds(tokens: Sequence[str]) -> list[str] | None:
    """Kinds of a run of tokens that together make a timestamp, or None."""
    kinds: list[str] = []
    prev = None
    for tok in tokens:
        k = _kind(tok, prev)
        if k is None:
            return None
        kinds.append(k)
        prev = k
    ks = set(kinds)
    if len(ks) != len(kinds) or not any(c <= ks for c in _COMPLETE):
        return None
    if "epoch" in ks and len(kinds) > 1:
        return None
    return kinds


def _offset_s(text: str | None) -> int:
    if not text or text in ("Z", "UTC", "GMT"):
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)


def _frac_us(frac: str | None) -> int:
    return int((frac or "0")[:6].ljust(6, "0"))


@dataclass
class _Stamp:
    year: int | None = None
    month: int | None = None
    day: int | None = None
    hour: int = 0
    minute: int = 0
    second: int = 0
    micro: int = 0
    offset: int = 0
    pm: bool | None = None
    epoch: float | None = None


def parse_span(
    tokens: Sequence[str], kinds: Sequence[str], dayfirst: bool, now: datetime
) -> float | None:
    """Epoch seconds of a timestamp split over ``tokens`` of the given kinds, or None."""
    s = _Stamp()
    try:
        for tok, kind in zip(tokens, kinds, strict=True):
            t = tok.strip(_STRIP)
            if kind == "epoch":
                m = _EPOCH_RE.fullmatch(t)
                if m is None:
                    return None
                v = float(t)
                s.epoch = v / 1000.0 if v > 1e11 else v
            elif kind in ("ymd", "xxy"):
                m = (_YMD_RE if kind == "ymd" else _XXY_RE).fullmatch(t)
                if m is None:
                    return None
                g = m.groups()
                if kind == "ymd":
                    s.year, s.month, s.day = int(g[0]), int(g[1]), int(g[2])
                    tz = g[7]
                else:
                    a, b = int(g[0]), int(g[1])
                    s.day, s.month = (a, b) if dayfirst else (b, a)
                    s.year = int(g[2])
                    tz = None
                if g[3] is not None:
                    s.hour, s.minute, s.second = int(g[3]), int(g[4]), int(g[5] or 0)
                    s.micro = _frac_us(g[6])
                if tz:
                    s.offset = _offset_s(tz)
            elif kind == "time":
                m = _TIME_RE.fullmatch(t)
                if m is None:
                    return None
                s.hour, s.minute = int(m.group(1)), int(m.group(2))
                s.second, s.micro = int(m.group(3) or 0), _frac_us(m.group(4))
                if m.group(5):
                    s.offset = _offset_s(m.group(5))
            elif kind == "cdate":
                m = _COMPACT_DATE_RE.fullmatch(t)
                if m is None:
                    return None
                y = int(m.group(1))
                s.year = y + 2000 if y < 100 else y
                s.month, s.day = int(m.group(2)), int(m.group(3))
            elif kind == "ctime":
                m = _COMPACT_TIME_RE.fullmatch(t)
                if m is None:
                    return None
                s.hour, s.minute, s.second = int(m.group(1)), int(m.group(2)), int(m.group(3))
                s.micro = _frac_us(m.group(4))
            elif kind == "mon":
                s.month = _MONTH_NUM.get(t[:3].lower())
                if s.month is None:
                    return None
            elif kind == "day":
                s.day = int(t)
            elif kind == "year":
                s.year = int(t)
            elif kind == "ampm":
                s.pm = t.lower() == "pm"
            elif kind == "tz":
                if not _TZ_RE.fullmatch(t):
                    return None
                s.offset = _offset_s(t)
            # "wday" carries nothing the date does not.
        if s.epoch is not None:
            return s.epoch
        if s.month is None or s.day is None:
            return None
        if s.pm is not None:
            if not 1 <= s.hour <= 12:
                return None
            s.hour = s.hour % 12 + (12 if s.pm else 0)
        parts = (s.month, s.day, s.hour, s.minute, s.second, s.micro)
        year = s.year if s.year is not None else _yearless(*parts, now=now)
        stamp = datetime(year, *parts, tzinfo=UTC)
        return stamp.timestamp() - s.offset
    except (ValueError, OverflowError, IndexError):
        return None


def _yearless(month: int, day: int, hh: int, mm: int, ss: int, us: int, now: datetime) -> int:
    """A stamp without a year: the latest year that does not put it in the future."""
    limit = now + timedelta(days=1)
    for year in range(now.year, now.year - 8, -1):
        try:
            candidate = datetime(year, month, day, hh, mm, ss, us, tzinfo=UTC)
        except ValueError:  # Feb 29 in a non-leap year
            continue
        if candidate <= limit:
            return year
    raise ValueError(f"no year fits {month}-{day}")


def _value_ts(value: Any, now: datetime) -> float | None:
    """Epoch seconds of a JSON or key=value field value, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        v = float(value)
        if 946_684_800 <= v <= 4_102_444_800:
            return v
        if 946_684_800_000 <= v <= 4_102_444_800_000:
            return v / 1000.0
        return None
    if not isinstance(value, str):
        return None
    toks = value.split()
    if not 1 <= len(toks) <= 5:
        return None
    kinds = span_kinds(toks)
    if kinds is None:
        return None
    return parse_span(toks, kinds, False, now)


# --- the learned format --------------------------------------------------------------------
_KV_RE = re.compile(r'([A-Za-z_@][\w.@-]*)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass
class LogFormat:
    """A header layout learned from a file's lines; see the module docstring.

    ``kind`` is ``"columns"``, ``"json"``, ``"kv"`` or ``"plain"`` (no header found: the
    whole line is the message). For columns, ``header`` tokens precede the message,
    ``ts_cols``/``ts_kinds`` locate the timestamp, ``level_col`` the level, and
    ``tag_col`` a tag or logger column whose token may drift by a position or two.
    """

    kind: str = "plain"
    header: int = 0
    ts_cols: tuple[int, ...] = ()
    ts_kinds: tuple[str, ...] = ()
    dayfirst: bool = False
    level_col: int | None = None
    tag_col: int | None = None
    spaced_brackets: bool = False
    ts_key: str | None = None
    level_key: str | None = None
    msg_key: str | None = None
    lines: int = 0
    misses: int = 0
    learned_from: int = 0  # lines the format was learned from
    recent_misses: int = 0
    recent: int = 0
    _ts_cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _level_cache: dict[str, str | None] = field(default_factory=dict, repr=False)
    # (text up to the fraction's separator, text after its digits, base) of the last stamp
    _ts_last: tuple[str, str, float | None] | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ description
    def describe(self) -> str:
        if self.kind == "columns":
            parts = [f"{self.header} header token(s)"]
            if self.ts_cols:
                parts.append(
                    f"timestamp in token(s) {list(self.ts_cols)} ({' '.join(self.ts_kinds)})"
                )
            if self.level_col is not None:
                parts.append(f"level in token {self.level_col}")
            if self.tag_col is not None:
                parts.append(f"tag in token {self.tag_col}")
            return "columns: " + ", ".join(parts)
        if self.kind in ("json", "kv"):
            return (
                f"{self.kind}: timestamp {self.ts_key!r}, level {self.level_key!r}, "
                f"message {self.msg_key!r}"
            )
        return "plain: no header found, whole line is the message"

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "header": self.header,
            "ts_cols": list(self.ts_cols),
            "ts_kinds": list(self.ts_kinds),
            "dayfirst": self.dayfirst,
            "level_col": self.level_col,
            "tag_col": self.tag_col,
            "spaced_brackets": self.spaced_brackets,
            "ts_key": self.ts_key,
            "level_key": self.level_key,
            "msg_key": self.msg_key,
            "lines": self.lines,
            "misses": self.misses,
            "learned_from": self.learned_from,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LogFormat | None:
        """Rebuild from :meth:`to_state`; None for an unknown version (learn again)."""
        if state.get("version") != FORMAT_VERSION:
            return None
        return cls(
            kind=str(state["kind"]),
            header=int(state["header"]),
            ts_cols=tuple(int(c) for c in state["ts_cols"]),
            ts_kinds=tuple(str(k) for k in state["ts_kinds"]),
            dayfirst=bool(state["dayfirst"]),
            level_col=state["level_col"],
            tag_col=state["tag_col"],
            spaced_brackets=bool(state["spaced_brackets"]),
            ts_key=state["ts_key"],
            level_key=state["level_key"],
            msg_key=state["msg_key"],
            lines=int(state.get("lines", 0)),
            misses=int(state.get("misses", 0)),
            learned_from=int(state.get("learned_from", 0)),
        )

    # ------------------------------------------------------------------ splitting
    def stale(self, window: int = 400, share: float = 0.5) -> bool:
        """True when most of the last ``window`` lines did not fit: time to learn again."""
        return self.recent >= window and self.recent_misses > share * self.recent

    def _count(self, hit: bool) -> None:
        self.lines += 1
        self.recent += 1
        if not hit:
            self.misses += 1
            self.recent_misses += 1
        if self.recent >= 400 and self.recent_misses <= 200:
            self.recent = self.recent_misses = 0
        # else, once most of 400 lines missed, it stays stale until the caller learns again

    def split(self, line: str, now: datetime) -> tuple[float | None, str | None, str]:
        """(epoch seconds or None, normalised level or None, message) of one line."""
        return self.splitter()(line, now)

    def splitter(self) -> Callable[[str, datetime], tuple[float | None, str | None, str]]:
        """:meth:`split` of this format's kind, looked up once for a run of lines."""
        kind = self.kind
        if kind == "columns":
            return self._split_columns
        if kind == "json":
            return self._split_json
        if kind == "kv":
            return self._split_kv
        return self._split_plain

    def _split_plain(self, line: str, now: datetime) -> tuple[float | None, str | None, str]:
        self._count(True)
        return None, None, line.strip()

    def _ts(self, text: str, now: datetime) -> float | None:
        """Epoch seconds of the timestamp text; parsed once per second of text (cached)."""
        last = self._ts_last
        if last is not None:
            # Most lines share the previous line's second: the same text before the
            # fraction's digits and after them. Then the fraction is the one match of
            # _FRACTION_RE (nothing before it can match, since the text up to and including
            # its separator is the same) and the cache key is the previous one.
            head, tail, base = last
            end = len(text) - len(tail)
            if text.startswith(head) and text.endswith(tail) and 0 < end - len(head) <= 9:
                digits = text[len(head) : end]
                if digits.isdecimal():
                    if base is None:
                        return None
                    frac = _FRACTIONS.get(digits)
                    if frac is None:
                        frac = float("0." + digits)
                        if len(_FRACTIONS) >= 10_000:
                            _FRACTIONS.clear()
                        _FRACTIONS[digits] = frac
                    return base + frac
        frac = 0.0
        m = _FRACTION_RE.search(text)
        key = text
        if m is not None:
            frac = float("0." + m.group(1))
            key = text[: m.start()] + text[m.end() :]
        cache = self._ts_cache
        base = cache.get(key, _MISS)
        if base is _MISS:
            base = parse_span(key.split("\x1f"), self.ts_kinds, self.dayfirst, now)
            if len(cache) > 50_000:
                cache.clear()
            cache[key] = base
        # Remembered only when the digits end the run (a longer run was cut at 9 digits).
        tail = text[m.end() :] if m is not None else ""
        if m is not None and not tail[:1].isdecimal():
            self._ts_last = (text[: m.start() + 1], tail, base)
        else:
            self._ts_last = None
        return None if base is None else base + frac

    def _tokens(self, line: str, n: int) -> list[str]:
        if self.spaced_brackets:
            out: list[str] = []
            for m in _TOKEN_RE.finditer(line):
                if len(out) == n:
                    out.append(line[m.start() :])
                    return out
                out.append(m.group(0))
            return out
        return line.split(None, n)

    def _split_columns(self, line: str, now: datetime) -> tuple[float | None, str | None, str]:
        h = self.header
        toks = self._tokens(line, h) if self.spaced_brackets else line.split(None, h)
        if len(toks) < h:
            self._count(False)
            return None, None, line.strip()
        ts = None
        cols = self.ts_cols
        if cols:
            # Tokens joined by a unit separator: a bracketed token may hold spaces.
            text = toks[cols[0]] if len(cols) == 1 else "\x1f".join([toks[c] for c in cols])
            ts = self._ts(text, now)
            if ts is None:
                self._count(False)
                return None, None, line.strip()
        level = None
        if self.level_col is not None:
            tok = toks[self.level_col]
            level = self._level_cache.get(tok, _MISS)  # type: ignore[assignment]
            if level is _MISS:
                level = _word_level(tok)
                if len(self._level_cache) < 1000:
                    self._level_cache[tok] = level
            if level is None and not self.ts_cols:
                self._count(False)
                return None, None, line.strip()
        self.lines += 1
        recent = self.recent + 1
        if recent >= 400 and self.recent_misses <= 200:
            self.recent = self.recent_misses = 0
        else:
            self.recent = recent
        msg = toks[h] if len(toks) > h else ""
        tag = self.tag_col
        if tag is not None and tag == h - 1 and not toks[tag].endswith(":") and msg:
            # The tag holds a space ("name 1.2:"): the header ends at the next token
            # that ends in ":", if one follows soon.
            more = msg.split(None, 2)
            for i, tok in enumerate(more[:2]):
                if tok.endswith(":"):
                    msg = more[i + 1] if len(more) > i + 1 else ""
                    break
        return ts, level, msg.strip()

    def _fields(
        self, obj: Mapping[str, Any], now: datetime
    ) -> tuple[float | None, str | None, str]:
        ts = _value_ts(obj.get(self.ts_key), now) if self.ts_key else None
        level = normalise_level(obj.get(self.level_key)) if self.level_key else None
        msg = obj.get(self.msg_key) if self.msg_key else None
        parts = [str(msg)] if msg not in (None, "") else []
        for k, v in obj.items():
            if k in (self.ts_key, self.level_key, self.msg_key) or isinstance(v, dict | list):
                continue
            parts.append(f"{k}={v}")
        return ts, level, " ".join(parts)

    def _split_json(self, line: str, now: datetime) -> tuple[float | None, str | None, str]:
        obj = _json_object(line)
        if obj is None:
            self._count(False)
            return None, None, line.strip()
        self._count(True)
        return self._fields(obj, now)

    def _split_kv(self, line: str, now: datetime) -> tuple[float | None, str | None, str]:
        obj = _kv_object(line)
        if obj is None:
            self._count(False)
            return None, None, line.strip()
        self._count(True)
        return self._fields(obj, now)


def _json_object(line: str) -> dict[str, Any] | None:
    s = line.strip()
    if not (s.startswith("{") and s.endswith("}")):
        return None
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _kv_object(line: str) -> dict[str, Any] | None:
    pairs = _KV_RE.findall(line)
    if len(pairs) < 2:
        return None
    covered = sum(len(k) + len(v) + 1 for k, v in pairs)
    if covered < 0.6 * len(line.replace(" ", "")):
        return None
    out: dict[str, Any] = {}
    for k, v in pairs:
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1].replace('\\"', '"')
        out[k] = v
    return out


# --- learning --------------------------------------------------------------------------------
def learn_format(lines: Sequence[str], now: datetime | None = None) -> LogFormat:
    """Learn the header layout of a file from (up to :data:`SAMPLE_LINES` of) its lines."""
    now = now or datetime.now(UTC)
    sample = [x.strip() for x in lines if x and x.strip()][:SAMPLE_LINES]
    fmt = _learn(sample, now)
    fmt.learned_from = len(sample)
    return fmt


def _distinct_shapes(rows: list[list[str]]) -> list[list[str]]:
    """One row per shape (digits masked), in order."""
    seen: set[str] = set()
    out = []
    for row in rows:
        shape = _DIGITS.sub("0", " ".join(row))
        if shape not in seen:
            seen.add(shape)
            out.append(row)
    return out


def _learn(sample: list[str], now: datetime) -> LogFormat:
    if not sample:
        return LogFormat()
    n = len(sample)
    objs = [_json_object(x) for x in sample]
    if sum(o is not None for o in objs) >= 0.8 * n:
        return _learn_fields("json", [o for o in objs if o is not None], now)
    kvs = [_kv_object(x) for x in sample]
    if sum(o is not None for o in kvs) >= 0.8 * n:
        return _learn_fields("kv", [o for o in kvs if o is not None], now)
    return _learn_columns(sample, now)


def _learn_fields(kind: str, objs: list[dict[str, Any]], now: datetime) -> LogFormat:
    n = len(objs)
    keys: dict[str, int] = {}
    for o in objs:
        for k in o:
            keys[k] = keys.get(k, 0) + 1
    common = [k for k, c in keys.items() if c >= 0.5 * n]

    def share(key: str, test: Any) -> float:
        return sum(1 for o in objs if key in o and test(o[key])) / n

    ts_key = max(
        (k for k in common if share(k, lambda v: _value_ts(v, now) is not None) >= 0.8),
        key=lambda k: (share(k, lambda v: _value_ts(v, now) is not None), -list(keys).index(k)),
        default=None,
    )
    level_key = max(
        (
            k
            for k in common
            if k != ts_key
            and share(k, lambda v: isinstance(v, str) and normalise_level(v) is not None) >= 0.8
        ),
        key=lambda k: share(k, lambda v: isinstance(v, str) and normalise_level(v) is not None),
        default=None,
    )

    def wordiness(key: str) -> float:
        vals = [o[key] for o in objs if isinstance(o.get(key), str)]
        if len(vals) < 0.5 * n:
            return -1.0
        return sum(v.count(" ") + 1 for v in vals) / len(vals) + len(set(vals)) / (10 * len(vals))

    rest = [k for k in common if k not in (ts_key, level_key)]
    msg_key = max(rest, key=wordiness, default=None)
    if msg_key is not None and wordiness(msg_key) < 0:
        msg_key = None
    return LogFormat(kind=kind, ts_key=ts_key, level_key=level_key, msg_key=msg_key)


def _learn_columns(sample: list[str], now: datetime) -> LogFormat:
    n = len(sample)
    spaced = any(
        " " in m.group(0)
        for x in sample
        for m in _TOKEN_RE.finditer(x[:400])
        if m.group(0)[0] == "["
    )
    rows = []
    for x in sample:
        toks = [m.group(0) for m in _TOKEN_RE.finditer(x)] if spaced else x.split()
        rows.append(toks[: MAX_HEADER + 1])

    def share(i: int, test: Any) -> float:
        return sum(1 for r in rows if len(r) > i and test(r[i])) / n

    # Tag and separator columns are claims about words that could be the
    # message's own ("java.lang.OutOfMemoryError: ..."): they are counted over distinct
    # line shapes, so a burst of one message cannot outvote the rest of the file.
    shapes = _distinct_shapes(rows)

    def shape_share(i: int, test: Any) -> float:
        return sum(1 for r in shapes if len(r) > i and test(r[i])) / len(shapes)

    # Timestamp: the run of columns that parses as one in most lines; ties go to the
    # finer one (sub-second digits), then the earlier one.
    best: tuple[float, bool, int, int, tuple[int, ...], tuple[str, ...], bool] | None = None
    for start in range(MAX_HEADER):
        for width in range(1, 6):
            cols = tuple(range(start, start + width))
            first = next((r for r in rows if len(r) > cols[-1]), None)
            if first is None:
                break
            kinds = span_kinds([first[c] for c in cols])
            if kinds is None:
                continue
            for dayfirst in (False, True) if "xxy" in kinds else (False,):
                ok = fine = 0
                for r in rows:
                    if len(r) <= cols[-1]:
                        continue
                    toks = [r[c] for c in cols]
                    if parse_span(toks, kinds, dayfirst, now) is not None:
                        ok += 1
                        fine += bool(_FRACTION_RE.search(" ".join(toks)))
                rate = ok / n
                if rate < 0.6:
                    continue
                key = (round(rate, 2), fine > 0.5 * ok, -start, width, cols, tuple(kinds), dayfirst)
                if best is None or key[:4] > best[:4]:
                    best = key
    ts_cols: tuple[int, ...] = ()
    ts_kinds: tuple[str, ...] = ()
    dayfirst = False
    if best is not None:
        ts_cols, ts_kinds, dayfirst = best[4], best[5], best[6]
    ts_end = ts_cols[-1] + 1 if ts_cols else 0

    level_col = next(
        (i for i in range(MAX_HEADER) if share(i, lambda t: _word_level(t) is not None) >= 0.6),
        None,
    )
    reach = (level_col if level_col is not None else ts_end) + 3
    tag_col = next(
        (
            i
            for i in range(min(reach, MAX_HEADER))
            if shape_share(i, lambda t: len(t) > 1 and t.endswith(":")) >= 0.6
        ),
        None,
    )
    sep_col = next(
        (
            i
            for i in range(1, min(reach + 1, MAX_HEADER))
            if shape_share(i, lambda t: t in _SEPARATORS) >= 0.7
        ),
        None,
    )
    header = max(
        ts_end,
        (level_col + 1) if level_col is not None else 0,
        (tag_col + 1) if tag_col is not None else 0,
        (sep_col + 1) if sep_col is not None else 0,
    )
    # Bracketed fields and separators right after the header belong to it ("[main]").
    while (
        header < MAX_HEADER
        and share(header, lambda t: (t[0] == "[" and t[-1] == "]") or t in _SEPARATORS) >= 0.8
    ):
        header += 1
    if header == 0:
        return LogFormat()
    if tag_col is not None and tag_col != header - 1:
        tag_col = None
    return LogFormat(
        kind="columns",
        header=header,
        ts_cols=ts_cols,
        ts_kinds=ts_kinds,
        dayfirst=dayfirst,
        level_col=level_col,
        tag_col=tag_col,
        spaced_brackets=spaced,
    )
