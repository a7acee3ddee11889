"""Report layer on a synthetic tidy table whose answers are known exactly."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

import specrepro
from specrepro.report.aggregate import question_speedups, summarise
from specrepro.report.ddd import sweep_markdown, sweep_points
from specrepro.report.figures import (
    _length_panel,
    accepted_length_figure,
    ddd_sweep_figure,
    draft_depth_figure,
    method_color,
    series_styles,
    speedup_figure,
    time_split_figure,
    verification_lengths,
)
from specrepro.report.notebook import NotebookExecutionError, execute_notebook
from specrepro.report.tables import latex_escape, write_dataset_tables

REPO = Path(__file__).resolve().parents[1]
PAIR = "tiny_llama-68m"
N_QUESTIONS = 6
SPS_TAU = 2.5
NO_NVML = "NVML unavailable: no NVIDIA driver"


MIB = 2**20


def _row(dataset: str, method: str, question: int, turn: int, seed: int = 0) -> dict:
    speculative = method != "vanilla"
    # The prefill forward yields 1 token; the rest are multiples of 5 so SPS forwards are whole.
    tokens = 51 + 10 * question + 10 * turn
    base_time = 0.5 + 0.1 * question + 0.05 * turn
    verified = tokens - 1  # tau leaves the prefill forward and its token out (docs/measurement.md)
    forwards = int(verified / SPS_TAU) if speculative else verified
    # sps commits 2 or 3 tokens per verification forward, mean exactly 2.5; vanilla always 1.
    lengths = [1] + ([2, 3] * (forwards // 2) if speculative else [1] * verified)
    measured = dataset == "squad"
    wall = base_time / 2 if speculative else base_time
    return {
        "run_id": f"{dataset}-{method}-{seed}",
        "pair": PAIR,
        "method": method,
        "algorithm": "sps" if speculative else "autoregressive",
        "dataset": dataset,
        "temperature": 0.0,
        "seed": seed,
        "dtype": "float32",
        "device": "cpu",
        "batch_size": 1,
        "question_id": f"q{question}",
        "turn": turn,
        "new_tokens": tokens,
        "wall_time_s": wall,
        "target_forwards": forwards + 1,
        "verify_forwards": forwards,
        "verified_tokens": verified,
        "draft_forwards": 4 * forwards if speculative else 0,
        "accept_lengths": json.dumps(lengths),
        "time_draft_s": 0.3 * wall if speculative else 0.0,
        "time_verify_s": 0.6 * wall if speculative else 0.9 * wall,
        "time_other_s": 0.1 * wall,
        # vanilla spends 2 J per token, sps 1 J per token
        "energy_j": tokens * (1.0 if speculative else 2.0) if measured else None,
        "energy_net_j": tokens * (0.5 if speculative else 1.0) if measured else None,
        "avg_power_w": 100.0 if measured else None,
        "energy_reason": None if measured else NO_NVML,
        "em": float(question % 2) if dataset == "squad" else None,
        "f1": 0.75 if dataset == "squad" else None,
        "exec_match": None,
        "exec_error": None,
        # question 0 diverges from vanilla: lossless rate 5/6
        "lossless_match": float(question != 0) if speculative else None,
        # KV peak of (question + turn + 1) MiB, twice that with a draft: the largest is 6 MiB
        # (vanilla) and 12 MiB (sps) on SQuAD, 7 and 14 on MT-bench; device peak on SQuAD only.
        "kv_bytes_peak": (question + turn + 1) * MIB * (2 if speculative else 1),
        "peak_gpu_memory_bytes": 300 * MIB if measured else None,
        # mean over questions 0..5: -0.75 per token
        "target_loglik": -0.5 - 0.1 * question,
        "exec_excluded": None,
    }


def make_tidy(seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    rows = [
        _row(dataset, method, q, turn, seed)
        for seed in seeds
        for dataset, turns in (("squad", 1), ("mtbench", 2))
        for method in ("vanilla", "sps")
        for q in range(N_QUESTIONS)
        for turn in range(turns)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tidy() -> pd.DataFrame:
    return make_tidy()


@pytest.fixture(scope="module")
def summary(tidy: pd.DataFrame) -> pd.DataFrame:
    return summarise(tidy)


def _pick(summary: pd.DataFrame, dataset: str, method: str) -> pd.Series:
    rows = summary[(summary["dataset"] == dataset) & (summary["method"] == method)]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.mark.parametrize("dataset", ["squad", "mtbench"])
def test_speedup_both_definitions(summary: pd.DataFrame, dataset: str) -> None:
    row = _pick(summary, dataset, "sps")
    for prefix in ("speedup", "speedup_totals"):
        assert row[prefix] == pytest.approx(2.0)
        assert row[f"{prefix}_low"] <= 2.0 + 1e-9
        assert row[f"{prefix}_high"] >= 2.0 - 1e-9
    assert row["n_questions"] == N_QUESTIONS


def test_baseline_speedup_is_exactly_one(summary: pd.DataFrame) -> None:
    base = summary[summary["method"] == "vanilla"]
    assert len(base) == 2
    for column in ("speedup", "speedup_low", "speedup_high", "speedup_totals"):
        assert (base[column] == 1.0).all()


def test_turns_are_summed_per_question(tidy: pd.DataFrame) -> None:
    per_q = question_speedups(tidy)
    mt = per_q[(per_q["dataset"] == "mtbench") & (per_q["method"] == "sps")]
    assert len(mt) == N_QUESTIONS
    assert mt["new_tokens"].iloc[0] == 51 + 61


def test_tau_lossless_and_time_split(summary: pd.DataFrame) -> None:
    sps = _pick(summary, "mtbench", "sps")
    assert sps["tau"] == pytest.approx(SPS_TAU)
    assert _pick(summary, "squad", "vanilla")["tau"] == pytest.approx(1.0)
    assert sps["lossless_match_rate"] == pytest.approx(5 / 6)
    shares = (sps["frac_draft"], sps["frac_verify"], sps["frac_other"])
    assert shares == pytest.approx((0.3, 0.6, 0.1))


def test_energy_null_carries_reason(summary: pd.DataFrame) -> None:
    row = _pick(summary, "mtbench", "sps")
    assert math.isnan(row["j_per_token"]) and math.isnan(row["j_per_token_net"])
    assert row["energy_reason"] == NO_NVML


def test_energy_per_token(summary: pd.DataFrame) -> None:
    assert _pick(summary, "squad", "vanilla")["j_per_token"] == pytest.approx(2.0)
    sps = _pick(summary, "squad", "sps")
    assert sps["j_per_token"] == pytest.approx(1.0)
    assert sps["j_per_token_net"] == pytest.approx(0.5)
    assert pd.isna(sps["energy_reason"])


def test_one_missing_energy_window_voids_j_per_token(tidy: pd.DataFrame) -> None:
    partial = tidy.copy()
    partial.loc[(partial["dataset"] == "squad") & (partial["question_id"] == "q3"), "energy_j"] = (
        None
    )
    assert math.isnan(_pick(summarise(partial), "squad", "sps")["j_per_token"])


def test_quality_means(summary: pd.DataFrame) -> None:
    squad = _pick(summary, "squad", "sps")
    assert squad["em"] == pytest.approx(0.5)
    assert squad["f1"] == pytest.approx(0.75)
    assert math.isnan(squad["exec_acc"])


def test_missing_baseline_gives_nan(tidy: pd.DataFrame) -> None:
    no_base = tidy[~((tidy["dataset"] == "mtbench") & (tidy["method"] == "vanilla"))]
    summary = summarise(no_base)
    assert math.isnan(_pick(summary, "mtbench", "sps")["speedup"])
    assert _pick(summary, "squad", "sps")["speedup"] == pytest.approx(2.0)
    no_vanilla = summarise(tidy[tidy["method"] == "sps"])
    assert no_vanilla["speedup"].isna().all() and no_vanilla["speedup"].dtype == float


def test_seeds_pool_per_question() -> None:
    summary = summarise(make_tidy(seeds=(0, 1)))
    row = _pick(summary, "squad", "sps")
    assert row["speedup"] == pytest.approx(2.0)
    assert row["n_questions"] == N_QUESTIONS and row["n_seeds"] == 2


def test_csv_round_trip(tidy: pd.DataFrame, tmp_path: Path) -> None:
    tidy.to_csv(tmp_path / "tidy.csv", index=False)
    summary = summarise(pd.read_csv(tmp_path / "tidy.csv"))
    assert _pick(summary, "squad", "sps")["speedup"] == pytest.approx(2.0)
    assert _pick(summary, "mtbench", "sps")["energy_reason"] == NO_NVML


def test_tables_written(summary: pd.DataFrame, tmp_path: Path) -> None:
    note = "Scored on 6 of 6 questions; 100% covered & checked."
    paths = write_dataset_tables(summary, tmp_path, notes={"squad": note})
    names = {p.name for p in paths}
    expected = {"table_squad.md", "table_squad.tex", "table_mtbench.md", "table_mtbench.tex"}
    assert expected | {"runs.csv"} == names
    squad_md = (tmp_path / "table_squad.md").read_text()
    assert "2.00 [2.00, 2.00]" in squad_md
    assert "EM (%)" in squad_md and "F1 (%)" in squad_md and "83.3" in squad_md
    assert note in squad_md
    squad = _cells_by_column(squad_md)
    assert squad["vanilla"]["KV peak (MiB)"] == "6.0" and squad["sps"]["KV peak (MiB)"] == "12.0"
    assert squad["sps"]["peak device MiB"] == "300.0"
    assert squad["sps"]["target log-lik/token"] == "-0.75"
    assert squad["vanilla"]["lossless (%)"] == "\u2013" and squad["sps"]["lossless (%)"] == "83.3"
    assert squad["sps"]["tau"] == "2.50" and squad["vanilla"]["tau"] == "1.00"
    assert "prefill excluded, bonus token included" in squad_md
    assert "tok/s (totals): all new tokens / all wall seconds" in squad_md
    mt_md = (tmp_path / "table_mtbench.md").read_text()
    assert "EM (%)" not in mt_md and "n/a" in mt_md
    mt = _cells_by_column(mt_md)
    assert mt["sps"]["KV peak (MiB)"] == "14.0" and mt["sps"]["peak device MiB"] == "n/a"
    assert mt["vanilla"]["target log-lik/token"] == "-0.75"
    assert f"energy not measured: {NO_NVML}" in mt_md
    tex = (tmp_path / "table_squad.tex").read_text()
    assert "2.00" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert "\u2013" not in tex and " & -- \\\\" in tex  # the en dash as LaTeX spells it
    assert r"tiny\_llama-68m" in tex and "tiny_llama" not in tex
    assert r"100\% covered \& checked" in tex
    assert pd.read_csv(tmp_path / "runs.csv").shape[0] == len(summary)


def _cells_by_column(markdown: str) -> dict[str, dict[str, str]]:
    """{method: {column label: cell}} of a dataset table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[1:]]  # fmt: skip
    return {row["method"]: row for row in rows}


def hand_made(method: str, qid: str, tokens: int, seconds: float) -> dict:
    row = _row("squad", method, 0, 0)
    row.update(question_id=qid, new_tokens=tokens, wall_time_s=seconds)
    return row


def test_speedup_estimators_against_a_hand_computation(tmp_path: Path) -> None:
    # Per-question speedups differ (2, 0.5, 3), so the three estimators disagree; q4 has only a
    # baseline run and q5 only an sps run: both are reported and left out of every speedup.
    tidy = pd.DataFrame(
        [
            hand_made("vanilla", "q1", 10, 1.0),  # 10 tok/s
            hand_made("vanilla", "q2", 100, 5.0),  # 20 tok/s
            hand_made("vanilla", "q3", 30, 1.0),  # 30 tok/s
            hand_made("vanilla", "q4", 40, 1.0),
            hand_made("sps", "q1", 20, 1.0),  # 20 tok/s
            hand_made("sps", "q2", 50, 5.0),  # 10 tok/s
            hand_made("sps", "q3", 90, 1.0),  # 90 tok/s
            hand_made("sps", "q5", 70, 1.0),
        ]
    )
    row = _pick(summarise(tidy), "squad", "sps")
    assert row["speedup"] == pytest.approx((20 + 10 + 90) / 3 / ((10 + 20 + 30) / 3))  # 2.0
    assert row["speedup_totals"] == pytest.approx((160 / 7) / (140 / 7))  # 1.142857
    assert row["speedup_mean_of_ratios"] == pytest.approx((2 + 0.5 + 3) / 3)  # 1.8333
    assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
    assert (row["n_paired"], row["n_unpaired_method"], row["n_unpaired_baseline"]) == (3, 1, 1)

    write_dataset_tables(summarise(tidy), tmp_path)
    md = (tmp_path / "table_squad.md").read_text()
    header = md.splitlines()[2]
    assert "speedup, mean tok/s [95% CI]" in header and "speedup, totals [95% CI]" in header
    sps_line = next(line for line in md.splitlines() if "| sps |" in line)
    cells = [c.strip() for c in sps_line.strip("|").split("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    by_column = dict(zip(columns, cells, strict=True))
    assert by_column["speedup, mean tok/s [95% CI]"].startswith("2.00 [")
    assert by_column["speedup, totals [95% CI]"].startswith("1.14 [")
    assert by_column["paired"] == "3"
    assert "mean over questions of the method's tokens/s divided by the mean" in md
    assert "1 question(s) without a vanilla run and 1 vanilla question(s) without a sps" in md


def test_latex_escape() -> None:
    assert latex_escape("a_b 5% & c") == r"a\_b 5\% \& c"


def _assert_written(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for path in paths:
        assert path.stat().st_size > 0


def test_figures_written(tidy: pd.DataFrame, summary: pd.DataFrame, tmp_path: Path) -> None:
    _assert_written(speedup_figure(summary, tmp_path / "speedup"))
    _assert_written(accepted_length_figure(tidy, tmp_path / "accepted_T0.0"))
    _assert_written(time_split_figure(summary, tmp_path / "time_split"))
    # Without tree-method rounds the figure still renders (one panel saying so)...
    _assert_written(draft_depth_figure(tidy, tmp_path / "depth_none"))
    # ...and with them, one panel per dataset that ran a tree method.
    trees = tidy.assign(draft_levels=np.where(tidy["method"] == "sps", "[3, 5, 5]", "[]"))
    _assert_written(draft_depth_figure(trees, tmp_path / "depth"))


def test_figures_survive_baseline_only_and_no_energy(tidy: pd.DataFrame, tmp_path: Path) -> None:
    sparse = tidy[~((tidy["dataset"] == "squad") & (tidy["method"] == "sps"))].copy()
    sparse[["energy_j", "energy_net_j", "avg_power_w"]] = None
    summary = summarise(sparse)
    _assert_written(speedup_figure(summary, tmp_path / "speedup"))
    _assert_written(accepted_length_figure(sparse, tmp_path / "accepted"))
    _assert_written(time_split_figure(summary, tmp_path / "split"))
    vanilla_only = summarise(sparse[sparse["method"] == "vanilla"])
    _assert_written(speedup_figure(vanilla_only, tmp_path / "speedup_vanilla"))
    tables = write_dataset_tables(vanilla_only, tmp_path / "tables")
    assert all(path.stat().st_size > 0 for path in tables)


@pytest.fixture
def kernel_sees_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel is a subprocess: make it import the package under test, installed or not.
    src = str(Path(specrepro.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src, os.getenv("PYTHONPATH")])))


@pytest.mark.usefixtures("kernel_sees_this_checkout")
def test_results_notebook_executes(tidy: pd.DataFrame, tmp_path: Path) -> None:
    tidy.to_csv(tmp_path / "tidy.csv", index=False)
    out = execute_notebook(
        REPO / "notebooks" / "results.ipynb",
        tmp_path / "executed.ipynb",
        {"tidy_csv": tmp_path / "tidy.csv", "summary_csv": str(tmp_path / "summary.csv")},
        timeout_s=120,
    )
    executed = json.loads(out.read_text())
    outputs = [o for cell in executed["cells"] for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = json.dumps(outputs)
    assert NO_NVML in text
    assert pd.read_csv(tmp_path / "summary.csv").shape[0] == 4


@pytest.mark.usefixtures("kernel_sees_this_checkout")
def test_notebook_failure_names_the_notebook(tmp_path: Path) -> None:
    template = REPO / "notebooks" / "results.ipynb"
    with pytest.raises(NotebookExecutionError, match="results.ipynb"):
        execute_notebook(
            template,
            tmp_path / "failed.ipynb",
            {"tidy_csv": str(tmp_path / "missing.csv"), "summary_csv": ""},
            timeout_s=120,
        )
    assert (tmp_path / "failed.ipynb").exists()


def _full_length_sps(tidy: pd.DataFrame) -> pd.DataFrame:
    """sps generated to full length on SQuAD, every other run stopped at the answer."""
    ruled = tidy.assign(stop_at_answer=True)
    ruled.loc[(ruled["dataset"] == "squad") & (ruled["method"] == "sps"), "stop_at_answer"] = False
    return ruled


def test_table_rows_state_n_and_rule_and_no_speedup_across_rules(
    tidy: pd.DataFrame, tmp_path: Path
) -> None:
    summary = summarise(_full_length_sps(tidy))
    squad_sps = _pick(summary, "squad", "sps")
    assert not squad_sps["comparable"] and math.isnan(squad_sps["speedup"])
    assert (squad_sps["rule"], squad_sps["baseline_rule"]) == ("full length", "to answer")
    write_dataset_tables(summary, tmp_path)
    squad_md = (tmp_path / "table_squad.md").read_text()
    squad = _cells_by_column(squad_md)
    assert squad["sps"]["rule"] == "full length" and squad["sps"]["n"] == str(N_QUESTIONS)
    assert squad["vanilla"]["rule"] == "to answer" and squad["vanilla"]["n"] == str(N_QUESTIONS)
    assert squad["sps"]["speedup, mean tok/s [95% CI]"] == "-"
    assert squad["sps"]["speedup, totals [95% CI]"] == "-"
    assert "different generation rule from the baseline: full length vs to answer" in squad_md
    assert "speedup n/a" not in squad_md
    # The same rule on MT-bench: the speedup is printed.
    mt = _cells_by_column((tmp_path / "table_mtbench.md").read_text())
    assert mt["sps"]["rule"] == "to answer"
    assert mt["sps"]["speedup, mean tok/s [95% CI]"].startswith("2.00 [")
    tex = (tmp_path / "table_squad.tex").read_text()
    assert " & full length & 6 & " in tex and "different generation rule" in tex
    # The figure draws no bar for it, and says why.
    _assert_written(speedup_figure(summary, tmp_path / "speedup"))


def test_a_method_keeps_its_colour_whatever_else_a_panel_shows(tidy: pd.DataFrame) -> None:
    defaults = ["vanilla", "vanilla-aa", "sps", "eagle", "eagle2", "eagle2-cpu", "ddd"]
    defaults += ["ddd-cpu", "beam", "dsbd", "dsbd-t0p9"]
    assert len({method_color(m) for m in defaults}) == len(defaults)
    assert method_color("ddd-cpu_x-0p3_S3-5") == method_color("ddd-cpu_x-0p3_S3-5")
    frame = pd.DataFrame({"method": ["sps", "eagle2", "my-new-method", "dsbd"]})
    whole = series_styles(frame, frame["method"])
    for subset in (frame.iloc[[0]], frame.iloc[[2, 0]], frame.iloc[[3, 2, 1]]):
        styles = series_styles(subset, subset["method"])
        assert all(styles[m]["color"] == whole[m]["color"] for m in styles)
    # The bars a figure draws carry those colours, whichever subset it holds.
    fig = Figure()
    ax = fig.subplots()
    accepted = tidy[tidy["method"] == "sps"]
    _length_panel(ax, accepted.assign(accept_lengths=verification_lengths(accepted)))
    assert {to_hex(p.get_facecolor()) for p in ax.patches} == {method_color("sps")}


def _sweep_tidy() -> pd.DataFrame:
    """vanilla, eagle2 and two DDD settings (x = -0.3, the paper's, and x = -3) on MT-bench."""
    tidy = make_tidy()
    tidy = tidy[tidy["dataset"] == "mtbench"]
    speculative = tidy[tidy["method"] == "sps"]
    settings = {"eagle2": ("eagle2", None), "ddd": ("ddd", -0.3), "ddd_x-3": ("ddd", -3.0)}
    frames = [tidy[tidy["method"] == "vanilla"].assign(params="{}", draft_levels="[]")]
    for method, (algorithm, x) in settings.items():
        params = {} if x is None else {"threshold": x, "check_levels": [3, 5], "max_levels": 6}
        frames.append(
            speculative.assign(
                method=method, algorithm=algorithm, params=json.dumps(params), draft_levels="[3, 5]"
            )  # fmt: skip
        )
    return pd.concat(frames, ignore_index=True)


def test_the_sweep_has_tau_intervals_n_the_papers_x_and_the_eagle2_reference(
    tmp_path: Path,
) -> None:
    points = sweep_points(_sweep_tidy(), PAIR)
    ddd = points[~points["reference"]]
    assert list(ddd["threshold"]) == [-3.0, -0.3] and list(ddd["paper_x"]) == [False, True]
    assert (points["tau_low"] <= points["tau"]).all() and (
        points["tau"] <= points["tau_high"]
    ).all()
    assert points["tau"].tolist() == pytest.approx([SPS_TAU] * 3)
    assert (points["questions"] == N_QUESTIONS).all()
    (reference,) = points[points["reference"]].itertuples()
    assert reference.method == "eagle2"
    text = sweep_markdown(points, "sweep")
    assert "| ddd | -0.3 (paper's x) | 3-5 | 6 | 2.00 [" in text
    assert f"| 2.50 [2.50, 2.50] | 4.00 | to answer | {N_QUESTIONS} |" in text
    assert "| eagle2 (EAGLE-2 reference) | - | - | - |" in text
    assert "The paper's x = -0.3: the row(s) of ddd." in text
    _assert_written(ddd_sweep_figure(points, tmp_path / "sweep", "sweep"))
