"""Which series are anomaly candidates, by the conventions exporters follow.

- ``up`` and ``*_up`` gauges say whether the target answers: the down detector reads them
  (0 means down, exactly like a failed scrape), the time-series detectors do not.
- The exporter's own process (``go_*``, ``process_*``, ``promhttp_*``, ``*_exporter_*``)
  and scrape bookkeeping are not the service: not candidates by default.
- Process-identity gauges (start time, process id, run id, version and build info,
  uptime, statistics reset time) change at every restart by design: never candidates.
- Probe results are read by the down detector.

``include`` patterns bring any of these back; ``exclude`` patterns add to them.

Candidates are either *symptoms* or *context*. A symptom says the work fails or slows
(errors, latency, throughput, a service's own gauges); an anomaly on it can open an issue.
Context says how busy or how full the machine is: the host's resource families (the node
exporter's memory, sockets, disks, network traffic, CPU time; cAdvisor's, per container).
A workload that starts or stops moves dozens of them at once and none of those moves is a
fault by itself, so their anomalies are recorded as context: they join an issue a symptom
opened on the component, and open none of their own ("alert on symptoms, not causes").
Errors, drops, failures and OOM kills stay symptoms. ``context_metrics`` lists them (see
``listed``); ``tasks.detection.saturation`` says when a resource runs out.
"""

from __future__ import annotations

import fnmatch
import functools
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

# The kind of an anomaly on a context series: it joins an issue and opens none.
CONTEXT_KIND = "context"
# Globs for ``listed`` (matched ignoring case: the kernel's counter names are CamelCase).
HOST_CONTEXT = (
    "node_*",  # the node exporter: the machine
    "container_*",  # cAdvisor: each container's share of it
    "!*err*",
    "!*drop*",
    "!*fail*",
    "!*overflow*",
    "!*oom*",
    "!*readonly*",
    "!*alarm*",
    # The clock's error estimates wander between synchronisations by design.
    "node_timex_*",
)

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


def listed(name: str, patterns: Sequence[str], ignore_case: bool = False) -> bool:
    """Whether ``patterns`` (globs, ``!glob`` exceptions, the last match wins) list ``name``.

    A derived series (``x_total:rate``) is listed when its name or its stored metric's is.
    """
    base = _base(name)
    if ignore_case:
        name, base = name.lower(), base.lower()
    found = False
    for negate, regex in _compiled(tuple(patterns), ignore_case):
        if regex.match(name) or (base != name and regex.match(base)):
            found = not negate
    return found


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...], ignore_case: bool) -> list[tuple[bool, re.Pattern[str]]]:
    """Each glob as (negated, regex): the cycle asks about every series at every scan."""
    out = []
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        out.append((negate, re.compile(fnmatch.translate(glob.lower() if ignore_case else glob))))
    return out


def is_context(name: str, patterns: Sequence[str] = HOST_CONTEXT) -> bool:
    """Whether the (derived) series ``name`` is context, not a symptom (module docstring)."""
    return listed(name, patterns, ignore_case=True)


def is_candidate(name: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether the time-series detectors score the (derived) series ``name``."""
    if include and _matches(name, include):
        return True
    if is_target_up(_base(name)):
        return False
    return not _matches(name, BUILTIN_EXCLUDE) and not _matches(name, exclude)
