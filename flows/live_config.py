"""Live configuration: every run reads the file again; a broken edit keeps the last good one.

The last configuration that validated is kept beside the database
(``$SELFHEAL_HOME/config.last-valid.json``), so a cycle started by a fresh process (as
every served run is) still has it when someone saves a broken file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flows.config import SelfHealConfig
from flows.config_load import ConfigError, config_path_from_env, load_config
from flows.runtime import selfheal_home

LAST_VALID = "config.last-valid.json"


def last_valid_path() -> Path:
    return selfheal_home() / LAST_VALID


def load_live_config(
    config_path: str | Path | None, logger: logging.Logger | logging.LoggerAdapter
) -> SelfHealConfig:
    """The file's configuration, or the last valid one (with every problem logged)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        keep = last_valid_path()
        if not keep.exists():
            raise
        logger.error(
            "configuration %s is invalid; keeping the last valid one (%s):\n%s",
            config_path_from_env(config_path) or "(defaults)",
            keep,
            exc,
        )
        data = json.loads(keep.read_text())
        return SelfHealConfig.model_validate(data)
    keep = last_valid_path()
    keep.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)
    if not keep.exists() or keep.read_text() != text:
        tmp = keep.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(keep)
    return config
