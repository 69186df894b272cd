"""Daily retention of our own tables (Prefect's own history is vacuumed by its server)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger

from flows.runtime import open_runtime
from storage.retention import apply_retention


@flow(
    name="retention",
    description="Delete samples, log events and anomalies older than "
    "metrics_history_days, in small batches.",
)
def retention(config_path: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    rt = open_runtime(config_path)
    try:
        cutoff_ms = int((time.time() - rt.config.metrics_history_days * 86400) * 1000)
        report = apply_retention(rt.engine, cutoff_ms)
        logger.info("retention: %s", asdict(report))
        return asdict(report)
    finally:
        rt.close()
