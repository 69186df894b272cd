"""The per-line alert decision of the cycle's log step (:mod:`tasks.detection.logs_step`).

Everything that decides whether one log line is an alert lives here, so the cycle, the
``selfheal logs`` command and the benchmark make the same decision. For one line:

1. **content**: the most severe matching error signature
   (:class:`tasks.logs.signatures.SignatureSet`); a signature of medium or worse is
   raised one step on a CRITICAL line, and any signature is lowered one step on an
   INFO/DEBUG line (the emitter said it was routine);
2. **level** when no signature matches: CRITICAL -> high, ERROR -> medium, WARNING -> low
   (the level comes from the file's learned level field), one step lower when the message
   holds no word of the error vocabulary (a field dump at a high level is not an event);
3. **novelty**: the first line of a template never seen before, at ERROR or above and
   with an error signature or word, is raised one step (a new kind of error is news; its
   hundredth repeat is not);
4. **habit**: a template that has recurred for long before this line (the caller decides:
   ``recurring``) is lowered one step unless the line is CRITICAL: the same line every
   day for weeks is how this system runs, not news;
5. the line is an alert when its severity reaches the threshold.

Bursts (a template far above its measured rate) are decided per template by the step,
which needs the lines around the current one. Nothing here knows which system wrote
the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.logs.signatures import SignatureSet
from tasks.severity import Severity

__all__ = ["ERROR_WORDS", "LineVerdict", "has_error_word", "line_verdict"]

# Words that say something went wrong, in any system's prose.
ERROR_WORDS = frozenset(
    """
    error errors err fail fails failed failing failure failures fatal panic panicked abort
    aborted aborting crash crashed crashing corrupt corrupted corruption unable cannot can't
    couldn't denied refused unreachable timeout timed killed lost severed broken invalid
    illegal violation overflow underflow unexpected unexpectedly dead deadlock hung stalled
    exhausted fault faulted
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_WORD_RE = re.compile(r"[a-z']+")
_HIGH_LEVELS = ("ERROR", "CRITICAL")
_LEVEL_FLOOR = {"CRITICAL": Severity.HIGH, "ERROR": Severity.MEDIUM, "WARNING": Severity.LOW}


def has_error_word(message: str) -> bool:
    """True when the message holds a word of :data:`ERROR_WORDS` (any case)."""
    return not ERROR_WORDS.isdisjoint(_WORD_RE.findall(message.lower()))


def _step(sev: Severity, steps: int) -> Severity | None:
    value = int(sev) + steps
    if value < Severity.LOW:
        return None
    return Severity(min(value, Severity.CRITICAL))


@dataclass(frozen=True, slots=True)
class LineVerdict:
    """Severity of one line and why (signature name, ``level``, plus ``new``)."""

    severity: Severity | None
    reason: str | None
    signature: str | None
    novel: bool


def line_verdict(
    message: str,
    level: str | None,
    novel: bool,
    signatures: SignatureSet,
    recurring: bool = False,
) -> LineVerdict:
    """Severity of one line from its message, its level, and whether its template is new
    or has long been recurring."""
    sig = signatures.match(message)
    sev: Severity | None
    erroneous: bool
    if sig is not None:
        sev = sig.severity
        if level == "CRITICAL" and sev >= Severity.MEDIUM:
            sev = _step(sev, +1)
        elif level in ("INFO", "DEBUG"):
            sev = _step(sev, -1)
        reason: str | None = sig.name
        erroneous = level not in ("INFO", "DEBUG")
    else:
        floor = _LEVEL_FLOOR.get(level or "")
        worded = floor is not None and has_error_word(message)
        sev = floor if floor is None or worded or level == "WARNING" else _step(floor, -1)
        reason = f"level {level}" if sev is not None else None
        erroneous = worded
    new = novel and erroneous and level in _HIGH_LEVELS and sev is not None
    if new and sev is not None:
        sev = _step(sev, +1)
        reason = f"{reason}, new template"
    elif recurring and sev is not None and level != "CRITICAL":
        sev = _step(sev, -1)
        reason = f"{reason}, recurring" if sev is not None else None
    return LineVerdict(sev, reason, sig.name if sig else None, new)
