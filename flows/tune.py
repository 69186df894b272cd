"""Nightly tuning: NSGA-II over detector settings by backtest, CMA-ES over recovery settings
by replay, promoted as a configuration version only when it wins on held-back data.

1. **Labels** come from what the system recorded: fault injections, operator feedback,
   rejected approvals that called the alarm false, recovery outcomes (``tasks.tuning``).
2. **Detectors**: the recorded series (and optionally a NAB-style folder) are split in two
   halves by series; an NSGA-II study tunes the configured detector on one half (NAB
   standard score ↑, false alarms per day ↓, detection delay as a constraint) and the
   picked candidate must beat the running settings on the other half.
3. **Recovery**: crash-loop timelines (from ``up`` samples, restart actions and crash
   injections) and synthetic dependency outages are split in two; CMA-ES tunes backoff,
   breaker and validation wait on one half by replaying them through the real policies,
   and must beat the running settings on the other half.
4. **Promotion**: the winners become a new ``config_versions`` row, active only if at
   least one part won; otherwise the row is kept, inactive, with the reason. The next run
   of every flow reads the active version. Studies live in our database (Optuna's RDB
   storage) under names that carry the data tag, so a second run on the same tag continues.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime import Runtime, open_runtime
from storage.approvals import approvals_frame
from storage.config_versions import activate, active_version, create_version
from storage.faults import faults_frame
from storage.issues import feedback_frame, issues_frame
from storage.metrics import component_names, read_arrays
from storage.recoveries import actions_frame
from tasks.backtest.replay import NabFile, load_corpus, two_fold_split
from tasks.tuning.detector import open_detector_study, pareto_front, pick, score_params
from tasks.tuning.detector import tune_detector as run_detector_study
from tasks.tuning.labels import labelled_from_frames
from tasks.tuning.recovery import (
    RecoveryParams,
    RecoveryTimelines,
    health_waits_from_actions,
    open_recovery_study,
    score_recovery,
    single_crashes,
    slower_on_single_crashes,
    synthetic_outages,
    timelines_from_history,
    tune_recovery,
)

_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def recorded_samples(rt: Runtime, days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Samples (series_id, ts, value) and series of the last ``days``, read by component."""
    end = int(time.time() * 1000)
    start = end - int(days * 86400 * 1000)
    frames, metas = [], []
    for comp in component_names(rt.engine):
        meta, table = read_arrays(rt.engine, comp, start, end)
        if len(table):
            frames.append(
                pd.DataFrame(
                    {
                        "series_id": table[:, 0].astype(np.int64),
                        "ts": pd.to_datetime(table[:, 1].astype(np.int64), unit="ms", utc=True),
                        "value": table[:, 2],
                    }
                )
            )
        metas += [
            {"series_id": sid, "component": comp, "metric": m, "kind": k, "labels": lab}
            for sid, (m, k, lab) in meta.items()
        ]
    samples = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            {
                "series_id": pd.Series(dtype="int64"),
                "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                "value": pd.Series(dtype=float),
            }
        )
    )
    return samples, pd.DataFrame(
        metas, columns=["series_id", "component", "metric", "kind", "labels"]
    )


def labelled_files(
    rt: Runtime, days: float, nab_data: str | None, nab_labels: str | None
) -> list[NabFile]:
    samples, series = recorded_samples(rt, days)
    files: list[NabFile] = list(
        labelled_from_frames(
            samples,
            series,
            faults_frame(rt.engine),
            issues_frame(rt.engine),
            feedback_frame(rt.engine),
            approvals_frame(rt.engine),
        )
    )
    if nab_data:
        files += load_corpus(nab_data, nab_labels)
    return files


def _active_detector(rt: Runtime, name: str) -> dict[str, Any]:
    for spec in rt.config.detection.detectors:
        if spec.name == name:
            return dict(spec.params)
    return {}


@task(name="tune-detector", **_OPTS)
def tune_detector_task(
    rt: Runtime,
    files: list[NabFile],
    detector: str,
    budget_s: float,
    tag: str,
    max_delay_s: float | None,
) -> dict[str, Any]:
    """Tune on one half, compare with the running settings on the other."""
    logger = get_run_logger()
    windows = [f for f in files if f.windows]
    if len(windows) < 2:
        logger.info(
            "detector tuning skipped: %d labelled series with an incident (2 needed)", len(windows)
        )
        return {"skipped": "not enough labelled incidents"}
    train_keys, held_keys = two_fold_split(files)
    train = [f for f in files if f.key in set(train_keys)]
    held = [f for f in files if f.key in set(held_keys)]
    current = _active_detector(rt, detector)
    study = open_detector_study(
        rt.engine.url.render_as_string(hide_password=False), detector, data_tag=tag
    )
    run_detector_study(
        study, train, detector, base_params=current, timeout_s=budget_s, max_delay_s=max_delay_s
    )
    front = pareto_front(study, max_delay_s)
    try:
        best = pick(front)
    except ValueError:
        return {"skipped": "no feasible candidate", "study": study.study_name}
    ours = score_params(detector, best.params, held)
    theirs = score_params(detector, current, held)
    won = ours["standard"] > theirs["standard"] or (
        ours["standard"] == theirs["standard"]
        and ours["false_alarms_per_day"] < theirs["false_alarms_per_day"]
    )
    create_table_artifact(
        [
            {
                "trial": c.trial,
                "standard": round(c.standard, 2),
                "false_alarms_per_day": round(c.false_alarms_per_day, 3),
                "mean_delay_s": round(c.mean_delay_s, 1),
                **{k: str(v) for k, v in c.params.items()},
            }
            for c in front
        ],
        key=f"pareto-{detector}",
        description=f"Pareto front of {study.study_name}",
    )
    return {
        "study": study.study_name,
        "trials": len(study.trials),
        "params": best.params,
        "held_out": {"candidate": ours, "running": theirs},
        "won": bool(won),
    }


@task(name="tune-recovery", **_OPTS)
def tune_recovery_task(rt: Runtime, budget_s: float, tag: str) -> dict[str, Any]:
    """Replay recorded crash loops (and synthetic outages) through candidate policies."""
    logger = get_run_logger()
    actions = actions_frame(rt.engine)
    samples, series = recorded_samples(rt, 7)
    up_ids = set(series[series["metric"] == "up"]["series_id"])
    up = samples[samples["series_id"].isin(up_ids)]
    loops = timelines_from_history(up, actions, faults_frame(rt.engine), series=series)
    if len(loops) < 2:
        logger.info("recovery tuning skipped: %d recorded crash loops (2 needed)", len(loops))
        return {"skipped": "not enough recorded crash loops"}
    waits = health_waits_from_actions(actions)
    outages = synthetic_outages(8, seed=len(loops))
    half = len(loops) // 2
    # Both halves also hold the common case (crashes one restart heals), so the cost weighs
    # what users lose over every kind of incident, not only the loops restarts cannot fix.
    quick = single_crashes()
    train = RecoveryTimelines((*loops[::2], *quick), tuple(outages[::2]), tuple(waits[::2]))
    held = RecoveryTimelines((*loops[1::2], *quick), tuple(outages[1::2]), tuple(waits[1::2]))
    r = rt.config.recovery
    current = RecoveryParams(
        r.backoff.base,
        r.backoff.factor,
        r.backoff.cap,
        r.breaker.failure_rate_threshold,
        r.breaker.wait_in_open,
        r.breaker.permitted_in_half_open,
        r.validation_timeout,
    )
    study = open_recovery_study(rt.engine.url.render_as_string(hide_password=False), data_tag=tag)
    result = tune_recovery(study, train, current, timeout_s=budget_s)
    ours = score_recovery(result.best, held)
    theirs = score_recovery(current, held)
    slower = slower_on_single_crashes(result.best, current)
    if slower:
        logger.warning(
            "recovery candidate not promoted: slower than the running settings on %d single "
            "crashes (%s)",
            len(slower),
            slower[0],
        )
    return {
        "study": result.study_name,
        "trials": result.trials,
        "timelines": len(loops),
        "held_out_loops": half,
        "params": result.best.as_dict(),
        "held_out": {"candidate": ours, "running": theirs},
        "slower_on_single_crashes": slower,
        "won": bool(ours["cost"] < theirs["cost"] and not slower),
    }


def overlay(rt: Runtime, detector: str, det: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    """The configuration overlay of what won (the other parts keep their running values)."""
    body: dict[str, Any] = {}
    if det.get("won"):
        specs = [s.model_dump(mode="json") for s in rt.config.detection.detectors]
        for spec in specs:
            if spec["name"] == detector:
                spec["params"] = {**spec["params"], **det["params"]}
        body["detection"] = {"detectors": specs}
    if rec.get("won"):
        p = rec["params"]
        body["recovery"] = {
            "backoff": {"base": p["base"], "factor": p["factor"], "cap": p["cap"]},
            "breaker": {
                "failure_rate_threshold": p["failure_rate_threshold"],
                "wait_in_open": p["wait_in_open"],
                "permitted_in_half_open": int(p["permitted_in_half_open"]),
            },
            "validation_timeout": p["validation_timeout"],
        }
    return body


def promote(
    rt: Runtime, body: dict[str, Any], det: dict[str, Any], rec: dict[str, Any], tag: str
) -> dict[str, Any]:
    """Record the candidate; activate it only when a part of it won on held-back data."""
    metrics = {
        "detector": det.get("held_out"),
        "recovery": rec.get("held_out"),
        "detector_won": det.get("won", False),
        "recovery_won": rec.get("won", False),
    }
    with rt.engine.begin() as conn:
        current = active_version(conn)
        if current is None:
            # The configuration in force becomes version 1, so a rollback has a target.
            create_version(
                conn, {}, "baseline", note="the configuration before tuning", make_active=True
            )
            current = active_version(conn)
        assert current is not None
        if not body:
            vid = create_version(
                conn,
                {},
                "tuning",
                metrics=metrics,
                note=f"{tag}: refused, did not beat the running settings on held-back data",
            )
            return {"version": vid, "activated": False}
        merged = _merge(current.get("body") or {}, body)
        vid = create_version(
            conn,
            merged,
            "tuning",
            metrics=metrics,
            note=f"{tag}: won on held-back data ("
            + ", ".join(k for k in ("detector", "recovery") if metrics[f"{k}_won"])
            + ")",
        )
        activate(conn, vid)
        from storage.audit import audit

        audit(
            conn,
            "config_changed",
            actor="tune",
            action="promote",
            to_version=vid,
            from_version=current["id"],
        )
    return {"version": vid, "activated": True}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    from flows.config_load import _deep_merge

    return _deep_merge(base, extra)


@flow(
    name="tune",
    description="Nightly tuning of detectors (NSGA-II, backtest) and recovery "
    "(CMA-ES, replay); promoted only when better on held-back data.",
)
def tune(
    config_path: str | None = None,
    budget_s: float = 600.0,
    detector: str = "default",
    history_days: float = 7.0,
    nab_data: str | None = None,
    nab_labels: str | None = None,
    data_tag: str | None = None,
    max_delay_s: float | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    t0 = time.monotonic()
    rt = open_runtime(config_path)
    try:
        tag = data_tag or f"{datetime.now(UTC) - timedelta(hours=12):%Y%m%d}"
        files = labelled_files(rt, history_days, nab_data, nab_labels)
        logger.info(
            "tuning on %d labelled series (tag %s, budget %.0f s)", len(files), tag, budget_s
        )
        det = tune_detector_task(rt, files, detector, budget_s * 0.65, tag, max_delay_s)
        left = max(budget_s - (time.monotonic() - t0) - 10, 5)
        rec = tune_recovery_task(rt, min(left, budget_s * 0.25), tag)
        body = overlay(rt, detector, det, rec)
        outcome = promote(rt, body, det, rec, tag)
        summary = {
            "tag": tag,
            "detector": det,
            "recovery": rec,
            **outcome,
            "seconds": round(time.monotonic() - t0, 1),
        }
        create_markdown_artifact(
            _markdown(summary),
            key="tuning-summary",
            description="What the last tuning run found and decided",
        )
        logger.info(
            "tuning: version %s %s",
            outcome["version"],
            "activated" if outcome["activated"] else "recorded, not activated",
        )
        return summary
    finally:
        rt.close()


def _markdown(s: dict[str, Any]) -> str:
    lines = [
        f"## Tuning {s['tag']}: version {s['version']} "
        f"{'activated' if s['activated'] else 'not activated'} ({s['seconds']} s)",
        "",
    ]
    for part in ("detector", "recovery"):
        r = s[part]
        if "skipped" in r:
            lines.append(f"- {part}: skipped ({r['skipped']})")
            continue
        ours, theirs = r["held_out"]["candidate"], r["held_out"]["running"]
        key = "standard" if part == "detector" else "cost"
        lines.append(
            f"- {part}: {r['trials']} trials in `{r['study']}`; held-back {key}: "
            f"candidate {ours[key]:.3f} vs running {theirs[key]:.3f} → "
            f"{'won' if r['won'] else 'lost'}"
        )
    return "\n".join(lines)
