"""``make bench``: run every benchmark, write bench/results/latest.json and latest.md.

Each benchmark measures its own baseline in the same run (these machines are noisy), so
read the ratios rather than the absolute figures. ``--quick`` (``make bench QUICK=1``)
runs CI-sized versions of the same code paths.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback

from bench.common import update_readme, write_results

# Order: cheap first. Each module exposes run(quick: bool) -> dict[str, float].
BENCHMARKS = ["ingest", "loghub", "nab", "detect", "tune"]


def markdown_table(figures: dict[str, float], seconds: dict[str, float]) -> str:
    lines = ["| figure | value |", "|---|---:|"]
    for key in sorted(figures):
        value = figures[key]
        shown = (
            f"{value:,.3f}".rstrip("0").rstrip(".")
            if isinstance(value, float)
            else (f"{value:,}" if isinstance(value, int) else str(value))
        )
        lines.append(f"| `{key}` | {shown} |")
    lines.append("")
    lines.append("Benchmark wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("-")]
    figures: dict[str, float] = {}
    seconds: dict[str, float] = {}
    failed: list[str] = []
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
        seconds[name] = time.perf_counter() - t0
        for key, value in result.items():
            print(f"   {key:<40} {value}")
        figures.update(result)
    figures["bench.quick"] = int(quick)
    table = markdown_table(figures, seconds)
    path = write_results(figures, table)
    print(f"\nwrote {path} and {path.with_suffix('.md')}")
    if not only and not failed and update_readme(table):
        print("updated the README's performance section")
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
