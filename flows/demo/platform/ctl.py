"""Control the simulated platform's processes: the restart command the demo configures.

    python -m flows.demo.platform.ctl restart NAME --state-dir DIR
    python -m flows.demo.platform.ctl stop NAME --state-dir DIR
    python -m flows.demo.platform.ctl status NAME --state-dir DIR

The launcher writes ``DIR/NAME.argv.json`` (how to start the service) and ``DIR/NAME.pid``.
``restart`` stops the running process (TERM, then KILL) and starts a new one detached, in
its own session, so it outlives this command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _pid(state: Path, name: str) -> int | None:
    try:
        return int((state / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def stop(state: Path, name: str, grace: float = 5.0) -> None:
    pid = _pid(state, name)
    if not alive(pid):
        return
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)
        if not alive(pid):
            return


def start(state: Path, name: str) -> int:
    argv = json.loads((state / f"{name}.argv.json").read_text())
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (state / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["restart", "stop", "start", "status"])
    ap.add_argument("name")
    ap.add_argument("--state-dir", required=True, type=Path)
    args = ap.parse_args(argv)
    if not (args.state_dir / f"{args.name}.argv.json").exists():
        print(f"unknown service {args.name!r} in {args.state_dir}", file=sys.stderr)
        return 2
    if args.action in ("restart", "stop"):
        stop(args.state_dir, args.name)
    if args.action in ("restart", "start"):
        pid = start(args.state_dir, args.name)
        print(f"{args.name} started with pid {pid}")
    if args.action == "status":
        running = _pid(args.state_dir, args.name)
        print(f"{args.name}: {'running' if alive(running) else 'stopped'} (pid {running})")
        return 0 if alive(running) else 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
