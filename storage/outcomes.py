"""Everything a report on outcomes needs, as frames: one call for notebooks and reviews.

Notebooks should not know table names or which migration added which table; they call
``load_outcomes`` and get the same frames the status command and the dashboard compute
from, with UTC timestamps.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Connection, Engine, inspect, select

from storage.approvals import approvals_frame
from storage.issues import anomalies_frame, issues_frame
from storage.metrics import _frame
from storage.models import FaultInjection
from storage.recoveries import recoveries_frame

OUTCOME_TABLES = ("issues", "recoveries", "approvals", "anomalies", "fault_injections")


def fault_injections_frame(engine: Engine | Connection) -> pd.DataFrame:
    """The demo's ground truth (which fault was injected where and when), oldest first."""
    t = FaultInjection.table()
    cols = [c.name for c in t.columns]
    df = _frame(engine, select(t).order_by(t.c.injected_at, t.c.id), {}, cols)
    for c in ("injected_at", "cleared_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def load_outcomes(
    engine: Engine | Connection, anomalies_since: pd.Timestamp | int = 0
) -> dict[str, pd.DataFrame]:
    """Issues, recoveries, approvals, anomalies (from ``anomalies_since``) and, when the
    schema has them, fault injections.

    ``fault_injections`` is checked with the inspector rather than assumed, so a database
    written by an older schema (or by a deployment that never ran the demo) still loads.
    """
    out = {
        "issues": issues_frame(engine),
        "recoveries": recoveries_frame(engine),
        "approvals": approvals_frame(engine),
        "anomalies": anomalies_frame(engine, start=anomalies_since),
    }
    if inspect(engine).has_table(FaultInjection.__tablename__):
        out["fault_injections"] = fault_injections_frame(engine)
    return out
