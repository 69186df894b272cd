"""Detection over one component's log events since its watermark.

Every line new since the watermark gets the per-line decision of
:func:`tasks.logs.alerts.line_verdict` (error signatures, the learned level, new templates
at error level), and every template gets a burst test against its measured rate. A line
alerts when its severity reaches ``alert_severity`` or its template bursts. The alerting
lines become anomalies aggregated per cycle (one per signature, or per template when no
signature matched), so a storm of identical lines is one row, not a storm of rows.

Only templates with some severity burst (a signature, or WARNING or worse): a burst of
routine lines is how the system works at that moment. Bursts need a baseline: no burst
is decided until the component's log covers ``burst_min_history_s`` before the watermark
(a fresh database or a new component has no measured rate, and "never seen before" is not
"far above its rate").

:func:`detect_log_lines` returns the per-line decisions too: the ``selfheal logs``
command and the benchmark read them, so what they report is what the cycle decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Engine

from storage.issues import AnomalyRecord
from storage.logs import event_times, read_log_events, template_first_seen, template_history
from tasks.logs.alerts import line_verdict
from tasks.logs.signatures import Signature, SignatureSet
from tasks.severity import Severity

HIGH_LEVELS = ("ERROR", "CRITICAL")
EXAMPLE_CHARS = 300
LINE_COLUMNS = ["id", "ts", "template_id", "level", "message", "severity", "alert"]


@dataclass(frozen=True)
class LogDetectionSettings:
    lookback_s: float = 3600.0
    extra_signatures: tuple[tuple[str, str, str], ...] = ()  # (name, regex, severity)
    burst_factor: float = 5.0
    burst_min_count: int = 10
    burst_p_value: float = 1e-6
    alert_severity: str = "high"  # a line at or above this severity is an alert
    burst_min_history_s: float = 1800.0  # log history needed before bursts are decided
    # A template seen this many times, first over this long ago, is a habit: one step less.
    recurring_count: int = 5
    recurring_after_s: float = 86400.0


@dataclass
class LogStepResult:
    """Anomalies of one cycle, the newest event time, and the decision for each new line."""

    anomalies: list[AnomalyRecord] = field(default_factory=list)
    newest: int | None = None
    lines: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LINE_COLUMNS))


def signature_set(settings: LogDetectionSettings) -> SignatureSet:
    extra = [Signature(n, p, Severity.parse(s)) for n, p, s in settings.extra_signatures]
    return SignatureSet(extra, include_defaults=True)


def poisson_sf(k: int, lam: float) -> float:
    """P[X >= k] for X ~ Poisson(lam), computed in log space (no scipy in the hot path)."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    # Sum the pmf from k upwards until the terms vanish.
    log_p = -lam + k * math.log(lam) - math.lgamma(k + 1)
    total, term, i = 0.0, log_p, k
    while True:
        total += math.exp(term)
        i += 1
        term += math.log(lam) - math.log(i)
        if term < log_p - 40 or i > k + 10_000:
            return min(total, 1.0)


def detect_logs(
    engine: Engine,
    component: str,
    watermark_ms: int,
    now_ms: int,
    settings: LogDetectionSettings,
) -> tuple[list[AnomalyRecord], int | None]:
    """Anomalies from events with ``ts > watermark``; returns them and the newest ts seen."""
    result = detect_log_lines(engine, component, watermark_ms, now_ms, settings)
    return result.anomalies, result.newest


def detect_log_lines(
    engine: Engine,
    component: str,
    watermark_ms: int,
    now_ms: int,
    settings: LogDetectionSettings,
    signatures: SignatureSet | None = None,
) -> LogStepResult:
    """:func:`detect_logs` with the per-line decisions (``LogStepResult.lines``)."""
    start = min(watermark_ms, now_ms) - int(settings.lookback_s * 1000)
    events = read_log_events(engine, start, now_ms + 1, component)
    if events.empty:
        return LogStepResult()
    ts_ms = events["ts"].dt.as_unit("ms").astype("int64")
    new = events[ts_ms > watermark_ms]
    newest = int(ts_ms.max())
    if new.empty:
        return LogStepResult([], newest)
    history = events[ts_ms <= watermark_ms]
    sigs = signatures or signature_set(settings)
    novel = _novel_lines(engine, component, new, history, watermark_ms)
    threshold = Severity.parse(settings.alert_severity)
    habits = _recurring(engine, component, new, watermark_ms, settings)

    severities: list[Severity | None] = []
    reasons: list[str | None] = []
    keys: list[str | None] = []
    for message, level, tid, is_new in zip(
        new["message"], new["level"], new["template_id"], novel, strict=True
    ):
        lvl = level if isinstance(level, str) else None
        v = line_verdict(str(message), lvl, bool(is_new), sigs, tid in habits)
        severities.append(v.severity)
        if v.severity is not None and v.severity >= threshold:
            reasons.append(v.reason)
            keys.append(v.signature or (f"template {int(tid)}" if pd.notna(tid) else "no template"))
        else:
            reasons.append(None)
            keys.append(None)

    lines = new[["id", "ts", "template_id", "level", "message"]].copy()
    lines["severity"] = [s.label if s is not None else None for s in severities]
    lines["alert"] = reasons
    lines["_key"] = keys
    lines["_sev"] = [int(s) if s is not None else 0 for s in severities]
    bursts = _bursts(new, history, watermark_ms, now_ms, start, settings)
    # A burst of routine lines (no line of the template has any severity: no signature,
    # no WARNING or worse) is how the system works at that moment, not an alert.
    if bursts:
        worst = lines.groupby("template_id")["_sev"].max()
        bursts = {t: b for t, b in bursts.items() if worst.get(t, 0) > 0}
    out: list[AnomalyRecord] = []
    folded: dict[str, dict[str, object]] = {}
    for tid, burst in bursts.items():
        mask = lines["template_id"] == tid
        alerting = lines.loc[mask & lines["_key"].notna(), "_key"]
        if not alerting.empty:
            folded[str(alerting.iloc[0])] = burst
        lines.loc[mask, "alert"] = [
            "burst" if a is None else f"{a}, burst" for a in lines.loc[mask, "alert"]
        ]
        lines.loc[mask & lines["_key"].isna(), "_key"] = f"burst of template {int(tid)}"
    for key, grp in lines[lines["_key"].notna()].groupby("_key", sort=False):
        first = grp.iloc[0]
        info: dict[str, object] | None = None
        if str(key).startswith("burst of"):
            info = bursts.get(first["template_id"])
        worst = grp.loc[grp["_sev"].idxmax()]
        sev = Severity(int(worst["_sev"])) if int(worst["_sev"]) else None
        details: dict[str, object] = {
            "count": len(grp),
            "example": str(worst["message"])[:EXAMPLE_CHARS],
            "reasons": sorted({str(r) for r in grp["alert"].dropna()}),
        }
        if info is not None:  # a burst and nothing else
            sev = info["severity"]  # type: ignore[assignment]
            details.update(expected=info["expected"])
            detector, score = "log_burst", float(info["score"])  # type: ignore[arg-type]
        else:
            b = folded.get(str(key))
            if b is not None:
                details.update(burst=True, expected=b["expected"])
                if sev is None or b["severity"] > sev:  # type: ignore[operator]
                    sev = b["severity"]  # type: ignore[assignment]
            detector = "log_alert" if str(key).startswith("template ") else "log_signature"
            score = 1.0
        out.append(
            AnomalyRecord(
                detector=detector,
                component=component,
                kind="log",
                signature=str(key),
                ts_ms=_ms(first["ts"]),
                score=score,
                severity=(sev or Severity.MEDIUM).label,
                value=float(len(grp)),
                details=details,
            )
        )
    return LogStepResult(out, newest, lines[LINE_COLUMNS].reset_index(drop=True))


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def _recurring(
    engine: Engine,
    component: str,
    new: pd.DataFrame,
    watermark_ms: int,
    settings: LogDetectionSettings,
) -> set[float]:
    """Templates of the window seen ``recurring_count`` times up to the watermark, the first
    ``recurring_after_s`` before it (only for lines that could alert: not INFO/DEBUG)."""
    candidates = new.loc[~new["level"].isin(("INFO", "DEBUG")), "template_id"].dropna()
    if candidates.empty or settings.recurring_count <= 0:
        return set()
    seen = template_history(engine, component, sorted({int(t) for t in candidates}), watermark_ms)
    limit = watermark_ms - settings.recurring_after_s * 1000
    return {
        float(t)
        for t, (n, first) in seen.items()
        if n >= settings.recurring_count and first <= limit
    }


def _novel_lines(
    engine: Engine,
    component: str,
    new: pd.DataFrame,
    history: pd.DataFrame,
    watermark_ms: int,
) -> list[bool]:
    """True for the first line of each template that was never seen before this window."""
    tids = new["template_id"].dropna()
    out = [False] * len(new)
    if tids.empty:
        return out
    first_seen = template_first_seen(engine, component, sorted({int(t) for t in tids}))
    known = set(int(t) for t in history["template_id"].dropna())
    seen: set[int] = set()
    for i, tid in enumerate(new["template_id"]):
        if pd.isna(tid):
            continue
        t = int(tid)
        if t in seen:
            continue
        seen.add(t)
        fs = first_seen.get(t)
        if t not in known and (fs is None or fs > watermark_ms):
            out[i] = True
    return out


def _bursts(
    new: pd.DataFrame,
    history: pd.DataFrame,
    watermark_ms: int,
    now_ms: int,
    start_ms: int,
    settings: LogDetectionSettings,
) -> dict[float, dict[str, object]]:
    """Templates far above their measured rate: template id -> severity, expected, score."""
    if new["template_id"].isna().all() or history.empty:
        return {}
    first_ms = _ms(history["ts"].iloc[0])
    if watermark_ms - first_ms < settings.burst_min_history_s * 1000:
        return {}  # no baseline yet
    window_s = max((now_ms - watermark_ms) / 1000, 1.0)
    history_s = max((watermark_ms - max(start_ms, first_ms)) / 1000, 1.0)
    base = history["template_id"].value_counts()
    out: dict[float, dict[str, object]] = {}
    for tid, grp in new.groupby("template_id"):
        count = len(grp)
        rate = float(base.get(tid, 0)) / history_s
        # A template never seen in the baseline gets a floor of one occurrence per baseline.
        expected = max(rate, 1.0 / history_s) * window_s
        if count < settings.burst_min_count or count < settings.burst_factor * expected:
            continue
        p = poisson_sf(count, expected)
        if p > settings.burst_p_value:
            continue
        levels = set(grp["level"].dropna())
        out[tid] = {
            "severity": Severity.HIGH if levels & set(HIGH_LEVELS) else Severity.MEDIUM,
            "expected": round(expected, 2),
            "score": min(1.0, 0.5 + 0.05 * -math.log10(max(p, 1e-300))),
        }
    return out


def replay(
    engine: Engine,
    component: str,
    settings: LogDetectionSettings,
    cycle_s: float = 30.0,
    start_ms: int | None = None,
) -> LogStepResult:
    """Run the cycle's log step over stored events as the cycle would have, every ``cycle_s``
    of event time: the per-line decisions of every cycle (``LINE_COLUMNS``, event order),
    every cycle's anomalies, and the newest event time.

    Cycles in which no line arrived change nothing (the watermark stays where it is), so
    they are skipped: a log with months between lines replays in as many steps as it has
    busy cycles.
    """
    times = event_times(engine, component)
    if not times:
        return LogStepResult()
    step = int(cycle_s * 1000)
    wm = start_ms if start_ms is not None else times[0] - 1
    sigs = signature_set(settings)
    frames = []
    anomalies: list[AnomalyRecord] = []
    i = 0
    n = len(times)
    while i < n:
        while i < n and times[i] <= wm:
            i += 1
        if i >= n:
            break
        # The first cycle that sees the next line ends on the cycle grid after it.
        now = wm + step * max(1, math.ceil((times[i] - wm) / step))
        res = detect_log_lines(engine, component, wm, now, settings, sigs)
        anomalies += res.anomalies
        if not res.lines.empty:
            frames.append(res.lines)
        wm = max(wm, res.newest or wm)
    lines = pd.concat(frames, ignore_index=True) if frames else LogStepResult().lines
    return LogStepResult(anomalies, wm, lines)
