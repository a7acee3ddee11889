"""The draft-design study's report on hand-made numbers: every member against the existing
draft with its own and a Bonferroni interval, the lookahead chosen on tuning questions and
reported on others, acceptance against the drafts' own task accuracy, and the study's claims
(a member fixed in advance, the largest over all, 'undecided' below the drafts a correlation
needs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from specrepro.report.claims import (
    ClaimError,
    check_claims,
    claims_markdown,
    decidable_n,
    load_claims,
)
from specrepro.report.draft_design import (
    Member,
    StudyInputs,
    draft_markdown,
    pearson,
    simultaneous_max,
    split_questions,
    study,
)

TARGET_TPS = 20.0
QUESTIONS = [f"q{i}" for i in range(10)]
TUNE = 4  # q0-q3 choose the gamma, q4-q9 report it
# draft -> (role, depth, hidden, tau at gamma 3, SQuAD F1 of the draft alone, perplexity)
DRAFTS = {
    "existing": ("existing", 2, 64, 2.0, 0.30, 7.0),
    "deep-1": ("depth", 1, 64, 2.5, 0.10, 9.0),
    "deep-4": ("depth", 4, 64, 1.6, 0.20, 8.0),
    "wide-1": ("wide", 1, 96, 2.2, 0.25, 6.5),
}
# tokens/s by (draft, gamma) on the tuning questions and on the report questions: "deep-1" is
# best at gamma 1 on the tuning questions but at gamma 5 on the report ones, so a report that
# picked its gamma on the report questions would say 5.
SPEED = {
    ("existing", 1): (21.0, 21.0), ("existing", 3): (24.0, 24.0), ("existing", 5): (22.0, 22.0),
    ("deep-1", 1): (40.0, 30.0), ("deep-1", 3): (30.0, 30.0), ("deep-1", 5): (20.0, 44.0),
    ("deep-4", 1): (14.0, 14.0), ("deep-4", 3): (12.0, 12.0), ("deep-4", 5): (10.0, 10.0),
    ("wide-1", 1): (26.0, 26.0), ("wide-1", 3): (28.0, 28.0), ("wide-1", 5): (27.0, 27.0),
}  # fmt: skip
NAMES = {1: "sps-g1", 3: "sps", 5: "sps-g5"}


def members() -> list[Member]:
    out = []
    for draft, (role, depth, hidden, _, f1, ppl) in DRAFTS.items():
        quality = {
            "draft": draft,
            "shape": {"num_layers": depth, "hidden_size": hidden, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64,
                      "vocab_size": 100, "tie_word_embeddings": True},
            "counted_parameters": 70_000,
            "holdout_perplexity": ppl,
            "holdout_agreement": 0.3,
            "accuracy": {"squad": {"n": 10, "em": f1 / 2, "f1": f1, "exec_match": None}},
            "training_steps": 60,
            "training_stop": "plateau",
        }  # fmt: skip
        pair = "base" if role == "existing" else f"base-{draft}"
        out.append(Member(pair, draft, quality, role))
    return out


def frame(noise: float = 0.02, existing_questions: int = 10) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)

    def add(pair, method, tps, tau, questions, gamma=None):
        for q in questions:
            tokens = 60
            rows.append(
                {
                    "pair": pair, "dataset": "squad", "method": method, "algorithm": "sps",
                    "params": json.dumps({"gamma": gamma} if gamma else {}),
                    "temperature": 0.0, "dtype": "float32", "seed": 0, "question_id": q,
                    "turn": 0, "new_tokens": tokens,
                    "wall_time_s": tokens / (tps(q) * rng.uniform(1 - noise, 1 + noise)),
                    "target_forwards": tokens / tau, "verify_forwards": tokens / tau,
                    "verified_tokens": tokens,
                }
            )  # fmt: skip

    for q in QUESTIONS:
        rows_before = len(rows)
        add("base", "vanilla", lambda _q: TARGET_TPS, 1.0, [q])
        rows[rows_before]["algorithm"] = "vanilla"
    for m in members():
        tau = DRAFTS[m.draft][3]
        for gamma, name in NAMES.items():
            tune, report = SPEED[(m.draft, gamma)]
            n = existing_questions if m.role == "existing" and name == "sps" else len(QUESTIONS)
            add(m.pair, name, lambda q, t=tune, r=report: t if int(q[1:]) < TUNE else r, tau,
                QUESTIONS[:n], gamma)  # fmt: skip
    # A run that is not part of the study must not leak into it.
    add("other", "sps", lambda _q: 99.0, 3.0, QUESTIONS, 3)
    return pd.DataFrame(rows)


def latency_rows() -> list[dict]:
    return [
        {"name": d, "num_layers": v[1], "hidden_size": v[2], "ms_per_token": 1.5 * v[1],
         "ms_token_p10": 1.4 * v[1], "ms_token_p90": 1.7 * v[1], "ms_per_token_min": 1.45 * v[1],
         "ms_per_token_max": 1.6 * v[1]}
        for d, v in DRAFTS.items()
    ]  # fmt: skip


def inputs(tidy: pd.DataFrame | None = None, tune: int = TUNE) -> StudyInputs:
    return StudyInputs(
        tidy=frame() if tidy is None else tidy,
        base_pair="base",
        members=members(),
        latency=latency_rows(),
        sweep={"sps": ["sps-g1", "sps", "sps-g5"]},
        tune={"squad": tune},
        order={"squad": QUESTIONS},
    )


def test_pearson_and_its_fisher_interval() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 5.0, 4.0, 5.0]
    out = pearson(x, y)
    r = np.corrcoef(x, y)[0, 1]
    assert out["r"] == pytest.approx(r) and out["n"] == 5
    z, half = math.atanh(r), 1.959964 / math.sqrt(2)
    assert out["low"] == pytest.approx(math.tanh(z - half), abs=1e-5)
    assert out["high"] == pytest.approx(math.tanh(z + half), abs=1e-5)
    three = pearson([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert np.isfinite(three["r"]) and math.isnan(three["low"])  # no interval from 3 points
    flat = pearson([0.0] * 4, [1.0, 2.0, 3.0, 4.0])
    assert math.isnan(flat["r"]) and "same value" in flat["reason"]
    assert pearson([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0])["n"] == 2


def test_the_decidable_number_of_drafts() -> None:
    # tanh(1.96 / sqrt(n - 3)) < 0.5 first at n = 16: at r = 0 the interval is +-0.496.
    assert decidable_n(0.5) == 16
    assert math.tanh(1.959964 / math.sqrt(16 - 3)) < 0.5 < math.tanh(1.959964 / math.sqrt(15 - 3))
    assert math.tanh(1.959964 / math.sqrt(4 - 3)) > 0.96  # four drafts: +-0.96
    assert decidable_n(0.3) > decidable_n(0.5) > decidable_n(0.8)
    with pytest.raises(ValueError):
        decidable_n(1.0)


def test_split_keeps_the_prompt_order() -> None:
    tune, report = split_questions(["q3", "q1", "q2", "q0"], {"q0", "q1", "q2"}, 1)
    assert (tune, report) == (["q1"], ["q2", "q0"])
    assert split_questions(["a", "b"], {"a", "b"}, None) == ([], ["a", "b"])


def test_every_member_is_compared_with_the_existing_draft() -> None:
    table, _, (entry,) = study(inputs())
    assert list(table["draft"]) == ["existing", "deep-1", "deep-4", "wide-1"]
    assert set(table["n_questions"]) == {10}
    assert "other" not in set(table["pair"])
    values = entry["datasets"]["squad"]
    assert set(values["comparisons"]) == {"deep-1", "deep-4", "wide-1"}  # all, not the best
    assert entry["members"] == 3 and entry["existing"] == "existing"
    for draft, comparison in values["comparisons"].items():
        fixed = comparison["fixed"]
        # fixed gamma (3), every question: tune and report speeds are equal at gamma 3
        assert fixed["measured"] == pytest.approx(SPEED[(draft, 3)][0] / 24.0, rel=0.03)
        assert fixed["questions"] == 10 and fixed["comparisons"] == 3
        # Bonferroni over 3 comparisons: wider than the plain 95% interval, same centre.
        assert fixed["low_bonferroni"] <= fixed["low"] <= fixed["measured"] <= fixed["high"]
        assert fixed["high"] <= fixed["high_bonferroni"]
    row = table.set_index("draft").loc["wide-1"]
    assert row["tau"] == pytest.approx(2.2) and row["tar"] == pytest.approx(1.2 / 3)
    assert row["speedup"] == pytest.approx(28.0 / TARGET_TPS, rel=0.03)
    assert row["kv_bytes_per_token"] == 2 * 1 * 2 * 16 * 4
    assert row["embedding_parameters"] == 100 * 96
    assert (row["latency_p10"], row["latency_p90"]) == (1.4, 1.7)
    assert row["accuracy"] == 0.25 and row["accuracy_metric"] == "f1"


def test_a_reference_member_replaces_the_existing_draft_in_every_ratio() -> None:
    # The pair's own draft is trained by another rule: with a reference member it stays in the
    # table but leaves the ratios, and the Bonferroni count drops with it.
    base = inputs()
    base.reference = "deep-1"
    table, _, (entry,) = study(base)
    assert list(table["draft"]) == ["existing", "deep-1", "deep-4", "wide-1"]
    values = entry["datasets"]["squad"]
    assert set(values["comparisons"]) == {"deep-4", "wide-1"}
    assert entry["members"] == 2 and entry["existing"] == "deep-1"
    fixed = values["comparisons"]["wide-1"]["fixed"]
    expected = SPEED[("wide-1", 3)][0] / SPEED[("deep-1", 3)][0]
    assert fixed["measured"] == pytest.approx(expected, rel=0.05) and fixed["comparisons"] == 2
    base.reference = "nobody"
    with pytest.raises(ValueError, match="reference draft 'nobody' is not a member"):
        study(base)


def test_the_lookahead_is_chosen_on_tuning_questions_and_reported_on_the_others() -> None:
    table, sweep, (entry,) = study(inputs())
    row = table.set_index("draft").loc["deep-1"]
    # gamma 1 wins on the tuning questions (40 tok/s); on the report questions gamma 5 would.
    assert row["best_gamma"] == 1 and (row["n_tune"], row["n_report"]) == (4, 6)
    assert row["report_speedup_best"] == pytest.approx(30.0 / TARGET_TPS, rel=0.03)
    assert row["report_speedup_fixed"] == pytest.approx(30.0 / TARGET_TPS, rel=0.03)
    # the existing draft at its own best (gamma 3, 24 tok/s): deep-1 tuned over it, report only
    tuned = entry["datasets"]["squad"]["comparisons"]["deep-1"]["tuned"]
    assert tuned["measured"] == pytest.approx(30.0 / 24.0, rel=0.03) and tuned["questions"] == 6
    assert entry["datasets"]["squad"]["tune_questions"] == QUESTIONS[:TUNE]
    # the sweep table has each gamma on both splits
    mine = sweep[(sweep["draft"] == "deep-1") & (sweep["split"] == "report")]
    assert mine.set_index("gamma").loc[5.0, "speedup"] == pytest.approx(44.0 / 20, rel=0.03)
    # without tuning questions there is nothing to choose on: the fixed gamma is reported
    table, _, _ = study(inputs(tune=0))
    assert set(table["best_gamma"]) == {3.0}


def test_the_largest_ratio_is_judged_by_the_simultaneous_interval() -> None:
    _, _, (entry,) = study(inputs())
    values = entry["datasets"]["squad"]
    top = values["max"]["tuned"]
    comparisons = values["comparisons"]
    assert top["measured"] == max(c["tuned"]["measured"] for c in comparisons.values())
    assert top["low"] == max(c["tuned"]["low_bonferroni"] for c in comparisons.values())
    assert top["high"] == max(c["tuned"]["high_bonferroni"] for c in comparisons.values())
    assert top["comparisons"] == 3
    assert simultaneous_max({}, "tuned")["measured"] is None


def test_acceptance_is_correlated_with_the_drafts_own_accuracy() -> None:
    table, sweep, (entry,) = study(inputs())
    corr = entry["correlations"]["squad"]
    tars = [(DRAFTS[d][3] - 1) / 3 for d in DRAFTS]
    f1 = [DRAFTS[d][4] for d in DRAFTS]
    ppl = [DRAFTS[d][5] for d in DRAFTS]
    assert corr["accuracy_metric"] == "f1"
    assert corr["accuracy"]["r"] == pytest.approx(np.corrcoef(f1, tars)[0, 1], abs=1e-6)
    assert corr["perplexity"]["r"] == pytest.approx(np.corrcoef(ppl, tars)[0, 1], abs=1e-6)
    assert corr["accuracy"]["n"] == 4
    text = draft_markdown(table, sweep, [entry], "study")
    assert "wide-1" in text and f"r = {corr['accuracy']['r']:.2f}" in text
    assert "Bonferroni over 3 drafts" in text and "gamma 5" in text


CLAIMS = """
paper: Decoding Speculative Decoding
min_questions: 4
claims:
  - {id: all, text: best of all, kind: study, metric: throughput_ratio, member: all,
     method: sps, dataset: squad, temperature: 0.0, published: 2.11}
  - {id: fixed-member, text: wide-1 named in advance, kind: study, metric: throughput_ratio,
     member: wide-1, lookahead: fixed, method: sps, dataset: squad, temperature: 0.0,
     published: 2.11}
  - {id: slow-member, text: deep-4, kind: study, metric: throughput_ratio, member: deep-4,
     lookahead: fixed, method: sps, dataset: squad, temperature: 0.0, published: 2.11}
  - {id: weak, text: weak r, kind: study, metric: tar_accuracy_r, method: sps,
     dataset: squad, temperature: 0.0, at_most: 0.5, min_drafts: 16}
  - {id: t1, text: not run, kind: study, metric: throughput_ratio, member: all, method: sps,
     dataset: squad, temperature: 1.0, published: 2.11}
"""


CONTROL = """
paper: A/A control
min_questions: 4
claims:
  - {id: aa, text: aa, kind: control, method: {name: vanilla-aa}, reference: {name: vanilla},
     dataset: squad, temperature: 0.0}
"""


def with_twin(tidy: pd.DataFrame) -> pd.DataFrame:
    """The base pair's vanilla again as `vanilla-aa`, within 0.2% of it: a control that passes."""
    aa = tidy[(tidy["pair"] == "base") & (tidy["method"] == "vanilla")].assign(method="vanilla-aa")
    jitter = np.random.default_rng(3).uniform(0.998, 1.002, len(aa))
    return pd.concat([tidy, aa.assign(wall_time_s=aa["wall_time_s"] * jitter)], ignore_index=True)


def test_the_study_claims_read_the_study_results(tmp_path) -> None:
    tidy = frame()
    _, _, results = study(inputs(tidy))
    path = tmp_path / "claims.yaml"
    path.write_text(CLAIMS)
    control = tmp_path / "control.yaml"
    control.write_text(CONTROL)
    # The study's drafts ran in the base pair's timing group: without its A/A control, no speed
    # verdict.
    alone = check_claims(tidy, load_claims([path]), study={"base": results}).set_index("claim")
    assert alone.loc["all", "status"] == "inconclusive (no A/A control in this group)"
    tidy = with_twin(tidy)
    claims = load_claims([control, path])
    table = check_claims(tidy, claims, study={"base": results}).set_index("claim")
    assert table.loc["aa", "status"] == "passed"
    # The largest tuned ratio (deep-1, 30/24 = 1.25 on 6 report questions): above 1 even by the
    # simultaneous interval, and nowhere near the paper's 2.11.
    assert table.loc["all", "status"] == "direction supported; magnitude not supported"
    assert table.loc["all", "measured"] == pytest.approx(1.25, rel=0.03)
    assert table.loc["fixed-member", "measured"] == pytest.approx(28 / 24, rel=0.03)
    assert table.loc["slow-member", "status"] == "direction not supported; magnitude not supported"
    assert table.loc["weak", "status"] == "undecided: needs 16 drafts, has 4"
    assert table.loc["t1", "status"] == "not run"
    assert "undecided: needs 16 drafts, has 4" in claims_markdown(table.reset_index())
    # At the default minimum of 8 questions, the 6 report questions decide nothing.
    path.write_text(CLAIMS.replace("min_questions: 4\n", ""))
    claims = load_claims([control, path])
    table = check_claims(tidy, claims, study={"base": results}).set_index("claim")
    assert table.loc["all", "status"] == "inconclusive (n = 6 questions < 8)"
    assert table.loc["fixed-member", "status"].startswith("direction")  # 10 questions


def test_a_decidable_correlation_gets_a_verdict(tmp_path) -> None:
    # 20 drafts whose TAR does not follow their accuracy: r near 0, interval within +-0.5.
    rng = np.random.default_rng(1)
    acc = rng.uniform(0, 1, 20)
    tar = rng.uniform(0, 1, 20)
    corr = pearson(list(acc), list(tar))
    results = [{"method": "sps", "temperature": 0.0, "datasets": {},
                "correlations": {"squad": {"accuracy": corr, "perplexity": corr}}}]  # fmt: skip
    path = tmp_path / "claims.yaml"
    path.write_text(
        "paper: p\nclaims:\n  - {id: w, text: t, kind: study, metric: tar_accuracy_r, "
        "method: sps, dataset: squad, temperature: 0.0, at_most: 0.5, min_drafts: 16}\n"
    )
    row = check_claims(frame(), load_claims([path]), study={"b": results}).iloc[0]
    expected = "supported" if -0.5 <= corr["low"] and corr["high"] <= 0.5 else "inconclusive"
    assert row["status"] == expected and row["questions"] == 20


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("metric: tar_accuracy_r, at_least: 0.5, min_drafts: 16", "at_most"),
        ("metric: tar_accuracy_r, at_most: 0.5", "min_drafts"),
        ("metric: tar_accuracy_r, at_most: 0.5, min_drafts: 8", "at least 16"),
        ("metric: throughput_ratio, published: 2.11", "member"),
        ("metric: throughput_ratio, published: 2.11, member: all, lookahead: best", "lookahead"),
    ],
)
def test_study_claims_must_say_what_they_compare(tmp_path, entry: str, message: str) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text(
        f"paper: p\nclaims:\n  - {{id: w, text: t, kind: study, {entry}, method: sps, "
        "dataset: squad, temperature: 0.0}\n"
    )
    with pytest.raises(ClaimError, match=message):
        load_claims([path])


def test_the_projects_study_claims_load_and_state_the_drafts_they_need() -> None:
    from pathlib import Path

    claims = load_claims([Path(__file__).parents[1] / "config/claims/draft_design.yaml"])
    correlations = [c for c in claims if c.metric == "tar_accuracy_r"]
    assert correlations and all(c.min_drafts == decidable_n(c.at_most) for c in correlations)
    assert all(c.member for c in claims if c.metric == "throughput_ratio")


def test_the_study_figures_are_drawn(tmp_path) -> None:
    from specrepro.report.draft_design import (
        gamma_figure,
        latency_figure,
        tar_figure,
        throughput_figure,
        training_figure,
    )

    table, sweep, results = study(inputs())
    roles = {m.draft: m.role for m in members()}
    logs = {
        "deep-1": {"stop": "plateau", "log": [
            {"step": 0, "holdout_loss": 5.0}, {"step": 1, "loss": 4.0, "smoothed_loss": 4.0},
            {"step": 2, "loss": 3.0, "smoothed_loss": 3.5, "holdout_loss": 3.2}]},
    }  # fmt: skip
    paths = latency_figure(latency_rows(), roles, tmp_path / "lat", "t", paper=[])
    paths += tar_figure(table, results, tmp_path / "tar", "t")
    paths += throughput_figure(table, tmp_path / "thr", "t")
    paths += gamma_figure(sweep, tmp_path / "gamma", "t")
    paths += training_figure(logs, tmp_path / "train", "t")
    assert len(paths) == 10 and all(p.stat().st_size > 0 for p in paths)
