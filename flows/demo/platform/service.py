"""One simulated HMS component as a real process.

    python -m flows.demo.platform.service --name proof_engine --port 9101 \
        --log /tmp/proof_engine.log --config /tmp/proof_engine.json \
        [--depends-on http://127.0.0.1:9102] [--rate 20] [--seed 1]

It does a little real work per request (factorising, looking theorems up, evolving a tiny
population) and adds the time a queueing model says the request waited, so its latency,
errors and memory respond to its configuration the way a real service's do:

- service time ``S`` = 30 ms plus 15 ms × the cache miss ratio (working set 1,024 keys);
- with arrival rate ``λ`` = rate × ``load_factor`` and ``pool_size`` workers, utilisation
  is ``ρ = λ·S / pool_size`` and the queueing wait ``S·ρ/(1-ρ)`` (saturated above 1);
- a request slower than ``timeout_ms`` fails; memory grows with ``cache_size``;
- ``hms_health_score`` is the component's own health gauge: how well its configuration
  suits the current request mix (``flows.demo.platform.surface``). The config key
  ``workload_mix`` = ``shifted`` (the ``workload_shift`` fault) switches to a new mix whose
  latency and errors follow that surface: the defaults serve it badly, and only a
  combination of ``pool_size``, ``cache_size`` and ``timeout_ms`` far from them serves it
  as well as the defaults served the old mix.

Endpoints: ``/metrics`` (Prometheus text), ``/health`` (503 during an outage),
``/lookup`` (the repository's API, used by the proof engine), ``/dependency`` (isolate or
restore the dependency: the circuit breaker's hook) and ``/fault`` (fault injection).
The config file is checked every quarter second (a changed modification time is
re-read, like a service that watches its config file); an outage is written into it
(``outage_until``) so it outlives restarts, as an external storage outage would.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flows.demo.platform import surface
from flows.demo.platform.work import evolve, lookup, prove

DEFAULT_CONFIG: dict[str, float] = {
    "pool_size": 8,
    "timeout_ms": 500,
    "cache_size": 256,
    "load_factor": 1.0,
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BASE_SERVICE_S = 0.030
MISS_PENALTY_S = 0.015
WORKING_SET = 1024
BASE_MEMORY = 40_000_000
BYTES_PER_CACHE_ENTRY = 20_000
SHIFTED_BYTES_PER_CACHE_ENTRY = 5_000  # the shifted mix caches small objects


def queue_wait(arrival_rate: float, service_s: float, pool: int) -> float:
    """Mean wait of an M/M/1-like queue per worker (enough to make pool size matter)."""
    rho = arrival_rate * service_s / max(pool, 1)
    if rho >= 0.98:
        return service_s * 49.0  # saturated: requests pile up
    return service_s * rho / (1.0 - rho)


class Component:
    """State and metrics of one simulated component."""

    def __init__(
        self, name: str, config_path: Path, depends_on: str | None, seed: int, rate: float
    ) -> None:
        self.name = name
        self.config_path = config_path
        self.depends_on = depends_on
        self.rate = rate
        self.dependency_enabled = True
        self.rng = random.Random(seed)
        self.gauge_rng = random.Random(seed + 1_000)  # the gauge's noise, apart from requests
        self.config: dict[str, float] = dict(DEFAULT_CONFIG)
        self.outage_until = 0.0
        self.mix = "normal"
        self.config_mtime = 0.0
        self.store: dict[int, str] = {}
        self.faults: dict[str, Any] = {}
        self.leaked = 0
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
        self.score = Gauge(
            "hms_health_score", "How well the configuration suits the request mix", registry=reg
        )
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
            new = {k: float(data.get(k, v)) for k, v in DEFAULT_CONFIG.items()}
            outage = float(data.get("outage_until", 0) or 0)
            mix = str(data.get("workload_mix", "normal"))
            if mix not in surface.OPTIMA:
                raise ValueError(f"workload_mix {mix!r} is not one of {sorted(surface.OPTIMA)}")
        except (ValueError, TypeError, OSError, AttributeError) as exc:
            self.log.error("invalid config file %s: %s; keeping previous", self.config_path, exc)
            return
        if mix != self.mix:
            self.log.warning("request mix changed: %s -> %s", self.mix, mix)
        self.config, self.outage_until, self.mix = new, outage, mix
        self.pool.set(new["pool_size"])
        self.log.info(
            "config loaded: pool_size=%d timeout_ms=%d cache_size=%d",
            new["pool_size"],
            new["timeout_ms"],
            new["cache_size"],
        )

    def in_outage(self) -> bool:
        return time.time() < self.outage_until

    # -- one request ----------------------------------------------------------------
    def service_time(self) -> float:
        hit = min(1.0, self.config["cache_size"] / WORKING_SET)
        return BASE_SERVICE_S + MISS_PENALTY_S * (1.0 - hit)

    def handle_request(self) -> None:
        start = time.perf_counter()
        ok = True
        try:
            self.do_work()
        except Exception as exc:  # noqa: BLE001 - any failure is an error of the request
            ok = False
            self.log.error("request failed: %s", exc)
        load = self.rate * self.config["load_factor"]
        if self.mix == "normal":
            s = self.service_time()
            wait = queue_wait(load, s, int(self.config["pool_size"]))
        else:
            # The new mix: the latency and errors of the old mix at the declared defaults,
            # scaled by how badly the configuration suits the new one.
            r = surface.response(self.config, self.mix)
            s = BASE_SERVICE_S + MISS_PENALTY_S * (1.0 - DEFAULT_CONFIG["cache_size"] / WORKING_SET)
            wait = queue_wait(load, s, int(DEFAULT_CONFIG["pool_size"]))
            s, wait = s * r.latency_factor, wait * r.latency_factor
            if ok and self.rng.random() < r.error_ratio:
                ok = False
                self.log.warning("request failed: back-end call aborted (mix %s)", self.mix)
        noise = self.rng.lognormvariate(0.0, 0.15)
        extra = float(self.faults.get("latency_s", 0.0))
        elapsed = (time.perf_counter() - start) + (s + wait) * noise + extra
        if ok and elapsed * 1000 > self.config["timeout_ms"]:
            ok = False
            self.log.warning(
                "request timeout after %.0f ms (limit %d ms)",
                elapsed * 1000,
                self.config["timeout_ms"],
            )
        n = max(1, round(self.config["load_factor"]))
        self.requests.inc(n)
        for _ in range(min(n, 4)):
            self.latency.observe(elapsed)
        if not ok:
            self.errors.inc(n)
        self.queue.set(load * wait)

    def do_work(self) -> None:
        if self.name.startswith("proof"):
            n = self.rng.randint(10_000, 2_000_000)
            prove(n)
            if self.depends_on and self.dependency_enabled:
                self.call_dependency(n % 997)
        elif self.name.startswith("theorem"):
            if self.in_outage():
                raise RuntimeError("storage backend unavailable")
            lookup(self.store, self.rng.randint(0, 4096), int(self.config["cache_size"]))
        else:
            evolve(self.rng)

    def call_dependency(self, key: int) -> None:
        url = f"{self.depends_on}/lookup?key={key}"
        try:
            with urlopen(url, timeout=1.0) as resp:
                resp.read()
        except HTTPError as exc:
            raise RuntimeError(f"dependency {self.depends_on} answered HTTP {exc.code}") from None
        except URLError as exc:
            raise RuntimeError(
                f"dependency {self.depends_on}: connection refused ({exc.reason})"
            ) from None
        except OSError as exc:
            raise RuntimeError(f"dependency {self.depends_on}: {exc}") from None

    def health_score(self) -> float:
        return surface.noisy_score(self.config, self.mix, self.gauge_rng)

    def memory_bytes(self) -> int:
        per_entry = BYTES_PER_CACHE_ENTRY if self.mix == "normal" else SHIFTED_BYTES_PER_CACHE_ENTRY
        return int(
            BASE_MEMORY
            + self.config["cache_size"] * per_entry
            + self.leaked
            + self.rng.gauss(0, 200_000)
        )


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
    elif kind == "outage":
        until = time.time() + float(body.get("seconds", 60))
        data = json.loads(comp.config_path.read_text())
        data["outage_until"] = until
        comp.config_path.write_text(json.dumps(data))
    elif kind == "unhealthy":
        comp.faults["unhealthy"] = True
    elif kind == "clear":
        comp.faults.clear()
        comp.leaked = 0


def serve(comp: Component, port: int) -> None:
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
                comp.score.set(comp.health_score())
                self._send(
                    200, generate_latest(comp.registry), "text/plain; version=0.0.4; charset=utf-8"
                )
            elif url.path == "/health":
                healthy = not comp.faults.get("unhealthy") and not comp.in_outage()
                self._send(200 if healthy else 503, b"ok" if healthy else b"unhealthy")
            elif url.path == "/lookup":
                if comp.in_outage():
                    self._send(500, b"storage backend unavailable")
                    return
                try:
                    key = int(parse_qs(url.query).get("key", ["0"])[0] or 0)
                except ValueError:
                    self._send(400, b"key must be an integer")
                    return
                value = lookup(comp.store, key, int(comp.config["cache_size"]))
                self._send(200, value.encode())
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


CONFIG_CHECK_S = 0.25  # a stat() per check: cheap, and a trial's settle time can be short


def load_loop(comp: Component, max_backlog: int = 50) -> None:
    """Serve ``rate`` requests per second until stopped.

    Requests arrive on the clock, not when this loop gets the CPU: after a stall (the
    machine is busy) the requests that arrived meanwhile are served in a burst, so the
    request rate a scrape sees does not dip because the simulator was descheduled. Past
    ``max_backlog`` they are dropped and counted as errors, as an overloaded service would.
    """
    interval = 1.0 / comp.rate
    next_config_check = 0.0
    due = time.monotonic()
    leak_at = time.monotonic()
    while True:
        now = time.time()
        if now >= next_config_check:
            comp.reload_config()
            next_config_check = now + CONFIG_CHECK_S
        leak = comp.faults.get("leak_mb_per_s")
        mono = time.monotonic()
        if leak:
            comp.leaked += int(leak * 1_000_000 * (mono - leak_at))
        leak_at = mono
        burst = comp.faults.pop("error_burst", 0)
        for i in range(burst):
            comp.log.error("java.lang.OutOfMemoryError: Java heap space (proof cache block %d)", i)
        arrived = 0
        while due <= mono and arrived < max_backlog:
            comp.handle_request()
            due += interval
            arrived += 1
        if due <= mono:  # still behind after max_backlog: shed the rest
            dropped = int((mono - due) / interval) + 1
            comp.requests.inc(dropped)
            comp.errors.inc(dropped)
            due += dropped * interval
        time.sleep(max(due - time.monotonic(), 0.0))


def _stop(*_: object) -> None:
    logging.shutdown()
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    comp = Component(args.name, config_path, args.depends_on, args.seed, args.rate)
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve(comp, args.port)
    except OSError as exc:
        print(f"{args.name}: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    load_loop(comp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
