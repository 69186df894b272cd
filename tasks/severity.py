"""Severity levels shared by detection, grouping and the approval rules."""

from __future__ import annotations

from enum import IntEnum


class Severity(IntEnum):
    """Ordered so that ``max()`` and sorting by severity work directly."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Accept ``"high"``, ``"HIGH"``, ``3`` or a Severity; raise ValueError naming the input."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {value!r} (expected one of {names})") from None


def severity_from_z(
    z: float, medium: float = 4.0, high: float = 6.0, critical: float = 10.0
) -> Severity:
    """Map a robust z-score (|x - median| / (1.4826 MAD)) to a severity.

    The cut points sit well above the usual 3-sigma alarm level because a detector
    only asks for a severity once it has already decided the point is anomalous.
    """
    z = abs(z)
    if z >= critical:
        return Severity.CRITICAL
    if z >= high:
        return Severity.HIGH
    if z >= medium:
        return Severity.MEDIUM
    return Severity.LOW
