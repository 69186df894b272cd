"""What justifies a restart: actions follow evidence, not a lone metric anomaly.

A restart is the remedy for a component that is **down** (its scrape fails, its exporter
says ``up``/``*_up`` = 0, its liveness probe fails), that **fails its work** (an error-log
signature, a rising error or failure rate, its health endpoint failing), that is
**exhausting a resource** (a memory series growing steadily, as a leak does, rather than
jumping once), or where **recorded outcomes** say restarts fixed this kind of incident on
this component before. A latency percentile or a memory gauge that moved, on a component
that is up and whose liveness probe passes, is not evidence: in every mode nothing
restarts it (other strategies still may act on it).

The liveness input is the stored series ``probe_ok{probe="liveness"}`` of the component
(written by the probes); without it, "live" means the scrape answered and no ``up`` = 0.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from storage.metrics import latest_values, read_samples
from storage.recoveries import strategy_stats
from tasks.recovery.base import IssueInfo, RecoveryContext
from tasks.recovery.health import check_health

DOWN_KINDS = ("down",)
LOG_KINDS = ("log", "log_correlation")
# Series that say the component fails its work (derived names end in ":rate").
FAILURE_PATTERNS = ("*error*", "*fail*", "*5xx*", "*exception*", "*panic*", "*crash*")
# Resource series a leak shows in.
RESOURCE_PATTERNS = ("*memory*", "*heap*", "*rss*", "*resident*", "*fds*", "*file_desc*")
LIVENESS_SERIES = ("probe_ok", {"probe": "liveness"})
LIVENESS_FRESH_S = 300.0  # a liveness result older than this says nothing


@dataclass(frozen=True)
class LeakSettings:
    """A leak: the newest ``min_points`` differences of the series are all rises (a step
    after a restart rises once) that grew it by ``min_growth`` of its level before."""

    window_s: float = 600.0
    min_points: int = 3
    min_growth: float = 0.2


@dataclass
class Evidence:
    """What is known about the incident's component, and the one-line reason to restart."""

    component: str
    live: bool | None = None  # liveness probe result (None: no probe result)
    reasons: list[str] = field(default_factory=list)
    pending: str | None = None  # evidence still forming (a resource still rising)

    @property
    def restart_reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None

    def as_dict(self) -> dict[str, Any]:
        return {"component": self.component, "live": self.live, "reasons": list(self.reasons)}


def _symptoms(issue: IssueInfo) -> list[dict[str, Any]]:
    """The incident's own symptoms (never a recovery's side effects); the root at least."""
    found = issue.details.get("symptoms")
    if isinstance(found, dict) and found:
        return [s for s in found.values() if not s.get("side_effect")]
    return [
        {
            "component": issue.component,
            "kind": issue.kind,
            "signature": issue.signature,
            "severity": issue.severity,
        }
    ]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p) for p in patterns)


def liveness(ctx: RecoveryContext, component: str) -> bool | None:
    """The newest fresh liveness probe result of the component, if probes record one."""
    metric, labels = LIVENESS_SERIES
    since = pd.Timestamp(ctx.clock()) - pd.Timedelta(seconds=LIVENESS_FRESH_S)
    found = latest_values(ctx.engine, component, metric, since, labels)
    if not found:
        return None
    return all(v >= 0.5 for _, v in found)


def leak_state(values: np.ndarray, settings: LeakSettings = LeakSettings()) -> str | None:
    """ "leak" for steady growth: the newest ``min_points`` differences are all rises and
    together grew the series by ``min_growth`` (a restart's step rises once, noise does
    not add up); "rising" while such growth has fewer rises so far; else None."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    rises = 0
    for d in np.diff(v)[::-1]:
        if d <= 0:
            break
        rises += 1
    if rises == 0:
        return None
    start = float(v[-(rises + 1)])
    if start <= 0 or (float(v[-1]) - start) / start < settings.min_growth:
        return None
    return "leak" if rises >= settings.min_points else "rising"


def is_leak(values: np.ndarray, settings: LeakSettings = LeakSettings()) -> bool:
    return leak_state(values, settings) == "leak"


def _leak_states(
    ctx: RecoveryContext, component: str, metric: str, settings: LeakSettings
) -> set[str | None]:
    now = pd.Timestamp(ctx.clock())
    df = read_samples(
        ctx.engine,
        now - pd.Timedelta(seconds=settings.window_s),
        component=component,
        metric=metric,
    )
    return {leak_state(g["value"].to_numpy(), settings) for _, g in df.groupby("series_id")}


def gather(issue: IssueInfo, ctx: RecoveryContext, leak: LeakSettings = LeakSettings()) -> Evidence:
    """The evidence that a restart of the incident's (root) component is the remedy."""
    comp = issue.component
    ev = Evidence(comp)
    mine = [s for s in _symptoms(issue) if s.get("component", comp) == comp]
    kinds = {str(s.get("kind")) for s in mine} | {issue.kind}
    if kinds & set(DOWN_KINDS):
        ev.reasons.append(f"{comp} is down")
    ev.live = liveness(ctx, comp)
    if ev.live is False:
        ev.reasons.append(f"the liveness probe of {comp} fails")
    for s in mine:
        kind, sig = str(s.get("kind")), str(s.get("signature", ""))
        if kind in LOG_KINDS and not sig.startswith("new template"):
            ev.reasons.append(f"error log signature on {comp}: {sig}")
        elif kind not in DOWN_KINDS and _matches(sig, FAILURE_PATTERNS):
            ev.reasons.append(f"{comp} fails its work ({sig} rose)")
    if not ev.reasons:
        for s in mine:
            sig = str(s.get("signature", ""))
            if str(s.get("kind")) != "metric" or not _matches(sig, RESOURCE_PATTERNS):
                continue
            states = _leak_states(ctx, comp, sig.split(":", 1)[0], leak)
            if "leak" in states:
                ev.reasons.append(f"{sig} of {comp} grows steadily (a leak)")
                break
            if "rising" in states:
                ev.pending = f"{sig} of {comp} is rising: waiting to tell a leak from a step"
    if not ev.reasons:
        spec = ctx.components.get(comp)
        if spec is not None and spec.health.url:
            health = check_health(spec.health, comp, ctx.engine)
            if not health.ok:
                ev.reasons.append(f"the health endpoint of {comp} fails: {health.detail}")
    if not ev.reasons:
        with ctx.engine.connect() as conn:
            # Same component, kind and signature: restarts that fixed leaks say nothing
            # about a latency blip of the same component.
            stats = strategy_stats(conn, comp, issue.kind, issue.signature).get("restart")
        if (
            stats is not None
            and stats.attempts >= ctx.settings.min_learning_attempts
            and stats.rate > 0.5
        ):
            ev.reasons.append(
                f"restarts fixed {stats.successes} of {stats.attempts} incidents like this "
                f"one ({issue.kind} {issue.signature}) on {comp} before"
            )
    return ev


PENDING = "waiting for evidence: "


def no_restart_reason(ev: Evidence) -> str:
    if ev.pending:
        return PENDING + ev.pending
    live = "its liveness probe passes" if ev.live else "it is up (its scrape answers and no up = 0)"
    return (
        f"no evidence a restart helps: {live}, and a metric anomaly alone does not "
        "restart a healthy component"
    )
