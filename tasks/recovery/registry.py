"""Strategies registered by name; ``custom_strategies`` adds user classes by dotted path."""

from __future__ import annotations

from collections.abc import Iterable

from tasks.plugins import load_class
from tasks.recovery.base import RecoveryStrategy


class StrategyRegistry:
    def __init__(self) -> None:
        self._strategies: dict[str, RecoveryStrategy] = {}

    def register(self, strategy: RecoveryStrategy) -> None:
        if not strategy.name or strategy.name == RecoveryStrategy.name:
            raise ValueError(f"{type(strategy).__name__} needs a 'name' class attribute")
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


def default_strategies(custom: Iterable[str] = ()) -> StrategyRegistry:
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
    for i, path in enumerate(custom):
        cls = load_class(path, RecoveryStrategy, f"custom_strategies[{i}]")
        registry.register(cls())
    return registry
