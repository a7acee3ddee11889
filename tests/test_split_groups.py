"""Reports on a timing group split into parts (one job each, every part repeating the baseline
and the A/A control): a run is paired with its reference in its own part, a run timed in
several parts counts each question once, and each part's A/A control gates its own runs."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from specrepro.report.aggregate import SPEEDUP_COLUMNS, question_speedups, summarise
from specrepro.report.claims import check_claims, load_claims, measure, query
from specrepro.report.draft_design import Member, StudyInputs, study

N = 20
PART1 = "llama2-13b/squad/T0.0-s0-part1"
PART2 = "llama2-13b/squad/T0.0-s0-part2"
UNSPLIT = "llama2-13b/squad/T0.0-s0"
# Part 2 ran on a slower node: every run in it 0.8 times as fast. A ratio that paired a run
# of part 2 with the baseline of part 1 would carry that factor.
NODE = {PART1: 1.0, PART2: 0.8}
SPEED = {"vanilla": 10.0, "vanilla-aa": 10.0, "A": 20.0, "B": 25.0}
ALGORITHM = {"vanilla": "vanilla", "vanilla-aa": "vanilla", "A": "sps", "B": "eagle"}


def tokens(q: int) -> int:
    return 40 + 7 * q


def runs(method: str, group: str, speed: float, pair: str = "p", noise: float = 0.03) -> list[dict]:
    """N questions of one run timed in `group`: the same tokens in every group (T=0), seconds
    scattered by +-noise around tokens / speed, reproducibly per (pair, method, group)."""
    rng = np.random.default_rng(zlib.crc32(f"{pair}/{method}/{group}".encode()))
    out = []
    for q in range(N):
        new = tokens(q)
        out.append(
            {
                "run_id": f"{pair}/{method}/squad/float16/T0.0-s0", "timing_group": group,
                "pair": pair, "method": method, "algorithm": ALGORITHM.get(method, "sps"),
                "params": "{}", "dataset": "squad", "temperature": 0.0, "seed": 0,
                "dtype": "float16", "device": "cuda:0", "hardware": "H100 (GPU)",
                "question_id": f"q{q}", "turn": 0, "new_tokens": new,
                "wall_time_s": new / (speed * rng.uniform(1 - noise, 1 + noise)),
                "verified_tokens": new - 1, "verify_forwards": new - 1,
                "em": float(q % 3 == 0), "f1": 0.5, "target_loglik": -1.0,
            }
        )  # fmt: skip
    return out


def part(group: str, methods: list[str], aa_bias: float = 1.0) -> list[dict]:
    """The runs of one part at its node's speed; vanilla-aa `aa_bias` times as fast."""
    rows = []
    for method in methods:
        bias = aa_bias if method == "vanilla-aa" else 1.0
        rows += runs(method, group, SPEED[method] * NODE[group] * bias)
    return rows


def split_table(bias1: float = 1.0, bias2: float = 1.0) -> pd.DataFrame:
    """Vanilla and vanilla-aa in both parts, A in part 1, B in part 2."""
    return pd.DataFrame(
        part(PART1, ["vanilla", "vanilla-aa", "A"], bias1)
        + part(PART2, ["vanilla", "vanilla-aa", "B"], bias2)
    )


def row(summary: pd.DataFrame, method: str) -> pd.Series:
    rows = summary[summary["method"] == method]
    assert len(rows) == 1
    return rows.iloc[0]


def measured(tidy: pd.DataFrame, method: str) -> pd.DataFrame:
    """One run's rows indexed by question, in question order."""
    return tidy[tidy["method"] == method].set_index("question_id").loc[[f"q{q}" for q in range(N)]]


# -- (a) the split table --------------------------------------------------------------------


def test_a_run_is_paired_with_the_baseline_of_its_own_part() -> None:
    tidy = split_table()
    summary = summarise(tidy)
    alone = {
        "A": summarise(tidy[tidy["timing_group"] == PART1]),
        "B": summarise(tidy[tidy["timing_group"] == PART2]),
    }
    for method, own in alone.items():
        got, want = row(summary, method), row(own, method)
        for column in SPEEDUP_COLUMNS:
            assert got[column] == want[column], (method, column)
        assert got["n_paired"] == N
        assert got["n_unpaired_method"] == 0 and got["n_unpaired_baseline"] == 0
    # Part 2's node is slower: a pairing across parts would report B 1.25 times too fast...
    assert row(summary, "B")["speedup"] == pytest.approx(2.5, rel=0.05)
    # ...and question_speedups holds B's measurements against part 2's vanilla only.
    paired = question_speedups(tidy)
    b = paired[paired["method"] == "B"]
    assert len(b) == N and set(b["timing_group"]) == {PART2}


def test_a_run_in_every_part_counts_each_question_once_at_its_mean_time() -> None:
    tidy = split_table()
    vanilla = row(summarise(tidy), "vanilla")
    one, two = (
        measured(tidy[tidy["timing_group"] == PART1], "vanilla"),
        measured(tidy[tidy["timing_group"] == PART2], "vanilla"),
    )
    seconds = (one["wall_time_s"] + two["wall_time_s"]) / 2  # per question: the mean
    new = sum(tokens(q) for q in range(N))
    assert vanilla["n_questions"] == N and vanilla["n_runs"] == 1
    assert vanilla["new_tokens"] == new  # not doubled
    assert vanilla["wall_time_s"] == pytest.approx(seconds.sum(), rel=1e-12)
    assert vanilla["tokens_per_s"] == pytest.approx(new / seconds.sum(), rel=1e-12)
    assert vanilla["em"] == pytest.approx(np.mean([q % 3 == 0 for q in range(N)]))
    assert vanilla["tau"] == pytest.approx(1.0)
    # vanilla-aa over vanilla, both in every part: each part's pair, averaged per question.
    aa = tidy[tidy["method"] == "vanilla-aa"]
    aa_seconds = (
        measured(aa[aa["timing_group"] == PART1], "vanilla-aa")["wall_time_s"]
        + measured(aa[aa["timing_group"] == PART2], "vanilla-aa")["wall_time_s"]
    ) / 2
    rates = np.array([tokens(q) for q in range(N)])
    want = np.mean(rates / aa_seconds.to_numpy()) / np.mean(rates / seconds.to_numpy())
    got = row(summarise(tidy), "vanilla-aa")
    assert got["speedup"] == pytest.approx(want, rel=1e-12)
    assert got["n_paired"] == N and got["n_questions"] == N


# -- (b) the same runs as one unsplit group -------------------------------------------------


def unsplit_table() -> pd.DataFrame:
    """Part 1's vanilla and A and part 2's B, all timed in one group."""
    tidy = split_table()
    keep = (tidy["timing_group"] == PART1) & tidy["method"].isin(["vanilla", "A"])
    keep |= (tidy["timing_group"] == PART2) & (tidy["method"] == "B")
    return tidy[keep].assign(timing_group=UNSPLIT).reset_index(drop=True)


def test_an_unsplit_group_gives_the_numbers_it_always_gave() -> None:
    tidy = unsplit_table()
    summary = summarise(tidy)
    base = measured(tidy, "vanilla")
    base_rate = base["new_tokens"] / base["wall_time_s"]
    for method in ("A", "B"):
        mine = measured(tidy, method)
        rate = mine["new_tokens"] / mine["wall_time_s"]
        got = row(summary, method)
        assert got["speedup"] == pytest.approx(rate.mean() / base_rate.mean(), rel=1e-12)
        assert got["speedup_totals"] == pytest.approx(
            (mine["new_tokens"].sum() / mine["wall_time_s"].sum())
            / (base["new_tokens"].sum() / base["wall_time_s"].sum()),
            rel=1e-12,
        )
        assert got["speedup_mean_of_ratios"] == pytest.approx((rate / base_rate).mean(), rel=1e-12)
        assert got["speedup_low"] <= got["speedup"] <= got["speedup_high"]
        assert got["n_paired"] == N and got["n_questions"] == N
    vanilla = row(summary, "vanilla")
    assert vanilla["new_tokens"] == base["new_tokens"].sum()
    assert vanilla["tokens_per_s"] == pytest.approx(
        base["new_tokens"].sum() / base["wall_time_s"].sum(), rel=1e-12
    )
    # Without the column, or with it blank, the table is read exactly as before groups existed.
    for old in (tidy.drop(columns="timing_group"), tidy.assign(timing_group=None)):
        pd.testing.assert_frame_equal(summarise(old), summary, check_exact=True)


# -- (c) claims: each part's A/A control gates its own runs ---------------------------------


def claims_file(tmp_path: Path) -> list:
    at = {"dataset": "squad", "temperature": 0.0, "text": "t"}
    claims = [
        {**at, "id": "aa", "kind": "control", "method": {"name": "vanilla-aa"},
         "reference": {"name": "vanilla"}},
        {**at, "id": "A", "kind": "value", "method": {"name": "A"}, "published": 2.0},
        {**at, "id": "B", "kind": "value", "method": {"name": "B"}, "published": 2.5},
        {**at, "id": "A/B", "kind": "ratio", "method": {"name": "A"},
         "reference": {"name": "B"}, "published": 0.8},
    ]  # fmt: skip
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"paper": "P", "claims": claims}))
    return load_claims([path])


def test_each_part_is_gated_by_its_own_control(tmp_path: Path) -> None:
    claims = claims_file(tmp_path)
    # Part 1's control passes, part 2's fails (its vanilla-aa 10% faster than its vanilla).
    table = check_claims(split_table(bias2=1.10), claims)
    controls = table[table["claim"] == "aa"].set_index("timing_groups")
    assert controls.loc[PART1, "status"] == "passed"
    assert controls.loc[PART2, "status"] == "failed"
    assert controls.loc[PART1, "questions"] == N and controls.loc[PART2, "questions"] == N
    by_id = table[table["claim"] != "aa"].set_index("claim")
    assert by_id.loc["A", "status"] == "supported"
    assert by_id.loc["A", "timing_groups"] == PART1
    assert by_id.loc["A", "aa_margin"] == pytest.approx(controls.loc[PART1, "aa_margin"])
    assert by_id.loc["B", "status"] == "inconclusive (A/A control failed)"
    assert by_id.loc["B", "timing_groups"] == PART2
    # A over B crosses parts: measured by question, never judged.
    assert by_id.loc["A/B", "measured"] is not None
    assert by_id.loc["A/B", "status"] == "inconclusive (its runs were not timed in one group)"
    # The other way round: part 1's control fails and part 2's passes.
    swapped = check_claims(split_table(bias1=1.10), claims)
    swapped = swapped[swapped["claim"] != "aa"].set_index("claim")
    assert swapped.loc["A", "status"] == "inconclusive (A/A control failed)"
    assert swapped.loc["B", "status"] == "supported"


def test_claims_pair_within_the_part_and_count_questions_once() -> None:
    tidy = split_table()
    for method, group in (("A", PART1), ("B", PART2)):
        claim = query("value", method, "p", "squad", 0.0)
        got, want = measure(tidy, claim), measure(tidy[tidy["timing_group"] == group], claim)
        assert (got["measured"], got["low"], got["high"]) == (
            want["measured"],
            want["low"],
            want["high"],
        )
        assert got["questions"] == N
    # Runs in both parts: n is the questions, each pooled over its parts, never 2N.
    aa = measure(tidy, query("ratio", "vanilla-aa", "p", "squad", 0.0, reference="vanilla"))
    assert aa["questions"] == N
    tau = measure(tidy, query("value", "vanilla", "p", "squad", 0.0, metric="tau"))
    assert tau["questions"] == N and tau["measured"] == pytest.approx(1.0)


# -- (d) the draft-design study split into parts --------------------------------------------


def member(pair: str, draft: str, role: str) -> Member:
    quality = {"shape": {"num_layers": 2, "hidden_size": 64}, "accuracy": {}}
    return Member(pair, draft, quality, role)


def test_the_draft_study_pairs_within_the_part_and_bridges_across_parts() -> None:
    # The base pair's vanilla in both parts; its own draft (existing) in part 1, a new draft
    # (pair base-deep) in part 2, on the slower node.
    rows = runs("vanilla", PART1, 10.0, "base") + runs("vanilla", PART2, 8.0, "base")
    rows += runs("sps", PART1, 20.0, "base") + runs("sps", PART2, 8.0 * 3.0, "base-deep")
    tidy = pd.DataFrame(rows)
    members = [member("base", "existing", "existing"), member("base-deep", "deep", "depth")]
    table, _, results = study(StudyInputs(tidy, "base", members, latency=[]))
    table = table.set_index("draft")

    def speedup(pair: str, group: str) -> float:
        own = tidy[(tidy["timing_group"] == group) & (tidy["pair"].isin([pair, "base"]))]
        rate = {
            m: measured(own[own["pair"] == p], m)["new_tokens"]
            / measured(own[own["pair"] == p], m)["wall_time_s"]
            for m, p in (("sps", pair), ("vanilla", "base"))
        }
        return float(rate["sps"].mean() / rate["vanilla"].mean())

    existing, deep = speedup("base", PART1), speedup("base-deep", PART2)
    assert table.loc["existing", "speedup"] == pytest.approx(existing, rel=1e-12)
    assert table.loc["deep", "speedup"] == pytest.approx(deep, rel=1e-12)
    assert deep == pytest.approx(3.0, rel=0.05)  # not 3.0 x 0.8 (part 1's vanilla)
    assert table.loc["existing", "n_questions"] == N and table.loc["deep", "n_questions"] == N
    # deep over existing: timed in different jobs, compared through each part's baseline.
    versus = results[0]["datasets"]["squad"]["comparisons"]["deep"]["fixed"]
    assert versus["bridged"] is True and versus["questions"] == N
    assert versus["measured"] == pytest.approx(deep / existing, rel=1e-12)
    assert versus["low"] <= versus["measured"] <= versus["high"]
    assert table.loc["deep", "vs_existing_fixed_measured"] == pytest.approx(deep / existing)


def test_the_draft_study_in_one_group_compares_drafts_directly() -> None:
    rows = runs("vanilla", UNSPLIT, 10.0, "base")
    rows += runs("sps", UNSPLIT, 20.0, "base") + runs("sps", UNSPLIT, 30.0, "base-deep")
    tidy = pd.DataFrame(rows)
    members = [member("base", "existing", "existing"), member("base-deep", "deep", "depth")]
    _, _, results = study(StudyInputs(tidy, "base", members, latency=[]))
    versus = results[0]["datasets"]["squad"]["comparisons"]["deep"]["fixed"]
    deep, existing = (
        measured(tidy[tidy["pair"] == "base-deep"], "sps"),
        measured(tidy[tidy["pair"] == "base"], "sps"),
    )
    want = (deep["new_tokens"] / deep["wall_time_s"]).mean() / (
        existing["new_tokens"] / existing["wall_time_s"]
    ).mean()
    assert versus["bridged"] is False and versus["measured"] == pytest.approx(want, rel=1e-12)
    assert json.dumps(results)  # the results stay JSON


def test_lossless_compares_with_vanilla_of_the_same_part() -> None:
    from specrepro.report.tidy import _lossless

    same = {"target_model": "t", "dataset": "squad", "seed": 0, "dtype": "float16",
            "stop_at_answer": True, "question_id": "q0", "turn": 0, "temperature": 0.0}  # fmt: skip
    frame = pd.DataFrame(
        [
            # vanilla's greedy tokens differ between the parts' jobs (e.g. kernel choice)
            {**same, "algorithm": "vanilla", "timing_group": PART1, "_token_ids": [1, 2]},
            {**same, "algorithm": "vanilla", "timing_group": PART2, "_token_ids": [1, 3]},
            {**same, "algorithm": "sps", "timing_group": PART2, "_token_ids": [1, 3]},
            {**same, "algorithm": "sps", "timing_group": PART1, "_token_ids": [1, 3]},
            # no vanilla in its group: any group's vanilla (the first)
            {**same, "algorithm": "sps", "timing_group": "other", "_token_ids": [1, 2]},
        ]
    )
    assert _lossless(frame).tolist() == [1, 1, 1, 0, 1]


def test_a_study_claim_is_gated_by_the_parts_its_ratio_was_timed_in(tmp_path: Path) -> None:
    # existing and near in part 1, far in part 2; part 2's A/A control fails.
    rows = []
    for group, bias in ((PART1, 1.0), (PART2, 1.10)):
        rows += runs("vanilla", group, 10.0 * NODE[group], "base")
        rows += runs("vanilla-aa", group, 10.0 * NODE[group] * bias, "base")
    rows += runs("sps", PART1, 20.0, "base") + runs("sps", PART1, 24.0, "base-near")
    rows += runs("sps", PART2, 24.0 * NODE[PART2], "base-far")
    tidy = pd.DataFrame(rows)
    members = [
        member("base", "existing", "existing"),
        member("base-near", "near", "depth"),
        member("base-far", "far", "depth"),
    ]
    _, _, results = study(StudyInputs(tidy, "base", members, latency=[]))
    comparisons = results[0]["datasets"]["squad"]["comparisons"]
    assert comparisons["near"]["fixed"]["timing_groups"] == [PART1]
    assert comparisons["far"]["fixed"]["timing_groups"] == [PART1, PART2]
    at = {"kind": "study", "metric": "throughput_ratio", "method": "sps", "dataset": "squad",
          "temperature": 0.0, "published": 1.2, "lookahead": "fixed", "text": "t"}  # fmt: skip
    claims = [
        {"id": "aa", "text": "aa", "kind": "control", "method": {"name": "vanilla-aa"},
         "reference": {"name": "vanilla"}, "dataset": "squad", "temperature": 0.0},
        {**at, "id": "near", "member": "near"},
        {**at, "id": "far", "member": "far"},
    ]  # fmt: skip
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"paper": "P", "claims": claims}))
    table = check_claims(tidy, load_claims([path]), study={"base": results})
    by_id = table[table["claim"] != "aa"].set_index("claim")
    assert by_id.loc["near", "timing_groups"] == PART1
    assert by_id.loc["near", "status"].startswith("direction supported")
    assert by_id.loc["far", "status"] == "inconclusive (A/A control failed)"
    # Both drafts are 1.2 times as fast as the existing one, far's part's slower node aside.
    assert by_id.loc["far", "measured"] == pytest.approx(1.2, rel=0.05)
