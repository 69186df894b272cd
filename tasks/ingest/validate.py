"""Reject samples that would poison detection: non-finite values, impossible timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.ingest.records import IngestReport

# Before 2000-01-01: almost certainly seconds mistaken for milliseconds, or garbage.
MIN_TS_MS = 946_684_800_000


def validate_samples(
    frame: pd.DataFrame, report: IngestReport, now_ms: int, max_future_ms: int
) -> pd.DataFrame:
    """Keep the good rows; count every bad one in ``report`` with its reason."""
    if frame.empty:
        return frame
    values = frame["value"].to_numpy(dtype=float, na_value=np.nan)
    nan = np.isnan(values)
    if nan.any():
        # NaN is a legal Prometheus value meaning "no value now" (a summary with no
        # observations, an archiver that never archived): skipped and counted, not an error.
        report.notes["NaN samples skipped"] += int(nan.sum())
        frame, values = frame[~nan], values[~nan]
        if frame.empty:
            return frame
    ts = frame["ts"].to_numpy(dtype="int64")
    checks = [
        ("value is infinite", np.isinf(values)),
        ("timestamp too far in the future", ts > now_ms + max_future_ms),
        ("timestamp before 2000", ts < MIN_TS_MS),
        ("empty metric name", frame["metric"].astype(str).str.len().to_numpy() == 0),
    ]
    bad = np.zeros(len(frame), dtype=bool)
    for reason, mask in checks:
        mask = mask & ~bad
        n = int(mask.sum())
        if n:
            row = frame.iloc[int(np.argmax(mask))]
            report.reject(
                reason,
                n,
                f"{reason}: {row['component']}/{row['metric']} ts={row['ts']} value={row['value']}",
            )
            bad |= mask
    return frame[~bad] if bad.any() else frame
