"""Acceptance by depth (report/acceptance.py) on hand-made rounds."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from specrepro.report.acceptance import acceptance_by_depth, acceptance_markdown, depth_rates


def test_rates_by_depth_on_hand_made_rounds_sum_to_tau_minus_one() -> None:
    # Accept lengths (bonus included): accepted drafts 0, 1, 2, 3, 1; every round drafted 3.
    rates = depth_rates([1, 2, 3, 4, 2], [3] * 5, max_depth=4)
    assert rates.reached == pytest.approx([4 / 5, 2 / 5, 1 / 5, 0.0])
    assert rates.given_previous[:3] == pytest.approx([4 / 5, 2 / 4, 1 / 2])
    assert rates.given_previous[3] is None  # depth 4 was never drafted
    assert sum(rates.reached) == pytest.approx(rates.tau - 1)


def test_a_round_that_drafted_less_does_not_count_against_the_deeper_level() -> None:
    # Round 2 accepted both of its 2 drafted levels: it could not reach depth 3.
    rates = depth_rates([4, 3], [3, 2], max_depth=3)
    assert rates.given_previous == pytest.approx([1.0, 1.0, 1.0])


def tidy_rows() -> pd.DataFrame:
    rows = []
    for method, algorithm, params, turns in [
        ("sps", "sps", {"gamma": 3}, [[1, 2, 4], [2, 1]]),
        ("eagle2-cpu", "eagle2", {"depth": 5}, [[3, 1], [6, 2, 1]]),
        ("dsbd", "dsbd", {"gamma": 3}, [[2, 2]]),  # not a chain: left out
        ("vanilla", "vanilla", {}, [[1, 1]]),
    ]:
        for q, turn in enumerate(turns):
            for group in ("g1", "g2"):  # a run timed in two groups counts once
                rows.append(
                    {
                        "pair": "p", "method": method, "algorithm": algorithm,
                        "params": json.dumps(params), "dataset": "mtbench", "temperature": 0.0,
                        "question_id": q, "turn": 1, "timing_group": group,
                        # A prefill that commits a token records a first length of 1.
                        "accept_lengths": json.dumps([1, *turn]), "draft_levels": "[]",
                        "verify_forwards": len(turn),
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_the_table_has_the_chain_methods_with_their_tau() -> None:
    rates = acceptance_by_depth(tidy_rows(), "p", max_depth=5)
    assert set(rates["method"]) == {"sps", "eagle2-cpu"}
    sps = rates[rates["method"] == "sps"].sort_values("depth")
    assert sps["rounds"].iloc[0] == 5  # 3 + 2 rounds, each turn once
    assert sps["tau"].iloc[0] == pytest.approx(10 / 5)
    assert sps["reached"].sum() == pytest.approx(2.0 - 1.0)
    # sps drafts gamma = 3: depth 4 is never tried.
    assert pd.isna(sps["given_previous"].iloc[3])
    text = acceptance_markdown(rates, "p", head_ahead=[0.45, 0.3])
    assert "| sps | 5 | 2.000 | 0.60 (0.60) |" in text
    assert "| top-1 | 0.450 | 0.300 |" in text
