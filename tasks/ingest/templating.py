"""Label log lines with their template while they are ingested.

The miner's state is loaded per component and saved in the same transaction as each
batch of lines it labelled, so template ids stored on events always exist in
``log_templates`` and survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine

from storage.logs import TemplateUpdate, load_miner_state, save_miner_state
from tasks.logs.templates import TemplateMiner


@dataclass
class TemplateAnnotator:
    component: str
    miner: TemplateMiner
    _pending: dict[int, list[int]] = field(default_factory=dict)  # id -> [count, first, last]

    @classmethod
    def load(cls, engine: Engine, component: str) -> TemplateAnnotator:
        with engine.connect() as conn:
            state = load_miner_state(conn, component)
        miner = TemplateMiner.from_state(state) if state else TemplateMiner()
        return cls(component, miner)

    def label(self, message: str, ts_ms: int) -> int:
        tid, _ = self.miner.add(message)
        seen = self._pending.get(tid)
        if seen is None:
            self._pending[tid] = [1, ts_ms, ts_ms]
        else:
            seen[0] += 1
            seen[1] = min(seen[1], ts_ms)
            seen[2] = max(seen[2], ts_ms)
        return tid

    def flush(self, conn: Connection) -> None:
        if not self._pending:
            return
        updates = []
        for tid, (count, first, last) in self._pending.items():
            tpl = self.miner.get(tid)
            updates.append(TemplateUpdate(tid, tpl.text if tpl else "", count, first, last))
        save_miner_state(conn, self.component, self.miner.to_state(), updates)
        self._pending.clear()
