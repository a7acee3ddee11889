"""The draft-design study's lookahead sweep: every draft's speedup at each gamma on the tuning
and the report questions, and each draft's best gamma, chosen on the tuning questions only."""

from __future__ import annotations

import pandas as pd

from specrepro.report.draft_design.comparisons import select_run, speed_ratio, tau_of
from specrepro.report.draft_design.members import Member


def sweep_lookaheads(
    q: pd.DataFrame,
    members: list[Member],
    method: str,
    names: list[str],
    dataset: str,
    temperature: float,
    base: pd.DataFrame,
    tune: list[str],
    report: list[str],
    seed: int,
) -> tuple[dict[str, str], list[dict]]:
    """({member's pair: the entry of its best gamma}, the sweep rows): `names` are the method's
    lookahead entries (itself included), `base` the target alone's question rows."""
    best: dict[str, str] = {}
    sweep_rows = []
    for member in members:
        per_gamma = {}
        for name in names:
            mine = select_run(q, member.pair, name, dataset, temperature)
            gamma = float(mine["gamma"].iloc[0]) if len(mine) else float("nan")
            for split, questions in (("tune", tune), ("report", report)):
                value = speed_ratio(mine, base, questions, 1, seed)
                kept = mine.loc[[x for x in questions if x in mine.index]]
                sweep_rows.append({
                    "draft": member.draft, "role": member.role, "method": method,
                    "entry": name, "gamma": gamma, "dataset": dataset,
                    "temperature": float(temperature), "split": split,
                    "n_questions": value["questions"], "speedup": value["measured"],
                    "speedup_low": value["low"], "speedup_high": value["high"],
                    "tau": tau_of(kept) if len(kept) else float("nan"),
                })  # fmt: skip
                if split == "tune" and value["measured"] is not None:
                    per_gamma[name] = value["measured"]
        # Chosen on the tuning questions only; without them, the fixed gamma.
        best[member.pair] = max(per_gamma, key=per_gamma.get) if per_gamma else method
    return best, sweep_rows
