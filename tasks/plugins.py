"""Loading user code named by a dotted path (custom detectors and strategies)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class PluginError(ValueError):
    """A dotted path that does not name a usable class; the message says why."""


def load_class(path: str, base: type, option: str) -> type:
    """Import ``package.module.Class`` (or ``package.module:Class``) and check its base."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PluginError(f"{option}: {path!r} is not a dotted path such as 'pkg.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - user code may fail in any way on import
        raise PluginError(f"{option}: cannot import {module_name!r} for {path!r}: {exc}") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise PluginError(f"{option}: module {module_name!r} has no {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{option}: {path!r} is not a subclass of {base.__name__}")
    return cls


class PluginLike(Protocol):
    """A user class by dotted path, with constructor parameters and whether it may replace a
    built-in of the same name (the configuration's plugin entries have this shape)."""

    @property
    def path(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def replace(self) -> bool: ...


@dataclass(frozen=True)
class Plugin:
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    replace: bool = False


def as_plugin(ref: str | PluginLike) -> Plugin:
    """A plain dotted path means: no parameters, no replacing."""
    if isinstance(ref, str):
        return Plugin(ref)
    return Plugin(ref.path, dict(ref.params), bool(ref.replace))


def check_new_name(kind: str, name: str, taken: bool, replace: bool, option: str) -> None:
    """Refuse a plugin that would silently shadow a registered ``kind`` of the same name."""
    if taken and not replace:
        raise PluginError(
            f"{option}: a {kind} named {name!r} is already registered; rename the class's "
            f"'name' or set \"replace\": true to replace it"
        )
