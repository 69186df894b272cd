"""Restart backoff the way Kubernetes does it for crash-looping containers.

The first restart is immediate; each further restart while the component keeps failing
waits twice as long (10 s, 20 s, 40 s, … capped at 5 min); a component that stayed up
for ``reset_after`` (10 min) since its last restart starts again from zero. More than
``max_restarts`` restarts within ``window`` means restarting is not working: stop and
escalate to the next strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class BackoffPolicy:
    base: float = 10.0
    factor: float = 2.0
    cap: float = 300.0
    reset_after: float = 600.0
    max_restarts: int = 5
    window: float = 3600.0


@dataclass(frozen=True)
class BackoffDecision:
    allowed: bool
    wait_s: float  # how long until the next restart may happen (0 when allowed)
    exhausted: bool  # too many restarts in the window: escalate
    streak: int  # restarts in the current crash loop
    reason: str


def crash_loop_streak(restarts: Sequence[datetime], policy: BackoffPolicy) -> int:
    """Restarts in the current loop: consecutive ones less than ``reset_after`` apart."""
    times = sorted(restarts)
    streak = 0
    for prev, cur in zip([None, *times[:-1]], times, strict=True):
        if prev is None or (cur - prev).total_seconds() >= policy.reset_after:
            streak = 1
        else:
            streak += 1
    return streak


def decide_restart(
    restarts: Sequence[datetime], now: datetime, policy: BackoffPolicy
) -> BackoffDecision:
    """May the component be restarted now, given its earlier restart times?"""
    in_window = [t for t in restarts if (now - t).total_seconds() < policy.window]
    if len(in_window) >= policy.max_restarts:
        return BackoffDecision(
            False,
            0.0,
            True,
            len(in_window),
            f"{len(in_window)} restarts within {policy.window:g} s (limit "
            f"{policy.max_restarts}): restarting does not help",
        )
    if not restarts:
        return BackoffDecision(True, 0.0, False, 0, "first restart")
    last = max(restarts)
    since = (now - last).total_seconds()
    if since >= policy.reset_after:
        return BackoffDecision(True, 0.0, False, 0, f"up for {since:.0f} s since last restart")
    streak = crash_loop_streak(restarts, policy)
    delay = min(policy.cap, policy.base * policy.factor ** (streak - 1))
    if since >= delay:
        return BackoffDecision(True, 0.0, False, streak, f"backoff {delay:g} s elapsed")
    return BackoffDecision(
        False,
        delay - since,
        False,
        streak,
        f"in backoff: next restart allowed in {delay - since:.0f} s",
    )


def next_allowed_at(restarts: Sequence[datetime], now: datetime, policy: BackoffPolicy) -> datetime:
    d = decide_restart(restarts, now, policy)
    return now + timedelta(seconds=d.wait_s)
