"""The demo's configuration: the platform's three components, short intervals.

Intervals are scaled down so a whole run fits in a few minutes: a 3 s cycle, detectors
that need 10 points of history instead of 60, restarts that back off from 1 s instead of
10 s, a genetic search of at most 60 trials. Every component reports its own health gauge
(``hms_health_score``), the fitness of reconfiguration and search. Everything else is the
production code path.
"""

from __future__ import annotations

from typing import Any

from flows.demo.platform.launcher import Platform

PARAMETERS = {
    "pool_size": {"min": 1, "max": 64, "default": 8, "type": "int"},
    "timeout_ms": {"min": 50, "max": 5000, "default": 500, "type": "int"},
    "cache_size": {"min": 16, "max": 4096, "default": 256, "type": "int"},
}


def demo_config(
    platform: Platform, db_url: str, mode: str, metrics_port: int = 8081
) -> dict[str, Any]:
    """The demo's configuration; ``metrics_port`` is where ``selfheal serve`` exposes
    ``/metrics`` (the demo's own dashboard has another port)."""
    comps: dict[str, Any] = {}
    for name, svc in platform.services.items():
        comp: dict[str, Any] = {
            "metrics_url": f"{svc.url}/metrics",
            "log_paths": [str(svc.log_path)],
            "health": {
                "url": f"{svc.url}/health",
                "timeout": 1.0,
                # The component's own gauge of how well its settings suit its workload:
                # the fitness of reconfiguration and of the genetic search.
                "score_metric": "hms_health_score",
            },
            "restart_command": {"argv": svc.restart_argv, "timeout": 20},
            "parameters": PARAMETERS,
            "reconfigure": {"json_file": str(svc.config_path)},
        }
        comps[name] = comp
    pe = platform.services.get("proof_engine")
    if pe is not None and "theorem_repository" in platform.services:
        comps["proof_engine"]["depends_on"] = ["theorem_repository"]
        comps["proof_engine"]["isolate"] = {
            "http": {"url": f"{pe.url}/dependency", "json_body": {"enabled": False}}
        }
        comps["proof_engine"]["restore"] = {
            "http": {"url": f"{pe.url}/dependency", "json_body": {"enabled": True}}
        }
    return {
        "mode": mode,
        "database_url": db_url,
        "detection_interval": 3,
        "max_concurrent_recoveries": 3,
        "quarantine_period": 60,
        "approval_timeout": 120,
        "metrics_history_days": 1,
        "dashboard_port": metrics_port,
        "components": comps,
        "ingest": {"retries": 0, "scrape_timeout": 1.0},
        "detection": {
            "lookback": 600,
            "detectors": [
                {
                    "name": "default",
                    "params": {
                        "history": "10min",
                        "smoothing": ["10s", "30s"],
                        "season": None,
                        # The cycle's defaults, on a 10-minute history of 3 s points.
                        "refractory": "0s",
                        "min_points": 10,
                        "severity_window": "10min",
                        "quantile": 0.98,
                        "margin": 1.5,
                        # The first minutes have 10-50 points: widen the margin while the
                        # range is little more than their maximum (a memory blip on the
                        # tenth point was acted on in a run, on a healthy component).
                        "small_sample": 0.5,
                        "min_relative_spread": 0.001,
                    },
                }
            ],
            "group_wait": 2,
            "resolve_after": 20,
            "flap_window": 60,
            "correlation_window": 20,
            "action_grace": 15,
        },
        "recovery": {
            "validation_timeout": 10,
            "validation_poll": 0.5,
            # The platform picks a changed config file up within 0.25 s.
            "settle_time": 0.6,
            "measure_time": 2,
            # The genetic rung: at most 60 trials of ~1 s each (settle, then one read of
            # the score gauge). On the demo's surface the search reaches the pre-incident
            # range in 20 trials on average; 40 missed it for 3 of 60 seeds, 60 for none
            # (the production loop on the surface, bench.genetic's search_surface).
            "genetic_trials": 60,
            "max_inline_backoff": 10,
            "cooldown": 20,
            "min_severity": "medium",
            # Below high, act once an issue fired twice: the demo's processes share two
            # cores, and one slow sample of a neighbour is not a fault.
            "confirm_below": "high",
            "backoff": {"base": 1, "cap": 4, "reset_after": 60, "max_restarts": 2, "window": 120},
            "breaker": {"wait_in_open": 20, "minimum_calls": 2, "permitted_in_half_open": 2},
        },
    }
