"""Strategies registered by name; ``custom_strategies`` adds user classes by dotted path."""

from __future__ import annotations

from collections.abc import Iterable

from tasks.plugins import PluginError, PluginLike, as_plugin, check_new_name, load_class
from tasks.recovery.base import RecoveryStrategy


class StrategyRegistry:
    def __init__(self) -> None:
        self._strategies: dict[str, RecoveryStrategy] = {}

    def register(
        self, strategy: RecoveryStrategy, replace: bool = False, option: str = "strategy"
    ) -> None:
        """Add ``strategy``; one whose name is taken is refused unless ``replace``."""
        if not strategy.name or strategy.name == RecoveryStrategy.name:
            raise ValueError(f"{type(strategy).__name__} needs a 'name' class attribute")
        check_new_name(
            "strategy", strategy.name, strategy.name in self._strategies, replace, option
        )
        self._strategies[strategy.name] = strategy

    def get(self, name: str) -> RecoveryStrategy:
        try:
            return self._strategies[name]
        except KeyError:
            raise KeyError(
                f"unknown strategy {name!r}; registered: {', '.join(sorted(self._strategies))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._strategies)

    def ladder(self) -> list[RecoveryStrategy]:
        """Least invasive first (by ``rung``, then name)."""
        return sorted(self._strategies.values(), key=lambda s: (s.rung, s.name))


def default_strategies(custom: Iterable[str | PluginLike] = ()) -> StrategyRegistry:
    """The built-in ladder plus ``custom_strategies``: each a dotted path, or an entry with
    ``path``, constructor ``params`` and ``replace`` (to take a built-in's name)."""
    from tasks.recovery.breaker_strategy import CircuitBreakerStrategy
    from tasks.recovery.genetic import GeneticStrategy
    from tasks.recovery.reconfigure import ReconfigureStrategy
    from tasks.recovery.restart import RestartStrategy

    registry = StrategyRegistry()
    for strategy in (
        RestartStrategy(),
        CircuitBreakerStrategy(),
        ReconfigureStrategy(),
        GeneticStrategy(),
    ):
        registry.register(strategy)
    for i, ref in enumerate(custom):
        plugin, option = as_plugin(ref), f"custom_strategies[{i}]"
        cls = load_class(plugin.path, RecoveryStrategy, option)
        try:
            strategy = cls(**plugin.params)
        except TypeError as exc:
            raise PluginError(
                f"{option}: {plugin.path}: bad parameters {dict(plugin.params)}: {exc}"
            ) from None
        registry.register(strategy, replace=plugin.replace, option=option)
    return registry
