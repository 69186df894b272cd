"""Saturation rules: a resource almost used up fires after its hold time, as an alerting
rule with ``for`` does; the host's resource series themselves are only context."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from flows.config_load import ConfigError, build_config
from flows.detect import persist_detection, run_shard
from storage.issues import issues_frame
from tasks.detection.saturation import NODE_RULES, SaturationRule, detect_saturation
from tasks.issues.grouping import GroupingPolicy
from tests.test_detection_steps import NOW, NOW_MS, plan, samples, store

RULE = SaturationRule("filesystem space", "avail", "size", 0.05, 0.03, 1800.0)
STEP_MS = 10_000


def series(values: np.ndarray) -> pd.Series:
    ts = NOW_MS - (len(values) - 1 - np.arange(len(values))) * STEP_MS
    return pd.Series(values, index=pd.to_datetime(ts, unit="ms", utc=True))


def fs(left: np.ndarray, size: float = 100.0, labels: str = "{}") -> dict:
    return {("avail", labels): series(left), ("size", labels): series(np.full(len(left), size))}


def test_a_shortage_fires_once_it_has_held_for_its_hold_time() -> None:
    left = np.r_[np.full(120, 50.0), np.full(240, 4.0)]  # 20 min fine, then 40 min at 4 %
    found = detect_saturation("host", fs(left), 0, [RULE])
    short_from = NOW_MS - 239 * STEP_MS
    assert found[0].ts_ms == short_from + 1800 * 1000
    assert len(found) == 240 - 180
    assert {(a.kind, a.severity, a.signature) for a in found} == {
        ("saturation", "high", "filesystem space")
    }
    assert "4.0%" in found[0].details["reason"]
    # Only what is after the watermark is reported.
    assert len(detect_saturation("host", fs(left), NOW_MS - 5 * STEP_MS, [RULE])) == 5


def test_critical_below_the_critical_fraction_and_quiet_for_short_dips() -> None:
    left = np.r_[np.full(120, 50.0), np.full(240, 2.0)]
    assert {a.severity for a in detect_saturation("host", fs(left), 0, [RULE])} == {"critical"}
    dip = np.r_[np.full(300, 50.0), np.full(60, 1.0)]  # 10 minutes short: not yet
    assert detect_saturation("host", fs(dip), 0, [RULE]) == []
    flapping = np.tile(np.r_[np.full(30, 4.0), [50.0]], 12)  # never 30 min in a row
    assert detect_saturation("host", fs(flapping), 0, [RULE]) == []
    assert detect_saturation("host", fs(np.zeros(360), size=0.0), 0, [RULE]) == []


def test_each_filesystem_is_paired_with_its_own_capacity() -> None:
    gauges = fs(np.full(360, 1.0), labels='{"mountpoint":"/data"}')
    gauges.update(fs(np.full(360, 60.0), labels='{"mountpoint":"/"}'))
    gauges[("avail", '{"mountpoint":"/tmp"}')] = series(np.full(360, 1.0))  # no capacity
    found = detect_saturation("host", gauges, 0, [RULE])
    assert {a.signature for a in found} == {'filesystem space {"mountpoint":"/data"}'}
    snap = '{"mountpoint":"/snap/core"}'
    gauges.update(fs(np.zeros(360), labels=snap))  # a read-only image: always full
    gauges[("readonly", snap)] = series(np.ones(360))
    gauges[("readonly", '{"mountpoint":"/data"}')] = series(np.zeros(360))
    exempt = SaturationRule(**{**RULE.__dict__, "unless": "readonly"})
    found = detect_saturation("host", gauges, 0, [exempt])
    assert {a.signature for a in found} == {'filesystem space {"mountpoint":"/data"}'}


def test_a_full_disk_opens_an_issue_and_a_memory_move_does_not(engine: Engine) -> None:
    rng = np.random.default_rng(5)
    n = 360  # an hour of 10 s scrapes
    size = 1e11
    avail = np.r_[np.full(n - 240, 0.4 * size), np.linspace(0.02, 0.01, 240) * size]
    memory = 4e9 + rng.normal(0, 1e6, n)
    memory[-3:] = 9e9
    data = {"device": "/dev/sdb1", "fstype": "ext4", "mountpoint": "/data"}
    store(
        engine,
        samples("host", "node_filesystem_avail_bytes", avail, labels=data),
        samples("host", "node_filesystem_size_bytes", np.full(n, size), labels=data),
        samples("host", "node_memory_Active_bytes", memory),
        samples("host", "up", np.ones(n)),
    )
    found = run_shard(engine, plan(("host",))).anomalies
    assert {a.kind for a in found} == {"saturation", "context"}
    assert {a.severity for a in found if a.kind == "saturation"} == {"critical"}
    persist_detection(engine, found, {}, NOW + timedelta(seconds=1), GroupingPolicy(), {})
    issues = issues_frame(engine)
    assert issues[["kind", "severity"]].values.tolist() == [["saturation", "critical"]]
    assert "/data" in issues.iloc[0]["signature"]


def test_saturation_rules_from_the_configuration() -> None:
    cfg = build_config({})
    assert [r.rule(cfg.detection.lookback) for r in cfg.detection.saturation] == list(NODE_RULES)
    short = build_config({"detection": {"lookback": 600}})
    assert {r.rule(600).for_s for r in short.detection.saturation} == {600.0}
    assert build_config({"detection": {"saturation": []}}).detection.saturation == []
    with pytest.raises(ConfigError, match="critical"):
        build_config(
            {
                "detection": {
                    "saturation": [
                        {"name": "x", "left": "a", "capacity": "b", "warning": 0.1, "critical": 0.2}
                    ]
                }
            }
        )
