"""The draft-design study's report on hand-made numbers: the table, the correlation and its
interval, the fastest-over-deepest ratio, and the study's claims."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from specrepro.report.claims import check_claims, claims_markdown, load_claims
from specrepro.report.draft_design import (
    Member,
    draft_markdown,
    draft_table,
    pearson,
    study_results,
    tar_perplexity_correlation,
)

# depth -> (tokens/s, tau, held-out perplexity) of a made-up family with gamma 3.
FAMILY = {1: (30.0, 2.5, 9.0), 2: (24.0, 2.8, 7.0), 4: (18.0, 2.2, 8.0), 8: (12.0, 2.0, 6.5)}
TARGET_TPS = 20.0


def member(depth: int) -> Member:
    quality = {
        "draft": f"draft-d{depth}",
        "shape": {"num_layers": depth, "num_attention_heads": 9, "intermediate_size": 64},
        "counted_parameters": 7_000_000 + depth,
        "holdout_perplexity": FAMILY[depth][2],
        "holdout_agreement": 0.3,
        "training_steps": 150,
    }
    pair = "base" if depth == 2 else f"base-d{depth}"
    return Member(pair, quality["draft"], quality)


def study_frame(questions_of_base: int = 6, questions: int = 5) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)

    def add(pair, method, tps, tau, n, gamma=None):
        for q in range(n):
            tokens = 60
            rows.append(
                {
                    "pair": pair, "dataset": "squad", "method": method, "algorithm": method,
                    "params": json.dumps({"gamma": gamma} if gamma else {}),
                    "temperature": 0.0, "dtype": "float32", "seed": 0, "question_id": f"q{q}",
                    "turn": 0, "new_tokens": tokens,
                    "wall_time_s": tokens / (tps * rng.uniform(0.98, 1.02)),
                    "target_forwards": tokens / tau, "verify_forwards": tokens / tau,
                    "verified_tokens": tokens,
                }
            )  # fmt: skip

    add("base", "vanilla", TARGET_TPS, 1.0, questions_of_base)
    for depth, (tps, tau, _) in FAMILY.items():
        m = member(depth)
        add(m.pair, "sps", tps, tau, questions_of_base if m.pair == "base" else questions, 3)
    # A run that is not part of the study must not leak into it.
    add("other", "sps", 99.0, 3.0, questions, 3)
    return pd.DataFrame(rows)


def latency_rows() -> list[dict]:
    return [{"name": f"draft-d{d}", "num_layers": d, "ms_per_token": 1.5 * d} for d in FAMILY]


def test_pearson_and_its_fisher_interval() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 5.0, 4.0, 5.0]
    out = pearson(x, y)
    r = np.corrcoef(x, y)[0, 1]
    assert out["r"] == pytest.approx(r) and out["n"] == 5
    z, half = math.atanh(r), 1.959964 / math.sqrt(2)
    assert out["low"] == pytest.approx(math.tanh(z - half), abs=1e-5)
    assert out["high"] == pytest.approx(math.tanh(z + half), abs=1e-5)
    assert out["low"] < r < out["high"]
    three = pearson([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert np.isfinite(three["r"]) and math.isnan(three["low"])  # no interval from 3 points
    assert math.isnan(pearson([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])["r"])
    assert pearson([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0])["n"] == 2


def test_the_table_pairs_each_draft_with_the_target_alone_on_common_questions() -> None:
    members = [member(d) for d in FAMILY]
    table = draft_table(study_frame(), "base", members, latency_rows())
    assert list(table["depth"]) == [1, 2, 4, 8]
    assert set(table["n_questions"]) == {5}  # the base draft's sixth question is left out
    for row in table.to_dict("records"):
        tps, tau, ppl = FAMILY[row["depth"]]
        assert row["tokens_per_s"] == pytest.approx(tps, rel=0.03)
        assert row["speedup"] == pytest.approx(tps / TARGET_TPS, rel=0.04)
        assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
        assert row["tau"] == pytest.approx(tau)
        assert row["tar"] == pytest.approx((tau - 1) / 3)
        assert row["perplexity"] == ppl
        assert row["latency_ms"] == 1.5 * row["depth"]
    assert "other" not in set(table["pair"])


def test_study_results_give_the_ratio_and_the_correlation() -> None:
    members = [member(d) for d in FAMILY]
    tidy = study_frame()
    table = draft_table(tidy, "base", members, latency_rows())
    (entry,) = study_results(tidy, table, members)
    ratio = entry["throughput_ratio"]["squad"]
    assert (ratio["fast"], ratio["deep"]) == ("draft-d1", "draft-d8")
    assert ratio["measured"] == pytest.approx(30.0 / 12.0, rel=0.03)
    assert ratio["low"] <= ratio["measured"] <= ratio["high"] and ratio["questions"] == 5
    corr = entry["tar_perplexity_r"]
    tars = [(FAMILY[d][1] - 1) / 3 for d in FAMILY]
    ppls = [FAMILY[d][2] for d in FAMILY]
    assert corr["r"] == pytest.approx(np.corrcoef(ppls, tars)[0, 1], abs=1e-6)
    assert corr["n"] == 4 and corr["low"] < corr["r"] < corr["high"]
    assert corr == {**tar_perplexity_correlation(table, "sps", 0.0)}
    text = draft_markdown(table, [entry], "study")
    assert "draft-d8" in text and f"r = {corr['r']:.2f}" in text and "2.50" in text


def test_the_study_claims_read_the_study_results(tmp_path) -> None:
    members = [member(d) for d in FAMILY]
    tidy = study_frame()
    results = study_results(tidy, draft_table(tidy, "base", members, latency_rows()), members)
    path = tmp_path / "claims.yaml"
    path.write_text(
        """
paper: Decoding Speculative Decoding
min_questions: 4
claims:
  - {id: fast, text: faster, kind: study, metric: throughput_ratio, method: sps,
     dataset: squad, temperature: 0.0, published: 2.11}
  - {id: weak, text: weak r, kind: study, metric: tar_perplexity_r, method: sps,
     dataset: all, temperature: 0.0, at_most: 0.5}
  - {id: t1, text: not run, kind: study, metric: throughput_ratio, method: sps,
     dataset: squad, temperature: 1.0, published: 2.11}
"""
    )
    claims = load_claims([path])
    table = check_claims(tidy, claims, study={"base": results})
    status = dict(zip(table["claim"], table["status"], strict=True))
    # 2.5x: faster, but not the paper's 2.11 (the interval is +-2% wide).
    assert status == {
        "fast": "direction supported; magnitude not supported",
        "weak": "inconclusive",
        "t1": "not run",
    }
    assert table.set_index("claim").loc["fast", "measured_over_published"] == pytest.approx(
        2.5 / 2.11, rel=0.03
    )
    # At the default minimum of 8 questions, 5 decide nothing.
    path.write_text(path.read_text().replace("min_questions: 4\n", ""))
    table = check_claims(tidy, load_claims([path]), study={"base": results})
    assert table.set_index("claim").loc["fast", "status"] == "inconclusive (n = 5 questions < 8)"
    # Three drafts give no interval: said so, never a status from nothing.
    three = [m for m in members if m.depth != 4]
    few = study_results(tidy, draft_table(tidy, "base", three, latency_rows()), three)
    table = check_claims(tidy, claims, study={"base": few})
    row = table.set_index("claim").loc["weak"]
    assert row["status"] == "not measured" and "4 drafts" in row["reason"]
    assert "not measured" in claims_markdown(table)


def test_a_correlation_claim_needs_at_most(tmp_path) -> None:
    from specrepro.report.claims import ClaimError

    path = tmp_path / "claims.yaml"
    path.write_text(
        "paper: p\nclaims:\n  - {id: w, text: t, kind: study, metric: tar_perplexity_r, "
        "method: sps, dataset: all, temperature: 0.0, at_least: 0.5}\n"
    )
    with pytest.raises(ClaimError, match="at_most"):
        load_claims([path])


def test_the_study_figures_are_drawn(tmp_path) -> None:
    from specrepro.report.figures import (
        draft_latency_figure,
        draft_tar_figure,
        draft_throughput_figure,
    )

    members = [member(d) for d in FAMILY]
    tidy = study_frame()
    table = draft_table(tidy, "base", members, latency_rows())
    results = study_results(tidy, table, members)
    rows = [
        {**r, "counted_parameters": 7e6, "device": "cpu", "dtype": "float32"}
        for r in latency_rows()
    ]
    paths = draft_latency_figure({"family": rows, "paper": []}, tmp_path / "lat", "t")
    paths += draft_tar_figure(table, results, tmp_path / "tar", "t")
    paths += draft_throughput_figure(table, tmp_path / "thr", "t")
    assert len(paths) == 6 and all(p.stat().st_size > 0 for p in paths)
