"""Lagged rolling statistics of many series at once: the columns of a ``(T, n)`` matrix.

They reproduce ``_common.lagged`` column by column (pandas' rolling quantile and median,
NaN-aware, causal: the window of a point holds the ``window`` points before it) for what the
default detector needs when it scores a batch of series:

- ``lagged_quantile``: the trailing quantile at every point. While the window still grows
  (every point sees all points before it, as in the detection cycle, whose read covers the
  detector's history span), extreme quantiles are order statistics near the top or bottom of
  the prefix, and the k-th largest of every prefix comes from running maxima:
  ``kth(x[:t+1]) = max_{j<=t} min(x[j], (k-1)th(x[:j]))`` (the last of the top k values to
  arrive finds the other k-1 before it). A few ``maximum.accumulate`` passes over the matrix
  replace a skip list per series. Other cases use pandas on the whole frame.
- ``lagged_median_at``: the trailing median at chosen points only (a few per series), as the
  median of each point's window padded with equal numbers of -inf and +inf;
  ``lagged_median_bounds`` brackets it everywhere from running sums (mean ± standard
  deviation), which is enough to rule most points out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Order statistics deeper than this from the top or bottom go through pandas instead.
MAX_DEPTH = 32
# Cells of one block of padded windows in ``lagged_median_at`` (32 MB of floats).
BLOCK_CELLS = 1 << 22


def lagged_counts(values: np.ndarray, window: int) -> np.ndarray:
    """Non-NaN values among the ``window`` points before each point (``(T, n)`` → ``(T, n)``)."""
    valid = np.cumsum(~np.isnan(values), axis=0)
    before = np.vstack([np.zeros((1, values.shape[1]), dtype=valid.dtype), valid[:-1]])
    if len(values) - 1 <= window:
        return before
    drop = np.zeros_like(before)
    drop[window:] = before[:-window]
    return before - drop


def _prefix_largest(values: np.ndarray, depth: int) -> np.ndarray:
    """``out[k, t]``: the (k+1)-th largest non-NaN value among ``values[:t]`` (-inf if none)."""
    x = np.where(np.isnan(values), -np.inf, values)
    pad = np.full((1, values.shape[1]), -np.inf)
    out = np.empty((depth, *values.shape))
    prev = None
    for k in range(depth):
        # Inclusive prefix statistic, then shifted by one point (the window precedes it).
        cur = x if prev is None else np.minimum(x, np.vstack([pad, prev[:-1]]))
        prev = np.maximum.accumulate(cur, axis=0)
        out[k] = np.vstack([pad, prev[:-1]])
    return out


def lagged_quantile(
    values: np.ndarray, window: int, min_periods: int, q: float, counts: np.ndarray | None = None
) -> np.ndarray:
    """``_common.lagged(column, window, min_periods, "quantile", q)`` for every column."""
    counts = lagged_counts(values, window) if counts is None else counts
    minp = min(min_periods, window)
    if len(values) - 1 <= window and values.size:
        n = counts.astype(float)
        pos = q * (n - 1.0)  # pandas: linear interpolation between ranks idx and idx + 1
        idx = np.floor(np.maximum(pos, 0.0))
        frac = pos - idx
        ok = counts >= max(minp, 1)
        if q >= 0.5:
            low_rank = (n - 1.0 - idx).astype(np.int64)  # from the top, 0 = the largest
            depth = int(low_rank[ok].max(initial=0)) + 1
            if depth <= MAX_DEPTH:
                stats = _prefix_largest(values, depth)
                return _interpolate(stats, low_rank, low_rank - 1, frac, ok)
        else:
            low_rank = idx.astype(np.int64)  # from the bottom, 0 = the smallest
            depth = int(low_rank[ok].max(initial=0)) + 2
            if depth <= MAX_DEPTH:
                stats = -_prefix_largest(-values, depth)
                return _interpolate(stats, low_rank, low_rank + 1, frac, ok)
    roll = pd.DataFrame(values).rolling(window, min_periods=minp)
    return roll.quantile(q).shift(1).to_numpy(dtype=float)


def _interpolate(
    stats: np.ndarray, low: np.ndarray, high: np.ndarray, frac: np.ndarray, ok: np.ndarray
) -> np.ndarray:
    depth = len(stats)
    vlow = np.take_along_axis(stats, np.clip(low, 0, depth - 1)[None], axis=0)[0]
    vhigh = np.take_along_axis(stats, np.clip(high, 0, depth - 1)[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        out = np.where(frac == 0, vlow, vlow + (vhigh - vlow) * frac)
    return np.where(ok, out, np.nan)


def lagged_median_at(
    values: np.ndarray,
    window: int,
    counts: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """``lagged(column, window, ., "median")`` at the points ``(rows[i], cols[i])``.

    Callers pass points whose window holds at least one value. Each point's window (NaN and
    positions after the point replaced by padding) becomes one row of a matrix; the padding
    is split evenly between -inf and +inf so the middle of the row is the middle of the
    window's values, and one ``np.median`` call does a block of rows.
    """
    out = np.empty(len(rows))
    if not len(rows):
        return out
    span = min(window, len(values))
    n = counts[rows, cols]
    for parity in (0, 1):
        width = span + parity  # an even number of pads in every row of this group
        sel = np.flatnonzero((span - n) % 2 == parity)
        step = max(1, BLOCK_CELLS // width)
        for part in range(0, len(sel), step):
            chosen = sel[part : part + step]
            r, c, k = rows[chosen], cols[chosen], n[chosen]
            pos = np.maximum(r - window, 0)[:, None] + np.arange(width)
            block = values[np.minimum(pos, len(values) - 1), c[:, None]]
            pad = (pos >= r[:, None]) | np.isnan(block)
            rank = np.cumsum(pad, axis=1)
            low = ((width - k) // 2)[:, None]
            block[pad] = np.where(rank <= low, -np.inf, np.inf)[pad]
            out[chosen] = np.median(block, axis=1)
    return out


def lagged_median_bounds(
    values: np.ndarray, window: int, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the trailing median of every point: mean ∓ standard deviation of its window.

    ``|mean - median| <= sd`` holds for any set of numbers (the median minimises the mean
    absolute deviation, which is at most the standard deviation). The running sums are
    taken about each column's first value, and the bounds are widened by far more than
    their rounding error, so they hold for the pandas median too. NaN where the window
    holds no value.
    """
    length = len(values)
    finite = np.isfinite(values)
    has = finite.any(axis=0)
    first = np.where(has, values[np.argmax(finite, axis=0), np.arange(values.shape[1])], 0.0)
    x = np.where(finite, values - first, 0.0)
    zero = np.zeros((1, values.shape[1]))
    s1 = np.vstack([zero, np.cumsum(x, axis=0)])
    s2 = np.vstack([zero, np.cumsum(x * x, axis=0)])
    t = np.arange(length)
    lo = np.maximum(t - window, 0)
    n = counts.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = (s1[t] - s1[lo]) / n
        m2 = (s2[t] - s2[lo]) / n
        sd = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
        slack = 1e-6 * np.sqrt(s2[t] / n) + 1e-12 * np.abs(first) + 1e-300
    mean = m1 + first
    return mean - sd - slack, mean + sd + slack
