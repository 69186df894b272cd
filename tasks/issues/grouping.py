"""Anomalies → incidents (stored as issues), the way Alertmanager groups alerts.

- **One incident per root cause.** Each anomaly has a *symptom* fingerprint (component +
  kind + signature). It joins the incident that already lists that symptom; else a live
  incident of a related component (the same one, or one linked to it by a dependency
  whose incident is at least as severe, as Alertmanager's inhibition rules let a critical
  alert explain a warning) that is down or saw a symptom within ``correlation_window``
  and that no recovery has healed yet; else it opens an incident of its own. The
  incident is named after its **root**: the first down stretch, else the first symptom
  of the component the others depend on, else the first symptom; the others are listed
  as its symptoms (``details["symptoms"]``, every anomaly also keeps its ``issue_id``).
  Eighteen metrics of a restarted server are one incident, not eighteen.
- **Group wait**: a new incident is not actionable for ``group_wait`` seconds, so anomalies
  that arrive together (a crash is seen in metrics and logs) gather before anyone acts.
- **Resolution** only after ``resolve_after`` seconds without a new symptom (the quiet
  period), and an incident that fires again within ``flap_window`` of resolving is
  reopened rather than duplicated: a flapping signal makes one incident.
- **Inhibition**: while a component is down (an active ``down`` incident), incidents that
  began earlier on it or on the components that depend on it are marked inhibited: they
  are explained by the outage and nothing acts on them or notifies about them.
- **Temporal correlation**: log anomalies of several related components within
  ``correlation_window`` seconds join one ``log_correlation`` incident on the upstream
  component (the one the others depend on). When the dependencies are known, only
  components linked by them correlate; without that knowledge, any do.
- **Side effects and silences**: right after a recovery acted on a component (a restart,
  an isolation, a configuration change), for ``side_effect_window`` seconds (the larger of
  ``action_grace`` and ``correlation_window``) anomalies of that component and of those
  that depend on it are the expected side effects of the action (counters reset, gauges
  jump, a restarted dependency refuses connections for a second). They are recorded as
  side-effect symptoms of the incident the action was for, which neither delays its
  resolution nor makes it actionable again (so they never ask anyone for approval); with
  no such incident they open one *silenced* incident, which nothing acts on, and an
  anomaly after the silence ends turns it into an open one.
- **Context**: an anomaly on a context series (``tasks.detection.candidates``: how busy
  or full the host is) opens no incident. It is listed in ``details["context"]`` of a
  live incident of a related component whose span it falls in (give or take
  ``correlation_window``), and changes nothing else of it: not its severity, its root,
  its last symptom nor its resolution. With no such incident it is stored unlinked.
- **Repeat throttling**: ``should_notify`` says when an incident deserves a (new)
  notification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from storage.issues import AnomalyRecord, IssueRecord
from tasks.detection.candidates import CONTEXT_KIND
from tasks.severity import Severity

DOWN_KIND = "down"
LOG_KINDS = ("log",)
CORRELATION_KIND = "log_correlation"
MAX_SYMPTOMS = 200  # symptom records kept per incident (the anomalies all stay linked)


@dataclass(frozen=True)
class GroupingPolicy:
    group_wait: float = 10.0
    resolve_after: float = 300.0
    flap_window: float = 900.0
    repeat_interval: float = 3600.0
    correlation_window: float = 60.0
    action_grace: float = 60.0

    @property
    def side_effect_window(self) -> float:
        """How long after a recovery action anomalies of the acted-on component and its
        dependants are its side effects: the silence, and at least the correlation window
        (an incident's anomalies correlate over that long)."""
        return max(self.action_grace, self.correlation_window)


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


def action_incidents(
    actions: Iterable[tuple[str, datetime, int | None]],
    depends_on: Mapping[str, Sequence[str]],
) -> dict[str, int]:
    """component → the incident the latest recovery action on it (or on a component it
    depends on) was for: that incident owns the action's side effects."""
    latest: dict[str, tuple[datetime, int]] = {}
    for component, finished, issue_id in actions:
        if issue_id is None:
            continue
        affected = {component} | {c for c, deps in depends_on.items() if component in deps}
        for c in affected:
            if c not in latest or latest[c][0] < finished:
                latest[c] = (finished, issue_id)
    return {c: iid for c, (_, iid) in latest.items()}


def _symptoms(issue: IssueRecord) -> dict[str, dict[str, Any]]:
    """The incident's symptom records (fingerprint → record), created on first use."""
    found = issue.details.get("symptoms")
    if not isinstance(found, dict):
        found = {}
        issue.details["symptoms"] = found
    return found


def _components(issue: IssueRecord) -> set[str]:
    return {issue.component} | {
        str(s["component"]) for s in issue.details.get("symptoms", {}).values()
    }


def _related(component: str, issue: IssueRecord, deps: Mapping[str, Sequence[str]]) -> bool:
    """Same component, or linked to one of the incident's components by a dependency."""
    comps = _components(issue)
    if component in comps:
        return True
    mine = set(deps.get(component, ()))
    return bool(mine & comps) or any(component in deps.get(c, ()) for c in comps)


# Signals that travel along calls: a dependency that fails or slows makes its callers
# fail or slow. Resource symptoms (memory, CPU, queue depth) stay where they arise.
PROPAGATING_WORDS = ("error", "fail", "latency", "duration", "timeout")


def _propagates(kind: str, signature: str) -> bool:
    if kind in LOG_KINDS or kind == CORRELATION_KIND:
        return True
    sig = signature.lower()
    return any(word in sig for word in PROPAGATING_WORDS)


def _explained_by(
    sources: Iterable[Mapping[str, Any]], component: str, kind: str, signature: str
) -> bool:
    """Whether a related component's symptoms (``sources``) are the likelier cause of this
    symptom of ``component`` whatever their severities: log errors of both correlated in
    time (the dependant failing its calls), or a failure that propagates along calls
    (errors, latency) of at least medium severity seen with the same kind of failure here.
    """
    for s in sources:
        if s.get("side_effect"):
            continue
        if s.get("root_kind") == CORRELATION_KIND and component in str(
            s.get("signature", "")
        ).split("+"):
            return True
        if (
            Severity.parse(str(s["severity"])) >= Severity.MEDIUM
            and _propagates(str(s["kind"]), str(s["signature"]))
            and _propagates(kind, signature)
        ):
            return True
    return False


def _explains(
    issue: IssueRecord, component: str, kind: str, signature: str, severity: Severity
) -> bool:
    """Whether another component's incident may absorb this symptom as its consequence.

    As in Alertmanager's inhibition rules (a critical source inhibits a warning target),
    a related component's incident explains a symptom when it is at least as severe, or
    when one side is a down stretch. A low wobble on a dependency must not swallow a
    critical symptom of its dependant (a memory leak would then be treated as the
    dependency's problem and never restarted). Symptoms of the incident's own (root)
    component always join; a dependant's do not just because a milder one of it did.

    A milder incident still explains what it causes (``_explained_by``): errors or
    latency of a dependency show up as errors or latency of its callers, often worse
    (the caller's error rate counts every failed call). Restarting the dependant would
    not help; the incident's remedy, on the dependency, does.
    """
    if component == issue.component:
        return True
    if kind == DOWN_KIND or issue.kind == DOWN_KIND:
        return True
    # The severity of what the other components show: the dependant's own symptoms that
    # already joined (and raised the incident's severity) explain nothing about it.
    others = [
        s
        for s in _symptoms(issue).values()
        if s.get("component") != component and not s.get("side_effect")
    ]
    own = (
        max(Severity.parse(str(s["severity"])) for s in others)
        if others
        else Severity.parse(issue.severity)
    )
    if own >= severity:
        return True
    return _explained_by(others, component, kind, signature)


def _choose_root(issue: IssueRecord, deps: Mapping[str, Sequence[str]]) -> None:
    """Name the incident after its root: the first down stretch if there is one, else the
    first symptom of the component the others depend on, else the first symptom."""
    symptoms = [s for s in _symptoms(issue).values() if not s.get("side_effect")]
    if not symptoms:
        return
    symptoms.sort(key=lambda s: str(s["first_seen"]))
    downs = [s for s in symptoms if s["kind"] == DOWN_KIND]
    if downs:
        root = downs[0]
    else:
        comps = list(dict.fromkeys(str(s["component"]) for s in symptoms))
        top = _upstream(comps, deps) if len(comps) > 1 else comps[0]
        worst = max(Severity.parse(str(s["severity"])) for s in symptoms)
        mine = [s for s in symptoms if s["component"] == top]
        if max(Severity.parse(str(s["severity"])) for s in mine) < worst:
            gravest = next(s for s in symptoms if Severity.parse(str(s["severity"])) == worst)
            if not _explained_by(
                mine, str(gravest["component"]), str(gravest["kind"]), str(gravest["signature"])
            ):
                # The dependency only wobbled (a low symptom that joined a dependant's
                # critical incident): it does not explain the dependant's failure, so the
                # incident stays the dependant's (the rule of ``_explains``).
                top = str(gravest["component"])
        root = next(s for s in symptoms if s["component"] == top)
    kind, comp, sig = str(root["kind"]), str(root["component"]), str(root["signature"])
    if root.get("root_kind"):
        kind = str(root["root_kind"])
    issue.component, issue.kind, issue.signature = comp, kind, sig
    issue.title = _title(comp, kind, sig)
    others = len(symptoms) - 1
    if others:
        issue.title += f" (+{others} symptom{'s' if others > 1 else ''})"
    issue.details["root"] = root["fingerprint"]


def _note_symptom(
    issue: IssueRecord, a: AnomalyRecord, symptom_fp: str, ts: datetime, side_effect: bool
) -> None:
    symptoms = _symptoms(issue)
    rec = symptoms.get(symptom_fp)
    if rec is None:
        if len(symptoms) >= MAX_SYMPTOMS:
            issue.details["symptoms_dropped"] = int(issue.details.get("symptoms_dropped", 0)) + 1
            return
        kind, comp, sig = a.kind, a.component, a.signature
        rec = {
            "fingerprint": symptom_fp,
            "component": comp,
            "kind": kind,
            "signature": sig[:300],
            "first_seen": ts.isoformat(),
            "last_seen": ts.isoformat(),
            "count": 0,
            "severity": a.severity,
            "side_effect": side_effect,
        }
        if "root" in a.details:  # a cross-component log correlation
            rec["component"] = a.details["root"]
            rec["root_kind"] = CORRELATION_KIND
            rec["signature"] = "+".join(sorted(a.details["correlated"]))
        symptoms[symptom_fp] = rec
    rec["count"] = int(rec["count"]) + 1
    rec["last_seen"] = max(str(rec["last_seen"]), ts.isoformat())
    if Severity.parse(a.severity) > Severity.parse(str(rec["severity"])):
        rec["severity"] = a.severity
    if not side_effect:
        rec["side_effect"] = False


def symptom_list(issue: IssueRecord) -> list[dict[str, Any]]:
    """The incident's symptoms other than its root, oldest first (for people and notices)."""
    root = issue.details.get("root")
    return sorted(
        (s for fp, s in issue.details.get("symptoms", {}).items() if fp != root),
        key=lambda s: str(s["first_seen"]),
    )


def group(
    anomalies: Iterable[AnomalyRecord],
    active: Iterable[IssueRecord],
    now: datetime,
    policy: GroupingPolicy = GroupingPolicy(),
    depends_on: Mapping[str, Sequence[str]] | None = None,
    silences: Mapping[str, datetime] | None = None,
    acted_incidents: Mapping[str, int] | None = None,
    healed: Set[int] | None = None,
) -> GroupingOutcome:
    """Assign anomalies to incidents (new, joined or reopened) and resolve quiet ones.

    ``active`` holds the open/recovering/silenced incidents and those resolved within the
    flap window; ``silences`` maps a component to the end of the silence that follows a
    recovery action on it (or on a dependency), ``acted_incidents`` a component to the id
    of the incident that action was for, ``healed`` the ids of incidents a recovery has
    already healed. Pure: the caller persists the outcome.

    An anomaly joins, in this order: the incident that already lists its symptom; a live
    incident of a related component (the same one, or one linked by a dependency and at
    least as severe, see ``_explains``) that is down or saw a symptom within
    ``correlation_window`` and was not healed yet (a healed incident takes back only the
    symptoms it lists: the fix did not hold; anything else after the fix is a new
    incident with a remedy of its own); during a silence, the incident
    whose recovery caused it (as a side effect: it neither delays the resolution nor
    makes the incident actionable again); else it opens an incident of its own (silenced
    when it falls in a silence).
    """
    deps = depends_on or {}
    quiet_until = silences or {}
    acted = acted_incidents or {}
    fixed = healed or set()
    incidents = list(active)
    by_fp = {i.fingerprint: i for i in incidents}
    by_id = {i.id: i for i in incidents if i.id is not None}
    index: dict[str, IssueRecord] = {}
    # Oldest first, so the newest incident that lists a symptom owns it (a side effect
    # that outlived a healed incident's silence moved on to an incident of its own).
    for inc in sorted(incidents, key=lambda i: i.first_seen):
        index.setdefault(inc.fingerprint, inc)
        if "symptoms" not in inc.details:  # stored before incidents listed their symptoms
            inc.details["symptoms"] = {
                inc.fingerprint: {
                    "fingerprint": inc.fingerprint,
                    "component": inc.component,
                    "kind": inc.kind,
                    "signature": inc.signature,
                    "first_seen": inc.first_seen.isoformat(),
                    "last_seen": inc.last_seen.isoformat(),
                    "count": inc.anomaly_count,
                    "severity": inc.severity,
                    "side_effect": False,
                }
            }
        for sfp in inc.details.get("symptoms", {}):
            index[sfp] = inc
    out = GroupingOutcome()
    keyed = [
        a
        if a.fingerprint
        else replace(a, fingerprint=fingerprint(a.component, a.kind, a.signature))
        for a in anomalies
    ]
    context = [a for a in keyed if a.kind == CONTEXT_KIND]
    keyed = correlate_logs(
        [a for a in keyed if a.kind != CONTEXT_KIND], deps, policy.correlation_window
    )
    window = timedelta(seconds=policy.correlation_window)
    for a in sorted(keyed, key=lambda a: a.ts_ms):
        ts = datetime.fromtimestamp(a.ts_ms / 1000, tz=now.tzinfo)
        sfp = a.fingerprint
        sev = Severity.parse(a.severity)
        until = quiet_until.get(a.component)
        silenced = until is not None and ts < until
        issue = index.get(sfp)
        if (
            issue is not None
            and issue.id in fixed
            and not silenced
            and _symptoms(issue).get(sfp, {}).get("side_effect")
        ):
            # Recorded as a side effect of this healed incident's recovery, and still here
            # after the silence: not a side effect after all (a new fault right after the
            # fix). It is looked at afresh, so it can open an incident of its own.
            issue = None
        if issue is None or issue.status == "resolved":
            live = [
                i
                for i in by_fp.values()
                if i.status in ("open", "recovering", "silenced")
                and i.id not in fixed
                and _related(a.component, i, deps)
                and _explains(i, a.component, a.kind, a.signature, sev)
                and (
                    (i.kind == DOWN_KIND and i.status != "silenced")
                    or abs(ts - i.last_seen) <= window
                )
            ]
            if live:
                live.sort(key=lambda i: (i.kind != DOWN_KIND, -i.last_seen.timestamp()))
                issue = live[0]
            elif silenced and acted.get(a.component) in by_id:
                issue = by_id[acted[a.component]]
        side_effect = silenced and issue is not None and issue.status != "silenced"
        if issue is None:
            issue = IssueRecord(
                fingerprint=sfp,
                component=a.component,
                kind=a.kind,
                signature=a.signature,
                title="",
                severity=sev.label,
                status="silenced" if silenced else "open",
                first_seen=ts,
                last_seen=ts,
                # A dead component is restarted whatever else arrives (grouping does not
                # change its remedy): no group wait, as Kubernetes restarts an exited
                # container at once.
                actionable_at=max(ts, now)
                + timedelta(seconds=0 if a.kind == DOWN_KIND else policy.group_wait),
            )
            if silenced:
                # Remembered after the incident resolves: it never needed anyone.
                issue.details["silenced_until"] = until.isoformat()  # type: ignore[union-attr]
            by_fp[sfp] = issue
            out.opened.append(sfp)
        elif side_effect:
            pass  # an expected consequence of the recovery: recorded, nothing changes
        elif issue.status == "resolved":
            issue.status = "open"
            issue.resolved_at = None
            issue.reopen_count += 1
            # A flapping issue is not made to wait again: it was already acted upon.
            issue.actionable_at = min(issue.actionable_at, now)
            out.reopened.append(issue.fingerprint)
        elif issue.status == "silenced" and not silenced:
            # The silence is over and the symptom is still there: now it is an issue.
            issue.status = "open"
            issue.details.pop("silenced_until", None)
            issue.actionable_at = now + timedelta(seconds=policy.group_wait)
            out.reopened.append(issue.fingerprint)
        _note_symptom(issue, a, sfp, ts, side_effect)
        index[sfp] = issue
        issue.anomaly_count += 1
        if not side_effect:
            issue.last_seen = max(issue.last_seen, ts)
            if sev > Severity.parse(issue.severity):
                issue.severity = sev.label
        _choose_root(issue, deps)
        out.issues[issue.fingerprint] = issue
        out.anomalies.append(replace(a, fingerprint=issue.fingerprint))
    for fp, issue in by_fp.items():
        quiet = (now - issue.last_seen).total_seconds() >= policy.resolve_after
        still = ("open", "recovering", "escalated", "silenced")
        if issue.status in still and quiet and fp not in out.issues:
            issue.status = "resolved"
            # It became quiet at last_seen + resolve_after, whenever the cycle noticed.
            issue.resolved_at = min(now, issue.last_seen + timedelta(seconds=policy.resolve_after))
            out.issues[fp] = issue
            out.resolved.append(fp)
    for a in sorted(context, key=lambda a: a.ts_ms):
        out.anomalies.append(_attach_context(a, by_fp.values(), deps, window, now, out))
    return out


def _attach_context(
    a: AnomalyRecord,
    incidents: Iterable[IssueRecord],
    deps: Mapping[str, Sequence[str]],
    window: timedelta,
    now: datetime,
    out: GroupingOutcome,
) -> AnomalyRecord:
    """List a context anomaly in the newest live incident it falls beside, or none."""
    ts = datetime.fromtimestamp(a.ts_ms / 1000, tz=now.tzinfo)
    beside = [
        i
        for i in incidents
        if i.status in ("open", "recovering", "escalated", "silenced")
        and i.first_seen - window <= ts <= i.last_seen + window
        and _related(a.component, i, deps)
    ]
    if not beside:
        return replace(a, fingerprint="")
    issue = max(beside, key=lambda i: i.last_seen)
    listed = issue.details.setdefault("context", {})
    key = f"{a.component}/{a.signature}"
    rec = listed.get(key)
    if rec is None:
        if len(listed) >= MAX_SYMPTOMS:
            return replace(a, fingerprint="")
        rec = listed[key] = {
            "component": a.component,
            "signature": a.signature,
            "first_seen": ts.isoformat(),
            "count": 0,
            "severity": a.severity,
        }
    rec["last_seen"] = ts.isoformat()
    rec["count"] += 1
    if Severity.parse(a.severity) > Severity.parse(rec["severity"]):
        rec["severity"] = a.severity
    out.issues[issue.fingerprint] = issue
    return replace(a, fingerprint=issue.fingerprint)


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
