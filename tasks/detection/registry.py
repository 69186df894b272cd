"""Detectors registered by name, as Optuna registers samplers: swappable, user-extensible."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tasks.detection.base import BaseDetector
from tasks.plugins import PluginError, PluginLike, as_plugin, check_new_name, load_class


class DetectorRegistry:
    """Name → detector class. Build one with ``default_registry``; no global instance."""

    def __init__(self) -> None:
        self._classes: dict[str, type[BaseDetector]] = {}
        self.custom_names: list[str] = []  # registered from ``custom_detectors``

    def register(
        self,
        cls: type[BaseDetector],
        name: str | None = None,
        replace: bool = False,
        option: str = "detector",
    ) -> None:
        """Add ``cls``; a name that is taken is refused unless ``replace``."""
        key = name or cls.name
        if not key or key == BaseDetector.name:
            raise ValueError(f"{cls.__name__} needs a 'name' class attribute")
        check_new_name("detector", key, key in self._classes, replace, option)
        self._classes[key] = cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[BaseDetector]:
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(
                f"unknown detector {name!r}; registered: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> BaseDetector:
        cls = self.get(name)
        try:
            return cls(**dict(params or {}))
        except TypeError as exc:
            raise ValueError(
                f"detector {name!r}: bad parameters {dict(params or {})}: {exc}"
            ) from None


def builtin_detectors() -> list[type[BaseDetector]]:
    from tasks.detection.timeseries.adaptive import AdaptiveThresholdDetector
    from tasks.detection.timeseries.bocpd import BayesianChangePointDetector
    from tasks.detection.timeseries.contextual import ContextualDetector
    from tasks.detection.timeseries.default import DefaultDetector
    from tasks.detection.timeseries.ensemble import EnsembleDetector
    from tasks.detection.timeseries.esd import GeneralizedESDDetector
    from tasks.detection.timeseries.forecast import ForecastResidualDetector
    from tasks.detection.timeseries.iforest import IsolationForestDetector
    from tasks.detection.timeseries.relentropy import RelativeEntropyDetector
    from tasks.detection.timeseries.zscore import RobustZScoreDetector

    return [
        DefaultDetector,
        RobustZScoreDetector,
        IsolationForestDetector,
        AdaptiveThresholdDetector,
        GeneralizedESDDetector,
        RelativeEntropyDetector,
        BayesianChangePointDetector,
        ForecastResidualDetector,
        ContextualDetector,
        EnsembleDetector,
    ]


def default_registry(custom: Iterable[str | PluginLike] = ()) -> DetectorRegistry:
    """Built-in detectors plus the classes named in ``custom_detectors`` (dotted paths, or
    entries with ``path`` and ``replace``; their parameters go in ``detection.detectors``)."""
    registry = DetectorRegistry()
    for cls in builtin_detectors():
        registry.register(cls)
    for i, ref in enumerate(custom):
        plugin, option = as_plugin(ref), f"custom_detectors[{i}]"
        if plugin.params:
            raise PluginError(
                f"{option}: a detector's parameters go in detection.detectors "
                '({"name": ..., "params": {...}}), not here'
            )
        cls = load_class(plugin.path, BaseDetector, option)
        registry.register(cls, replace=plugin.replace, option=option)
        registry.custom_names.append(cls.name)
    return registry
