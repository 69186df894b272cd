"""Which series are anomaly candidates, by the conventions exporters follow.

- ``up`` and ``*_up`` gauges say whether the target answers: the down detector reads them
  (0 means down, exactly like a failed scrape), the time-series detectors do not.
- The exporter's own process (``go_*``, ``process_*``, ``promhttp_*``, ``*_exporter_*``)
  and scrape bookkeeping are not the service: not candidates by default.
- Process-identity gauges (start time, process id, run id, version and build info,
  uptime, statistics reset time) change at every restart by design: never candidates.
- Probe results are read by the down detector.

``include`` patterns bring any of these back; ``exclude`` patterns add to them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

EXPORTER_SELF = (
    "go_*",
    "process_*",
    "promhttp_*",
    "*_exporter_*",
    "scrape_*",
    "*_scrape_*",
    "*_scrapes_*",
)
IDENTITY = (
    "*start_time*",
    "*_pid",
    "*process_id*",
    "*_run_id",
    "*build_info*",
    "*_version",
    "*_version_*",
    "*_info",
    "*uptime*",
    "*stats_reset*",
)
PROBES = ("probe_ok", "probe_duration_seconds*")
BUILTIN_EXCLUDE = EXPORTER_SELF + IDENTITY + PROBES

_TARGET_UP = re.compile(r"^(up|[A-Za-z_:][A-Za-z0-9_:]*_up)$")


def is_target_up(metric: str) -> bool:
    """``up`` or ``<name>_up``: an exporter's "my target answers" gauge."""
    return bool(_TARGET_UP.match(metric))


def _base(name: str) -> str:
    """The stored metric name of a derived series (``x_total:rate`` → ``x_total``)."""
    return name.split(":", 1)[0]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    base = _base(name)
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def is_candidate(name: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether the time-series detectors score the (derived) series ``name``."""
    if include and _matches(name, include):
        return True
    if is_target_up(_base(name)):
        return False
    return not _matches(name, BUILTIN_EXCLUDE) and not _matches(name, exclude)
