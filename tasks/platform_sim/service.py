"""One simulated HMS component as a real process.

    python -m tasks.platform_sim.service --name proof_engine --port 9101 \
        --log /tmp/proof_engine.log --config /tmp/proof_engine.json \
        [--depends-on http://127.0.0.1:9102] [--rate 20] [--seed 1]

It serves ``/metrics`` (Prometheus text), ``/health``, ``/lookup`` (the repository's API,
used by dependants), ``/dependency`` (isolate or restore the dependency: the circuit
breaker's hook) and ``/fault`` (fault injection for the demo). Its config file (pool size,
timeout, cache size) is re-read when it changes, which is how reconfiguration acts on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tasks.platform_sim.work import evolve, lookup, prove

DEFAULT_CONFIG = {"pool_size": 8, "timeout_ms": 500, "cache_size": 256}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Component:
    """State and metrics of one simulated component."""

    def __init__(self, name: str, config_path: Path, depends_on: str | None, seed: int) -> None:
        self.name = name
        self.config_path = config_path
        self.depends_on = depends_on
        self.dependency_enabled = True
        self.rng = random.Random(seed)
        self.config = dict(DEFAULT_CONFIG)
        self.config_mtime = 0.0
        self.store: dict[int, str] = {}
        self.faults: dict[str, Any] = {}
        self.leak: list[bytes] = []
        self.recent_errors: deque[float] = deque(maxlen=200)
        self.lock = threading.Lock()
        self.log = logging.getLogger(name)
        reg = CollectorRegistry()
        self.registry = reg
        self.requests = Counter("hms_requests", "Requests handled", registry=reg)
        self.errors = Counter("hms_errors", "Requests that failed", registry=reg)
        self.latency = Histogram(
            "hms_request_latency_seconds", "Request latency", buckets=LATENCY_BUCKETS, registry=reg
        )
        self.memory = Gauge("hms_memory_bytes", "Working set of the component", registry=reg)
        self.queue = Gauge("hms_queue_depth", "Requests waiting for a worker", registry=reg)
        self.pool = Gauge("hms_pool_size", "Configured worker pool size", registry=reg)
        self.up = Gauge("up", "1 while the component serves", registry=reg)
        self.up.set(1)
        self.reload_config()

    # -- configuration -------------------------------------------------------------
    def reload_config(self) -> None:
        try:
            mtime = self.config_path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self.config_mtime:
            return
        self.config_mtime = mtime
        try:
            data = json.loads(self.config_path.read_text())
            new = {k: int(data.get(k, v)) for k, v in DEFAULT_CONFIG.items()}
        except (ValueError, TypeError, OSError) as exc:
            self.log.error("invalid config file %s: %s; keeping previous", self.config_path, exc)
            return
        self.config = new
        self.pool.set(new["pool_size"])
        self.log.info(
            "config loaded: pool_size=%(pool_size)s timeout_ms=%(timeout_ms)s "
            "cache_size=%(cache_size)s",
            new,
        )

    # -- one request ----------------------------------------------------------------
    def handle_request(self, backlog: int) -> None:
        start = time.perf_counter()
        ok = True
        try:
            self.do_work()
        except Exception as exc:  # noqa: BLE001 - any failure is an error of the request
            ok = False
            self.log.error("request failed: %s", exc)
        # Queueing delay: the backlog beyond the pool waits for a free worker.
        pool = max(self.config["pool_size"], 1)
        wait_s = max(backlog - pool, 0) / pool * 0.05
        extra = float(self.faults.get("latency_s", 0.0))
        elapsed = time.perf_counter() - start + wait_s + extra
        if elapsed * 1000 > self.config["timeout_ms"]:
            ok = False
            self.log.warning(
                "request timeout after %.0f ms (limit %d ms)",
                elapsed * 1000,
                self.config["timeout_ms"],
            )
        self.requests.inc()
        self.latency.observe(elapsed)
        if not ok:
            self.errors.inc()

    def do_work(self) -> None:
        if self.name.startswith("proof"):
            n = self.rng.randint(10_000, 2_000_000)
            prove(n)
            if self.depends_on and self.dependency_enabled:
                self.call_dependency(n % 997)
        elif self.name.startswith("theorem"):
            if self.faults.get("failing"):
                raise RuntimeError("storage backend unavailable")
            lookup(self.store, self.rng.randint(0, 4096), self.config["cache_size"])
        else:
            evolve(self.rng)

    def call_dependency(self, key: int) -> None:
        url = f"{self.depends_on}/lookup?key={key}"
        try:
            with urlopen(url, timeout=1.0) as resp:
                resp.read()
        except URLError as exc:
            raise RuntimeError(
                f"dependency {self.depends_on}: connection refused ({exc.reason})"
            ) from None
        except OSError as exc:
            raise RuntimeError(f"dependency {self.depends_on}: {exc}") from None

    def memory_bytes(self) -> int:
        return 40_000_000 + len(self.store) * 2_000 + sum(len(b) for b in self.leak)


def serve(comp: Component, port: int, rate: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep stderr quiet
            return

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                comp.memory.set(comp.memory_bytes())
                self._send(
                    200, generate_latest(comp.registry), "text/plain; version=0.0.4; charset=utf-8"
                )
            elif url.path == "/health":
                healthy = not comp.faults.get("unhealthy")
                self._send(200 if healthy else 503, b"ok" if healthy else b"unhealthy")
            elif url.path == "/lookup":
                if comp.faults.get("failing"):
                    self._send(500, b"storage backend unavailable")
                    return
                key = int(parse_qs(url.query).get("key", ["0"])[0] or 0)
                self._send(200, lookup(comp.store, key, comp.config["cache_size"]).encode())
            else:
                self._send(404, b"not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, b"body must be JSON")
                return
            url = urlsplit(self.path)
            if url.path == "/dependency":
                comp.dependency_enabled = bool(body.get("enabled", True))
                comp.log.warning(
                    "dependency %s %s",
                    comp.depends_on,
                    "restored" if comp.dependency_enabled else "isolated",
                )
                self._send(200, b"ok")
            elif url.path == "/fault":
                apply_fault(comp, body)
                self._send(200, b"ok")
            else:
                self._send(404, b"not found")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    comp.log.info("%s listening on 127.0.0.1:%d", comp.name, port)
    load_loop(comp, rate)


def apply_fault(comp: Component, body: dict[str, Any]) -> None:
    kind = body.get("type")
    comp.log.info("fault injected: %s", kind)
    if kind == "crash":
        comp.log.critical("fatal error: segmentation fault (core dumped)")
        logging.shutdown()
        os._exit(139)
    elif kind == "leak":
        comp.faults["leak_mb_per_s"] = float(body.get("mb_per_s", 20))
    elif kind == "latency":
        comp.faults["latency_s"] = float(body.get("seconds", 1.5))
    elif kind == "error_burst":
        comp.faults["error_burst"] = int(body.get("lines", 200))
    elif kind == "failing":
        comp.faults["failing"] = True
    elif kind == "unhealthy":
        comp.faults["unhealthy"] = True
    elif kind == "clear":
        comp.faults.clear()
        comp.leak.clear()


def load_loop(comp: Component, rate: float) -> None:
    """Generate requests at ``rate`` per second until stopped."""
    interval = 1.0 / rate
    backlog = 0
    next_config_check = 0.0
    while True:
        t0 = time.perf_counter()
        now = time.time()
        if now >= next_config_check:
            comp.reload_config()
            next_config_check = now + 1.0
        leak = comp.faults.get("leak_mb_per_s")
        if leak:
            comp.leak.append(b"x" * int(leak * 1_000_000 * interval))
        burst = comp.faults.pop("error_burst", 0)
        for i in range(burst):
            comp.log.error("OutOfMemoryError: unable to allocate buffer %d for proof cache", i)
        comp.handle_request(backlog)
        spent = time.perf_counter() - t0
        backlog = max(0, backlog + (1 if spent > interval else -1))
        comp.queue.set(backlog)
        time.sleep(max(interval - spent, 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--depends-on", default=None)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(
        filename=args.log,
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03dZ %(levelname)s [%(name)s] %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    logging.Formatter.converter = time.gmtime
    config_path = Path(args.config)
    if not config_path.exists():
        config_path.write_text(json.dumps(DEFAULT_CONFIG))
    try:
        startup = json.loads(config_path.read_text())
    except (OSError, ValueError):
        startup = {}
    if isinstance(startup, dict) and startup.get("crash_on_start"):
        # A configuration this build cannot run with: the process dies at start, as a
        # service with a bad configuration does (a crash loop until someone fixes it).
        logging.getLogger(args.name).critical("fatal: unsupported configuration, exiting")
        logging.shutdown()
        return 3
    comp = Component(args.name, config_path, args.depends_on, args.seed)
    signal.signal(signal.SIGTERM, lambda *_: (logging.shutdown(), sys.exit(0)))
    try:
        serve(comp, args.port, args.rate)
    except OSError as exc:
        print(f"{args.name}: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
