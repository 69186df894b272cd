"""A short real demo run (automated mode): faults are detected and healed end to end, and
the outcomes notebook runs on the database it produced."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_notebook import execute, outputs

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    home = tmp_path_factory.mktemp("demo-home")
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("SELFHEAL_", "PREFECT_API_URL"))
    }
    env.update(
        {
            "SELFHEAL_HOME": str(home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "demo",
            "--mode",
            "automated",
            "--faults",
            "crash,memory_leak",
            # The demo ends when both are decided (about 80 s after start-up); on a loaded
            # machine 130 s once ran out while the leak was being healed.
            "--duration",
            "300",
            "--seed",
            "4",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    results = list(home.glob("demo/*/demo-result.json"))
    assert results, out.stdout[-3000:] + out.stderr[-3000:]
    yield results[0].parent, json.loads(results[0].read_text())


def test_short_demo_detects_and_heals(demo_run: tuple[Path, dict]) -> None:
    _, result = demo_run
    done = [v for v in result["verdicts"]]
    assert [v["fault"] for v in done] == ["crash", "memory_leak"], result
    for v in done:
        assert v["detected"] and v["recovered"], v
        assert v["strategy"] == v["expected_strategy"] == "restart"
    # A short demo (20 s of warm-up) on 2 cores: 1 of 6 runs of this scenario had one false
    # positive at medium severity. The full demo's 0 is measured by bench.demo.
    assert result["false_positives"] <= 1, result["false_positives"]
    assert result["status"]["auto_healing_rate"] is not None


def test_notebook_runs_on_the_demo_database(
    demo_run: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir, _ = demo_run
    from storage.engine import sqlite_url_for

    nb = execute(sqlite_url_for(workdir / "selfheal.db"), monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    images = [o for o in outputs(nb) if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 3
