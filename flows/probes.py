"""Probes in the flows: the scheduler ``selfheal serve`` runs, and the once-per-cycle run
that replaces it when nothing schedules them (``selfheal cycle``, ``selfheal detect``).

Both store each result (``storage.probes``); detection replays the stored results through
the probe's thresholds (``tasks.detection.down.detect_probe``), so a liveness failure is a
``down`` anomaly whichever of the two ran the probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from flows.components import probe_specs
from flows.config import SelfHealConfig
from storage.metrics import SeriesResolver
from storage.probes import latest_probe_ms, save_probe_results
from tasks.probes.scheduler import ProbeScheduler, TransitionCallback
from tasks.probes.spec import ProbeResult, ProbeSpec

log = logging.getLogger("selfheal.probes")

MAX_PROBE_WORKERS = 8


def probe_thresholds(config: SelfHealConfig) -> dict[str, dict[str, tuple[int, int]]]:
    """component → probe name → (failure_threshold, success_threshold), for detection."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for p in probe_specs(config):
        out.setdefault(p.component, {})[p.name] = (p.failure_threshold, p.success_threshold)
    return out


def _storer(engine: Engine) -> Callable[[ProbeResult], None]:
    resolver = SeriesResolver()  # one cache for the scheduler's life

    def store(result: ProbeResult) -> None:
        save_probe_results(engine, [result], resolver)

    return store


def _log_transition(result: ProbeResult, before: str, after: str) -> None:
    level = logging.WARNING if after == "failing" else logging.INFO
    log.log(
        level,
        "%s probe of %s is %s (was %s): %s",
        result.probe,
        result.component,
        after,
        before,
        result.detail,
    )


def make_scheduler(
    config: SelfHealConfig,
    engine: Engine,
    on_transition: TransitionCallback | None = None,
    on_result: Callable[[ProbeResult], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> ProbeScheduler | None:
    """A scheduler over the configured probes that stores every result; None without probes.

    ``on_transition(result, old, new)`` runs after the result is stored (say, to start the
    down path at once when a liveness probe turns ``failing``); ``on_result`` likewise.
    """
    specs = probe_specs(config)
    if not specs:
        return None
    store = _storer(engine)

    def stored(result: ProbeResult) -> None:
        store(result)
        if on_result is not None:
            on_result(result)

    def transition(result: ProbeResult, before: Any, after: Any) -> None:
        _log_transition(result, before, after)
        if on_transition is not None:
            on_transition(result, before, after)

    workers = min(MAX_PROBE_WORKERS, max(2, len(specs)))
    return ProbeScheduler(
        specs, on_result=stored, on_transition=transition, max_workers=workers, on_stop=on_stop
    )


def start_probe_scheduler(
    config: SelfHealConfig,
    engine: Engine,
    on_transition: TransitionCallback | None = None,
    on_stop: Callable[[], None] | None = None,
) -> ProbeScheduler | None:
    """Start probing every component on its own period (``selfheal serve``); stop() it."""
    scheduler = make_scheduler(config, engine, on_transition, on_stop=on_stop)
    if scheduler is not None:
        scheduler.start()
        log.info("probing %d probes on their own periods", len(scheduler.probes))
    return scheduler


def due_probes(
    specs: list[ProbeSpec], latest: dict[tuple[str, str], int], now_ms: int
) -> list[ProbeSpec]:
    """Probes with no stored result in the last period (slack of half a period): what a
    running scheduler has not probed lately."""
    return [p for p in specs if now_ms - latest.get(p.key, 0) >= p.period_s * 1000 * 1.5]


def run_due_probes(config: SelfHealConfig, engine: Engine) -> list[ProbeResult]:
    """Run once, concurrently, the probes nobody ran lately and store their results."""
    specs = probe_specs(config)
    if not specs:
        return []
    todo = due_probes(specs, latest_probe_ms(engine), int(time.time() * 1000))
    if not todo:
        return []
    scheduler = ProbeScheduler(todo, max_workers=min(MAX_PROBE_WORKERS, len(todo)))
    results = scheduler.run_all_once()
    save_probe_results(engine, results)
    return results
