"""A circuit breaker modelled on resilience4j's.

States: ``closed`` (calls flow, outcomes are recorded), ``open`` (calls are refused until
``wait_in_open`` has passed), ``half_open`` (at most ``permitted_in_half_open`` trial
calls; when they have all reported, the failure rate decides: back to ``open`` or to
``closed``), and the manual states ``forced_open`` and ``disabled`` (always refuse /
always permit, recording nothing) left only by ``reset``.

In ``closed`` the failure rate is computed over a sliding window, either the last
``window_size`` calls (count-based) or the calls of the last ``window_size`` seconds
(time-based), and only once ``minimum_calls`` have been recorded.

The state is a plain, JSON-serialisable dataclass, so it can be stored in a table and
reloaded by another process (the recovery flow, or the platform's own code through
``storage.breakers.BreakerGuard``) with exactly the same behaviour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

State = Literal["closed", "open", "half_open", "forced_open", "disabled"]
STATES: tuple[State, ...] = ("closed", "open", "half_open", "forced_open", "disabled")

# Transitions the breaker itself makes (manual ones are reset/force_open/disable).
AUTOMATIC_TRANSITIONS = {
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "open"),
    ("half_open", "closed"),
}
MANUAL_TARGETS = {"closed", "forced_open", "disabled"}


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate_threshold: float = 50.0  # percent
    window_type: Literal["count", "time"] = "count"
    window_size: int = 20  # calls, or seconds for a time window
    minimum_calls: int = 10
    wait_in_open: float = 60.0  # seconds
    permitted_in_half_open: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate_threshold <= 100:
            raise ValueError("failure_rate_threshold must be in (0, 100]")
        if self.window_size < 1 or self.minimum_calls < 1 or self.permitted_in_half_open < 1:
            raise ValueError("window_size, minimum_calls and permitted_in_half_open must be >= 1")
        if self.wait_in_open < 0:
            raise ValueError("wait_in_open must be >= 0")


@dataclass
class BreakerState:
    name: str
    state: State = "closed"
    calls: list[tuple[float, bool]] = field(default_factory=list)  # (time, ok) in the window
    opened_at: float | None = None
    half_open_permitted: int = 0  # trial calls handed out in half_open
    half_open_results: list[bool] = field(default_factory=list)
    transitions: int = 0
    changed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calls"] = [[t, ok] for t, ok in self.calls]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerState:
        data = dict(data)
        data["calls"] = [(float(t), bool(ok)) for t, ok in data.get("calls", [])]
        data["half_open_results"] = [bool(x) for x in data.get("half_open_results", [])]
        return cls(**data)


class CircuitBreaker:
    """Operations on a ``BreakerState`` (times are epoch seconds passed in, for testing)."""

    def __init__(self, state: BreakerState, config: BreakerConfig = BreakerConfig()) -> None:
        self.state = state
        self.config = config

    # -- queries ----------------------------------------------------------------------
    def failure_rate(self, now: float) -> float | None:
        """Percent of failed calls in the window, or None below ``minimum_calls``."""
        calls = self._window(now)
        if len(calls) < self.config.minimum_calls:
            return None
        return 100.0 * sum(1 for _, ok in calls if not ok) / len(calls)

    def current(self, now: float) -> State:
        """The state, moving open → half_open when the wait has passed."""
        s = self.state
        if (
            s.state == "open"
            and s.opened_at is not None
            and now - s.opened_at >= self.config.wait_in_open
        ):
            self._to("half_open", now)
        return self.state.state

    # -- calls ------------------------------------------------------------------------
    def try_acquire(self, now: float) -> bool:
        """Whether a call may go through now (a half-open trial counts as a permit)."""
        state = self.current(now)
        if state in ("closed", "disabled"):
            return True
        if state in ("open", "forced_open"):
            return False
        if self.state.half_open_permitted < self.config.permitted_in_half_open:
            self.state.half_open_permitted += 1
            return True
        return False

    def record(self, ok: bool, now: float) -> State:
        """Record a call's outcome; returns the state after it."""
        state = self.current(now)
        s = self.state
        if state in ("disabled", "forced_open", "open"):
            return state  # nothing is counted (a late result of an old call is dropped)
        if state == "half_open":
            if len(s.half_open_results) >= s.half_open_permitted:
                return state  # a result without a permit: ignore
            s.half_open_results.append(ok)
            if len(s.half_open_results) >= self.config.permitted_in_half_open:
                failures = sum(1 for r in s.half_open_results if not r)
                rate = 100.0 * failures / len(s.half_open_results)
                self._to("open" if rate >= self.config.failure_rate_threshold else "closed", now)
            return self.state.state
        s.calls.append((now, ok))
        s.calls = self._window(now)
        window_rate = self.failure_rate(now)
        if window_rate is not None and window_rate >= self.config.failure_rate_threshold:
            self._to("open", now)
        return self.state.state

    # -- manual control ---------------------------------------------------------------
    def trip(self, now: float) -> None:
        """Open now (e.g. the recovery strategy isolates a dependency on evidence it has)."""
        if self.state.state in ("closed", "half_open"):
            self._to("open", now)

    def force_open(self, now: float) -> None:
        self._to("forced_open", now)

    def disable(self, now: float) -> None:
        self._to("disabled", now)

    def reset(self, now: float) -> None:
        self._to("closed", now)

    # -- internals --------------------------------------------------------------------
    def _window(self, now: float) -> list[tuple[float, bool]]:
        calls = self.state.calls
        if self.config.window_type == "count":
            return calls[-self.config.window_size :]
        return [(t, ok) for t, ok in calls if now - t < self.config.window_size]

    def _to(self, target: State, now: float) -> None:
        s = self.state
        if s.state == target:
            return
        s.state = target
        s.transitions += 1
        s.changed_at = now
        s.half_open_permitted = 0
        s.half_open_results = []
        if target == "open":
            s.opened_at = now
        if target in ("closed", "half_open", "forced_open", "disabled"):
            s.calls = []
        if target != "open":
            s.opened_at = None if target != "half_open" else s.opened_at
