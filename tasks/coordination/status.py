"""Status figures computed from the tables (never from counters kept in memory).

- **auto-healing rate**: of the issues the system acted on or asked about (any recovery
  other than learning mode's recorded-only ones), the share healed by a successful
  recovery with no human decision (no approval answered by a person).
- **mean time to recover**: over issues with a successful recovery, the mean time from the
  issue's first anomaly to the end of its first successful recovery.
- **escalated**: issues whose recovery failed on every rung (or found them all
  quarantined) and wait for a human; they stay escalated until they resolve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

HUMAN_FREE = {None, "selfheal"}


@dataclass(frozen=True)
class HealingStats:
    issues_acted_on: int
    healed_automatically: int
    auto_healing_rate: float | None  # percent
    mean_time_to_recover_s: float | None
    recovered_issues: int
    escalated: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def healing_stats(
    issues: pd.DataFrame, recoveries: pd.DataFrame, approvals: pd.DataFrame
) -> HealingStats:
    acted = recoveries[recoveries["status"] != "recorded_only"]
    acted_issues = set(acted["issue_id"].dropna().astype(int))
    human = approvals[
        approvals["decision"].isin(["approved", "rejected"])
        & ~approvals["decided_by"].isin(HUMAN_FREE)
    ]
    human_issues = set(human["issue_id"].dropna().astype(int))
    ok = acted[acted["status"] == "succeeded"]
    healed = set(ok["issue_id"].dropna().astype(int))
    auto = healed - human_issues
    rate = 100.0 * len(auto) / len(acted_issues) if acted_issues else None
    mttr = None
    if healed:
        first_fix = ok.groupby("issue_id")["finished_at"].min()
        first_seen = issues.set_index("id")["first_seen"]
        joined = pd.concat({"fix": first_fix, "seen": first_seen}, axis=1, join="inner")
        if not joined.empty:
            mttr = float((joined["fix"] - joined["seen"]).dt.total_seconds().mean())
    escalated = int((issues["status"] == "escalated").sum()) if "status" in issues else 0
    return HealingStats(len(acted_issues), len(auto), rate, mttr, len(healed), escalated)
