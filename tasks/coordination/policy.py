"""The four modes, exactly as the design's table says.

| mode        | low / medium  | high / critical |
|-------------|---------------|-----------------|
| manual      | approval      | approval        |
| supervised  | automatic     | approval        |
| automated   | automatic     | automatic       |
| learning    | recorded only | recorded only   |
"""

from __future__ import annotations

from typing import Literal

from tasks.severity import Severity

Decision = Literal["automatic", "approval", "record_only"]
MODES = ("manual", "supervised", "automated", "learning")


def decide_mode(mode: str, severity: str | Severity) -> Decision:
    """What the mode says to do with a recovery for an issue of this severity."""
    sev = Severity.parse(severity)
    if mode == "learning":
        return "record_only"
    if mode == "manual":
        return "approval"
    if mode == "automated":
        return "automatic"
    if mode == "supervised":
        return "approval" if sev >= Severity.HIGH else "automatic"
    raise ValueError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
