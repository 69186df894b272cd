"""Labelled series for detector tuning, built from what the system records.

The tuner scores detectors the NAB way on :class:`~tasks.backtest.replay.NabFile`-like files;
here those files come from our own tables instead of a benchmark:

Series
    The samples of each stored series are derived exactly as the detection cycle derives them
    (:func:`tasks.detection.derive.derive`: counter rates, histogram means; ``up`` and buckets
    skipped), so a tuned detector sees what it will see live. A long series is averaged onto
    a coarser regular step (``step="auto"``: the smallest of 1, 2, 5, 10, 15, 30, 60 min that
    keeps it under ``max_rows``; 7 days fit 1-minute rows), which keeps 100 series × 7 days at
    ~1 M rows per trial.

Anomaly windows (what a detector should catch)
    (a) every fault injection, from ``injected_at`` to ``cleared_at`` (or ``injected_at +
    fault_default_s`` while it has none), plus ``fault_tail_s`` for the symptoms that outlive
    the cause, on every series of the fault's component and of ``detail["affects"]``: the
    ground truth says *that* the component misbehaved, not which metric showed it;
    (b) issues an operator confirmed (feedback ``true_positive``), from ``first_seen -
    pad_before_s`` to ``last_seen + pad_after_s`` (the lead leaves room to detect earlier
    than the running detector did), on the issue's series when it is a metric issue (its
    signature is the derived series name) and on all of the component's series otherwise.

Negative evidence (explicitly normal time)
    Issues an operator called a false positive, and issues whose approval was rejected with a
    reason such as "false alarm", "not a real problem" or "noise" (:data:`FALSE_ALARM`): the
    same span, targeted the same way, is known to be normal. When several verdicts concern
    one issue, the latest one counts (feedback by ``created_at``, rejections by
    ``decided_at``). A normal span never removes a window: where they overlap the window
    wins, because fault injections are ground truth and a confirmed incident is worth more
    than a rejected action (a rejection may reject the action, not the alarm).

Unlabelled time
    ``unlabelled="normal"`` (the default) is NAB's convention: every row outside a window is
    normal and an alarm there is a false alarm. That is exact for a period whose faults were
    all injected (the demo) and conservative otherwise: an unreported real incident then
    counts against a detector that catches it, so the tuner leans to fewer alarms.
    ``unlabelled="ignore"`` scores only rows inside windows or normal spans (the files carry
    a ``scored`` row mask the tuner honours); the other rows still feed the detectors'
    history. Use it when labels are sparse operator feedback. Series with no window and no
    normal span are kept only with ``unlabelled="normal"`` and ``include_unlabelled=True``.

Windows are snapped to rows (NAB finds them by timestamp equality) and overlapping ones are
merged. Note that NAB ignores the first 15% of a file (at most 750 rows): a window there
does not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from storage.metrics import labels_key
from tasks.backtest.nab import Window
from tasks.backtest.replay import NabFile
from tasks.detection.derive import derive

FALSE_ALARM = re.compile(r"false (alarm|positive)|not a (real )?problem|noise", re.IGNORECASE)
NICE_STEPS: tuple[str, ...] = ("1min", "2min", "5min", "10min", "15min", "30min", "1h")

Unlabelled = Literal["normal", "ignore"]


@dataclass(frozen=True, eq=False)
class LabelledSeries(NabFile):
    """A derived series with anomaly windows, explicitly normal spans and a scored mask.

    ``scored`` is None when every row is scored (``unlabelled="normal"``), else one bool per
    row. ``eq=False``: arrays do not compare as a single truth value.
    """

    normal: tuple[Window, ...] = ()
    scored: np.ndarray | None = None
    component: str = ""
    metric: str = ""
    labels: str = "{}"


@dataclass(frozen=True)
class LabelSpan:
    """A labelled span of time on a component (``metric=None``: all its series)."""

    component: str
    start: pd.Timestamp
    end: pd.Timestamp
    kind: Literal["anomaly", "normal"]
    source: str  # fault / verdict (latest feedback or rejection of an issue) / rejection
    ref: str = ""
    metric: str | None = None


def _utc(value: Any) -> pd.Timestamp | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _rows(frame: pd.DataFrame | None) -> Iterable[Mapping[str, Any]]:
    if frame is None or frame.empty:
        return []
    return frame.to_dict("records")


def fault_spans(
    faults: pd.DataFrame | None, fault_default_s: float = 600.0, fault_tail_s: float = 120.0
) -> list[LabelSpan]:
    """Anomaly spans of fault injections on their component and ``detail["affects"]``."""
    out = []
    for row in _rows(faults):
        start = _utc(row["injected_at"])
        if start is None:
            continue
        cleared = _utc(row.get("cleared_at"))
        end = (cleared or start + pd.Timedelta(seconds=fault_default_s)) + pd.Timedelta(
            seconds=fault_tail_s
        )
        raw = row.get("detail")
        detail: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        for comp in dict.fromkeys([row["component"], *detail.get("affects", [])]):
            out.append(LabelSpan(comp, start, end, "anomaly", "fault", str(row.get("id", ""))))
    return out


def _verdicts(
    feedback: pd.DataFrame | None,
    approvals: pd.DataFrame | None,
    pattern: re.Pattern[str],
) -> tuple[dict[int, tuple[pd.Timestamp, str]], list[Mapping[str, Any]]]:
    """Latest verdict per issue id, and every rejection whose reason says "false alarm"."""
    latest: dict[int, tuple[pd.Timestamp, str]] = {}
    never = pd.Timestamp.min.tz_localize("UTC")

    def offer(issue_id: Any, when: pd.Timestamp | None, verdict: str) -> None:
        if issue_id is None or pd.isna(issue_id):
            return
        key, when = int(issue_id), when or never
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, verdict)

    for row in _rows(feedback):
        if row.get("verdict") in ("true_positive", "false_positive"):
            offer(row.get("issue_id"), _utc(row.get("created_at")), str(row["verdict"]))
    rejections = []
    for row in _rows(approvals):
        if row.get("decision") != "rejected" or not pattern.search(str(row.get("reason") or "")):
            continue
        rejections.append(row)
        when = _utc(row.get("decided_at")) or _utc(row.get("requested_at"))
        offer(row.get("issue_id"), when, "false_positive")
    return latest, rejections


def feedback_spans(
    issues: pd.DataFrame | None,
    feedback: pd.DataFrame | None = None,
    approvals: pd.DataFrame | None = None,
    *,
    pad_before_s: float = 900.0,
    pad_after_s: float = 300.0,
    false_alarm_pattern: re.Pattern[str] = FALSE_ALARM,
) -> list[LabelSpan]:
    """Anomaly spans of confirmed issues, normal spans of refuted ones (latest verdict wins).

    A false-alarm rejection whose issue is not in ``issues`` (or has no issue) still marks
    ``[requested_at - pad_before_s, requested_at]`` on its component as normal: the alarm
    that asked for the approval came from there.
    """
    latest, rejections = _verdicts(feedback, approvals, false_alarm_pattern)
    by_id = {int(r["id"]): r for r in _rows(issues)}
    before, after = pd.Timedelta(seconds=pad_before_s), pd.Timedelta(seconds=pad_after_s)
    out = []
    for issue_id, (_, verdict) in sorted(latest.items()):
        issue = by_id.get(issue_id)
        if issue is None:
            continue
        first, last = _utc(issue["first_seen"]), _utc(issue["last_seen"])
        if first is None:
            continue
        last = last or first
        metric = str(issue["signature"]) if issue.get("kind") == "metric" else None
        out.append(
            LabelSpan(
                str(issue["component"]),
                first - before,
                last + after,
                "anomaly" if verdict == "true_positive" else "normal",
                "verdict",
                f"issue:{issue_id}",
                metric,
            )
        )
    for row in rejections:
        ref = row.get("issue_id")
        if ref is not None and not pd.isna(ref) and int(ref) in by_id:
            continue  # covered by the issue's latest verdict above
        at = _utc(row.get("requested_at")) or _utc(row.get("decided_at"))
        if at is None:
            continue
        out.append(
            LabelSpan(
                str(row["component"]), at - before, at, "normal", "rejection", str(row.get("id"))
            )
        )
    return out


def label_spans(
    faults: pd.DataFrame | None = None,
    issues: pd.DataFrame | None = None,
    feedback: pd.DataFrame | None = None,
    approvals: pd.DataFrame | None = None,
    *,
    fault_default_s: float = 600.0,
    fault_tail_s: float = 120.0,
    pad_before_s: float = 900.0,
    pad_after_s: float = 300.0,
    false_alarm_pattern: re.Pattern[str] = FALSE_ALARM,
) -> list[LabelSpan]:
    """Every label the frames hold: fault windows, confirmed issues, refuted ones.

    Frames are those of ``storage.faults.faults_frame``, ``storage.issues.issues_frame``,
    ``storage.issues.feedback_frame`` and ``storage.approvals.approvals_frame``; any may be None.
    """
    return [
        *fault_spans(faults, fault_default_s, fault_tail_s),
        *feedback_spans(
            issues,
            feedback,
            approvals,
            pad_before_s=pad_before_s,
            pad_after_s=pad_after_s,
            false_alarm_pattern=false_alarm_pattern,
        ),
    ]


def choose_step(index: pd.DatetimeIndex, max_rows: int) -> str | None:
    """The step to average a series onto, or None to keep its rows.

    Only series longer than ``max_rows`` are resampled, to the smallest of :data:`NICE_STEPS`
    that is no finer than their own interval and brings them under ``max_rows``.
    """
    if len(index) <= max_rows or len(index) < 2:
        return None
    span = index[-1] - index[0]
    steps = np.diff(index.as_unit("ns").asi8)
    native = pd.Timedelta(int(np.median(steps[steps > 0])) if (steps > 0).any() else 0)
    for step in NICE_STEPS:
        td = pd.Timedelta(step)
        if td >= native and span / td <= max_rows:
            return step
    return NICE_STEPS[-1]


def _snap(index: pd.DatetimeIndex, spans: Iterable[tuple[pd.Timestamp, pd.Timestamp]]) -> list:
    """Spans → windows whose ends are rows (first row ≥ start, last row ≤ end), merged."""
    ns = index.as_unit("ns").asi8
    snapped = []
    for start, end in spans:
        lo = int(np.searchsorted(ns, pd.Timestamp(start).as_unit("ns").value, "left"))
        hi = int(np.searchsorted(ns, pd.Timestamp(end).as_unit("ns").value, "right")) - 1
        if lo <= hi:
            snapped.append((lo, hi))
    merged: list[list[int]] = []
    for lo, hi in sorted(snapped):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(index[lo], index[hi]) for lo, hi in merged]


def _mask(index: pd.DatetimeIndex, windows: Sequence[Window]) -> np.ndarray:
    out = np.zeros(len(index), dtype=bool)
    for start, end in windows:
        out[(index >= start) & (index <= end)] = True
    return out


def _series_meta(series: pd.DataFrame) -> pd.DataFrame:
    meta = series.copy()
    meta["labels"] = [labels_key(v) if isinstance(v, dict) else (v or "{}") for v in meta["labels"]]
    return meta


def labelled_series(
    samples: pd.DataFrame,
    series: pd.DataFrame,
    spans: Sequence[LabelSpan],
    *,
    max_rows: int = 10_080,
    step: str | None = "auto",
    unlabelled: Unlabelled = "normal",
    include_unlabelled: bool = True,
    min_rows: int = 50,
) -> list[LabelledSeries]:
    """Derive every series of ``samples`` and attach the ``spans`` that concern it.

    ``samples``: series_id, ts, value (``storage.metrics.read_samples``); ``series``:
    series_id, component, metric, labels, kind (``storage.metrics.series_frame``).
    ``step``: ``"auto"`` (see :func:`choose_step`), a fixed pandas step, or None for raw rows.
    Keys are ``<component>/<derived name><labels>`` so ``two_fold_split`` alternates within
    a component. Series shorter than ``min_rows`` after resampling are dropped.
    """
    if unlabelled not in ("normal", "ignore"):
        raise ValueError("unlabelled must be 'normal' or 'ignore'")
    if samples.empty:
        return []
    meta = _series_meta(series)
    component_of = dict(zip(meta["series_id"].astype(int), meta["component"], strict=True))
    by_comp: dict[str, list[LabelSpan]] = {}
    for s in spans:
        by_comp.setdefault(s.component, []).append(s)
    out = []
    for d in derive(samples, meta):
        comp = str(component_of.get(int(d.series_id), ""))
        values = d.values.astype(float)
        values = values[~values.index.duplicated(keep="last")].sort_index()
        chosen = choose_step(pd.DatetimeIndex(values.index), max_rows) if step == "auto" else step
        if chosen is not None:
            values = values.resample(chosen).mean().dropna()
        if len(values) < min_rows:
            continue
        index = pd.DatetimeIndex(values.index)
        mine = [s for s in by_comp.get(comp, []) if s.metric in (None, d.name)]
        windows = _snap(index, [(s.start, s.end) for s in mine if s.kind == "anomaly"])
        normal = _snap(index, [(s.start, s.end) for s in mine if s.kind == "normal"])
        if not windows and not normal and not (unlabelled == "normal" and include_unlabelled):
            continue
        scored = None
        if unlabelled == "ignore":
            scored = _mask(index, windows) | _mask(index, normal)
            if not scored.any():
                continue
        suffix = "" if d.labels == "{}" else d.labels
        out.append(
            LabelledSeries(
                key=f"{comp}/{d.name}{suffix}",
                timestamps=index,
                values=values.to_numpy(dtype=float),
                windows=tuple(windows),
                normal=tuple(normal),
                scored=scored,
                component=comp,
                metric=d.name,
                labels=d.labels,
            )
        )
    return sorted(out, key=lambda f: f.key)


def labelled_from_frames(
    samples: pd.DataFrame,
    series: pd.DataFrame,
    faults: pd.DataFrame | None = None,
    issues: pd.DataFrame | None = None,
    feedback: pd.DataFrame | None = None,
    approvals: pd.DataFrame | None = None,
    **options: Any,
) -> list[LabelledSeries]:
    """:func:`label_spans` then :func:`labelled_series`; ``options`` go to whichever takes them."""
    span_keys = {"fault_default_s", "fault_tail_s", "pad_before_s", "pad_after_s"}
    span_keys |= {"false_alarm_pattern"}
    span_opts = {k: v for k, v in options.items() if k in span_keys}
    series_opts = {k: v for k, v in options.items() if k not in span_keys}
    spans = label_spans(faults, issues, feedback, approvals, **span_opts)
    return labelled_series(samples, series, spans, **series_opts)
