"""Error signatures: named regexes with a severity, and a fast classifier for log messages.

A signature says *what* went wrong (out of memory, connection refused, disk full...) and
how bad that usually is. The log level says how bad the *emitter* thought it was. The
classifier combines both, because neither is reliable alone: "Connection reset by peer"
at INFO is routine retry noise, while an unlabelled syslog line saying "Out of memory:
Killed process 1234" is serious whatever its (missing) level.

Rules (see :meth:`SignatureSet.classify`):

* with a signature: its severity, one step higher for a CRITICAL/FATAL line and one step
  lower for an INFO/DEBUG line (a signature's severity assumes an ERROR-ish context);
* without one: CRITICAL level -> HIGH, ERROR -> MEDIUM, WARNING -> LOW, else None.

Matching is two-stage, because one big case-insensitive alternation of all patterns
costs ~100 µs a line in Python's regex engine: a single combined regex of every
signature's *keywords*, factored as a trie, finds which signatures can possibly match
(one pass over the lower-cased message); only those regexes run, most severe first, so
the most severe matching signature wins, ties going to the earlier one in the list.
A test checks that the keyword stage never hides a match.

Signatures are configurable: :func:`load_signatures` builds them from plain dicts (JSON,
YAML, a database table), and ``SignatureSet(load_signatures(rows), include_defaults=True)``
adds site-specific ones in front of the shipped :data:`DEFAULT_SIGNATURES`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tasks.severity import Severity

__all__ = [
    "DEFAULT_SIGNATURES",
    "Match",
    "Signature",
    "SignatureSet",
    "classify",
    "default_signature_set",
    "load_signatures",
]


@dataclass(frozen=True, slots=True)
class Signature:
    """A named error pattern, matched case-insensitively anywhere in the message.

    ``keywords`` are lower-case substrings at least one of which every match contains;
    they let the classifier skip the regex for the vast majority of lines (a substring
    test is ~50 ns, a case-insensitive regex search several µs). Leave them empty to
    always run the regex.
    """

    name: str
    pattern: str
    severity: Severity
    description: str = ""
    keywords: tuple[str, ...] = ()
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"signature name must be a simple identifier, got {self.name!r}")
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"signature {self.name!r}: bad regex: {exc}") from None
        object.__setattr__(self, "regex", compiled)
        object.__setattr__(self, "severity", Severity.parse(self.severity))
        object.__setattr__(self, "keywords", tuple(k.lower() for k in self.keywords if k))


@dataclass(frozen=True, slots=True)
class Match:
    """Result of classifying one message: the winning signature (if any) and the severity."""

    signature: Signature | None
    severity: Severity | None

    @property
    def name(self) -> str | None:
        return self.signature.name if self.signature else None


_S = Severity
DEFAULT_SIGNATURES: tuple[Signature, ...] = (
    # --- critical: the machine or its data is in trouble -------------------------------
    Signature(
        "kernel_panic",
        r"\bkernel panic\b|\bnot syncing\b|\bpanic(?:ked)?\s*[:!(]|\bpanicked at\b",
        _S.CRITICAL,
        "kernel or runtime panic (process or host is gone)",
        ("panic", "syncing"),
    ),
    Signature(
        "filesystem_corruption",
        r"remount(?:ing)?\s+(?:filesystem\s+)?read-only|\b(?:ext[234]|xfs|btrfs)(?:-fs)?\b"
        r"[^\n]{0,80}\b(?:error|corrupt)|\bcorrupt(?:ed|ion)\b|\bbad superblock\b",
        _S.CRITICAL,
        "filesystem or data corruption, read-only remounts",
        ("remount", "ext2", "ext3", "ext4", "xfs", "btrfs", "corrupt", "superblock"),
    ),
    Signature(
        "hardware_fatal",
        r"\bmachine check (?:exception|error|event)|\bmce:|\[hardware error\]|"
        r"\buncorrect(?:ed|able)\b[^\n]{0,40}\berrors?\b|\bfatal (?:hardware|ecc|memory) error|"
        r"\bedac\b[^\n]*\bUE\b",
        _S.CRITICAL,
        "uncorrectable hardware errors (MCE, uncorrectable ECC)",
        ("machine check", "mce:", "hardware error", "uncorrect", "fatal", "edac"),
    ),
    # --- high: a process or a resource failed ---------------------------------------------
    Signature(
        "out_of_memory",
        r"out of memory|\boom[-_ ]?kill(?:er|ed)?\b|\boom_reaper\b|\bkilled process \d+|"
        r"cannot allocate memory|OutOfMemoryError\b|\bMemoryError\b|\bENOMEM\b|"
        r"\bstd::bad_alloc\b|memory cgroup out of memory",
        _S.HIGH,
        "out of memory, OOM killer",
        ("memory", "oom", "killed process", "enomem", "bad_alloc"),
    ),
    Signature(
        "segfault",
        r"\bsegfault\b|segmentation (?:fault|violation)|\bSIG(?:SEGV|BUS|ABRT|ILL)\b|"
        r"core dumped|dumped core|\bcore dump\b|general protection fault",
        _S.HIGH,
        "crash with a fatal signal or core dump",
        (
            "segfault",
            "segmentation",
            "sigsegv",
            "sigbus",
            "sigabrt",
            "sigill",
            "dump",
            "protection",
        ),
    ),
    Signature(
        "disk_full",
        r"no space left on device|\bdisk (?:is )?full\b|\bENOSPC\b|file ?system (?:is )?full|"
        r"\bquota exceeded\b|insufficient (?:disk )?space",
        _S.HIGH,
        "disk or quota full",
        ("space", "full", "enospc", "quota"),
    ),
    Signature(
        "too_many_open_files",
        r"too many open files|\bE[MN]FILE\b|file-max limit",
        _S.HIGH,
        "file descriptor exhaustion",
        ("open files", "emfile", "enfile", "file-max"),
    ),
    Signature(
        "deadlock",
        r"\bdeadlock(?:ed)?\b|lock wait timeout exceeded",
        _S.HIGH,
        "deadlock",
        ("deadlock", "lock wait"),
    ),
    Signature(
        "stack_overflow",
        r"stack ?overflow|maximum recursion depth exceeded|stack smashing detected",
        _S.HIGH,
        "stack overflow / runaway recursion",
        ("overflow", "recursion", "smashing"),
    ),
    Signature(
        "io_error",
        r"\bI/O error\b|input/output error|\bEIO\b|buffer i/o error",
        _S.HIGH,
        "device or filesystem I/O errors",
        ("i/o", "input/output", "eio"),
    ),
    Signature(
        "mount_failure",
        r"\bmount(?:ing)?\b[^\n]{0,40}\bfail(?:ed|ure|s)?\b|\bfailed to mount\b|"
        r"\bstale (?:nfs )?file handle\b",
        _S.HIGH,
        "filesystem mount failures",
        ("mount", "stale"),
    ),
    Signature(
        "hardware_error",
        r"\b(?:ecc|parity|ddr|dimm|dram|memory|bus) errors?\b(?![^\n]*\bcorrect)|"
        r"\bhardware (?:error|failure)\b",
        _S.HIGH,
        "hardware errors not reported as corrected",
        ("ecc", "parity", "ddr", "dimm", "dram", "memory", "bus", "hardware"),
    ),
    Signature(
        "process_crash",
        r"exited abnormally|terminated abnormally|\bkilled by signal\b|"
        r"exited with (?:status|code|exit code) [1-9]|\bcrash(?:ed|es|ing)?\b|"
        r"\bkernel terminated\b|\bterminated unexpectedly\b|"
        r"\bunexpected(?:ly)? (?:exit|termination)",
        _S.HIGH,
        "process or job died",
        ("abnormally", "killed by", "exited with", "crash", "terminated", "unexpected"),
    ),
    Signature(
        "service_unavailable",
        r"service (?:temporarily )?unavailable|bad gateway|gateway time-?out|no healthy upstream|"
        r"upstream connect error|circuit breaker (?:is )?open|health ?check failed|"
        r"(?:liveness|readiness) probe failed|back-?off restarting failed container|"
        r"\bCrashLoopBackOff\b",
        _S.HIGH,
        "a dependency or the service itself is down",
        ("unavailable", "gateway", "upstream", "circuit", "check failed", "probe", "backoff"),
    ),
    Signature(
        "network_unreachable",
        r"network is unreachable|no route to host|\bE(?:HOST|NET)UNREACH\b|"
        r"\blink (?:is )?down\b|\bcarrier lost\b",
        _S.HIGH,
        "network path lost",
        ("unreach", "no route", "link", "carrier"),
    ),
    # --- medium: an operation failed, the system is probably fine ---------------------------
    Signature(
        "connection_error",
        r"connection (?:refused|reset|aborted|lost|closed by (?:peer|remote)|timed out)|"
        r"\bECONN(?:REFUSED|RESET|ABORTED)\b|broken pipe|\bEPIPE\b|reset by peer|"
        r"link has been severed|socket hang up|connection abort",
        _S.MEDIUM,
        "connection refused / reset / broken",
        ("connection", "econn", "pipe", "reset by", "severed", "hang up"),
    ),
    Signature(
        "timeout",
        r"\btimed?[- ]?out\b|\btimeout\b|deadline exceeded|\bETIMEDOUT\b",
        _S.MEDIUM,
        "an operation timed out",
        ("time", "deadline"),
    ),
    Signature(
        "http_5xx",
        r"\b(?:status|code|http)[\"']?\s*[=: ]\s*[\"']?5\d\d\b|\bHTTP/\d(?:\.\d)?\"?\s+5\d\d\b|"
        r"\b5\d\d (?:internal server error|not implemented|bad gateway)",
        _S.MEDIUM,
        "HTTP 5xx responses",
        ("status", "code", "http", "server error", "not implemented", "bad gateway"),
    ),
    Signature(
        "exception",
        r"Traceback \(most recent call last\)|\bexception\b(?=\s*[:(]| (?:in|while|during|"
        r"occurred|thrown|caught|raised)\b)|"
        r"(?-i:\b[A-Z]\w*(?:Exception|Error)\b)|"
        r"^\s+at [\w$.<>]+\([\w$]+\.\w+:\d+\)|\bunhandled\b|\buncaught\b",
        _S.MEDIUM,
        "exceptions and stack traces",
        ("traceback", "exception", "error", " at ", "unhandled", "uncaught"),
    ),
    Signature(
        "assertion",
        r"assert(?:ion)?\s*(?:failed|failure|error)|\bhit ASSERT\b|\bassertion\b",
        _S.MEDIUM,
        "assertion failures (a bug, usually not an outage)",
        ("assert",),
    ),
    # Low: usually a caller lacking rights for its request, not the system failing.
    Signature(
        "permission_denied",
        r"permission denied|access denied|\bEACCES\b|\bEPERM\b|operation not permitted",
        _S.LOW,
        "permission / access errors (often configuration)",
        ("denied", "eacces", "eperm", "not permitted"),
    ),
    Signature(
        "auth_failure",
        r"authentication fail(?:ed|ure)|auth(?:entication)? error|failed password|"
        r"invalid (?:user|password|credentials)|login fail(?:ed|ure)|unauthori[sz]ed|"
        r"could(?: no|n)'?t authenticate|bad password",
        _S.MEDIUM,
        "authentication failures",
        ("auth", "password", "invalid", "login"),
    ),
    # --- low: errors about the request rather than the system, or already handled --------
    Signature(
        "hardware_corrected",
        r"\b(?:ecc|parity|ddr|edram|memory|cache)\b[^\n]{0,60}\bcorrect(?:ed|able)\b|"
        r"\bcorrect(?:ed|able)\b[^\n]{0,40}\b(?:ecc|parity|memory) error|\bedac\b",
        _S.LOW,
        "hardware errors that were corrected",
        ("correct", "edac"),
    ),
    Signature(
        "invalid_request",
        r"no such file or directory|\bENOENT\b|\bfile not found\b|\bFileNotFoundError\b|"
        r"invalid argument|\bEINVAL\b|exec format error|\bENOEXEC\b|malformed|bad request|"
        r"\bparse error\b|\bsyntax error\b",
        _S.LOW,
        "errors about the caller's input (missing file, bad argument, wrong binary)",
        (
            "no such file",
            "enoent",
            "not found",
            "notfound",
            "invalid argument",
            "einval",
            "exec format",
            "enoexec",
            "malformed",
            "bad request",
            "parse error",
            "syntax error",
        ),
    ),
    Signature(
        "retry",
        r"\bretry(?:ing)?\b|\bretries\b|\bbacking off\b|\bback-off\b",
        _S.LOW,
        "retries in progress",
        ("retr", "backing off", "back-off"),
    ),
)


def _trie_regex(words: Sequence[str]) -> str:
    """A regex matching any of ``words``, factored as a trie ("con(?:nection|flict)").

    A flat alternation of ~100 literals makes the regex engine try every alternative at
    every position; the trie form branches on one character at a time.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        end = "" in node
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if end:  # greedy optional tail: the longest keyword at this position wins
            return f"(?:{body})?" if len(alts) > 1 or len(body) > 1 else f"{body}?"
        return body

    return build(trie)


_LEVEL_FLOOR: Mapping[str, Severity] = MappingProxyType(
    {"CRITICAL": Severity.HIGH, "ERROR": Severity.MEDIUM, "WARNING": Severity.LOW}
)


def _shift(severity: Severity, steps: int) -> Severity:
    return Severity(min(max(int(severity) + steps, Severity.LOW), Severity.CRITICAL))


class SignatureSet:
    """A compiled, ordered set of signatures.

    Args:
        signatures: the signatures to use, most specific first.
        include_defaults: append :data:`DEFAULT_SIGNATURES` after ``signatures`` (names
            already present are not added twice, so a custom one can override a default).
    """

    __slots__ = ("_by_keyword", "_keyword_re", "_rank", "_unkeyed", "signatures")

    def __init__(
        self,
        signatures: Iterable[Signature] = DEFAULT_SIGNATURES,
        *,
        include_defaults: bool = False,
    ) -> None:
        sigs = list(signatures)
        if include_defaults:
            names = {s.name for s in sigs}
            sigs.extend(s for s in DEFAULT_SIGNATURES if s.name not in names)
        self.signatures: tuple[Signature, ...] = tuple(sigs)
        # Candidates are checked most severe first, list order within a severity, so the
        # first regex that matches is the answer.
        rank = {id(sig): (-sig.severity, i) for i, sig in enumerate(sigs)}
        self._rank = rank
        keywords = {k for sig in sigs for k in sig.keywords}
        # A keyword hit also stands for every keyword that is a prefix of it (the scan
        # reports one keyword per position, the longest).
        self._by_keyword: dict[str, tuple[Signature, ...]] = {
            k: tuple(
                sorted(
                    {id(s): s for s in sigs for p in s.keywords if k.startswith(p)}.values(),
                    key=lambda s: rank[id(s)],
                )
            )
            for k in keywords
        }
        self._unkeyed = tuple(
            sorted((s for s in sigs if not s.keywords), key=lambda s: rank[id(s)])
        )
        self._keyword_re = (
            re.compile(f"(?=({_trie_regex(sorted(keywords))}))") if keywords else None
        )

    def candidates(self, message: str) -> list[Signature]:
        """Signatures whose keywords occur in ``message``, most severe first."""
        found: dict[int, Signature] = {id(s): s for s in self._unkeyed}
        if self._keyword_re is not None:
            for hit in set(self._keyword_re.findall(message.lower())):
                for sig in self._by_keyword[hit]:
                    found.setdefault(id(sig), sig)
        return sorted(found.values(), key=lambda s: self._rank[id(s)])

    def match(self, message: str) -> Signature | None:
        """The most severe signature matching ``message`` (earlier wins a tie), or None."""
        if not isinstance(message, str) or not message:
            return None
        for sig in self.candidates(message):
            if sig.regex.search(message):
                return sig
        return None

    def classify(self, message: str, level: str | None = None) -> Match:
        """Signature and severity for a message and its (normalised) level.

        ``level`` is one of DEBUG/INFO/WARNING/ERROR/CRITICAL as produced by
        the file's learned level field (:mod:`tasks.logs.lineparse`), or None.
        """
        sig = self.match(message)
        if sig is not None:
            if level == "CRITICAL":
                return Match(sig, _shift(sig.severity, +1))
            if level in ("INFO", "DEBUG"):
                return Match(sig, _shift(sig.severity, -1))
            return Match(sig, sig.severity)
        return Match(None, _LEVEL_FLOOR.get(level or ""))

    def classify_batch(
        self, messages: Sequence[str], levels: Sequence[str | None] | None = None
    ) -> list[Match]:
        """:meth:`classify` for many messages (``levels`` aligned with them, or None)."""
        if levels is None:
            return [self.classify(m) for m in messages]
        if len(levels) != len(messages):
            raise ValueError("messages and levels must have the same length")
        return [self.classify(m, lv) for m, lv in zip(messages, levels, strict=True)]


def load_signatures(rows: Iterable[Mapping[str, Any]]) -> list[Signature]:
    """Build signatures from config dicts (JSON, YAML, database rows).

    Keys: ``name``, ``pattern``, ``severity`` and optionally ``description`` and
    ``keywords`` (lower-case substrings every match contains; they speed up matching).
    ``severity`` may be a name (``"high"``) or a number (1-4). Raises ValueError naming the
    offending row, so a bad configuration fails at load time rather than mid-ingest.
    """
    out: list[Signature] = []
    for i, row in enumerate(rows):
        try:
            out.append(
                Signature(
                    name=str(row["name"]),
                    pattern=str(row["pattern"]),
                    severity=Severity.parse(row["severity"]),
                    description=str(row.get("description", "")),
                    keywords=tuple(str(k) for k in row.get("keywords") or ()),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"signature row {i}: {exc}") from None
    return out


_DEFAULT_SET = SignatureSet()


def default_signature_set() -> SignatureSet:
    """The shipped signatures, compiled once (the object is read-only)."""
    return _DEFAULT_SET


def classify(message: str, level: str | None = None) -> Match:
    """Classify with the shipped signatures; see :meth:`SignatureSet.classify`."""
    return _DEFAULT_SET.classify(message, level)
