"""The simulated components' response surface: how well a configuration serves a request mix.

A pure model (no processes, no I/O), used by the simulated service for its health gauge,
latency and errors, and by ``bench.genetic`` to measure the searches without processes.

Coordinates are log2 ratios to the declared defaults (pool_size 8, cache_size 256,
timeout_ms 500), since the three parameters span orders of magnitude. The quality of a
configuration for a mix is

    q = BROAD · exp(-d² / (2·BASIN²)) + (1 - BROAD) · exp(-d² / 2)

where ``d²`` is a distance from the mix's optimum in *coupled* coordinates: the best pool
size depends on the timeout (a longer timeout keeps slow requests, which need workers)
and the best cache on the pool (more workers share the cache). So the good region is a
narrow, tilted ellipsoid: changing one parameter at a time from the defaults does not get
there, and neither do the defaults themselves.

- mix ``normal``: the optimum is the declared defaults (the platform as configured);
- mix ``shifted`` (the ``workload_shift`` fault): a new request mix with a small hot set of
  small objects and slow back-end calls; its optimum is pool 20, cache 1,024, timeout
  1,600 ms, far from the defaults.

``score`` is ``PEAKS[mix] · q`` in [0, 1] (the component's ``hms_health_score`` gauge; the
shifted mix at its best scores 0.95, the old mix at the defaults 0.92). In the
shifted mix the latency and the error ratio follow the quality (both back to normal at the
optimum); the noise in ``noisy_score`` is the gauge's measurement noise.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

DEFAULTS: dict[str, float] = {"pool_size": 8.0, "cache_size": 256.0, "timeout_ms": 500.0}
BOUNDS: dict[str, tuple[float, float]] = {
    "pool_size": (1.0, 64.0),
    "cache_size": (16.0, 4096.0),
    "timeout_ms": (50.0, 5000.0),
}
# The best score of each mix: the new mix (small objects) is a little cheaper to serve
# at its best than the old one was at the defaults.
PEAKS = {"normal": 0.92, "shifted": 0.95}
BROAD = 0.4  # share of the wide basin (the gradient a search can follow from afar)
BASIN = 3.0  # its width, in units of the narrow region's width
NOISE_SD = 0.01  # of the gauge, relative
# In coupled log2 coordinates: the width of the good region along each axis.
WIDTH = {"pool_size": 2.45, "cache_size": 3.15, "timeout_ms": 2.8}
OPTIMA: dict[str, dict[str, float]] = {
    "normal": dict(DEFAULTS),
    "shifted": {"pool_size": 20.0, "cache_size": 1024.0, "timeout_ms": 1600.0},
}
SHIFTED_LATENCY_GAIN = 8.0  # latency x (1 + gain·(1-q)²) in the shifted mix
SHIFTED_ERROR_GAIN = 1.5  # error ratio gain·(1-q)² in the shifted mix


@dataclass(frozen=True)
class Response:
    score: float  # peak · quality, the health gauge (without noise)
    quality: float  # in [0, 1], 1 at the mix's optimum
    latency_factor: float  # multiplies the normal latency
    error_ratio: float  # share of requests that fail because of the mix


def _log2(values: dict[str, float], name: str) -> float:
    return math.log2(max(float(values.get(name, DEFAULTS[name])), 1e-9) / DEFAULTS[name])


def distance2(config: dict[str, float], mix: str = "normal") -> float:
    """Squared distance from the mix's optimum in the coupled coordinates."""
    if mix not in OPTIMA:
        raise ValueError(f"unknown request mix {mix!r}; known: {', '.join(OPTIMA)}")
    opt = OPTIMA[mix]
    p = _log2(config, "pool_size") - _log2(opt, "pool_size")
    c = _log2(config, "cache_size") - _log2(opt, "cache_size")
    t = _log2(config, "timeout_ms") - _log2(opt, "timeout_ms")
    a = (p - 0.7 * t) / WIDTH["pool_size"]
    b = (c + 0.6 * p) / WIDTH["cache_size"]
    e = t / WIDTH["timeout_ms"]
    return a * a + b * b + e * e


def response(config: dict[str, float], mix: str = "normal") -> Response:
    d2 = distance2(config, mix)
    q = BROAD * math.exp(-d2 / (2 * BASIN * BASIN)) + (1 - BROAD) * math.exp(-d2 / 2)
    peak = PEAKS[mix]
    if mix == "normal":
        return Response(peak * q, q, 1.0, 0.0)
    loss = (1.0 - q) ** 2
    return Response(peak * q, q, 1.0 + SHIFTED_LATENCY_GAIN * loss, SHIFTED_ERROR_GAIN * loss)


def score(config: dict[str, float], mix: str = "normal") -> float:
    return response(config, mix).score


def noisy_score(config: dict[str, float], mix: str, rng: random.Random) -> float:
    """The gauge as read: the score with relative measurement noise, within [0, 1]."""
    return min(max(score(config, mix) * (1.0 + rng.gauss(0.0, NOISE_SD)), 0.0), 1.0)


def best_score(mix: str = "normal") -> float:
    """The best achievable score (at the mix's optimum, inside the bounds)."""
    return score(OPTIMA[mix], mix)


def objectives(config: dict[str, float], mix: str, rng: random.Random | None = None) -> tuple:
    """(error ratio, mean latency factor), both to minimise: the two goals NSGA-II trades."""
    r = response(config, mix)
    noise = 1.0 + (rng.gauss(0.0, NOISE_SD) if rng else 0.0)
    # Below the mix's own errors, a bad configuration also times out or thrashes: the
    # quality lost shows in both goals.
    return ((1.0 - r.quality) * 0.5 * noise, r.latency_factor * (2.0 - r.quality) * noise)
