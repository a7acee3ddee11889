"""Claims as data: statuses from intervals, ratios between methods, averages over pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specrepro.report.claims import ClaimError, check_claims, claims_markdown, load_claims

REPO = Path(__file__).resolve().parents[1]


def tidy_frame(
    tps: dict[str, dict[str, float]], n: int = 30, seed: int = 0, params: dict | None = None
) -> pd.DataFrame:
    """Per pair, per method: n questions whose tokens/s scatter by +-5% around tps[pair][m];
    tau = 2 for every method but vanilla (prefill forward excluded); `params` by method."""
    rng = np.random.default_rng(seed)
    rows = []
    for pair, methods in tps.items():
        for q in range(n):
            for method, speed in methods.items():
                tokens = 100
                forwards = tokens if method.startswith("vanilla") else tokens // 2
                rows.append(
                    {
                        "pair": pair, "dataset": "mtbench", "method": method,
                        "algorithm": method.split("-")[0].split("_x")[0],
                        "params": json.dumps((params or {}).get(method, {})),
                        "temperature": 0.0, "dtype": "float16", "seed": 0,
                        "question_id": f"q{q}", "turn": 0, "new_tokens": tokens,
                        "wall_time_s": tokens / (speed * rng.uniform(0.95, 1.05)),
                        "target_forwards": forwards + 1, "verify_forwards": forwards,
                        "verified_tokens": tokens,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def with_aa(tidy: pd.DataFrame, bias: float = 1.0) -> pd.DataFrame:
    """The table with `vanilla-aa`: vanilla's rows again, `bias` times as fast (1: the same
    timings, so the A/A control passes with no margin)."""
    twin = tidy[tidy["method"] == "vanilla"].assign(method="vanilla-aa")
    twin["wall_time_s"] = twin["wall_time_s"] / bias
    return pd.concat([tidy, twin], ignore_index=True)


def aa_claim(dataset: str = "mtbench", temperature: float = 0.0, **extra: object) -> dict:
    return {"id": f"aa-{dataset}-{temperature}", "text": "aa", "kind": "control",
            "method": {"name": "vanilla-aa"}, "reference": {"name": "vanilla"},
            "dataset": dataset, "temperature": temperature, **extra}  # fmt: skip


def write_claims(path: Path, claims: list[dict], **header: object) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"paper": "P", **header, "claims": claims}))
    return path


BASE = {"kind": "ratio", "dataset": "mtbench", "temperature": 0.0, "text": "t"}


def check(tidy: pd.DataFrame, tmp_path: Path, claims: list[dict], **header) -> pd.DataFrame:
    loaded = load_claims([write_claims(tmp_path / "c.yaml", claims, **header)])
    return check_claims(tidy, loaded).set_index("claim")


def test_ratio_claims_get_a_direction_and_a_magnitude(tmp_path: Path) -> None:
    tidy = tidy_frame(
        {
            "a": {"vanilla": 10.0, "eagle2": 30.0, "ddd": 33.0},
            "b": {"vanilla": 10.0, "eagle2": 30.0, "ddd": 32.0},
        }
    )
    table = check(
        with_aa(tidy),
        tmp_path,
        [
            aa_claim(),
            {**BASE, "id": "win", "method": "ddd", "reference": "eagle2", "published": 1.08},
            {**BASE, "id": "big", "method": "ddd", "reference": "eagle2", "published": 1.3},
            {**BASE, "id": "none", "method": "ddd", "reference": "eagle", "published": 1.0},
            {**BASE, "id": "slower", "method": "eagle2", "reference": "ddd", "published": 1.0},
        ],
    )
    # Average over the two pairs of 1.1 and 1.067: above 1, and 1.08 inside the interval.
    assert table.loc["win", "measured"] == pytest.approx((33 / 30 + 32 / 30) / 2, rel=0.02)
    assert table.loc["win", "low"] < table.loc["win", "measured"] < table.loc["win", "high"]
    assert (table.loc["win", "direction"], table.loc["win", "magnitude"]) == (
        "supported",
        "supported",
    )
    assert table.loc["win", "status"] == "direction supported; magnitude supported"
    assert (table.loc["big", "direction"], table.loc["big", "magnitude"]) == (
        "supported",
        "not supported",
    )
    assert table.loc["none", "status"] == "not run"
    assert table.loc["slower", "direction"] == "not supported"
    assert table.loc["win", "questions"] == 60
    text = claims_markdown(table.reset_index())
    assert "**not run**" in text and "(n=60)" in text


def test_value_claims_speed_one_sided_tau_two_sided(tmp_path: Path) -> None:
    tidy = with_aa(tidy_frame({"a": {"vanilla": 10.0, "eagle2": 30.0}}))
    value = {"kind": "value", "dataset": "mtbench", "temperature": 0.0, "text": "t"}
    table = check(
        tidy,
        tmp_path,
        [
            aa_claim(),
            {**value, "id": "speed", "method": "eagle2", "published": 3.0},
            {**value, "id": "faster", "method": "eagle2", "published": 2.0},
            {**value, "id": "tau", "metric": "tau", "method": "eagle2", "published": 2.0},
            # Measured tau 2 is twice the published 1: not supported, however "high" it is.
            {**value, "id": "tau-half", "metric": "tau", "method": "eagle2", "published": 1.0},
            {**value, "id": "tau-near", "metric": "tau", "method": "eagle2", "published": 2.1},
        ],
    )
    assert table.loc["speed", "status"] == "supported"  # 3.0 against 3.0 less 10%
    assert table.loc["speed", "measured_over_published"] == pytest.approx(1.0, rel=0.02)
    assert table.loc["faster", "status"] == "supported"  # speed depends on the hardware
    # Tau is exactly 2 on every question: a zero-width interval decides nothing.
    assert table.loc["tau", "measured"] == pytest.approx(2.0)
    assert table.loc["tau", "status"] == "inconclusive (zero-width interval)"
    tidy.loc[tidy["method"] == "eagle2", "verified_tokens"] += np.arange(30) % 3 - 1
    table = check(
        tidy,
        tmp_path,
        [
            {**value, "id": "tau", "metric": "tau", "method": "eagle2", "published": 2.0},
            {**value, "id": "tau-half", "metric": "tau", "method": "eagle2", "published": 1.0},
        ],
    )
    assert table.loc["tau", "status"] == "supported"
    assert table.loc["tau-half", "status"] == "not supported"


def test_no_verdict_on_one_question(tmp_path: Path) -> None:
    tidy = tidy_frame({"a": {"vanilla": 10.0, "eagle2": 30.0, "ddd": 40.0}}, n=1)
    table = check(
        tidy, tmp_path, [{**BASE, "id": "r", "method": "ddd", "reference": "eagle2",
                          "published": 1.3}],
    )  # fmt: skip
    assert table.loc["r", "status"] == "inconclusive (n = 1 questions < 8)"
    assert "(n=1)" in claims_markdown(table.reset_index())
    # The minimum is the claims file's to set.
    table = check(
        with_aa(tidy_frame({"a": {"vanilla": 10.0, "eagle2": 30.0, "ddd": 40.0}}, n=5)),
        tmp_path,
        [aa_claim(), {**BASE, "id": "r", "method": "ddd", "reference": "eagle2",
                      "published": 1.3}],
        min_questions=4,
    )  # fmt: skip
    assert table.loc["r", "direction"] == "supported"


def test_a_run_with_other_parameters_is_reported_with_its_measurement(tmp_path: Path) -> None:
    paper = {"top_k": 10, "total_tokens": 60, "threshold": -0.3}
    cpu = {"top_k": 4, "total_tokens": 16, "threshold": -6.0}
    tidy = tidy_frame(
        {"a": {"vanilla": 10.0, "eagle2-cpu": 15.0, "ddd-cpu": 18.0}},
        params={"ddd-cpu": cpu, "eagle2-cpu": {"top_k": 4, "depth": 5, "total_tokens": 16}},
    )
    ddd = {"algorithm": "ddd", "params": paper}
    eagle2 = {"algorithm": "eagle2", "params": {"top_k": 10, "depth": 6, "total_tokens": 60}}
    value = {"kind": "value", "dataset": "mtbench", "temperature": 0.0, "text": "t"}
    table = check(
        with_aa(tidy),
        tmp_path,
        [
            aa_claim(),
            {**value, "id": "ddd-speedup", "method": ddd, "published": 3.16},
            {**BASE, "id": "ratio", "method": ddd, "reference": eagle2, "published": 1.04},
            {**value, "id": "cpu", "method": {"algorithm": "ddd", "params": cpu},
             "published": 1.8},
        ],
    )  # fmt: skip
    row = table.loc["ddd-speedup"]
    # Measured for reference: the published speedup belongs to the paper's tree.
    assert row["status"].startswith("measured for reference; ran with other parameters (ddd-cpu:")
    assert row["measured"] == pytest.approx(1.8, rel=0.03) and row["runs"] == "ddd-cpu"
    assert "threshold -6.0 (paper -0.3)" in row["status"]
    assert "threshold -6.0 (paper -0.3)" in row["other_parameters"]
    # A ratio of runs timed together still gets its direction, every check passed.
    assert table.loc["ratio", "runs"] == "ddd-cpu / eagle2-cpu"
    assert table.loc["ratio", "measured"] == pytest.approx(1.2, rel=0.03)
    assert table.loc["ratio", "status"].startswith("direction supported; ran with other")
    assert table.loc["ratio", "magnitude"] == "-"
    assert table.loc["cpu", "status"] == "supported"  # the CPU setting itself matches
    text = claims_markdown(table.reset_index())
    assert "ran with other parameters (ddd-cpu: check_levels" not in text  # no check_levels
    assert "ran with other parameters (ddd-cpu: threshold -6.0 (paper -0.3)" in text


def beam_frame(energy: bool, n: int = 40) -> pd.DataFrame:
    """SQuAD at T=1: beam and dsbd (W 3), dsbd twice as fast, using 2x less energy per token
    when measured, with exact match 50% for beam and 45% for dsbd."""
    rows = []
    for q in range(n):
        for method, speed, joules, em in (
            ("beam", 10.0, 4.0, q % 2),
            ("dsbd", 20.0, 2.0, q % 20 < 9),
        ):
            rows.append(
                {
                    "pair": "p", "dataset": "squad", "method": method, "algorithm": method,
                    "params": json.dumps(
                        {"width": 3, "w_thres": 0.7 if method == "dsbd" else 0,
                         "stop_at_answer": False}
                    ),
                    "temperature": 1.0, "dtype": "float16", "seed": 0, "question_id": f"q{q}",
                    "turn": 0, "new_tokens": 10, "wall_time_s": 10 / speed, "target_forwards": 5,
                    "verify_forwards": 5, "verified_tokens": 10,
                    "energy_j": joules * 10 if energy else None,
                    "energy_reason": None if energy else "run on device cpu",
                    "em": float(em), "kv_bytes_peak": 2**20,
                    "target_loglik": -1.0 - 0.01 * (q % 7) - (0.5 if method == "dsbd" else 0),
                    "level_widths": json.dumps([[3, 2], [1]] if method == "dsbd" else []),
                    # dsbd: the full level of width 3, then each round's refill to W = 3.
                    "beams_carried": json.dumps([3, 3, 3] if method == "dsbd" else [3, 3]),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("energy", [True, False])
def test_energy_and_quality_claims(tmp_path: Path, energy: bool) -> None:
    common = {"method": "dsbd", "reference": "beam", "dataset": "squad", "temperature": 1.0}
    table = check(
        beam_frame(energy),
        tmp_path,
        [
            {"id": "e", "text": "e", "kind": "ratio", "metric": "energy", "published": 1.8,
             "published_high": 2.5, **common},
            {"id": "q", "text": "q", "kind": "difference", "at_least": -12.5, **common},
            {"id": "s", "text": "s", "kind": "ratio", "published": 1.5, "published_high": 1.9,
             **common},
            {"id": "ll", "text": "ll", "kind": "difference", "metric": "loglik",
             "at_least": -0.1, **common},
        ],
        estimator="totals",
    )  # fmt: skip
    # Every question is exactly 2x: the interval has no width, so no verdict.
    assert table.loc["s", "measured"] == pytest.approx(2.0)
    assert table.loc["s", "status"] == "inconclusive (zero-width interval)"
    # 45% against 50%: -5 points, the interval over 40 questions straddles -12.5.
    assert table.loc["q", "measured"] == pytest.approx(-5.0)
    assert table.loc["q", "status"] in ("not supported", "inconclusive")
    assert table.loc["ll", "measured"] == pytest.approx(-0.5)
    assert table.loc["ll", "status"] == "not supported"
    assert "| 1.50-1.90 |" in claims_markdown(table.reset_index())  # a published range
    if energy:
        assert table.loc["e", "measured"] == pytest.approx(2.0)
    else:
        assert table.loc["e", "status"] == "not measured"
        assert "run on device cpu" in claims_markdown(table.reset_index())


def test_quality_at_the_floor_decides_nothing(tmp_path: Path) -> None:
    common = {"method": "dsbd", "reference": "beam", "dataset": "squad", "temperature": 1.0,
              "kind": "difference", "text": "t"}  # fmt: skip
    zero = beam_frame(energy=False).assign(em=0.0)
    table = check(zero, tmp_path, [{**common, "id": "q", "at_least": -12.5}])
    assert table.loc["q", "status"] == "inconclusive (at floor)"
    # One question apart out of 40: the difference rests on too few questions.
    one = zero.copy()
    one.loc[(one["method"] == "dsbd") & (one["question_id"] == "q0"), "em"] = 1.0
    table = check(one, tmp_path, [{**common, "id": "q", "higher_than": 0.0}])
    assert table.loc["q", "status"] == "inconclusive (at floor)"


def test_higher_than_is_strict(tmp_path: Path) -> None:
    from specrepro.report.claims import Claim, Setting, verdicts

    claim = Claim(paper="P", id="h", text="t", kind="difference", metric="quality",
                  method=Setting(name="a"), reference=Setting(name="b"), dataset="squad",
                  temperature=1.0, higher_than=0.0)  # fmt: skip
    result = {"measured": 6.25, "low": 0.0, "high": 18.75, "questions": 16, "reason": None}
    assert verdicts(claim, result)["status"] == "inconclusive"
    assert verdicts(claim, {**result, "low": 0.5})["status"] == "supported"
    no_lower = replace_bound(claim, at_least=0.0)
    assert verdicts(no_lower, result)["status"] == "supported"


def replace_bound(claim, **bounds):
    from dataclasses import replace

    return replace(claim, higher_than=None, **bounds)


def test_a_failed_aa_control_withholds_its_groups_speed_verdicts(tmp_path: Path) -> None:
    ratio = {**BASE, "id": "r", "method": "ddd", "reference": "eagle2", "published": 1.1}
    steady = tidy_frame({"a": {"vanilla": 10.0, "vanilla-aa": 10.0, "eagle2": 30, "ddd": 33}})
    table = check(steady, tmp_path, [aa_claim(id="aa"), ratio])
    assert table.loc["aa", "status"] == "passed"
    assert table.loc["aa", "low"] <= 1.0 <= table.loc["aa", "high"]
    assert table.loc["r", "direction"] == "supported"
    drifted = tidy_frame({"a": {"vanilla": 10.0, "vanilla-aa": 11.5, "eagle2": 30, "ddd": 33}})
    table = check(drifted, tmp_path, [ratio, aa_claim(id="aa")])
    assert table.loc["aa", "status"] == "failed"
    assert table.loc["r", "status"] == "inconclusive (A/A control failed)"
    assert list(table.index) == ["r", "aa"]  # the file's order, whatever was checked first
    text = claims_markdown(table.reset_index())
    assert "withheld" not in text and text.startswith("Pooled A/A (random effects, 1 groups)")


def test_the_shipped_claims_files_load() -> None:
    from specrepro.controls import load_run_claims

    # The A/A control is a template: one claim per dataset and temperature vanilla ran at.
    ran = pd.DataFrame({"method": "vanilla", "dataset": ["squad", "mtbench"], "temperature": 0.0})
    claims = load_run_claims(sorted((REPO / "config" / "claims").glob("*.yaml")), ran)
    ids = {c.id for c in claims}
    assert {"ddd-over-eagle2", "eagle2-over-eagle", "eagle2-vicuna-7b-speedup"} <= ids
    assert {"aa-squad-t0", "aa-mtbench-t0", "eagle2-over-eagle-average"} <= ids
    assert not {c.id for c in claims if c.kind == "control"} - {"aa-squad-t0", "aa-mtbench-t0"}
    assert len(ids) == len(claims)
    by_id = {c.id: c for c in claims}
    assert by_id["dsbd-speedup-squad"].estimator == "totals"
    assert by_id["ddd-over-eagle2"].estimator == "mean_tps"


def test_a_claim_without_its_bound_is_refused(tmp_path: Path) -> None:
    path = write_claims(tmp_path / "c.yaml", [{**BASE, "id": "x", "method": "ddd",
                                               "reference": "eagle2"}])  # fmt: skip
    with pytest.raises(ClaimError, match="published"):
        load_claims([path])


def _tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `text`, each as rows of {column label: cell}."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append([dict(zip(current[0], r, strict=True)) for r in current[2:]])
            current = []
    return tables


def test_the_ddd_table_has_speedups_taus_and_ratios_per_temperature() -> None:
    from specrepro.report.ddd import ddd_table

    tidy = tidy_frame({"a": {"vanilla": 10.0, "eagle": 25.0, "eagle2": 30.0, "ddd": 33.0}})
    methods, ratios = _tables(ddd_table(tidy, "a"))
    rows = {r["method"]: r for r in methods}
    assert list(rows) == ["vanilla", "eagle", "eagle2", "ddd"]  # the baseline, then the paper's
    assert float(rows["vanilla"]["mean tok/s"]) == pytest.approx(10.0, rel=0.05)
    eagle = rows["eagle"]
    assert (eagle["T"], eagle["rule"], eagle["n"], eagle["tau"]) == ("0", "to answer", "30", "2.00")
    assert eagle["speedup vs vanilla (mean tok/s) [95% CI]"].startswith("2.5")  # eagle: 2.5x
    by_ratio = {r["a / b"]: r for r in ratios}
    assert set(by_ratio) == {"ddd / eagle2", "eagle2 / eagle"}
    ratio = by_ratio["ddd / eagle2"]["a / b (mean tok/s) [95% CI]"]
    assert float(ratio.split()[0]) == pytest.approx(33 / 30, rel=0.03)
    assert by_ratio["ddd / eagle2"]["n"] == "30"


def test_the_ddd_table_finds_tree_methods_by_algorithm_and_skips_sweep_points() -> None:
    from specrepro.report.ddd import ddd_table

    speeds = {
        "vanilla": 10.0,
        "eagle": 12.0,
        "eagle2": 16.0,
        "eagle2-cpu": 15.0,
        "ddd": 19.0,
        "ddd-cpu": 18.0,
        "ddd-cpu_x0": 5.0,
    }
    tidy = tidy_frame({"a": speeds})
    tidy.loc[tidy["method"] == "ddd-cpu_x0", "algorithm"] = "ddd"
    text = ddd_table(tidy, "a", skip=frozenset({"ddd-cpu_x0"}))
    methods, ratios = _tables(text)
    # Every tree method of the group, the paper-setting runs beside the CPU-budget ones.
    assert [r["method"] for r in methods] == [
        "vanilla", "eagle", "eagle2", "eagle2-cpu", "ddd", "ddd-cpu"
    ]  # fmt: skip
    assert {r["a / b"] for r in ratios} >= {
        "ddd-cpu / eagle2-cpu",
        "ddd / eagle2",
        "eagle2 / eagle",
    }
    assert "ddd-cpu_x0" not in text


def test_the_ddd_table_prints_no_ratio_between_generation_rules() -> None:
    from specrepro.report.ddd import ddd_table

    tidy = tidy_frame({"a": {"vanilla": 10.0, "eagle2": 30.0, "ddd": 33.0}})
    tidy["stop_at_answer"] = tidy["method"] != "ddd"
    text = ddd_table(tidy, "a")
    methods, ratios = _tables(text)
    rows = {r["method"]: r for r in methods}
    assert rows["ddd"]["rule"] == "full length" and rows["eagle2"]["rule"] == "to answer"
    assert rows["ddd"]["speedup vs vanilla (mean tok/s) [95% CI]"] == "-"
    assert rows["eagle2"]["speedup vs vanilla (mean tok/s) [95% CI]"].startswith("3.0")
    assert ratios[0]["a / b (mean tok/s) [95% CI]"] == "-"
    assert "different generation rule from the baseline: full length vs to answer" in text
    assert "different generation rule from eagle2: full length vs to answer" in text


def test_the_ddd_sweep_has_one_point_per_setting_with_speedup_tau_and_depth(tmp_path) -> None:
    import json

    from specrepro.report.ddd import sweep_markdown, sweep_points
    from specrepro.report.figures import ddd_sweep_figure

    tidy = tidy_frame({"a": {"vanilla": 10.0, "ddd": 20.0, "ddd_x-1": 15.0}})
    tidy.loc[tidy["method"] == "ddd_x-1", "algorithm"] = "ddd"
    settings = {"ddd": (-0.3, [5, 7, 9], 5), "ddd_x-1": (-1.0, [5, 7, 9], 9), "vanilla": None}
    tidy["params"] = [
        json.dumps({"threshold": s[0], "check_levels": s[1], "max_levels": 11}) if s else "{}"
        for s in tidy["method"].map(settings)
    ]
    tidy["draft_levels"] = [
        json.dumps([s[2]] * 3) if s else "[]" for s in tidy["method"].map(settings)
    ]
    points = sweep_points(tidy, "a")
    assert list(points["threshold"]) == [-1.0, -0.3]
    assert list(points["mean_levels"]) == [9.0, 5.0]
    assert points["speedup"].tolist() == pytest.approx([1.5, 2.0], rel=0.05)
    assert points["tau"].tolist() == pytest.approx([2.0, 2.0])
    text = sweep_markdown(points, "sweep")
    assert "| ddd_x-1 | -1 | 5-7-9 | 11 | 1.5" in text
    paths = ddd_sweep_figure(points, tmp_path / "sweep", "sweep")
    assert all(p.stat().st_size > 0 for p in paths)


def test_difference_claims_need_a_reference_and_a_scored_dataset(tmp_path: Path) -> None:
    bad = [
        {"id": "x", "text": "x", "kind": "difference", "method": "dsbd", "dataset": "squad",
         "temperature": 1.0, "at_least": 0.0},
        {"id": "y", "text": "y", "kind": "difference", "method": "dsbd", "reference": "beam",
         "dataset": "mtbench", "temperature": 1.0, "at_least": 0.0},
        {"id": "z", "text": "z", "kind": "ratio", "metric": "quality", "method": "dsbd",
         "reference": "beam", "dataset": "squad", "temperature": 1.0, "at_least": 0.0},
    ]  # fmt: skip
    for entry, message in zip(
        bad, ["needs `reference`", "no task score", "metric must"], strict=True
    ):
        with pytest.raises(ClaimError, match=message):
            load_claims([write_claims(tmp_path / "c.yaml", [entry])])


def test_dsbd_table_on_hand_made_numbers(tmp_path) -> None:
    from specrepro.report.dsbd import dsbd_table, threshold_points, widths_by_level

    text = dsbd_table(beam_frame(energy=True), "p", "squad")
    beam_row = next(line for line in text.splitlines() if line.startswith("| beam |"))
    dsbd_row = next(line for line in text.splitlines() if line.startswith("| dsbd (vs beam) |"))
    assert beam_row == (
        "| beam | 3 | 10.00 | 1.00 | 4.000 | 1.00 | 50.0 | n/a | -1.03 | 3.00 | 3.00 | 1.0 | n/a "
        "| 0.50 | full length | 10.0 | 40 |"
    )
    # dsbd: 2x the tokens/s, 2 J/token (2x less), EM 45%, widths 3, 2, 1 -> mean 2.
    assert "| 20.00 | 2.00 [" in dsbd_row
    assert (
        "| 2.000 | 2.00 | 45.0 | n/a | -1.53 | 2.00 | 3.00 | 1.0 | n/a | 0.50 | full length "
        "| 10.0 |" in (dsbd_row)
    )
    points = threshold_points(beam_frame(energy=False), "p")
    assert points[["w_thres", "quality", "beam_quality"]].iloc[0].tolist() == [0.7, 45.0, 50.0]
    assert "J/token n/a: run on device cpu" in dsbd_table(beam_frame(energy=False), "p", "squad")
    widths = widths_by_level(beam_frame(energy=True))
    assert widths[["level", "mean_width", "levels"]].values.tolist() == [[1, 2.0, 80], [2, 2.0, 40]]
    # The figures draw from the same points (interval bars included).
    from specrepro.report.figures import dsbd_threshold_figure

    paths = dsbd_threshold_figure(points, tmp_path / "threshold", "t")
    assert all(p.stat().st_size > 0 for p in paths)
