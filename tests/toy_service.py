"""A tiny real service whose health is a known function of its config file's parameters.

    python -m tests.toy_service --port P --config FILE [--optimum x=3,y=7] [--width 2]

``/metrics`` exposes ``toy_health_score`` = 1 / (1 + Σ ((v - optimum) / width)²) over the
parameters named in ``--optimum`` (read from the config file at every scrape), plus a
request counter; ``/health`` answers 200 (503 when the score is below ``--unhealthy-below``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def score(config: Path, optimum: dict[str, float], width: float) -> float:
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        return 0.0
    total = sum(((float(values.get(k, 0.0)) - t) / width) ** 2 for k, t in optimum.items())
    return 1.0 / (1.0 + total)


@contextmanager
def running_toy(
    folder: Path, config: dict[str, object], optimum: str, width: float
) -> Iterator[tuple[str, Path]]:
    """Start this service on a free port with ``config`` written to ``folder/toy.json``;
    yields ``(base_url, config_path)`` once it answers, and kills it afterwards."""
    from flows.demo.platform.launcher import free_port, wait_healthy

    port = free_port()
    cfg = folder / "toy.json"
    cfg.write_text(json.dumps(config))
    args = ["--port", str(port), "--config", str(cfg), "--optimum", optimum, "--width", str(width)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.toy_service", *args], cwd=REPO, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, 15), f"the toy service on {url} did not answer in 15 s"
        yield url, cfg
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--optimum", default="x=3,y=7")
    ap.add_argument("--width", type=float, default=2.0)
    ap.add_argument("--unhealthy-below", type=float, default=0.0)
    args = ap.parse_args()
    optimum = {k: float(v) for k, v in (p.split("=") for p in args.optimum.split(","))}
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            return

        def do_GET(self) -> None:
            s = score(args.config, optimum, args.width)
            served[0] += 1
            if self.path == "/metrics":
                body = (
                    f"# TYPE toy_health_score gauge\ntoy_health_score {s}\n"
                    f"# TYPE toy_requests_total counter\ntoy_requests_total {served[0]}\n"
                )
                code = 200
            elif self.path == "/health":
                code = 200 if s >= args.unhealthy_below else 503
                body = "ok" if code == 200 else "unhealthy"
            else:
                code, body = 404, "not found"
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
