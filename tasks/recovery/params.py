"""Read and apply a component's tunable parameters through its reconfigure hook."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from storage.recoveries import record_action
from tasks.recovery.base import ComponentSpec, RecoveryContext
from tasks.recovery.commands import run_command
from tasks.recovery.hooks import HookResult, call_http


def clip_values(comp: ComponentSpec, values: dict[str, float]) -> dict[str, float]:
    """Keep only declared parameters, each inside its bounds (and on its step)."""
    return {k: comp.parameters[k].clip(float(v)) for k, v in values.items() if k in comp.parameters}


def defaults(comp: ComponentSpec) -> dict[str, float]:
    return {
        k: p.clip(p.default if p.default is not None else (p.min + p.max) / 2)
        for k, p in comp.parameters.items()
    }


def current_values(
    comp: ComponentSpec, last_applied: dict[str, float] | None = None
) -> dict[str, float]:
    """The values in force: read from the JSON file when that is the hook, else the last
    values we applied, else the declared defaults."""
    values = defaults(comp)
    values.update(clip_values(comp, last_applied or {}))
    hook = comp.reconfigure
    if hook is not None and hook.json_file:
        try:
            data = json.loads(Path(hook.json_file).read_text())
        except (OSError, ValueError):
            return values
        if isinstance(data, dict):
            for k in comp.parameters:
                if isinstance(data.get(k), int | float):
                    values[k] = float(data[k])
    return values


def _render(comp: ComponentSpec, values: dict[str, float]) -> dict[str, int | float]:
    return {k: int(v) if comp.parameters[k].type == "int" else float(v) for k, v in values.items()}


def apply_values(comp: ComponentSpec, values: dict[str, float]) -> HookResult:
    """Apply (bounded) values; a JSON file is rewritten atomically, other keys kept."""
    hook = comp.reconfigure
    if hook is None:
        return HookResult(False, f"{comp.name} has no reconfigure hook")
    rendered = _render(comp, clip_values(comp, values))
    if hook.json_file:
        path = Path(hook.json_file)
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        data.update(rendered)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
        return HookResult(True, f"wrote {rendered} to {path}")
    if hook.command is not None:
        result = run_command(hook.command, extra_args=[f"{k}={v}" for k, v in rendered.items()])
        return HookResult(result.ok, result.describe(), result.output)
    if hook.http is not None:
        return call_http(hook.http, {"parameters": rendered})
    return HookResult(False, "reconfigure hook is empty")


def apply_and_record(
    comp: ComponentSpec,
    values: dict[str, float],
    ctx: RecoveryContext,
    kind: str = "reconfigure",
    **detail: object,
) -> HookResult:
    """Apply values and record the action (with the hook's answer) in the recovery's trail."""
    started = ctx.clock()
    applied = apply_values(comp, values)
    with ctx.engine.begin() as conn:
        record_action(
            conn,
            ctx.recovery_id,
            comp.name,
            kind,
            started,
            applied.ok,
            {"values": values, **detail, "hook": applied.detail},
        )
    return applied
