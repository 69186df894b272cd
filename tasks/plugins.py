"""Loading user code named by a dotted path (custom detectors and strategies)."""

from __future__ import annotations

import importlib


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
