"""Run an isolate / restore / reconfigure hook: a command or an HTTP call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tasks.ingest.http import redact_url
from tasks.recovery.base import HookSpec, HttpSpec
from tasks.recovery.commands import run_command


@dataclass(frozen=True)
class HookResult:
    ok: bool
    detail: str
    output: str = ""


def call_http(spec: HttpSpec, body: Mapping[str, Any] | None = None) -> HookResult:
    payload = dict(spec.json_body or {})
    payload.update(body or {})
    try:
        resp = httpx.request(
            spec.method,
            spec.url,
            json=payload or None,
            headers=dict(spec.headers),
            timeout=spec.timeout,
        )
    except httpx.HTTPError as exc:
        return HookResult(False, f"{spec.method} {redact_url(spec.url)}: {type(exc).__name__}")
    ok = 200 <= resp.status_code < 300
    return HookResult(
        ok, f"{spec.method} {redact_url(spec.url)} answered {resp.status_code}", resp.text[:1000]
    )


def run_hook(
    hook: HookSpec, args: Sequence[str] = (), body: Mapping[str, Any] | None = None
) -> HookResult:
    if hook.command is not None:
        result = run_command(hook.command, extra_args=args)
        return HookResult(result.ok, result.describe(), result.output)
    if hook.http is not None:
        return call_http(hook.http, body)
    return HookResult(False, "hook has neither a command nor an HTTP call")
