"""Circuit breakers whose state lives in the database, shared by every process.

``BreakerStore.update`` loads a breaker, applies an operation and saves it in one
transaction that holds the write lock from the start (a row lock on PostgreSQL; SQLite's
single writer lock, taken by a first write), so concurrent callers never lose an update.
``BreakerGuard`` is the small object the platform's own code uses around a dependency call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from storage.breakers import load_breaker, update_breaker
from tasks.recovery.breaker import BreakerConfig, BreakerState, CircuitBreaker

T = TypeVar("T")


class BreakerOpenError(RuntimeError):
    """The breaker refused the call."""


class BreakerStore:
    def __init__(self, engine: Engine, config: BreakerConfig = BreakerConfig()) -> None:
        self.engine = engine
        self.config = config

    def update(self, name: str, op: Callable[[CircuitBreaker], T]) -> T:
        def change(body: dict[str, Any] | None) -> tuple[dict[str, Any], T]:
            state = BreakerState.from_dict(body) if body else BreakerState(name)
            breaker = CircuitBreaker(state, self.config)
            result = op(breaker)
            return breaker.state.to_dict(), result

        return update_breaker(self.engine, name, change)

    def get(self, name: str) -> BreakerState:
        with self.engine.connect() as conn:
            body = load_breaker(conn, name)
        return BreakerState.from_dict(body) if body else BreakerState(name)


class BreakerGuard:
    """Guard a dependency call with a shared breaker::

    guard = BreakerGuard(engine, "proof_engine->theorem_repository")
    result = guard.call(fetch_theorem, key)    # raises BreakerOpenError while open
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        config: BreakerConfig = BreakerConfig(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = BreakerStore(engine, config)
        self.name = name
        self.clock = clock

    def allow(self) -> bool:
        return self.store.update(self.name, lambda b: b.try_acquire(self.clock()))

    def record(self, ok: bool) -> str:
        return self.store.update(self.name, lambda b: b.record(ok, self.clock()))

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        if not self.allow():
            raise BreakerOpenError(f"circuit {self.name} is open")
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.record(False)
            raise
        self.record(True)
        return result
