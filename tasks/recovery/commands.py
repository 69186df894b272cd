"""Run a configured command safely.

- The argument list comes from configuration only and is executed without a shell: text
  from metrics or logs never reaches a command line (component names are checked by the
  configuration, and nothing else is ever interpolated).
- The command runs in its own process group; at its timeout the whole group is killed
  (TERM, then KILL after a grace period), so children it spawned die with it.
- Output is captured and truncated, so a chatty command cannot fill memory or the
  database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OUTPUT_LIMIT = 4000
KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class CommandSpec:
    argv: tuple[str, ...]
    timeout: float = 30.0
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None  # None when it had to be killed
    timed_out: bool
    duration_s: float
    output: str  # stdout and stderr, interleaved, truncated
    error: str | None = None  # could not start at all

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.returncode == 0

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return f"{self.argv[0]} timed out after {self.duration_s:.1f} s and was killed"
        return f"{self.argv[0]} exited with {self.returncode} after {self.duration_s:.1f} s"


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - limit} characters cut]…\n{text[-half:]}"


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the process group, then KILL what is left after a grace period."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            proc.poll()  # reap our child, or it stays in the group as a zombie
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run_command(
    spec: CommandSpec, extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run ``spec.argv + extra_args``; never raises for a failing or hanging command."""
    argv = tuple(spec.argv) + tuple(extra_args)
    env = {**os.environ, **dict(spec.env), **dict(extra_env or {})}
    start = time.monotonic()
    # Output goes to a file, not a pipe: a restart command that leaves a daemon behind
    # (which inherits the descriptor) must not make us wait for that daemon's EOF.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                shell=False,
            )
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            return CommandResult(
                argv, None, False, 0.0, "", error=f"cannot start {argv[0]!r}: {reason}"
            )
        try:
            proc.wait(timeout=spec.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait()
            timed_out = True
        duration = time.monotonic() - start
        out.seek(0)
        text = out.read(OUTPUT_LIMIT * 4).decode("utf-8", errors="replace")
    return CommandResult(
        argv, None if timed_out else proc.returncode, timed_out, duration, truncate(text)
    )
