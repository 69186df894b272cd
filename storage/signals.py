"""Wake-ups between processes sharing the database: "an approval was just decided".

``selfheal approve`` (or the API, or another host) records a decision; ``selfheal serve``
should act on it at once rather than at its next poll. On PostgreSQL the deciding
transaction sends ``NOTIFY selfheal_decisions`` (delivered when it commits) and serve
``LISTEN``\\ s on a connection of its own. SQLite has no notifications: the watch reads
``PRAGMA data_version`` (no table is read; it changes when any other connection commits)
every ``step_s`` seconds instead. Either way a wake-up only says "look now": the caller
then runs its ordinary query, and keeps polling as the fallback.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, func, select

DECISIONS_CHANNEL = "selfheal_decisions"
SQLITE_STEP_S = 0.1


def notify_decided(conn: Connection, approval_id: str) -> None:
    """Tell listeners that ``approval_id`` was decided (sent when ``conn`` commits; a no-op
    on SQLite, whose watchers see the commit itself)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(DECISIONS_CHANNEL, approval_id)))


class DecisionWatch(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when a decision may have been recorded."""

    def close(self) -> None: ...


class _Listen:
    """PostgreSQL: a dedicated autocommit connection that LISTENs on the channel."""

    def __init__(self, engine: Engine) -> None:
        self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            self._conn.exec_driver_sql(f"LISTEN {DECISIONS_CHANNEL}")
            self._driver: Any = self._conn.connection.driver_connection
        except Exception:
            self.close()
            raise

    def wait(self, timeout: float) -> bool:
        got = False
        for _ in self._driver.notifies(timeout=timeout, stop_after=1):
            got = True
        if got:  # several decisions at once: one look covers them all
            for _ in self._driver.notifies(timeout=0):
                pass
        return got

    def close(self) -> None:
        # Never back to the pool: it would keep listening for whoever borrows it next.
        with suppress(Exception):
            self._conn.invalidate()
        with suppress(Exception):
            self._conn.close()


class _DataVersion:
    """SQLite: ``PRAGMA data_version`` on a connection of its own, every ``step_s``."""

    def __init__(self, engine: Engine, step_s: float) -> None:
        self._raw = engine.raw_connection()
        self.step_s = step_s
        self._last = self._version()

    def _version(self) -> int:
        cur = self._raw.cursor()
        try:
            cur.execute("PRAGMA data_version")
            row = cur.fetchone()
            return int(row[0]) if row else 0
        finally:
            cur.close()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            version = self._version()
            if version != self._last:
                self._last = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.step_s, left))

    def close(self) -> None:
        with suppress(Exception):
            self._raw.close()


def watch_decisions(engine: Engine, step_s: float = SQLITE_STEP_S) -> DecisionWatch:
    """A watch on decisions recorded by any process (close it when done)."""
    if engine.dialect.name == "postgresql":
        return _Listen(engine)
    return _DataVersion(engine, step_s)
