"""Acceptance by depth: how deep a round's accepted draft reaches, for sps and the tree methods.

A round's accept length (verification forwards only, the prefill left out) counts the target's
own token, so it accepted L - 1 drafted tokens: it
reached depth d when L - 1 >= d. Per depth the table gives the share of rounds that reached it
(P(>= d), whose sum over depths is the mean accepted drafts per round, tau - 1) and the
acceptance at d given d - 1 (P(>= d) over the rounds that reached d - 1 and drafted depth d:
the draft levels the round recorded, else the method's gamma or depth). A tree's drafted depth
can be shorter than its `depth` setting once the tree is cut to its token budget, so the
conditional rate at the deepest levels may be an underestimate for eagle2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from specrepro.planning.methods import method_spec

MAX_DEPTH = 7


@dataclass
class DepthRates:
    rounds: int
    tau: float  # mean accept length, the target's token included
    reached: list[float]  # P(>= d), d = 1..
    given_previous: list[float | None]  # P(>= d | >= d - 1, depth d drafted); None: no round


def _drafted(params: dict, levels: list[int], rounds: int) -> list[int]:
    if len(levels) == rounds:
        return list(levels)
    depth = params.get("gamma") or params.get("depth") or MAX_DEPTH
    return [int(depth)] * rounds


def verification_rounds(accept_lengths: list[int], verify_forwards: float) -> list[int]:
    """The rounds of verification forwards: a method whose prefill commits the first token
    records it as a first accept length of 1, which is no round of speculation."""
    if pd.isna(verify_forwards) or len(accept_lengths) <= int(verify_forwards):
        return list(accept_lengths)
    return list(accept_lengths[len(accept_lengths) - int(verify_forwards) :])


def depth_rates(accept_lengths: list[int], drafted: list[int], max_depth: int) -> DepthRates:
    accepted = np.asarray(accept_lengths, dtype=int) - 1
    drafted_arr = np.asarray(drafted, dtype=int)
    rounds = len(accepted)
    reached, given = [], []
    for d in range(1, max_depth + 1):
        reached.append(float((accepted >= d).sum() / rounds) if rounds else 0.0)
        tried = (accepted >= d - 1) & (drafted_arr >= d)
        given.append(float((accepted[tried] >= d).mean()) if tried.any() else None)
    tau = float(np.mean(accept_lengths)) if rounds else float("nan")
    return DepthRates(rounds, tau, reached, given)


def acceptance_by_depth(tidy: pd.DataFrame, pair: str, max_depth: int = MAX_DEPTH) -> pd.DataFrame:
    """One row per (dataset, temperature, method) of a chain or tree method of `pair`, and
    depth: the rates above. Each turn counts once (a run timed in several groups keeps its
    first)."""
    chains = {a for a in tidy["algorithm"].unique() if method_spec(a).depth_acceptance}
    rows = tidy[(tidy["pair"] == pair) & tidy["algorithm"].isin(chains)]
    keys = ["method", "dataset", "temperature", "question_id"]
    keys += ["turn"] if "turn" in rows else []
    rows = rows.drop_duplicates(keys)
    out = []
    for (dataset, temperature, method), group in rows.groupby(["dataset", "temperature", "method"]):
        lengths: list[int] = []
        drafted: list[int] = []
        params = json.loads(group["params"].iloc[0]) if "params" in group else {}
        columns = ("accept_lengths", "draft_levels", "verify_forwards")
        cells = zip(*(group[c] for c in columns), strict=True)
        for cell, levels, forwards in cells:
            turn = verification_rounds(json.loads(cell) if isinstance(cell, str) else [], forwards)
            lengths += turn
            turn_levels = json.loads(levels) if isinstance(levels, str) else []
            drafted += _drafted(params, turn_levels, len(turn))
        rates = depth_rates(lengths, drafted, max_depth)
        for d in range(max_depth):
            out.append(
                {
                    "dataset": dataset, "temperature": float(temperature), "method": method,
                    "algorithm": group["algorithm"].iloc[0], "rounds": rates.rounds,
                    "tau": rates.tau, "depth": d + 1, "reached": rates.reached[d],
                    "given_previous": rates.given_previous[d],
                }
            )  # fmt: skip
    return pd.DataFrame(out)


def _cell(row: pd.Series) -> str:
    given = "-" if row["given_previous"] is None or pd.isna(row["given_previous"]) else (
        f"{row['given_previous']:.2f}"
    )  # fmt: skip
    return f"{given} ({row['reached']:.2f})"


def acceptance_markdown(
    rates: pd.DataFrame, pair: str, head_ahead: list[float] | None = None
) -> str:
    """The table per dataset and temperature; `head_ahead`: the head's held-out top-1 agreement
    k = 1.. tokens ahead, drafting from its own features (its training log)."""
    lines = [f"### Acceptance by depth: {pair}", ""]
    lines.append(
        "Cell: acceptance at depth d given d - 1 (share of rounds reaching depth d). The "
        "shares sum to tau - 1, the mean drafted tokens accepted per round; rounds: verification "
        "forwards. Depth d - 1 accepted and depth d drafted is the condition; an eagle2 tree cut "
        "to its token budget may draft fewer levels than its depth, so its deepest rates can "
        "read low."
    )
    if rates.empty:
        lines += ["", "No sps or tree method ran for this pair."]
    depths = sorted(rates["depth"].unique()) if not rates.empty else []
    for (dataset, temperature), block in rates.groupby(["dataset", "temperature"], sort=True):
        lines += ["", f"#### {dataset}, T = {temperature:g}", ""]
        header = ["method", "rounds", "tau", *[f"d={d}" for d in depths]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for method, per in block.groupby("method", sort=True):
            per = per.sort_values("depth")
            first = per.iloc[0]
            cells = [method, str(int(first["rounds"])), f"{first['tau']:.3f}"]
            cells += [_cell(row) for _, row in per.iterrows()]
            lines.append("| " + " | ".join(cells) + " |")
    if head_ahead:
        lines += [
            "",
            "Head, held-out corpus positions: top-1 agreement with the target k tokens ahead, "
            "drafting from its own predicted features with the earlier tokens given (what depth "
            "k asks of it once depth k - 1 was accepted).",
            "",
            "| k | " + " | ".join(str(k + 1) for k in range(len(head_ahead))) + " |",
            "|---|" + "---|" * len(head_ahead),
            "| top-1 | " + " | ".join(f"{a:.3f}" for a in head_ahead) + " |",
        ]
    return "\n".join(lines) + "\n"
