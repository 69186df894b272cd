"""Detection over one component's log events since its watermark.

Three signals, each aggregated to one anomaly per (component, signal) per cycle so that a
storm of identical lines does not become a storm of rows:

- **signatures**: known error patterns (out of memory, connection refused, timeout,
  traceback, segfault, disk full, ...) with a severity by content and level;
- **bursts**: a template occurring far more often than its baseline rate over the
  lookback (Poisson tail, plus a minimum count and factor);
- **new templates at a high level**: a never-seen template logged at ERROR or above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine

from storage.issues import AnomalyRecord
from storage.logs import read_log_events, template_first_seen
from tasks.logs.signatures import Signature, SignatureSet
from tasks.severity import Severity

HIGH_LEVELS = ("ERROR", "CRITICAL")
EXAMPLE_CHARS = 300


@dataclass(frozen=True)
class LogDetectionSettings:
    lookback_s: float = 3600.0
    extra_signatures: tuple[tuple[str, str, str], ...] = ()  # (name, regex, severity)
    burst_factor: float = 5.0
    burst_min_count: int = 10
    burst_p_value: float = 1e-6
    min_signature_severity: str = "medium"


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
    start = min(watermark_ms, now_ms) - int(settings.lookback_s * 1000)
    events = read_log_events(engine, start, now_ms + 1, component)
    if events.empty:
        return [], None
    ts_ms = events["ts"].dt.as_unit("ms").astype("int64")
    new = events[ts_ms > watermark_ms]
    newest = int(ts_ms.max())
    if new.empty:
        return [], newest
    history = events[ts_ms <= watermark_ms]
    out = _signatures(component, new, settings)
    out += _bursts(component, new, history, watermark_ms, now_ms, start, settings)
    out += _new_templates(engine, component, new, watermark_ms)
    return out, newest


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


@dataclass
class _SignatureHits:
    """One signature's lines in this cycle: count, first time, worst severity, an example."""

    first: pd.Timestamp
    severity: Severity
    example: str
    count: int = 0


def _signatures(
    component: str, new: pd.DataFrame, settings: LogDetectionSettings
) -> list[AnomalyRecord]:
    sigs = signature_set(settings)
    floor = Severity.parse(settings.min_signature_severity)
    groups: dict[str, _SignatureHits] = {}
    for ts, level, message in zip(new["ts"], new["level"], new["message"], strict=True):
        lvl = level if isinstance(level, str) else None
        m = sigs.classify(message, lvl)
        if m.signature is None or m.severity is None or m.severity < floor:
            continue
        hits = groups.setdefault(m.signature.name, _SignatureHits(ts, m.severity, message))
        hits.count += 1
        if m.severity > hits.severity:
            hits.severity, hits.example = m.severity, message
    return [
        AnomalyRecord(
            detector="log_signature",
            component=component,
            kind="log",
            signature=name,
            ts_ms=_ms(h.first),
            score=1.0,
            severity=h.severity.label,
            value=float(h.count),
            details={"count": h.count, "example": str(h.example)[:EXAMPLE_CHARS]},
        )
        for name, h in groups.items()
    ]


def _bursts(
    component: str,
    new: pd.DataFrame,
    history: pd.DataFrame,
    watermark_ms: int,
    now_ms: int,
    start_ms: int,
    settings: LogDetectionSettings,
) -> list[AnomalyRecord]:
    if new["template_id"].isna().all():
        return []
    window_s = max((now_ms - watermark_ms) / 1000, 1.0)
    history_s = max((watermark_ms - start_ms) / 1000, 1.0)
    base = history["template_id"].value_counts()
    out: list[AnomalyRecord] = []
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
        sev = Severity.HIGH if levels & set(HIGH_LEVELS) else Severity.MEDIUM
        out.append(
            AnomalyRecord(
                detector="log_burst",
                component=component,
                kind="log",
                signature=f"burst of template {int(tid)}",
                ts_ms=_ms(grp["ts"].iloc[0]),
                score=min(1.0, 0.5 + 0.05 * -math.log10(max(p, 1e-300))),
                severity=sev.label,
                value=float(count),
                details={
                    "count": count,
                    "expected": round(expected, 2),
                    "example": str(grp["message"].iloc[0])[:EXAMPLE_CHARS],
                },
            )
        )
    return out


def _new_templates(
    engine: Engine, component: str, new: pd.DataFrame, watermark_ms: int
) -> list[AnomalyRecord]:
    high = new[new["level"].isin(HIGH_LEVELS) & new["template_id"].notna()]
    if high.empty:
        return []
    first_seen = template_first_seen(engine, component, sorted(set(high["template_id"])))
    out = []
    for tid, grp in high.groupby("template_id"):
        seen = first_seen.get(int(tid))
        if seen is None or seen <= watermark_ms:
            continue
        sev = Severity.CRITICAL if (grp["level"] == "CRITICAL").any() else Severity.HIGH
        out.append(
            AnomalyRecord(
                detector="log_new_template",
                component=component,
                kind="log",
                signature=f"new template {int(tid)}",
                ts_ms=_ms(grp["ts"].iloc[0]),
                score=1.0,
                severity=sev.label,
                value=float(len(grp)),
                details={"count": len(grp), "example": str(grp["message"].iloc[0])[:EXAMPLE_CHARS]},
            )
        )
    return out
