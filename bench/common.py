"""Helpers shared by the benchmarks: timing, data set location, result files."""

from __future__ import annotations

import json
import os
import subprocess
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


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def source_commit() -> str:
    """The commit the benchmarks ran from, with ``+dirty`` when the tree had changes."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def write_results(
    figures: dict[str, float], markdown: str, runs: dict[str, dict[str, object]]
) -> Path:
    """``latest.json`` (figures), ``latest.md`` (the tables) and ``runs.json``: for each
    benchmark, the commit it ran from, when it finished, and whether it was quick."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    (RESULTS / "latest.md").write_text(markdown)
    (RESULTS / "runs.json").write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    return path


def previous_runs() -> dict[str, dict[str, object]]:
    path = RESULTS / "runs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def one_clean_commit(runs: dict[str, dict[str, object]], names: list[str]) -> str | None:
    """The commit every named benchmark ran from, when they agree and it was clean."""
    commits = {str(runs.get(n, {}).get("commit")) for n in names}
    if len(commits) != 1:
        return None
    (commit,) = commits
    return None if commit in ("None", "unknown") or commit.endswith("+dirty") else commit


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
