"""How much recent history each series has: what the detector warm-up needs to know."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, text

_SQL = text(
    "SELECT s.id AS series_id, c.name AS component, s.metric, s.kind, "
    "COUNT(x.ts) AS n, MIN(x.ts) AS first_ms, MAX(x.ts) AS last_ms "
    "FROM series s JOIN components c ON c.id = s.component_id "
    "JOIN samples x ON x.series_id = s.id "
    "WHERE x.ts >= :start GROUP BY s.id, c.name, s.metric, s.kind"
)


def series_history(engine: Engine, start_ms: int) -> pd.DataFrame:
    """Per series with samples since ``start_ms``: component, metric, kind, the number of
    samples and the first and last sample times (epoch ms)."""
    with engine.connect() as conn:
        rows = conn.execute(_SQL, {"start": start_ms}).all()
    return pd.DataFrame(
        rows, columns=["series_id", "component", "metric", "kind", "n", "first_ms", "last_ms"]
    )
