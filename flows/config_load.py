"""Load and validate the configuration: file, environment overrides, readable errors.

Every problem is reported at once, each with its option path (``components.db.health.url``),
the bad value and, for misspelt keys, a "did you mean" hint, so one run of
``selfheal config check`` is enough to fix a file.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from flows.config import SelfHealConfig

ENV_PREFIX = "SELFHEAL_"
# Environment variables of ours that are not configuration options.
RESERVED_ENV = {
    "CONFIG",
    "HOME",
    "TEST_DATABASE_URL",
    "DATASETS",
    "PREFECT_DATABASE_URL",
    "PROJECT_DIR",
    "SAVE_SCREENSHOTS",
}


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str
    value: Any = None
    has_value: bool = False
    source: str = ""

    def __str__(self) -> str:
        where = self.path or "(top level)"
        text = f"{where}: {self.message}"
        if self.has_value:
            shown = json.dumps(self.value, default=str)
            if len(shown) > 120:
                shown = shown[:117] + "..."
            text += f" (got {shown})"
        if self.source:
            text += f" [{self.source}]"
        return text


class ConfigError(Exception):
    """Raised with every problem found; ``str()`` lists them one per line."""

    def __init__(self, problems: list[ConfigProblem], origin: str = "") -> None:
        self.problems = problems
        self.origin = origin
        head = f"invalid configuration{f' in {origin}' if origin else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


def _unwrap(annotation: Any) -> Any:
    """Reduce Optional[X], dict[str, X], list[X] to X (as ``("container", X)``)."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (dict, Mapping):
        return ("container", _unwrap_plain(args[1]))
    if origin is list:
        return ("container", _unwrap_plain(args[0]))
    return _unwrap_plain(annotation)


def _unwrap_plain(annotation: Any) -> Any:
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _unwrap_plain(arg)
    return annotation


def _path_to_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk a pydantic error location (which interleaves dict keys and list indexes)."""
    model: Any = SelfHealConfig
    i = 0
    while i < len(loc):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(loc[i]))
        if field is None:
            return None
        target = _unwrap(field.annotation)
        i += 1
        if isinstance(target, tuple):
            i += 1  # skip the dict key or list index
            target = target[1]
        model = target
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def problems_from_validation(exc: ValidationError, source: str = "") -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for err in exc.errors(include_url=False):
        # pydantic adds the validator's name for before/after model validators; drop noise.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            parent = _path_to_model(loc[:-1])
            known = list(parent.model_fields) if parent else []
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            msg = "unknown option"
            if guess:
                msg += f"; did you mean '{guess[0]}'?"
            elif known:
                msg += f"; known options here: {', '.join(known)}"
            problems.append(ConfigProblem(path, msg, source=source))
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        show_value = "input" in err and err["type"] != "missing"
        problems.append(
            ConfigProblem(path, msg, value=err.get("input"), has_value=show_value, source=source)
        )
    return problems


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Turn ``SELFHEAL_A__B=value`` variables into a nested dict of overrides."""
    overrides: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    top_fields = list(SelfHealConfig.model_fields)
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in RESERVED_ENV or key.startswith("DEMO_"):
            continue
        parts = [p.lower() for p in key.split("__")]
        if parts[0] not in top_fields:
            guess = difflib.get_close_matches(parts[0], top_fields, n=1, cutoff=0.6)
            hint = f"; did you mean {ENV_PREFIX}{guess[0].upper()}?" if guess else ""
            problems.append(ConfigProblem(parts[0], f"unknown option{hint}", source=f"env {name}"))
            continue
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(raw)
    return overrides, problems


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON configuration file; every failure is a ConfigError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", f"file not found: {p}")], str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {p}: {exc}")], str(p)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    "", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                )
            ],
            str(p),
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem("", "the top level must be a JSON object", data, True)], str(p)
        )
    return data


def build_config(
    data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    origin: str = "",
) -> SelfHealConfig:
    """Validate ``data`` with environment overrides; raise ConfigError listing every problem."""
    overrides, problems = env_overrides(os.environ if environ is None else environ)
    merged = _deep_merge(dict(data or {}), overrides)
    try:
        config = SelfHealConfig.model_validate(merged)
    except ValidationError as exc:
        problems = problems + problems_from_validation(exc)
        raise ConfigError(problems, origin) from None
    if problems:
        raise ConfigError(problems, origin)
    return config


def config_path_from_env(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    return Path(env) if env else None


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> SelfHealConfig:
    """The configuration from ``path`` (or ``SELFHEAL_CONFIG``), else the defaults, plus env."""
    resolved = config_path_from_env(path) if environ is None else (Path(path) if path else None)
    if resolved is None and environ is not None and environ.get(ENV_PREFIX + "CONFIG"):
        resolved = Path(environ[ENV_PREFIX + "CONFIG"])
    data = read_config_file(resolved) if resolved else {}
    return build_config(data, environ, origin=str(resolved) if resolved else "")
