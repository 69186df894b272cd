"""Circuit breaker: random event sequences keep it legal, bounded and persistent."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tasks.recovery.breaker import (
    AUTOMATIC_TRANSITIONS,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
)
from tasks.recovery.breaker_store import BreakerGuard, BreakerOpenError, BreakerStore

CONFIGS = st.builds(
    BreakerConfig,
    failure_rate_threshold=st.sampled_from([25.0, 50.0, 100.0]),
    window_type=st.sampled_from(["count", "time"]),
    window_size=st.integers(1, 10),
    minimum_calls=st.integers(1, 6),
    wait_in_open=st.sampled_from([0.0, 1.0, 5.0]),
    permitted_in_half_open=st.integers(1, 4),
)
EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.none()),
        st.tuples(st.just("record"), st.booleans()),
        st.tuples(st.just("call"), st.booleans()),  # acquire, then record if permitted
        st.tuples(st.just("advance"), st.sampled_from([0.1, 1.0, 3.0, 10.0])),
        st.tuples(st.sampled_from(["trip", "force_open", "disable", "reset"]), st.none()),
    ),
    max_size=60,
)
MANUAL = {
    "trip": {"open"},
    "force_open": {"forced_open"},
    "disable": {"disabled"},
    "reset": {"closed"},
}


def apply(b: CircuitBreaker, event: str, arg: object, now: float) -> tuple[float, bool | None]:
    granted = None
    if event == "advance":
        now += float(arg)  # type: ignore[arg-type]
        b.current(now)
    elif event == "acquire":
        granted = b.try_acquire(now)
    elif event == "record":
        b.record(bool(arg), now)
    elif event == "call":
        granted = b.try_acquire(now)
        if granted:
            b.record(bool(arg), now)
    else:
        getattr(b, event)(now)
    return now, granted


@settings(max_examples=300, deadline=None)
@given(config=CONFIGS, events=EVENTS)
def test_only_legal_transitions_and_bounded_trials(config: BreakerConfig, events: list) -> None:
    b = CircuitBreaker(BreakerState("x"), config)
    now = 1000.0
    trials = 0
    for event, arg in events:
        before = b.state.state
        now, granted = apply(b, event, arg, now)
        after = b.state.state
        if after != before:
            legal = (before, after) in AUTOMATIC_TRANSITIONS or after in MANUAL.get(event, set())
            # advancing time may go open -> half_open; a call in half_open may close or reopen
            assert legal or (
                (before, "half_open") in AUTOMATIC_TRANSITIONS and (after in ("closed", "open"))
            ), (before, after, event)
        if before != "half_open" and after == "half_open":
            trials = 0
        if after == "half_open" and granted and before == "half_open":
            trials += 1
        if after == "half_open":
            assert b.state.half_open_permitted <= config.permitted_in_half_open
            assert trials <= config.permitted_in_half_open
        if after in ("open", "forced_open"):
            # Probe a copy: asking for a permit is itself an event (it can use a trial).
            probe = copy.deepcopy(b)
            assert not probe.try_acquire(now) or probe.state.state == "half_open"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config=CONFIGS, events=EVENTS, more=EVENTS)
def test_state_identical_after_reload(
    sqlite_engine: Engine, config: BreakerConfig, events: list, more: list
) -> None:
    store = BreakerStore(sqlite_engine, config)
    name = f"b{abs(hash((tuple(events), str(config)))) % 10**9}"
    memory = CircuitBreaker(BreakerState(name), config)
    now = 1000.0
    for event, arg in events:
        now, _ = apply(memory, event, arg, now)
    store.update(name, lambda b: b.state.__dict__.update(memory.state.__dict__))
    reloaded = store.get(name)
    assert reloaded == memory.state
    # ... and it behaves the same from there on.
    again = CircuitBreaker(reloaded, config)
    t1 = t2 = now
    for event, arg in more:
        t1, g1 = apply(memory, event, arg, t1)
        t2, g2 = apply(again, event, arg, t2)
        assert g1 == g2
        assert memory.state == again.state


def test_resilience4j_walkthrough() -> None:
    cfg = BreakerConfig(
        failure_rate_threshold=50,
        window_size=4,
        minimum_calls=4,
        wait_in_open=10,
        permitted_in_half_open=2,
    )
    b = CircuitBreaker(BreakerState("db"), cfg)
    for ok in (True, False, True):
        b.record(ok, 0)
    assert b.state.state == "closed"  # 3 calls < minimum
    b.record(False, 1)  # 2 of 4 failed = 50 %
    assert b.state.state == "open"
    assert not b.try_acquire(5)
    assert b.try_acquire(11) and b.state.state == "half_open"
    assert b.try_acquire(11)
    assert not b.try_acquire(11)  # only 2 trials
    b.record(True, 12)
    b.record(True, 12)
    assert b.state.state == "closed"
    b.force_open(13)
    assert not b.try_acquire(1000)
    b.disable(14)
    assert b.try_acquire(14)
    b.reset(15)
    assert b.state.state == "closed"


def test_guard_shares_state_across_instances(engine: Engine) -> None:
    cfg = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=60)
    clock = [100.0]
    g1 = BreakerGuard(engine, "pe->repo", cfg, clock=lambda: clock[0])
    g2 = BreakerGuard(engine, "pe->repo", cfg, clock=lambda: clock[0])

    def boom() -> None:
        raise ConnectionError("refused")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            g1.call(boom)
    with pytest.raises(BreakerOpenError):
        g2.call(lambda: 1)  # another instance (or process) sees it open
    clock[0] += 61
    assert g2.call(lambda: 42) == 42  # half-open trial allowed
