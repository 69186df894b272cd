"""Per-line alert detection from the line alone: signatures, level, template novelty.

The detector is streaming: each decision uses the current line and what the detector has
learnt from *earlier* lines (its template miner), never later ones, so replaying a log
gives the same answers the live ingest would have given.

Decision for one line:

1. parse level and message (:func:`tasks.logs.lineparse.parse_log_line`);
2. classify the message (:class:`tasks.logs.signatures.SignatureSet`): severity from the
   best signature adjusted by the level, or from the level alone;
3. novelty: a template seen fewer than ``novel_count`` times before, on a line that is
   already an error (level ERROR/CRITICAL, or a signature match on a line not marked
   INFO/DEBUG), is raised one step, because a new kind of error is news while the
   hundredth repeat is not (so a new ERROR template alerts once, a FATAL line always);
4. detail lines are not alerts on their own: register and variable dumps
   (``label......<*>``, ``label: <*>``, ``r1=<*> r2=<*>``, ``Registers:``) carry the
   level of the event they describe, but the event is the line that says what happened,
   so they alert only on a signature that is HIGH or worse by itself;
5. alert when the severity is at least ``min_severity``.

Nothing here knows which system wrote the log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tasks.logs.lineparse import parse_log_line
from tasks.logs.masking import WILDCARD
from tasks.logs.signatures import SignatureSet, default_signature_set
from tasks.logs.templates import TemplateMiner
from tasks.severity import Severity

__all__ = ["AlertDecision", "AlertDetector", "is_detail_line"]

_W = re.escape(WILDCARD)
# "auxiliary processor.........<*>", "size of scratchpad......<*> (<*>)"
_DOT_LEADER = re.compile(rf"(?:(?!\.{{3}}).){{2,80}}\.{{3,}}\s*{_W}(?:\s*\({_W}\))?")
# "instruction address: <*>" (one value after a plain label)
_LABEL_VALUE = re.compile(rf"(?P<label>[A-Za-z][\w ./()-]{{0,60}}):\s*{_W}")
# "special purpose registers:" (a heading inside a dump)
_HEADING = re.compile(r"[A-Za-z][\w ./()-]{0,60}:")
_KV_TOKEN = re.compile(rf"[A-Za-z_][\w.-]*[=:]{_W},?")
_FILLER_TOKEN = re.compile(rf"{_W}|[0-9a-fA-F]+,?")
# Labels that name a problem rather than a field ("Error: <*>", "reason: <*>").
_PROBLEM_WORDS = frozenset(
    {"error", "errors", "failure", "failed", "fatal", "exception", "reason", "cause", "panic"}
)


def is_detail_line(template: str) -> bool:
    """True for masked lines that only report values (register dumps, field listings).

    Such lines accompany an event (a crash report prints dozens of them); flagging each
    would turn one incident into dozens of alerts. Labels that name a problem
    ("Error: <*>") are not details.
    """
    text = template.strip()
    if not text:
        return False
    if _DOT_LEADER.fullmatch(text):
        return True
    m = _LABEL_VALUE.fullmatch(text)
    if m is not None:
        words = m.group("label").lower().split()
        return bool(words) and words[-1] not in _PROBLEM_WORDS
    if _HEADING.fullmatch(text):
        return text[:-1].lower().split()[-1] not in _PROBLEM_WORDS
    tokens = text.split()
    kv = sum(1 for t in tokens if _KV_TOKEN.fullmatch(t))
    return kv > 0 and all(_KV_TOKEN.fullmatch(t) or _FILLER_TOKEN.fullmatch(t) for t in tokens)


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """Outcome for one line, with what led to it (for the alert text and for debugging)."""

    is_alert: bool
    severity: Severity | None
    signature: str | None
    level: str | None
    template_id: int
    template: str
    novel: bool
    detail: bool


class AlertDetector:
    """Streaming per-line alert detector.

    Args:
        min_severity: lowest severity that raises an alert.
        novel_count: a template seen fewer times than this before the current line is
            "novel" (1 = never seen; 0 disables the novelty step).
        signatures: signature set (default: the shipped one).
        miner: template miner to learn from (default: a fresh one). It is fed the
            message with the header already split off, so give it
            ``split_headers=False``.
    """

    def __init__(
        self,
        *,
        min_severity: Severity = Severity.HIGH,
        novel_count: int = 1,
        signatures: SignatureSet | None = None,
        miner: TemplateMiner | None = None,
    ) -> None:
        self.min_severity = Severity.parse(min_severity)
        self.novel_count = novel_count
        self.signatures = signatures or default_signature_set()
        self.miner = miner or TemplateMiner(split_headers=False)

    def observe(self, line: str) -> AlertDecision:
        """Decide for one raw line, then learn from it."""
        parsed = parse_log_line(line)
        tid, text = self.miner.add(parsed.message)
        tpl = self.miner.get(tid)
        seen_before = (tpl.count if tpl is not None else 1) - 1
        match = self.signatures.classify(parsed.message, parsed.level)
        severity = match.severity
        # Novelty only raises lines that already look like errors, and never lines the
        # emitter itself marked as informational.
        erroneous = parsed.level in ("ERROR", "CRITICAL") or (
            match.signature is not None and parsed.level not in ("INFO", "DEBUG")
        )
        novel = seen_before < self.novel_count
        if severity is not None and novel and erroneous:
            severity = Severity(min(severity + 1, Severity.CRITICAL))
        # Judge the line's own masked form: a merged template may have lost the dump shape.
        detail = is_detail_line(" ".join(self.miner.tokenize(parsed.message)))
        if detail and (match.signature is None or match.signature.severity < Severity.HIGH):
            is_alert = False
        else:
            is_alert = severity is not None and severity >= self.min_severity
        return AlertDecision(
            is_alert=is_alert,
            severity=severity,
            signature=match.name,
            level=parsed.level,
            template_id=tid,
            template=text,
            novel=novel,
            detail=detail,
        )

    def observe_batch(self, lines: Iterable[str]) -> list[AlertDecision]:
        """:meth:`observe` for each line in order."""
        return [self.observe(line) for line in lines]

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state (the miner's; signatures are configuration)."""
        return {"miner": self.miner.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any], **kwargs: Any) -> AlertDetector:
        """Rebuild from :meth:`to_state`; ``kwargs`` as for the constructor (except miner)."""
        return cls(miner=TemplateMiner.from_state(state["miner"]), **kwargs)
