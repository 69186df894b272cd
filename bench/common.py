"""Helpers shared by the benchmarks: timing, data set location, result files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def datasets_root() -> Path:
    return Path(os.environ.get("SELFHEAL_DATASETS") or REPO.parent / "shared" / "datasets")


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def write_results(figures: dict[str, float], markdown: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    (RESULTS / "latest.md").write_text(markdown)
    return path


README = REPO / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(markdown: str, readme: Path = README) -> bool:
    """Replace the README's generated performance section (between the markers)."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{markdown.rstrip()}\n{END}{tail}")
    return True
