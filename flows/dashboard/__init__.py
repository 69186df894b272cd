"""The live dashboard: metrics with anomaly markers, issues, recoveries, approvals, history.

Reads the database only through ``storage`` (frames), renders server-side (HTML and SVG,
no network resources) and serves with Starlette on uvicorn. Layers, each a module:
``data`` (the reads) → ``live``/``history``/``views`` (pure view models) → ``svg``/``page``
(markup) → ``server`` (routes, the server thread, ``run_dashboard`` for the CLI).
"""

from __future__ import annotations

from flows.dashboard.server import DashboardServer, run_dashboard

__all__ = ["DashboardServer", "run_dashboard"]
