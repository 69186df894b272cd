"""Label log lines with their template while they are ingested.

The miner's state is loaded per component and saved in the same transaction as each
batch of lines it labelled, so template ids stored on events always exist in
``log_templates`` and survive restarts. The learned header format of each of the
component's files is saved with it (under ``formats``, keyed by path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from storage.logs import TemplateUpdate, load_miner_state, save_miner_state
from tasks.logs.lineparse import LogFormat
from tasks.logs.templates import TemplateMiner


@dataclass
class TemplateAnnotator:
    component: str
    miner: TemplateMiner
    formats: dict[str, LogFormat] = field(default_factory=dict)
    _pending: dict[int, list[int]] = field(default_factory=dict)  # id -> [count, first, last]
    _formats_changed: bool = False

    @classmethod
    def load(cls, engine: Engine, component: str) -> TemplateAnnotator:
        with engine.connect() as conn:
            state = load_miner_state(conn, component)
        if not state:
            return cls(component, TemplateMiner())
        formats: dict[str, LogFormat] = {}
        raw_formats: Any = state.get("formats") or {}
        for path, raw in raw_formats.items():
            fmt = LogFormat.from_state(raw)
            if fmt is not None:
                formats[path] = fmt
        return cls(component, TemplateMiner.from_state(state), formats)

    def get_format(self, path: str) -> LogFormat | None:
        return self.formats.get(path)

    def set_format(self, path: str, fmt: LogFormat) -> None:
        self.formats[path] = fmt
        self._formats_changed = True

    def label(self, message: str, ts_ms: int) -> int:
        tid = self.miner._add(message)
        seen = self._pending.get(tid)
        if seen is None:
            self._pending[tid] = [1, ts_ms, ts_ms]
        else:
            seen[0] += 1
            if ts_ms < seen[1]:
                seen[1] = ts_ms
            elif ts_ms > seen[2]:
                seen[2] = ts_ms
        return tid

    def state(self) -> dict[str, Any]:
        state = self.miner.to_state()
        state["formats"] = {p: f.to_state() for p, f in self.formats.items()}
        return state

    def flush(self, conn: Connection) -> None:
        if not self._pending and not self._formats_changed:
            return
        updates = []
        for tid, (count, first, last) in self._pending.items():
            tpl = self.miner.get(tid)
            updates.append(TemplateUpdate(tid, tpl.text if tpl else "", count, first, last))
        save_miner_state(conn, self.component, self.state(), updates)
        self._pending.clear()
        self._formats_changed = False
