"""Configuration: the seed's options and defaults, validation that names every problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import SelfHealConfig
from flows.config_load import ConfigError, build_config, load_config

SEED_DEFAULTS = {
    "enabled": True,
    "mode": "supervised",
    "detection_interval": 30,
    "max_concurrent_recoveries": 3,
    "quarantine_period": 600,
    "dashboard_enabled": True,
    "dashboard_port": 8080,
    "notification_webhook": None,
    "log_level": "INFO",
    "metrics_history_days": 7,
    "component_restart_commands": {},
    "custom_detectors": [],
    "custom_strategies": [],
}


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_seed_options_have_seed_defaults() -> None:
    cfg = SelfHealConfig().model_dump(mode="json")
    for key, value in SEED_DEFAULTS.items():
        assert cfg[key] == value, key


def test_seed_example_configuration_loads() -> None:
    cfg = build_config(
        {
            "enabled": True,
            "mode": "supervised",
            "detection_interval": 30,
            "max_concurrent_recoveries": 3,
            "dashboard_enabled": True,
            "dashboard_port": 8080,
            "log_level": "INFO",
            "component_restart_commands": {
                "proof_engine": "systemctl restart hms-proof-engine",
                "theorem_repository": "systemctl restart hms-theorem-repository",
            },
        },
        environ={},
    )
    assert cfg.restart_command_for("proof_engine").argv == [
        "systemctl",
        "restart",
        "hms-proof-engine",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"mode": "fast"}, ["mode:", "'supervised'", '"fast"']),
        ({"detection_interval": -5}, ["detection_interval:", "greater than 0", "-5"]),
        ({"dashboard_port": 70000}, ["dashboard_port:", "65535", "70000"]),
        ({"max_concurrent_recoveries": "three"}, ["max_concurrent_recoveries:", '"three"']),
        ({"quarantine_perod": 60}, ["quarantine_perod:", "did you mean 'quarantine_period'"]),
        ({"components": {"pe": {"helth": {}}}}, ["components.pe.helth", "did you mean 'health'"]),
        ({"notification_webhook": "not a url"}, ["notification_webhook:", "http"]),
        ({"custom_detectors": ["not a path!"]}, ["custom_detectors", "dotted path"]),
    ],
)
def test_each_broken_option_is_named(tmp_path: Path, body: dict, expected: list[str]) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps(body))
    result = check(f)
    assert result.returncode == 2, result.stdout
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.stderr


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(
        json.dumps(
            {
                "mode": "fast",
                "detection_interval": -1,
                "dashboard_port": 0,
                "log_level": 5,
                "metrics_histroy_days": 3,
            }
        )
    )
    result = check(f)
    assert result.returncode == 2
    for option in (
        "mode",
        "detection_interval",
        "dashboard_port",
        "log_level",
        "metrics_histroy_days",
    ):
        assert f"  - {option}" in result.stderr
    assert "did you mean 'metrics_history_days'" in result.stderr


def test_valid_file_prints_resolved_configuration(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"mode": "automated"}))
    result = check(f)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["mode"] == "automated"
    assert resolved["detection_interval"] == 30


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "top level must be a JSON object")],
)
def test_unreadable_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "c.json"
    f.write_text(content)
    result = check(f)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    result = check(tmp_path / "nope.json")
    assert result.returncode == 2
    assert "file not found" in result.stderr


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"mode": "manual", "ingest": {"retries": 1}}))
    cfg = load_config(
        f,
        environ={
            "SELFHEAL_MODE": "learning",
            "SELFHEAL_INGEST__RETRIES": "4",
            "SELFHEAL_DASHBOARD_ENABLED": "false",
        },
    )
    assert cfg.mode == "learning"
    assert cfg.ingest.retries == 4
    assert cfg.dashboard_enabled is False


def test_bad_environment_override_names_variable() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({}, environ={"SELFHEAL_MOOD": "x", "SELFHEAL_DETECTION_INTERVAL": "-1"})
    text = str(err.value)
    assert "SELFHEAL_MOOD" in text and "did you mean SELFHEAL_MODE" in text
    assert "detection_interval" in text


def test_config_path_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"detection_interval": 10}))
    cfg = load_config(None, environ={"SELFHEAL_CONFIG": str(f)})
    assert cfg.detection_interval == 10


def test_component_cross_checks() -> None:
    with pytest.raises(ConfigError, match="unknown component 'nope'"):
        build_config({"components": {"a": {"depends_on": ["nope"]}}}, environ={})
    with pytest.raises(ConfigError, match=r"min .* must be below max"):
        build_config({"components": {"a": {"parameters": {"p": {"min": 5, "max": 1}}}}}, environ={})
    with pytest.raises(ConfigError, match="component name"):
        build_config({"components": {"bad name;rm": {}}}, environ={})


def test_a_healed_incident_is_rechecked_after_the_detectors_longest_smoothing() -> None:
    from flows.demo.platform.launcher import Platform
    from flows.demo.settings import demo_config
    from flows.detect import recheck_after

    # Defaults: cooldown 120 s, side effects 60 s, the cycle detector smooths over 5 min.
    assert recheck_after(SelfHealConfig()) == 300
    demo = build_config(demo_config(Platform(Path("."), services={}), "sqlite://", "automated"))
    assert recheck_after(demo) == 30  # its detector smooths over 30 s
