"""Approving in the Prefect UI itself: the waiting run's page shows the form; submitting it
resumes the run and the recovery happens (real server, real UI, headless Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.demo.platform.launcher import start_platform, wait_healthy
from storage.approvals import approvals_frame
from storage.engine import make_engine, sqlite_url_for
from storage.recoveries import recoveries_frame
from tests.browser import Browser, require_chromium
from tests.prefect_stack import REPO, PrefectStack, wait_until

pytestmark = pytest.mark.integration
SAVE = os.environ.get("SELFHEAL_SAVE_SCREENSHOTS") == "1"  # read before conftest clears it

TOGGLE_JS = """
(() => {
  const label = Array.from(document.querySelectorAll('[role=dialog] *'))
      .find(e => e.children.length === 0 && e.textContent.trim().startsWith('Approve ('));
  let box = label;
  for (let i = 0; i < 6 && box; i++) {
    const sw = box.parentElement && box.parentElement.querySelector(
        'button[role=switch], input[type=checkbox], [role=switch]');
    if (sw) { sw.click(); return true; }
    box = box.parentElement;
  }
  return false;
})()
"""

REASON_JS = """
(() => {
  const area = document.querySelector('[role=dialog] textarea');
  if (!area) return false;
  const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
  setter.call(area, 'approved in the Prefect UI');
  area.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
})()
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[PrefectStack]:
    s = PrefectStack(tmp_path / "stack")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_approve_from_the_prefect_ui_form(stack: PrefectStack, tmp_path: Path) -> None:
    require_chromium()
    platform = start_platform(tmp_path / "platform", names=("genetic_optimizer",))
    svc = platform.services["genetic_optimizer"]
    try:
        serve_cfg = tmp_path / "serve.json"
        serve_cfg.write_text(json.dumps({"database_url": sqlite_url_for(tmp_path / "s.db")}))
        stack.start_serve(serve_cfg)
        db = sqlite_url_for(tmp_path / "selfheal.db")
        cfg = tmp_path / "selfheal.json"
        cfg.write_text(
            json.dumps(
                {
                    "database_url": db,
                    "components": {
                        "genetic_optimizer": {
                            "metrics_url": f"{svc.url}/metrics",
                            "health": {"url": f"{svc.url}/health"},
                            "restart_command": svc.restart_argv,
                        }
                    },
                    "detection": {"group_wait": 0, "behaviour": False},
                }
            )
        )
        from flows.cycle import cycle

        cycle(str(cfg))
        assert svc.pid is not None
        os.killpg(svc.pid, signal.SIGKILL)
        wait_until(lambda: not svc.alive(), 10, "the kill")
        result = cycle(str(cfg))
        run_id, approval_id = result["started"][0], result["asked"][0]
        wait_until(lambda: stack.run_state(run_id) == "Suspended", 90, "the suspension")
        with Browser() as browser:
            page = browser.new_page()
            page.navigate(f"{stack.server.ui_url}/runs/flow-run/{run_id}")
            page.wait_for(
                "Array.from(document.querySelectorAll('button'))"
                ".some(b => b.innerText.trim() === 'Resume')",
                timeout=60,
            )
            page.evaluate(
                "Array.from(document.querySelectorAll('button'))"
                ".find(b => b.innerText.trim() === 'Resume').click()"
            )
            page.wait_for("!!document.querySelector('[role=dialog] textarea')", timeout=30)
            text = page.evaluate("document.querySelector('[role=dialog]').innerText")
            assert "Approve recovery of genetic_optimizer?" in text
            assert approval_id in text and "Proposed action" in text
            assert "Approve" in text and "Reason" in text
            assert page.evaluate(TOGGLE_JS), "the approve switch was not found"
            assert page.evaluate(REASON_JS)
            time.sleep(0.5)
            shot = page.screenshot(tmp_path / "approval-form.png", full_page=False)
            if SAVE:
                dest = REPO / "docs" / "img" / "approval-form.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, dest)
            page.evaluate(
                "Array.from(document.querySelectorAll('[role=dialog] button'))"
                ".find(b => b.innerText.trim() === 'Submit').click()"
            )
            # Keep the browser open until the UI's resume call has reached the server.
            wait_until(lambda: stack.run_state(run_id) != "Suspended", 60, "the UI's resume")
        wait_until(svc.alive, 120, "the restart after approving in the UI")
        assert wait_healthy(svc.url, 30)
        engine = make_engine(db)
        try:
            wait_until(
                lambda: "succeeded" in recoveries_frame(engine)["status"].tolist(),
                90,
                "the recovery to be recorded",
            )
            appr = approvals_frame(engine).iloc[0]
            assert (appr["decision"], appr["decided_by"], appr["reason"]) == (
                "approved",
                "prefect-ui",
                "approved in the Prefect UI",
            )
        finally:
            engine.dispose()
    finally:
        platform.stop()
