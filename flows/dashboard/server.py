"""The dashboard's web server: a Starlette app on uvicorn, in a thread or in the foreground.

Routes: ``/`` (the page), ``/api/summary`` (headline figures as JSON, polled by the page),
``/healthz`` and ``/metrics`` (Prometheus text format, ``flows.metrics_endpoint``).
Query parameters of the first two:
``minutes`` (window, 5–1440), ``end`` (ISO time; default now), ``component`` (repeatable),
``refresh`` (seconds, 0 = off).

The listening socket is bound before uvicorn starts, so a port in use fails in the caller
(with the port in the message) instead of silently in a thread, and port 0 picks a free
port that ``url`` then reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from flows.dashboard.data import ViewOptions, load_records, load_snapshot
from flows.dashboard.page import render, tiles
from flows.dashboard.views import build_dashboard, summary
from flows.metrics_endpoint import exposition, registry_for
from flows.runtime import Runtime, open_runtime
from storage.metrics import component_names

log = logging.getLogger("selfheal.dashboard")

MIN_MINUTES, MAX_MINUTES = 5, 1440
NO_STORE = {"Cache-Control": "no-store"}


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(value))) if value is not None else default
    except ValueError:
        return default


def _time(value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        t = pd.Timestamp(value)
    except ValueError:
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def options_from(request: Request, base: ViewOptions) -> ViewOptions:
    """The page's options from its query string, clamped (a bad value falls back)."""
    q = request.query_params
    return dataclasses.replace(
        base,
        minutes=_int(q.get("minutes"), base.minutes, MIN_MINUTES, MAX_MINUTES),
        end=_time(q.get("end")),
        components=tuple(q.getlist("component")),
        refresh_s=_int(q.get("refresh"), base.refresh_s, 0, 3600),
    )


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def build_app(rt: Runtime, base: ViewOptions | None = None) -> Starlette:
    """The ASGI app over an open runtime (its engine is only read through ``storage``)."""
    base = base or ViewOptions(key_metrics=tuple(rt.config.detection.key_metrics))

    def page(request: Request) -> Response:
        opts = options_from(request, base)
        snapshot = load_snapshot(rt.engine, opts, _now())
        view = build_dashboard(snapshot, opts.minutes, rt.config_path)
        return HTMLResponse(render(view, opts.refresh_s), headers=NO_STORE)

    def api_summary(request: Request) -> Response:
        opts = options_from(request, base)
        s = summary(load_records(rt.engine, opts, _now()))
        return JSONResponse({**s.as_dict(), "tiles": tiles(s)}, headers=NO_STORE)

    registry = registry_for(rt)

    def metrics(request: Request) -> Response:
        body, ctype = exposition(registry)
        return Response(body, headers={"Content-Type": ctype, **NO_STORE})

    def healthz(request: Request) -> Response:
        try:
            count = len(component_names(rt.engine))
        except Exception as exc:  # noqa: BLE001 - any database failure is "unhealthy"
            return JSONResponse({"status": "error", "error": str(exc)[:300]}, status_code=503)
        return JSONResponse({"status": "ok", "components": count})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/summary", api_summary),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ]
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise OSError(f"dashboard cannot listen on {host}:{port}: {exc.strerror}") from exc


class DashboardServer:
    """The dashboard on ``host:port``: ``start_in_thread``/``stop`` beside ``selfheal
    serve``, or ``serve_forever`` for ``selfheal dashboard``."""

    def __init__(
        self,
        config_path: str | None,
        port: int = 8080,
        host: str = "127.0.0.1",
        *,
        refresh_s: int = 15,
    ) -> None:
        self.config_path = config_path
        self.host = host
        self.port = port
        self.refresh_s = refresh_s
        self._rt: Runtime | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self, *, any_port_if_taken: bool = False) -> int:
        """Take the port now (before ``start_in_thread``), so nothing started in between
        can take it; with ``any_port_if_taken`` a busy port falls back to a free one.
        Returns the port bound."""
        if self._sock is None:
            try:
                self._sock = _bind(self.host, self.port)
            except OSError:
                if not any_port_if_taken:
                    raise
                self._sock = _bind(self.host, 0)
            self.port = self._sock.getsockname()[1]
        return self.port

    def _prepare(self) -> uvicorn.Server:
        if self._server is not None:
            raise RuntimeError("dashboard already started")
        self.bind()
        try:
            self._rt = open_runtime(self.config_path)
            base = ViewOptions(
                key_metrics=tuple(self._rt.config.detection.key_metrics),
                refresh_s=self.refresh_s,
            )
            config = uvicorn.Config(
                build_app(self._rt, base),
                log_config=None,  # leave the process's logging (Prefect's) alone
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        except BaseException:
            self._close()
            raise
        self._server = uvicorn.Server(config)
        return self._server

    def start_in_thread(self, timeout: float = 20.0) -> None:
        """Serve in a daemon thread; returns once the server accepts connections."""
        server = self._prepare()
        sock = self._sock
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="selfheal-dashboard", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dashboard did not start on {self.url}")
            time.sleep(0.02)
        log.info("dashboard on %s", self.url)

    def serve_forever(self, ready: Callable[[str], None] | None = None) -> None:
        """Serve in this thread until Ctrl-C or SIGTERM (uvicorn handles both);
        ``ready`` gets the URL once the port is bound (useful with port 0)."""
        server = self._prepare()
        if ready is not None:
            ready(self.url)
        try:
            server.run(sockets=[self._sock])  # type: ignore[list-item]
        finally:
            self._close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the port and the database; safe to call twice."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None and thread.is_alive():
            thread.join(timeout / 2)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout / 2)
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._rt is not None:
            self._rt.close()
            self._rt = None
        self._server = None
        self._thread = None

    def __enter__(self) -> DashboardServer:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_dashboard(config_path: str | None, port: int | None = None, host: str = "127.0.0.1") -> int:
    """``selfheal dashboard``: serve until interrupted; the port defaults to the
    configuration's ``dashboard_port``. Returns the process exit code."""
    if port is None:
        from flows.config_load import load_config

        port = load_config(config_path).dashboard_port
    server = DashboardServer(config_path, port=port, host=host)
    # uvicorn re-raises the signal it handled once it has shut down: that is the normal end.
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(lambda url: print(f"dashboard on {url} (Ctrl-C stops)", flush=True))
    return 0
