"""Saturation: a resource that is almost used up, as the node exporter reports it.

The host's resource series are context (``tasks.detection.candidates``): their moves do not
open issues, because a workload that starts moves them all. What does hurt is a resource
that runs out, and that is a fixed fraction of its capacity, not a novelty: the rules of
the Prometheus node-exporter mixin (``NodeFilesystemAlmostOutOfSpace``,
``NodeFilesystemAlmostOutOfFiles``, ``NodeMemoryHighUtilization``) with their thresholds.
A rule pairs a series of what is left with the series of the capacity that has the same
labels (one filesystem, one mount point), and fires, like an alerting rule with ``for``,
once the fraction left has stayed below its threshold for ``for_s``: every new point from
then on is a ``saturation`` anomaly (high below ``warning``, critical below ``critical``),
so the issue lasts while the resource stays short and resolves after it recovers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from storage.issues import AnomalyRecord
from tasks.severity import Severity

DETECTOR = "saturation"
KIND = "saturation"


@dataclass(frozen=True)
class SaturationRule:
    """``left / capacity`` below ``warning`` (high) or ``critical`` for ``for_s`` seconds,
    except while the gauge ``unless`` with the same labels reads 1 (a read-only
    filesystem is always full, by design)."""

    name: str
    left: str
    capacity: str
    warning: float
    critical: float
    for_s: float
    unless: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.critical <= self.warning < 1.0:
            raise ValueError(
                f"saturation rule {self.name!r}: need 0 <= critical <= warning < 1, "
                f"not critical={self.critical}, warning={self.warning}"
            )
        if self.for_s < 0:
            raise ValueError(f"saturation rule {self.name!r}: for_s must be >= 0")


# The node-exporter mixin's thresholds: 5 % / 3 % of a filesystem's space or inodes left
# (its space rules wait 30 min, its inode rules 1 h; one hold time here), 10 % of the
# memory available (its warning is 90 % used for 15 min) and 5 % as critical.
NODE_RULES = (
    SaturationRule(
        "filesystem space",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        0.05,
        0.03,
        1800.0,
        "node_filesystem_readonly",
    ),
    SaturationRule(
        "filesystem inodes",
        "node_filesystem_files_free",
        "node_filesystem_files",
        0.05,
        0.03,
        1800.0,
        "node_filesystem_readonly",
    ),
    SaturationRule(
        "memory",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        0.10,
        0.05,
        900.0,
    ),
)


def held_since(short: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    """For each point, the time (ms) of the first point of the run of ``short`` points it
    ends, or -1 where the point is not short."""
    out = np.full(len(short), -1, dtype=np.int64)
    start = -1
    for i, s in enumerate(short):
        if not s:
            start = -1
            continue
        if start < 0:
            start = int(ts_ms[i])
        out[i] = start
    return out


def detect_saturation(
    component: str,
    gauges: dict[tuple[str, str], pd.Series],
    since_ms: int,
    rules: Sequence[SaturationRule] = NODE_RULES,
) -> list[AnomalyRecord]:
    """Saturation anomalies for the points after ``since_ms``.

    ``gauges`` maps (metric, labels) to the series in the read window (which must reach
    ``for_s`` back for a rule to fire at its first point).
    """
    out: list[AnomalyRecord] = []
    for rule in rules:
        for labels, left, capacity in _pairs(gauges, rule):
            joined = pd.concat([left, capacity], axis=1, join="inner").dropna()
            if joined.empty:
                continue
            cap = joined.iloc[:, 1].to_numpy(dtype=float)
            left_now = joined.iloc[:, 0].to_numpy(dtype=float)
            fraction = np.full(len(cap), np.nan)
            np.divide(left_now, cap, out=fraction, where=cap > 0)
            exempt = gauges.get((rule.unless, labels)) if rule.unless else None
            if exempt is not None:
                flag = exempt.reindex(joined.index, method="ffill").to_numpy(dtype=float)
                fraction[np.nan_to_num(flag, nan=0.0) >= 0.5] = np.nan
            ts_ms = pd.DatetimeIndex(joined.index).as_unit("ms").asi8
            since = held_since(np.nan_to_num(fraction, nan=1.0) < rule.warning, ts_ms)
            fires = (since >= 0) & (ts_ms - since >= rule.for_s * 1000) & (ts_ms > since_ms)
            for i in np.flatnonzero(fires):
                critical = fraction[i] < rule.critical
                out.append(
                    AnomalyRecord(
                        detector=DETECTOR,
                        component=component,
                        kind=KIND,
                        signature=rule.name if labels == "{}" else f"{rule.name} {labels}",
                        ts_ms=int(ts_ms[i]),
                        score=float(1.0 - fraction[i]),
                        severity=(Severity.CRITICAL if critical else Severity.HIGH).label,
                        value=float(fraction[i]),
                        details={
                            "reason": (
                                f"{rule.left} / {rule.capacity} = {fraction[i]:.1%}, below "
                                f"{(rule.critical if critical else rule.warning):.0%} for "
                                f"{(ts_ms[i] - since[i]) / 1000:.0f} s"
                            ),
                            "labels": labels,
                        },
                    )
                )
    return out


def _pairs(
    gauges: dict[tuple[str, str], pd.Series], rule: SaturationRule
) -> Iterable[tuple[str, pd.Series, pd.Series]]:
    for (metric, labels), left in gauges.items():
        if metric != rule.left:
            continue
        capacity = gauges.get((rule.capacity, labels))
        if capacity is not None and len(left) and len(capacity):
            yield labels, left.rename("left"), capacity.rename("capacity")
