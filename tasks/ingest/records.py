"""The shape of a batch of samples, and the report every ingest step returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

# A batch of samples is a DataFrame with these columns. ``labels`` holds canonical JSON
# text (storage.metrics.labels_key), ``ts`` epoch milliseconds, ``kind`` the Prometheus type.
SAMPLE_COLUMNS = ["component", "metric", "labels", "ts", "value", "kind"]
MAX_EXAMPLES = 5


def empty_samples() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "component": pd.Series(dtype=object),
            "metric": pd.Series(dtype=object),
            "labels": pd.Series(dtype=object),
            "ts": pd.Series(dtype="int64"),
            "value": pd.Series(dtype="float64"),
            "kind": pd.Series(dtype=object),
        }
    )


@dataclass
class IngestReport:
    """What one ingest step did: rows stored, duplicates skipped, rows rejected and why."""

    source: str
    stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)  # kept, but worth knowing
    error: str | None = None  # the source could not be read at all (e.g. endpoint down)

    def reject(self, reason: str, count: int = 1, example: str | None = None) -> None:
        self.rejected[reason] += count
        if example is not None and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def merge(self, other: IngestReport) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected.update(other.rejected)
        self.notes.update(other.notes)
        for e in other.examples:
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(e)
        if other.error and not self.error:
            self.error = other.error

    def summary(self) -> str:
        text = f"{self.source}: stored {self.stored}, duplicates {self.duplicates}"
        if self.rejected:
            reasons = ", ".join(f"{n} {r}" for r, n in self.rejected.most_common())
            text += f", rejected {self.rejected_total} ({reasons})"
        if self.notes:
            text += ", " + ", ".join(f"{n} {r}" for r, n in self.notes.most_common())
        if self.error:
            text += f", error: {self.error}"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "examples": list(self.examples),
            "notes": dict(self.notes),
            "error": self.error,
        }
