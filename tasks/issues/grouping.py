"""Anomalies → issues, the way Alertmanager groups alerts.

- **Fingerprint** = component + kind + signature: anomalies with the same fingerprint join
  the one active issue that has it, however many there are.
- **Group wait**: a new issue is not actionable for ``group_wait`` seconds, so anomalies
  that arrive together (a crash is seen in metrics and logs) gather before anyone acts.
- **Resolution** only after ``resolve_after`` seconds without a new anomaly (the quiet
  period), and an issue that fires again within ``flap_window`` of resolving is reopened
  rather than duplicated: a flapping signal makes one issue, not a stream of them.
- **Inhibition**: while a component is down (an active ``down`` issue), its symptom issues
  and those of the components that depend on it are marked inhibited: they are explained
  by the outage and nothing acts on them or notifies about them.
- **Temporal correlation**: log anomalies of several related components within
  ``correlation_window`` seconds join one ``log_correlation`` issue on the upstream
  component (the one the others depend on), since they are likely one incident. When the
  dependencies are known, only components linked by them correlate (two unrelated services
  failing in the same minute are two issues); without that knowledge, any do.
- **Silences**: right after a recovery acted on a component (a restart, an isolation, a
  configuration change), anomalies of that component and of those that depend on it are
  the expected side effects of the action (a restarted dependency refuses connections for
  a second). For ``action_grace`` seconds they open *silenced* issues, which nothing acts
  on; an anomaly after the silence ends turns such an issue into an open one.
- **Repeat throttling**: ``should_notify`` says when an issue deserves a (new) notification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from storage.issues import AnomalyRecord, IssueRecord
from tasks.severity import Severity

DOWN_KIND = "down"
LOG_KINDS = ("log",)
CORRELATION_KIND = "log_correlation"


@dataclass(frozen=True)
class GroupingPolicy:
    group_wait: float = 10.0
    resolve_after: float = 300.0
    flap_window: float = 900.0
    repeat_interval: float = 3600.0
    correlation_window: float = 60.0
    action_grace: float = 60.0


def silences_from_actions(
    actions: Iterable[tuple[str, datetime]],
    depends_on: Mapping[str, Sequence[str]],
    grace_s: float,
) -> dict[str, datetime]:
    """Silence each acted-on component and its dependants until ``grace_s`` after the act."""
    out: dict[str, datetime] = {}
    for component, finished in actions:
        until = finished + timedelta(seconds=grace_s)
        affected = {component} | {c for c, deps in depends_on.items() if component in deps}
        for c in affected:
            if c not in out or out[c] < until:
                out[c] = until
    return out


@dataclass
class GroupingOutcome:
    issues: dict[str, IssueRecord] = field(default_factory=dict)  # changed or new, by fingerprint
    anomalies: list[AnomalyRecord] = field(default_factory=list)  # with fingerprints set
    opened: list[str] = field(default_factory=list)  # fingerprints of new issues
    reopened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


def fingerprint(component: str, kind: str, signature: str) -> str:
    return hashlib.sha256(f"{component}\x1f{kind}\x1f{signature}".encode()).hexdigest()[:32]


def _title(component: str, kind: str, signature: str) -> str:
    if kind == DOWN_KIND:
        return f"{component} is down"
    if kind == CORRELATION_KIND:
        return f"correlated log errors across {signature.replace('+', ', ')}"
    return f"{kind} anomaly on {component}: {signature}"


def _upstream(components: Sequence[str], depends_on: Mapping[str, Sequence[str]]) -> str:
    """The component the others depend on, if there is one; else the first to fire."""
    for c in components:
        if all(c == o or c in depends_on.get(o, ()) for o in components):
            return c
    return components[0]


def _linked(components: Sequence[str], depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """The components of the largest group connected through dependencies."""
    links = {c: set(depends_on.get(c, ())) for c in components}
    for c, deps in list(links.items()):
        for d in deps:
            if d in links:
                links[d].add(c)
    best: list[str] = []
    seen: set[str] = set()
    for c in components:
        if c in seen:
            continue
        group, todo = [], [c]
        while todo:
            x = todo.pop()
            if x in seen or x not in links:
                continue
            seen.add(x)
            group.append(x)
            todo.extend(links[x])
        if len(group) > len(best):
            best = [g for g in components if g in group]
    return best


def correlate_logs(
    anomalies: Sequence[AnomalyRecord],
    depends_on: Mapping[str, Sequence[str]],
    window_s: float,
) -> list[AnomalyRecord]:
    """Re-key log anomalies that cluster in time across components into one issue."""
    logs = sorted((a for a in anomalies if a.kind in LOG_KINDS), key=lambda a: a.ts_ms)
    if not logs:
        return list(anomalies)
    clusters: list[list[AnomalyRecord]] = [[logs[0]]]
    for a in logs[1:]:
        if a.ts_ms - clusters[-1][-1].ts_ms <= window_s * 1000:
            clusters[-1].append(a)
        else:
            clusters.append([a])
    rekeyed: dict[int, AnomalyRecord] = {}
    for cluster in clusters:
        comps = list(dict.fromkeys(a.component for a in cluster))
        if depends_on:
            comps = _linked(comps, depends_on)
            cluster = [a for a in cluster if a.component in comps]
        if len(comps) < 2:
            continue
        root = _upstream(comps, depends_on)
        sig = "+".join(sorted(comps))
        fp = fingerprint(root, CORRELATION_KIND, sig)
        for a in cluster:
            rekeyed[id(a)] = replace(
                a,
                fingerprint=fp,
                details={**a.details, "correlated": comps, "root": root},
            )
    return [rekeyed.get(id(a), a) for a in anomalies]


def group(
    anomalies: Iterable[AnomalyRecord],
    active: Iterable[IssueRecord],
    now: datetime,
    policy: GroupingPolicy = GroupingPolicy(),
    depends_on: Mapping[str, Sequence[str]] | None = None,
    silences: Mapping[str, datetime] | None = None,
) -> GroupingOutcome:
    """Assign anomalies to issues (new, joined or reopened) and resolve quiet ones.

    ``active`` holds the open/recovering/silenced issues and those resolved within the
    flap window; ``silences`` maps a component to the end of its silence. Pure: the caller
    persists the outcome.
    """
    deps = depends_on or {}
    quiet_until = silences or {}
    by_fp = {i.fingerprint: i for i in active}
    out = GroupingOutcome()
    keyed = [
        a
        if a.fingerprint
        else replace(a, fingerprint=fingerprint(a.component, a.kind, a.signature))
        for a in anomalies
    ]
    keyed = correlate_logs(keyed, deps, policy.correlation_window)
    for a in sorted(keyed, key=lambda a: a.ts_ms):
        ts = datetime.fromtimestamp(a.ts_ms / 1000, tz=now.tzinfo)
        issue = by_fp.get(a.fingerprint)
        sev = Severity.parse(a.severity)
        until = quiet_until.get(a.component)
        silenced = until is not None and ts < until
        if issue is None:
            kind, sig, comp = a.kind, a.signature, a.component
            if "root" in a.details:
                kind, comp, sig = (
                    CORRELATION_KIND,
                    a.details["root"],
                    "+".join(sorted(a.details["correlated"])),
                )
            issue = IssueRecord(
                fingerprint=a.fingerprint,
                component=comp,
                kind=kind,
                signature=sig,
                title=_title(comp, kind, sig),
                severity=sev.label,
                status="silenced" if silenced else "open",
                first_seen=ts,
                last_seen=ts,
                actionable_at=max(ts, now) + timedelta(seconds=policy.group_wait),
            )
            if silenced:
                # Remembered after the issue resolves: it never needed anyone.
                issue.details["silenced_until"] = until.isoformat()  # type: ignore[union-attr]
            by_fp[a.fingerprint] = issue
            out.opened.append(a.fingerprint)
        elif issue.status == "resolved":
            issue.status = "open"
            issue.resolved_at = None
            issue.reopen_count += 1
            # A flapping issue is not made to wait again: it was already acted upon.
            issue.actionable_at = min(issue.actionable_at, now)
            out.reopened.append(a.fingerprint)
        elif issue.status == "silenced" and not silenced:
            # The silence is over and the symptom is still there: now it is an issue.
            issue.status = "open"
            issue.details.pop("silenced_until", None)
            issue.actionable_at = now + timedelta(seconds=policy.group_wait)
            out.reopened.append(a.fingerprint)
        issue.anomaly_count += 1
        issue.last_seen = max(issue.last_seen, ts)
        if sev > Severity.parse(issue.severity):
            issue.severity = sev.label
        out.issues[a.fingerprint] = issue
        out.anomalies.append(a)
    for fp, issue in by_fp.items():
        quiet = (now - issue.last_seen).total_seconds() >= policy.resolve_after
        still = ("open", "recovering", "escalated", "silenced")
        if issue.status in still and quiet and fp not in out.issues:
            issue.status = "resolved"
            # It became quiet at last_seen + resolve_after, whenever the cycle noticed.
            issue.resolved_at = min(now, issue.last_seen + timedelta(seconds=policy.resolve_after))
            out.issues[fp] = issue
            out.resolved.append(fp)
    return out


def inhibitions(
    issues: Iterable[IssueRecord], depends_on: Mapping[str, Sequence[str]]
) -> dict[int, int | None]:
    """For each active issue id, the id of the down issue that inhibits it (or None)."""
    issues = [i for i in issues if i.id is not None]
    down = {
        i.component: i.id
        for i in issues
        if i.kind == DOWN_KIND and i.status in ("open", "recovering", "escalated")
    }
    result: dict[int, int | None] = {}
    for i in issues:
        if i.kind == DOWN_KIND or i.status not in ("open", "recovering", "escalated", "silenced"):
            continue
        inhibitor = down.get(i.component)
        if inhibitor is None:
            for dep in depends_on.get(i.component, ()):
                if dep in down:
                    inhibitor = down[dep]
                    break
        result[i.id] = inhibitor  # type: ignore[index]
    return result


def should_notify(issue: IssueRecord, now: datetime, policy: GroupingPolicy) -> bool:
    """Notify once the group wait has passed, then at most every ``repeat_interval``."""
    if issue.status not in ("open", "recovering") or issue.inhibited_by is not None:
        return False
    if now < issue.actionable_at:
        return False
    if issue.last_notified_at is None:
        return True
    return (now - issue.last_notified_at).total_seconds() >= policy.repeat_interval
