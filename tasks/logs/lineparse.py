"""Split a raw log line into timestamp, level and message, without knowing its format.

The ingest reads logs from many sources (syslog files, Java/Python services, JSON
loggers, batch-system RAS logs) and must not be configured per source. So instead of a
format string per source this module tries a few generic shapes, cheapest first:

1. JSON objects (``{"ts": ..., "level": ..., "msg": ...}``);
2. syslog (RFC 3164 ``Nov 28 20:56:39 host tag[pid]: msg`` and RFC 5424);
3. a *header scan*: up to ten header-looking tokens (numbers, dates, times, host or node
   names containing digits, ALL-CAPS words, ``[bracketed]`` fields) followed by a level
   word; the header ends at the level (plus a logger name such as ``org.x.Y:``);
4. ``level=... msg=...`` logfmt;
5. otherwise only a leading timestamp is split off.

:func:`split_header` does only the string work (the template miner calls it for every
line and does not need datetimes); :func:`parse_log_line` adds timestamp and level
normalisation. Neither raises on any input: garbage comes back with ``None`` fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "LEVELS",
    "HeaderSplit",
    "ParsedLine",
    "normalise_level",
    "parse_log_line",
    "parse_timestamp",
    "split_header",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Lines longer than this are still parsed, but only their head is searched for a header.
_HEAD = 512

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

# Level words accepted as a header field. Only upper-case (or bracketed) forms: a
# lower-case "error" at the start of a message is usually prose, not a level.
_LEVEL_WORD = (
    r"TRACE|DEBUG|DBG|VERBOSE|FINEST|FINER|FINE|INFO|INFORMATION|NOTICE|WARNING|WARN|"
    r"ERROR|ERR|SEVERE|FAILURE|CRITICAL|CRIT|FATAL|EMERG|ALERT|PANIC|"
    r"Trace|Debug|Info|Notice|Warning|Warn|Error|Severe|Critical|Fatal"
)
_LEVEL_BRACKETED = r"[\[<(](?i:" + _LEVEL_WORD + r")[\]>)]"

_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_MONTH_NUM: Mapping[str, int] = MappingProxyType(
    {m: i + 1 for i, m in enumerate(_MONTHS.split("|"))}
)
_WEEKDAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"

# --- timestamp shapes (each anchored at the start of the string it is given) -------------
_ISO = (
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"
    r"(?:\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"
)
_SLASH_DATE = r"\d{4}/\d{2}/\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?"
_DASH_DOTTED = r"\d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}(?:\.\d{1,9})?"  # 2005-06-03-15.42.50.675
_SYSLOG_TS = rf"(?:{_MONTHS})\s+\d{{1,2}}\s+\d{{2}}:\d{{2}}:\d{{2}}(?:\.\d{{1,9}})?(?:\s+\d{{4}})?"
_CTIME = rf"(?:{_WEEKDAYS})\s+(?:{_MONTHS})\s+\d{{1,2}}\s+\d{{2}}:\d{{2}}:\d{{2}}(?:\s+\d{{4}})?"
_COMPACT = r"\d{6}\s\d{6}(?:[.,]\d{1,6})?"  # 081109 203615
_CLF = r"\[\d{2}/(?:" + _MONTHS + r")/\d{4}:\d{2}:\d{2}:\d{2}\s[+-]\d{4}\]"
_EPOCH = r"1\d{9}(?:\.\d{1,9}|\d{3})?"  # 2001-09-09 .. 2033-05-18, seconds or millis

_ANY_TS = (
    rf"(?:{_DASH_DOTTED}|{_ISO}|{_SLASH_DATE}|{_CTIME}|{_SYSLOG_TS}|{_COMPACT}|{_CLF}|{_EPOCH})"
)
# A timestamp token, optionally in brackets ("[Sun Dec 04 04:47:44 2005]"), ending at a
# space, a comma ("2016-09-28 04:30:30, Info") or the end.
_TS_PREFIX_RE = re.compile(rf"\[?(?P<ts>{_ANY_TS})\]?(?=[\s,]|$)")
_TS_SEARCH_RE = re.compile(rf"(?<!\S)\[?(?P<ts>{_ANY_TS})\]?(?=[\s,]|$)")

# --- header scan -------------------------------------------------------------------------
# A bracketed field, one level of nesting allowed: "[main]", "[QuorumPeer[myid=1]/...]".
_BRACKETED = r"\[(?:[^\[\]\n]|\[[^\[\]\n]*\]){0,160}\]"
# A token that can be part of a header: contains a digit (dates, times, pids, node names),
# is an ALL-CAPS word (RAS, KERNEL, NULL), a bracketed field, a separator, a dotted name
# or a month/weekday.
_HDR_TOKEN = (
    # Each alternative decides with a lookahead and then takes the whole token with a
    # possessive \S++, so a failed header match never backtracks into a token.
    rf"(?:{_BRACKETED}|(?:(?=[^\s\[]*\d)|(?=[A-Z][A-Z0-9_]{{1,23}}\s)|(?=[-|:]\s)|"
    r"(?=[\w$]+(?:\.[\w$]+)+:?\s)|"
    rf"(?=(?:{_MONTHS}|{_WEEKDAYS})\s))\S++)"
)
# --- syslog ------------------------------------------------------------------------------
# A syslog header, possibly behind a few header tokens added by a collector
# ("1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond[2915]: ...").
_TAG = r"(?P<tag>[^\s:\[\]]{1,64}(?:\s\d[\w.]*)?(?:\[\d+\])?)"
_SYSLOG_RE = re.compile(
    rf"(?:<(?P<pri>\d{{1,3}})>)?(?P<pre>(?:{_HDR_TOKEN}\s+){{0,4}}?)"
    rf"(?P<ts>{_SYSLOG_TS})\s+(?P<host>\S+)\s+(?:{_TAG}:\s?)?"
)
# rsyslog's RFC 3339 file format: "2024-05-01T10:00:00.123+00:00 host app[812]: msg". The
# pid is required: without it "<ts> Starting server: ..." would look like host + tag.
_SYSLOG_ISO_RE = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<pre>)(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
    r"(?:Z|[+-]\d{2}:?\d{2})?)\s+(?:(?P<host>[\w.-]+)\s+)?"
    r"(?P<tag>[^\s:\[\]]{1,64}\[\d+\]):\s?"
)
# A level right after a syslog tag: bracketed, "ERROR:" or a bare upper-case level word.
# ALERT/PANIC/EMERG are left out as bare words: they start prose ("ALERT exited ...").
_POST_TAG_LEVEL_RE = re.compile(
    rf"(?:(?P<blvl>{_LEVEL_BRACKETED})\s*|(?P<lvl>{_LEVEL_WORD}):\s+|"
    r"(?P<bare>TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|SEVERE)\s+)"
)
_RFC5424_RE = re.compile(
    r"<(?P<pri>\d{1,3})>\d{1,2}\s+(?P<ts>\S+)\s+\S+\s+\S+\s+\S+\s+\S+\s+"
    r"(?:-|(?:\[(?:[^\]\\]|\\.)*\])+)\s?"
)

_LEVEL_TOKEN = rf"(?:(?P<lvl>{_LEVEL_WORD})|(?P<blvl>{_LEVEL_BRACKETED}))"
# After the level: "[thread]" fields, a logger name ("org.x.Y:", "org.x.Y -",
# "dfs.DataNode$PacketResponder:", "nova.wsgi.server [req-1]") and lone separators.
_LOGGER = r"(?:[\w$]+(?:[.$/][\w$]+)+|[\w$.]+\[\d+\])"
_AFTER_LEVEL = (
    rf"(?::\s*|\s+)(?:{_BRACKETED}\s+)*(?:[-|:]\s+)?"
    rf"(?:{_LOGGER}(?::\s+|\s+[-|:]\s+|\s+(?={_BRACKETED}\s)))?(?:{_BRACKETED}\s+)*(?:[-|:]\s+)?"
)
_HEADER_SCAN_RE = re.compile(
    rf"(?P<hdr>(?:{_HDR_TOKEN}\s+){{0,10}}?){_LEVEL_TOKEN}(?:{_AFTER_LEVEL}|$)"
)

_CLF_SEARCH_RE = re.compile(_CLF)
_MONTH_SEARCH_RE = re.compile(rf"\s(?:{_MONTHS})\s+\d{{1,2}}\s+\d{{2}}:")

_LOGFMT_PAIR_RE = re.compile(r'(?P<k>[A-Za-z_][\w.]*)=(?P<v>"(?:[^"\\]|\\.)*"|\S*)')
_LOGFMT_HINT_RE = re.compile(r"(?:^|\s)(?:level|lvl|severity)=", re.IGNORECASE)

_JSON_TS_KEYS = ("ts", "time", "timestamp", "@timestamp", "datetime", "date", "t")
_JSON_LEVEL_KEYS = ("level", "lvl", "severity", "loglevel", "log.level", "levelname", "priority")
_JSON_MSG_KEYS = ("msg", "message", "log", "event", "text", "body")
_JSON_ERROR_KEYS = ("error", "err", "exception", "exc_info", "reason", "stack", "stacktrace")

# Syslog priority (low 3 bits) -> level.
_SYSLOG_SEVERITY = ("CRITICAL",) * 3 + ("ERROR", "WARNING", "INFO", "INFO", "DEBUG")

# --- timestamp conversion ----------------------------------------------------------------
_DASH_DOTTED_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})-(\d{2})\.(\d{2})\.(\d{2})(?:\.(\d{1,9}))?$")
_COMPACT_RE = re.compile(r"(\d{2})(\d{2})(\d{2})\s(\d{2})(\d{2})(\d{2})(?:[.,](\d{1,6}))?$")
_SYSLOG_TS_RE = re.compile(
    rf"(?:(?:{_WEEKDAYS})\s+)?({_MONTHS})\s+(\d{{1,2}})\s+(\d{{2}}):(\d{{2}}):(\d{{2}})"
    r"(?:\.(\d{1,9}))?(?:\s+(\d{4}))?$"
)
_SLASH_RE = re.compile(r"(\d{4})/(\d{2})/(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?$")
_CLF_RE = re.compile(
    rf"\[(\d{{2}})/({_MONTHS})/(\d{{4}}):(\d{{2}}):(\d{{2}}):(\d{{2}})\s([+-]\d{{4}})\]$"
)
_EPOCH_RE = re.compile(r"\d{9,10}(?:\.\d{1,9})?$|\d{12,13}$")
_ISO_FIX_RE = re.compile(r"^(.*?)(?:\s?(Z|UTC)|\s?([+-]\d{2}):?(\d{2}))?$")


class HeaderSplit(NamedTuple):
    """The raw pieces of a line: timestamp text, level text (not normalised), message."""

    ts_text: str | None
    level_text: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """A log line split into a UTC timestamp, a normalised level and the message body."""

    ts: datetime | None
    level: str | None
    message: str


def normalise_level(value: Any) -> str | None:
    """Map any level spelling (``WARN``, ``err``, ``FATAL``, ``<3>``, 50) to one of :data:`LEVELS`.

    Numeric levels follow pino/bunyan (10 trace ... 60 fatal) above 7 and syslog
    priorities (0 emerg ... 7 debug) below, because those are the numeric schemes
    found in practice in JSON and syslog lines.
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


def _split_json(line: str) -> HeaderSplit | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    ts = next((obj[k] for k in _JSON_TS_KEYS if obj.get(k) not in (None, "")), None)
    level = next((obj[k] for k in _JSON_LEVEL_KEYS if obj.get(k) not in (None, "")), None)
    if isinstance(level, dict):  # e.g. {"level": {"name": "ERROR"}}
        level = level.get("name")
    msg = next((obj[k] for k in _JSON_MSG_KEYS if isinstance(obj.get(k), str)), None)
    if msg is not None:
        # Error details often sit beside the message ({"msg": "request failed",
        # "error": "timeout"}); keep them in the text signatures and templates see.
        extra = [f"{k}={obj[k]}" for k in _JSON_ERROR_KEYS if obj.get(k) not in (None, "")]
        if extra:
            msg = " ".join([msg, *extra])
    else:
        rest = {k: v for k, v in obj.items() if k not in _JSON_TS_KEYS + _JSON_LEVEL_KEYS}
        msg = json.dumps(rest, sort_keys=True, default=str)
    return HeaderSplit(None if ts is None else str(ts), None if level is None else str(level), msg)


def _split_logfmt(line: str) -> HeaderSplit | None:
    if not _LOGFMT_HINT_RE.search(line, 0, _HEAD):
        return None
    ts = level = msg = None
    rest: list[str] = []
    for m in _LOGFMT_PAIR_RE.finditer(line):
        key = m.group("k").lower()
        value = m.group("v")
        if value.startswith('"') and len(value) >= 2:
            value = value[1:-1].replace('\\"', '"')
        if ts is None and key in _JSON_TS_KEYS:
            ts = value
        elif level is None and key in ("level", "lvl", "severity"):
            level = value
        elif msg is None and key in ("msg", "message"):
            msg = value
        else:
            rest.append(m.group(0))
    if level is None:
        return None
    body = " ".join(([msg] if msg else []) + rest)
    return HeaderSplit(ts, level, body)


def _from_syslog(m: re.Match[str], line: str) -> HeaderSplit:
    pri = m.group("pri")
    level = _SYSLOG_SEVERITY[int(pri) & 7] if pri else None
    rest = line[m.end() :]
    pre = m.group("pre")
    tm = _TS_PREFIX_RE.match(pre) if pre else None  # an epoch or dated stamp in front
    ts = tm.group("ts") if tm is not None else m.group("ts")
    lm = _POST_TAG_LEVEL_RE.match(rest) if level is None else None
    if lm is not None:
        level = lm.group("lvl") or lm.group("blvl") or lm.group("bare")
        return HeaderSplit(ts, level, rest[lm.end() :])
    return HeaderSplit(ts, level, rest)


def split_header(line: str) -> HeaderSplit:
    """Split ``line`` into (timestamp text, level text, message) using generic shapes only.

    The message is the line minus the recognised header; when nothing is recognised it is
    the stripped line itself. Never raises.
    """
    if not isinstance(line, str):
        return HeaderSplit(None, None, "")
    line = line.strip()
    if not line:
        return HeaderSplit(None, None, "")
    first = line[0]
    if first == "{" and line[-1] == "}":
        js = _split_json(line)
        if js is not None:
            return js
    if first == "<":
        m = _RFC5424_RE.match(line)
        if m is not None:
            pri = int(m.group("pri"))
            return HeaderSplit(m.group("ts"), _SYSLOG_SEVERITY[pri & 7], line[m.end() :])
    # Cheapest discriminators first: a syslog line starts with a month (or "<pri>").
    if line[:3] in _MONTH_NUM or first == "<":
        m = _SYSLOG_RE.match(line, 0, _HEAD)
        if m is not None:
            return _from_syslog(m, line)
    m = _HEADER_SCAN_RE.match(line, 0, _HEAD)
    if m is not None:
        hdr = m.group("hdr")
        tm = _TS_SEARCH_RE.search(hdr) if hdr else None
        ts = tm.group("ts") if tm is not None else None
        return HeaderSplit(ts, m.group("lvl") or m.group("blvl"), line[m.end() :])
    if first.isdigit() or first == "<":
        m = _SYSLOG_ISO_RE.match(line, 0, _HEAD)
        if m is not None:
            return _from_syslog(m, line)
    if _MONTH_SEARCH_RE.search(line, 0, 96):  # syslog behind a collector's prefix
        m = _SYSLOG_RE.match(line, 0, _HEAD)
        if m is not None:
            return _from_syslog(m, line)
    if "=" in line:
        lf = _split_logfmt(line)
        if lf is not None:
            return lf
    tm = _TS_PREFIX_RE.match(line, 0, _HEAD)
    if tm is not None:
        return HeaderSplit(tm.group("ts"), None, line[tm.end() :].lstrip(" \t-|:,"))
    cm = _CLF_SEARCH_RE.search(line, 0, _HEAD)  # access logs: "host - user [ts] ..."
    return HeaderSplit(cm.group(0) if cm else None, None, line)


def _frac_us(frac: str | None) -> int:
    return int((frac or "0")[:6].ljust(6, "0"))


def _syslog_year(month: int, day: int, hh: int, mm: int, ss: int, us: int, now: datetime) -> int:
    """Syslog timestamps carry no year: the latest year that does not put them in the future.

    One day of slack keeps a line written "now" in a timezone ahead of UTC in this year.
    Feb 29 goes back to the last leap year. Raises ValueError for impossible dates.
    """
    limit = now + timedelta(days=1)
    for year in range(now.year, now.year - 8, -1):
        try:
            candidate = datetime(year, month, day, hh, mm, ss, us, tzinfo=UTC)
        except ValueError:  # Feb 29 in a non-leap year
            continue
        if candidate <= limit:
            return year
    raise ValueError(f"no year fits {month}-{day}")


def parse_timestamp(text: str | float | int | None, now: datetime | None = None) -> datetime | None:
    """Convert a timestamp in any shape :func:`split_header` recognises to an aware UTC datetime.

    Naive timestamps are taken as UTC. ``now`` (default: the current time) only matters
    for year-less syslog stamps. Returns None for anything unparseable.
    """
    if text is None or isinstance(text, bool):
        return None
    try:
        if isinstance(text, int | float):
            value = float(text)
            if value > 1e11:  # milliseconds
                value /= 1000.0
            return datetime.fromtimestamp(value, tz=UTC)
        s = str(text).strip()
        if not s:
            return None
        if _EPOCH_RE.match(s):
            return parse_timestamp(float(s), now)
        if m := _DASH_DOTTED_RE.match(s):
            y, mo, d, hh, mi, ss, frac = m.groups()
            return datetime(
                int(y), int(mo), int(d), int(hh), int(mi), int(ss), _frac_us(frac), tzinfo=UTC
            )
        if m := _COMPACT_RE.match(s):
            y, mo, d, hh, mi, ss, frac = m.groups()
            return datetime(
                2000 + int(y),
                int(mo),
                int(d),
                int(hh),
                int(mi),
                int(ss),
                _frac_us(frac),
                tzinfo=UTC,
            )
        if m := _SLASH_RE.match(s):
            y, mo, d, hh, mi, ss, frac = m.groups()
            return datetime(
                int(y), int(mo), int(d), int(hh), int(mi), int(ss), _frac_us(frac), tzinfo=UTC
            )
        if m := _SYSLOG_TS_RE.match(s):
            mon, d, hh, mi, ss, frac, y = m.groups()
            parts = (_MONTH_NUM[mon], int(d), int(hh), int(mi), int(ss), _frac_us(frac))
            ref = now or datetime.now(UTC)
            if ref.tzinfo is None:
                ref = ref.replace(tzinfo=UTC)
            year = int(y) if y else _syslog_year(*parts, now=ref)
            return datetime(year, *parts, tzinfo=UTC)
        if m := _CLF_RE.match(s):
            d, mon, y, hh, mi, ss, off = m.groups()
            local = datetime.strptime(
                f"{y}-{_MONTH_NUM[mon]}-{d} {hh}:{mi}:{ss} {off}", "%Y-%m-%d %H:%M:%S %z"
            )
            return local.astimezone(UTC)
        return _parse_iso(s)
    except (ValueError, OverflowError, OSError):
        return None


def _parse_iso(s: str) -> datetime | None:
    m = _ISO_FIX_RE.match(s.replace(",", "."))
    if m is None:
        return None
    body, zulu, off_h, off_m = m.groups()
    body = body.replace(" ", "T", 1)
    if "." in body:  # fromisoformat wants at most 6 fractional digits
        head, _, frac = body.partition(".")
        body = f"{head}.{frac[:6].ljust(6, '0')}"
    tz = "+00:00" if zulu else (f"{off_h}:{off_m}" if off_h else "")
    dt = datetime.fromisoformat(body + tz)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_log_line(line: str, now: datetime | None = None) -> ParsedLine:
    """Parse one raw log line into (UTC timestamp, normalised level, message).

    Recognises ISO-8601, ``YYYY-MM-DD HH:MM:SS,mmm``, syslog (year inferred), epoch
    seconds/millis, ``2005-06-03-15.42.50.675872``, ``081109 203615``, JSON lines,
    bracketed levels and ``level=`` logfmt. Never raises; unknown parts are None.
    """
    try:
        split = split_header(line)
        ts = parse_timestamp(split.ts_text, now) if split.ts_text else None
        level = normalise_level(split.level_text) if split.level_text else None
        return ParsedLine(ts, level, split.message)
    except Exception:  # noqa: BLE001 - a log parser must never take the ingest down
        text = line if isinstance(line, str) else ""
        return ParsedLine(None, None, text.strip())
