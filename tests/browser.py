"""Headless Chromium driven over the DevTools protocol (CDP), with ``websockets`` only.

Generic on purpose: the dashboard test uses it, and so can any test that has to look at
a real page (e.g. the Prefect UI's approval form). No Selenium, no driver binaries:

    with Browser() as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:8080/")
        page.wait_for("document.querySelectorAll('svg').length > 0")
        page.click("a.ui-link")
        page.screenshot(tmp_path / "page.png")

The browser runs in its own process group with a fresh profile directory; ``close`` (also
on ``__exit__``, so on any test failure) kills the whole group and removes the profile.
``require_chromium`` skips the calling test, naming the Debian package, when there is no
Chromium.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

DEBIAN_PACKAGE = "chromium"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
# Headless, and quiet on a closed network: without the background-networking flags
# Chromium keeps trying to reach Google services.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
MAX_SCREENSHOT_HEIGHT = 16384


class CDPError(RuntimeError):
    """A DevTools command failed, or a page script threw."""


def find_chromium() -> str | None:
    """``SELFHEAL_CHROMIUM`` if set, else the first Chromium/Chrome on ``PATH``."""
    explicit = os.environ.get("SELFHEAL_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium executable, or skip the calling test with how to install it."""
    import pytest

    exe = find_chromium()
    if exe is None:
        pytest.skip(
            f"Chromium not found: install the Debian package '{DEBIAN_PACKAGE}' "
            f"(apt-get install {DEBIAN_PACKAGE}) or set SELFHEAL_CHROMIUM"
        )
    return exe


class Page:
    """One tab, over its own DevTools websocket. Not thread-safe: one test, one page."""

    def __init__(self, ws_url: str, target_id: str, timeout: float = 30.0) -> None:
        self.target_id = target_id
        self.timeout = timeout
        self._ws: ClientConnection = connect(ws_url, max_size=None, open_timeout=timeout)
        self._ids = itertools.count(1)
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self.send("Page.enable")
        self.send("Runtime.enable")

    # -- protocol -------------------------------------------------------------------
    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a command and return its result; events that arrive meanwhile are kept."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self._recv(deadline, method)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error'].get('message', msg['error'])}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def _recv(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer to {waiting_for} in time")
        try:
            raw = self._ws.recv(timeout=left)
        except TimeoutError:
            raise TimeoutError(f"no answer to {waiting_for} in time") from None
        return json.loads(raw)

    def wait_event(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """The next ``name`` event (one already received counts), its params."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self._events):
                if ev["method"] == name:
                    del self._events[i]
                    return ev.get("params", {})
            msg = self._recv(deadline, name)
            if "method" in msg:
                self._events.append(msg)

    # -- actions --------------------------------------------------------------------
    def navigate(self, url: str, timeout: float | None = None) -> None:
        """Load ``url`` and wait for its load event; a failed load raises ``CDPError``."""
        self._events.clear()
        result = self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise CDPError(f"cannot load {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)
        # The load event can be a previous navigation's (a click that navigated, whose
        # event came after the clear): wait until this URL's document is complete. Seen:
        # a screenshot taken right after navigate() was an empty 87-byte PNG.
        self.wait_for(
            f"location.href === new URL({json.dumps(url)}).href"
            " && document.readyState === 'complete'",
            timeout or self.timeout,
        )

    def evaluate(self, expression: str, await_promise: bool = True) -> Any:
        """Evaluate JavaScript in the page and return its value as JSON (None for undefined)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"script failed: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, predicate: str, timeout: float = 10.0, interval: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(CDPError):  # e.g. evaluated during a navigation
                value = self.evaluate(predicate)
                if value:
                    return value
            time.sleep(interval)
        raise TimeoutError(f"{predicate!r} still {value!r} after {timeout} s")

    def click(self, selector: str) -> None:
        """Click the first element matching a CSS selector (via its ``click()``)."""
        found = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) { return false; } el.scrollIntoView(); el.click(); return true; })()"
        )
        if not found:
            raise CDPError(f"no element matches {selector!r}")

    def screenshot(self, path: str | os.PathLike[str], full_page: bool = True) -> Path:
        """Save a PNG of the viewport, or of the whole page (capped in height)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": max(1, int(size["width"])),
                "height": max(1, min(int(size["height"]), MAX_SCREENSHOT_HEIGHT)),
                "scale": 1,
            }
        data = self.send("Page.captureScreenshot", params, timeout=max(self.timeout, 60))["data"]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()


class Browser:
    """A headless Chromium process with a fresh profile, controlled over CDP."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        width: int = 1280,
        height: int = 900,
        timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError(f"no Chromium: install the Debian package {DEBIAN_PACKAGE!r}")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="selfheal-chromium-")
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._ws_url: str | None = None
        self._ready = threading.Event()
        self._pages: list[Page] = []
        self._browser_ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        try:
            self._proc = self._launch(exe, width, height, extra_args)
        except BaseException:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise
        self._drainer = threading.Thread(target=self._drain, name="chromium-stderr", daemon=True)
        self._drainer.start()
        try:
            if not self._ready.wait(timeout) or self._ws_url is None:
                raise RuntimeError(
                    "Chromium did not report its DevTools endpoint; stderr:\n"
                    + "\n".join(self._stderr)
                )
            self._browser_ws = connect(self._ws_url, max_size=None, open_timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _launch(
        self, exe: str, width: int, height: int, extra_args: tuple[str, ...]
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                exe,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                *extra_args,
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: close() kills all of it
        )

    def _drain(self) -> None:
        """Read stderr to the end (a full pipe would block Chromium); spot the endpoint."""
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and self._ws_url is None:
                self._ws_url = match.group(1)
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    @property
    def endpoint(self) -> str:
        """``host:port`` of the DevTools server."""
        assert self._ws_url is not None
        return self._ws_url.split("/")[2]

    def _browser_call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._browser_ws is not None
        msg_id = next(self._ids)
        self._browser_ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self._browser_ws.recv(timeout=deadline - time.monotonic()))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})
        raise TimeoutError(f"no answer to {method}")

    def new_page(self) -> Page:
        """A new blank tab."""
        target = self._browser_call("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = Page(f"ws://{self.endpoint}/devtools/page/{target}", target, self.timeout)
        self._pages.append(page)
        return page

    def close(self) -> None:
        """Close pages and connections, kill the process group, remove the profile."""
        for page in self._pages:
            page.close()
        self._pages.clear()
        if self._browser_ws is not None:
            with contextlib.suppress(Exception):
                self._browser_ws.close()
            self._browser_ws = None
        if self._proc.poll() is None:
            self._kill_group(signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGKILL)
                self._proc.wait(5)
        else:
            self._kill_group(signal.SIGKILL)  # helpers outliving the main process
        self._drainer.join(5)  # the pipe reaches its end once the group is gone
        if self._proc.stderr is not None and not self._drainer.is_alive():
            self._proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _kill_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
