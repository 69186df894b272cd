"""``make bench``: run every benchmark, write bench/results/latest.json and latest.md.

Each benchmark measures its own baseline in the same run (these machines are noisy), so
read the ratios rather than the absolute figures. A module declares which of its figures
is the baseline of which in ``BASELINES`` (figure → baseline figure); the runner prints
those pairs with their ratio after the full list. ``--quick`` (``make bench QUICK=1``)
runs CI-sized versions of the same code paths.

``bench/results/runs.json`` records, per benchmark, the commit it ran from and when. The
README's generated section is rewritten only by a full run of every benchmark from one clean
commit, and says which commit and when, so its table is never stitched from different runs
of different code. A module may declare ``SAMPLE`` (figure → what data its parameters were
chosen on: "in sample: …" / "out of sample: …"), shown beside the headline figures.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from datetime import UTC, datetime

from bench.common import (
    RESULTS,
    one_clean_commit,
    previous_runs,
    source_commit,
    update_readme,
    write_results,
)
from flows.prefect_server import drain_prefect_clients

# Order: cheap first. Each module exposes run(quick: bool) -> dict[str, float].
BENCHMARKS = [
    "ingest",
    "loghub",
    "nab",
    "detect",
    "tune",
    "genetic",
    "retention",
    "storm",
    "load",
    "serve",
    "demo",
    "real",  # a real PostgreSQL and its exporter (skips when they are missing)
]


def shown(value: float) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "-"


def baseline_rows(figures: dict[str, float], baselines: dict[str, str]) -> list[tuple[str, ...]]:
    """(figure, value, baseline figure, baseline value, ratio) for every declared pair."""
    return [
        (key, shown(figures[key]), base, shown(figures[base]), ratio(figures[key], figures[base]))
        for key, base in baselines.items()
        if key in figures and base in figures
    ]


def provenance_line(runs: dict[str, dict[str, object]], names: list[str]) -> str:
    """Where the figures come from: file, commit(s) and the time of the last benchmark."""
    commits = sorted({str(runs[n].get("commit")) for n in names if n in runs})
    last = max((str(runs[n].get("finished")) for n in names if n in runs), default="?")
    return (
        f"Source: `bench/results/latest.json`, commit {', '.join(commits) or '?'}, finished {last}."
    )


def markdown_table(
    figures: dict[str, float],
    seconds: dict[str, float],
    baselines: dict[str, str],
    samples: dict[str, str] | None = None,
    source: str = "",
) -> str:
    samples = samples or {}
    lines = [source, ""] if source else []
    lines += [
        "Against their baselines (measured in the same run):",
        "",
        "| figure | value | baseline | baseline value | ratio | data |",
        "|---|---:|---|---:|---:|---|",
    ]
    for key, value, base, base_value, r in baseline_rows(figures, baselines):
        lines.append(
            f"| `{key}` | {value} | `{base}` | {base_value} | {r} | {samples.get(key, '')} |"
        )
    lines += ["", "Every figure:", "", "| figure | value | data |", "|---|---:|---|"]
    for key in sorted(figures):
        lines.append(f"| `{key}` | {shown(figures[key])} | {samples.get(key, '')} |")
    lines.append("")
    lines.append("Benchmark wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return "\n".join(lines) + "\n"


def previous_run(quick: bool) -> dict[str, float]:
    """The figures of the last run of the same size (empty when there is none)."""
    path = RESULTS / "latest.json"
    if not path.exists():
        return {}
    figures = json.loads(path.read_text())
    return figures if bool(figures.get("bench.quick")) == quick else {}


def main(argv: list[str]) -> int:
    """``python -m bench [--quick] [NAME ...]``: every benchmark, or the named ones, whose
    figures then replace theirs in the last run's results (same size only)."""
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("-")]
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    figures: dict[str, float] = {}
    failed: list[str] = []
    ran: list[str] = []
    commit = source_commit()
    runs = previous_runs() if only else {}
    for name in BENCHMARKS:
        if only and name not in only:
            continue
        print(f"== bench.{name}{' (quick)' if quick else ''}", flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            result = module.run(quick=quick)
        except Exception:  # noqa: BLE001 - report and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
            continue
        finally:
            # Each benchmark talks to Prefect servers of its own: a logs or events worker
            # left running would send the next one's items to a stopped server (bench.real
            # once hung at exit draining 2,350 of them, ~70 s each).
            drain_prefect_clients()
        ran.append(name)
        runs[name] = {
            "commit": commit,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": quick,
        }
        figures[f"bench.seconds.{name}"] = round(time.perf_counter() - t0, 1)
        for key, value in result.items():
            print(f"   {key:<40} {value}")
        figures.update(result)
    if only:
        # Keep the other benchmarks' figures of the last run; drop the re-run ones' old keys.
        kept = {
            k: v
            for k, v in previous_run(quick).items()
            if not any(k.startswith(f"{n}.") or k == f"bench.seconds.{n}" for n in ran)
        }
        figures = {**kept, **figures}
    figures["bench.quick"] = int(quick)
    baselines: dict[str, str] = {}
    samples: dict[str, str] = {}
    for name in BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        baselines.update(getattr(module, "BASELINES", {}))
        samples.update(getattr(module, "SAMPLE", {}))
    seconds = {
        n: figures[f"bench.seconds.{n}"] for n in BENCHMARKS if f"bench.seconds.{n}" in figures
    }
    print("\n== against their baselines (value / baseline = ratio)")
    for key, value, base, base_value, r in baseline_rows(figures, baselines):
        print(f"   {key:<40} {value:>12} / {base:<40} {base_value:>12} = {r}")
    shown_figures = {k: v for k, v in figures.items() if not k.startswith("bench.seconds.")}
    runs = {n: r for n, r in runs.items() if n in BENCHMARKS}
    source = provenance_line(runs, BENCHMARKS)
    table = markdown_table(shown_figures, seconds, baselines, samples, source)
    path = write_results(figures, table, runs)
    print(f"\nwrote {path} and {path.with_suffix('.md')}")
    # The README shows a full run of every benchmark from one clean commit, never a table
    # stitched from several runs (quick figures are CI-sized).
    complete = len(seconds) == len(BENCHMARKS) and not only
    same = one_clean_commit(runs, BENCHMARKS)
    if complete and not failed and not quick and same and update_readme(table):
        print(f"updated the README's performance section (commit {same})")
    elif not quick and not failed:
        print(
            "README left alone: it shows only a full `make bench` of every benchmark from "
            f"one clean commit (this run: {commit}{', named benchmarks only' if only else ''})"
        )
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
