"""Run the probes of all components, each on its own period, on a bounded thread pool.

``ProbeScheduler(probes, on_result=..., on_transition=...)``: ``start()`` launches one
timer thread that submits due probes to a pool of ``max_workers`` threads (a probe still
running when it is due again is not started twice); each result goes to ``on_result``
and, when it changes the probe's threshold state, to ``on_transition(result, old, new)``
(say, to start the down path at once when liveness becomes ``failing``). ``stop()`` ends
the timer and waits for running probes (each bounded by its own timeout).

Callbacks run on the pool's threads; an exception in one is logged and does not stop the
scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from tasks.probes.run import run_probe
from tasks.probes.spec import ProbeResult, ProbeSpec
from tasks.probes.state import ProbeState, Status

log = logging.getLogger("selfheal.probes")

ResultCallback = Callable[[ProbeResult], None]
TransitionCallback = Callable[[ProbeResult, Status, Status], None]


class ProbeScheduler:
    def __init__(
        self,
        probes: Sequence[ProbeSpec],
        on_result: ResultCallback | None = None,
        on_transition: TransitionCallback | None = None,
        max_workers: int = 4,
        runner: Callable[[ProbeSpec], ProbeResult] = run_probe,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        keys = [p.key for p in probes]
        if len(set(keys)) != len(keys):
            raise ValueError("two probes share a component and a name")
        self.probes = list(probes)
        self.on_result = on_result
        self.on_transition = on_transition
        self.max_workers = max(1, max_workers)
        self._runner = runner
        self._on_stop = on_stop  # e.g. close what the callbacks write to
        self._states = {p.key: ProbeState(p.failure_threshold, p.success_threshold) for p in probes}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[tuple[str, str], Future[None]] = {}
        self.runs = 0

    # -- state -------------------------------------------------------------------------
    def status(self, component: str, name: str) -> Status:
        with self._lock:
            return self._states[(component, name)].status

    def statuses(self) -> dict[tuple[str, str], Status]:
        with self._lock:
            return {k: s.status for k, s in self._states.items()}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- one run -----------------------------------------------------------------------
    def run_one(self, spec: ProbeSpec) -> ProbeResult:
        """Run a probe now, update its state and call the callbacks (any thread)."""
        result = self._runner(spec)
        with self._lock:
            state = self._states[spec.key]
            before = state.status
            after = state.observe(result.ok)
            self.runs += 1
        self._call(self.on_result, result)
        if after is not None:
            log.info(
                "probe %s of %s: %s -> %s (%s)",
                spec.name,
                spec.component,
                before,
                after,
                result.detail,
            )
            self._call(self.on_transition, result, before, after)
        return result

    def run_all_once(self) -> list[ProbeResult]:
        """Every probe once, concurrently on the pool (the cycle uses this when no
        scheduler runs); returns their results."""
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="probe") as pool:
            return list(pool.map(self.run_one, self.probes))

    def _call(self, fn: Callable[..., None] | None, *args: object) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("probe callback %s failed", getattr(fn, "__name__", fn))

    # -- the timer ---------------------------------------------------------------------
    def start(self) -> ProbeScheduler:
        if self.running:
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="probe")
        self._thread = threading.Thread(target=self._loop, name="probe-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._running.clear()
        if self._on_stop is not None:
            self._call(self._on_stop)

    def __enter__(self) -> ProbeScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        t0 = time.monotonic()
        due = {p.key: t0 + p.initial_delay_s for p in self.probes}
        by_key = {p.key: p for p in self.probes}
        while not self._stop.is_set():
            now = time.monotonic()
            for key, when in due.items():
                if when > now:
                    continue
                spec = by_key[key]
                # The next run is one period after this one was due (no drift); if this
                # one is late by more than a period, it starts from now.
                due[key] = max(when + spec.period_s, now)
                running = self._running.get(key)
                if running is not None and not running.done():
                    continue  # still running (bounded by its timeout): skip this period
                assert self._pool is not None
                try:
                    self._running[key] = self._pool.submit(self._run_quiet, spec)
                except RuntimeError:  # the pool is shutting down
                    return
            wait = min(due.values(), default=now + 1.0) - time.monotonic()
            self._stop.wait(max(0.01, min(wait, 1.0)))

    def _run_quiet(self, spec: ProbeSpec) -> None:
        try:
            self.run_one(spec)
        except Exception:
            log.exception("probe %s of %s could not run", spec.name, spec.component)
