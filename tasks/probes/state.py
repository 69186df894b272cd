"""The threshold state machine of one probe (Kubernetes semantics).

A probe starts ``unknown``. ``failure_threshold`` consecutive failures make it
``failing``; ``success_threshold`` consecutive successes make it ``healthy``. From
``unknown`` one success is enough (as Kubernetes starts a container ready-unknown, then
ready on the first success when successThreshold is 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["unknown", "healthy", "failing"]


@dataclass
class ProbeState:
    failure_threshold: int
    success_threshold: int
    status: Status = "unknown"
    failures: int = 0  # consecutive
    successes: int = 0  # consecutive

    def observe(self, ok: bool) -> Status | None:
        """Count one result; the new status when it changed, else None."""
        before = self.status
        if ok:
            self.successes += 1
            self.failures = 0
            needed = 1 if self.status == "unknown" else self.success_threshold
            if self.status != "healthy" and self.successes >= needed:
                self.status = "healthy"
        else:
            self.failures += 1
            self.successes = 0
            if self.status != "failing" and self.failures >= self.failure_threshold:
                self.status = "failing"
        return self.status if self.status != before else None


def replay(oks: Iterable[bool], failure_threshold: int, success_threshold: int) -> list[bool]:
    """For each result in order, whether the probe is failing after it."""
    state = ProbeState(failure_threshold, success_threshold)
    out = []
    for ok in oks:
        state.observe(bool(ok))
        out.append(state.status == "failing")
    return out
