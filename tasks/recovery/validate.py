"""Did a recovery fix the issue? Health first, then the issue's own symptom.

- Every kind of issue needs the component to pass its health check.
- A metric issue also needs its metric back in the range it had before the issue began:
  the metric is measured live (two scrapes ``measure_time`` apart, derived the same way
  detection derives it) and compared with the stored history before ``first_seen``.
- Other kinds (logs, behaviour) also need the live error ratio not above what it was
  before the action (when the component reports requests and errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import numpy as np
import pandas as pd

from storage.metrics import read_samples, series_frame
from tasks.detection.derive import derive
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.recovery.base import ComponentSpec, IssueInfo, RecoveryContext
from tasks.recovery.health import check_health, measure, wait_healthy

RANGE_MARGIN = 0.25  # of the pre-issue spread, around its 1st..99th percentile
BASELINE = timedelta(hours=1)


@dataclass(frozen=True)
class Validation:
    ok: bool
    detail: str
    health_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail, "health_wait_s": round(self.health_s, 2)}


def _live_derived(comp: ComponentSpec, ctx: RecoveryContext, signature: str) -> pd.Series | None:
    """The signature metric's current value(s), from two scrapes ``measure_time`` apart."""
    url = comp.health.metrics_url
    if not url:
        return None
    frames = []
    try:
        for i in range(2):
            if i:
                ctx.sleep(ctx.settings.measure_time)
            now_ms = int(ctx.clock().timestamp() * 1000)
            text = httpx.get(url, timeout=comp.health.timeout).text
            frames.append(parse_exposition(text, comp.name, now_ms, IngestReport("v")))
    except httpx.HTTPError:
        return None
    both = pd.concat(frames, ignore_index=True)
    both = both[both["metric"].map(lambda m: signature.split(":")[0] in m)]
    if both.empty:
        return None
    keys = both[["metric", "labels", "kind"]].drop_duplicates().reset_index(drop=True)
    keys["series_id"] = range(len(keys))
    samples = both.merge(keys, on=["metric", "labels", "kind"])
    samples["ts"] = pd.to_datetime(samples["ts"], unit="ms", utc=True)
    derived = [
        d for d in derive(samples[["series_id", "ts", "value"]], keys) if d.name == signature
    ]
    if not derived:
        return None
    return pd.Series([float(d.values.iloc[-1]) for d in derived], index=[d.labels for d in derived])


def _baseline_range(
    ctx: RecoveryContext, issue: IssueInfo, first_seen: datetime
) -> dict[str, tuple[float, float]]:
    start = pd.Timestamp(first_seen - BASELINE)
    samples = read_samples(ctx.engine, start, pd.Timestamp(first_seen), component=issue.component)
    if samples.empty:
        return {}
    meta = series_frame(ctx.engine, issue.component)
    from storage.metrics import labels_key

    meta["labels"] = meta["labels"].map(labels_key)
    out: dict[str, tuple[float, float]] = {}
    for d in derive(samples, meta):
        if d.name != issue.signature or len(d.values) < 5:
            continue
        v = d.values.to_numpy(float)
        lo, hi = np.quantile(v, 0.01), np.quantile(v, 0.99)
        spread = max(hi - lo, 1e-9 * (1 + abs(hi)))
        out[d.labels] = (lo - RANGE_MARGIN * spread, hi + RANGE_MARGIN * spread)
    return out


def symptom_cleared(issue: IssueInfo, comp: ComponentSpec, ctx: RecoveryContext) -> Validation:
    first_seen = issue.details.get("first_seen")
    if not isinstance(first_seen, datetime):
        return Validation(True, "no baseline time: health only")
    ranges = _baseline_range(ctx, issue, first_seen)
    if not ranges:
        return Validation(True, f"no stored history of {issue.signature}: health only")
    live = _live_derived(comp, ctx, issue.signature)
    if live is None or live.empty:
        return Validation(True, f"{issue.signature} not measurable live: health only")
    bad = []
    for labels, value in live.items():
        lo, hi = ranges.get(str(labels), next(iter(ranges.values())))
        if not lo <= value <= hi:
            bad.append(
                f"{issue.signature}{'' if labels == '{}' else labels} = {value:.4g} "
                f"outside [{lo:.4g}, {hi:.4g}]"
            )
    if bad:
        return Validation(False, "; ".join(bad))
    return Validation(True, f"{issue.signature} back in its usual range")


def validate_fix(
    issue: IssueInfo,
    comp: ComponentSpec,
    ctx: RecoveryContext,
    error_ratio_before: float | None = None,
) -> Validation:
    s = ctx.settings
    check, waited = wait_healthy(
        comp.health, s.validation_timeout, s.validation_poll, comp.name, ctx.engine, sleep=ctx.sleep
    )
    if not check.ok:
        return Validation(False, f"not healthy after {waited:.0f} s: {check.detail}", waited)
    if issue.kind == "metric":
        v = symptom_cleared(issue, comp, ctx)
        return Validation(v.ok, f"healthy; {v.detail}", waited)
    if issue.kind != "down" and comp.health.metrics_url:
        m = measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep)
        # Fixed means clearly better: at most half the error ratio seen before the action
        # (or under 1 %); "no worse" would call a failing component that stays failing fixed.
        if (
            m.error_ratio is not None
            and error_ratio_before is not None
            and m.error_ratio > max(error_ratio_before / 2, 0.01)
        ):
            return Validation(
                False,
                f"healthy but error ratio {m.error_ratio:.1%} is not "
                f"below {error_ratio_before:.1%}",
                waited,
            )
        return Validation(True, f"healthy; {m.detail}", waited)
    return Validation(True, f"healthy: {check.detail}", waited)


def quick_health(comp: ComponentSpec, ctx: RecoveryContext) -> bool:
    return check_health(comp.health, comp.name, ctx.engine).ok
