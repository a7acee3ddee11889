"""The Dynamic Depth Decoding paper's table, one per pair: vanilla's mean tokens/s; EAGLE,
EAGLE-2 and DDD speedup and tau at each temperature; the DDD / EAGLE-2 and EAGLE-2 / EAGLE
speedup ratios, all with 95% bootstrap intervals over questions (report/claims.py does the
measuring). Also the DDD sweep: speedup, tau and drafted depth against the threshold x and the
check levels S. Speed is EAGLE's estimator throughout (the mean over questions of tokens/s), the
one DDD's paper reports, so that its numbers compare with the published ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from specrepro.report.aggregate import per_question
from specrepro.report.claims import measure, query
from specrepro.report.tables import TAU_NOTE

TREE_ALGORITHMS = ("eagle", "eagle2", "ddd", "ddd_async")
RATIOS = (("ddd", "eagle2"), ("eagle2", "eagle"), ("ddd_async", "ddd"))  # by algorithm
ESTIMATOR = "mean tok/s"  # the label every speed column of these tables carries


def _speed_and_tau(
    tidy: pd.DataFrame, method: str, pair: str, dataset: str, temperature: float, baseline: str
) -> tuple[dict, dict]:
    """The method's speedup over the baseline and its tau, each with its interval."""
    speed = measure(tidy, query("value", method, pair, dataset, temperature), baseline)
    tau = measure(tidy, query("value", method, pair, dataset, temperature, metric="tau"))
    return speed, tau


def mean_tokens_per_s(questions: pd.DataFrame) -> float:
    """EAGLE's tokens/s: the mean over questions of each question's tokens / seconds, seeds
    pooled per question as the speedup's bootstrap pools them."""
    pooled = questions.groupby("question_id")[["new_tokens", "wall_time_s"]].sum()
    return float((pooled["new_tokens"] / pooled["wall_time_s"]).mean())


def _cell(result: dict) -> str:
    if result["measured"] is None:
        return "-"
    return f"{result['measured']:.2f} [{result['low']:.2f}, {result['high']:.2f}]"


def tree_methods(rows: pd.DataFrame, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """{method: algorithm} of the tree methods that ran, in the paper's order (EAGLE, EAGLE-2,
    DDD, DDD async), whatever the config entries are called."""
    ran = rows[["method", "algorithm"]].drop_duplicates()
    ran = ran[ran["algorithm"].isin(TREE_ALGORITHMS) & ~ran["method"].isin(skip)]
    order = sorted(ran.itertuples(), key=lambda r: (TREE_ALGORITHMS.index(r.algorithm), r.method))
    return {r.method: r.algorithm for r in order}


def ddd_table(
    tidy: pd.DataFrame,
    pair: str,
    dataset: str = "mtbench",
    baseline: str = "vanilla",
    skip: frozenset[str] = frozenset(),
) -> str:
    """Markdown: one row per temperature; `skip` leaves methods out (e.g. sweep points)."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    algorithms = tree_methods(rows, skip)
    methods = list(algorithms)
    ratios = [
        (a, b)
        for num, den in RATIOS
        for a in methods
        for b in methods
        if algorithms[a] == num and algorithms[b] == den
    ]
    header = ["T", f"{baseline} {ESTIMATOR}"]
    header += [f"{m} {what}" for m in methods for what in (f"speedup ({ESTIMATOR})", "tau")]
    header += [f"{a} / {b} ({ESTIMATOR})" for a, b in ratios]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    questions = per_question(rows)
    for temperature in sorted(rows["temperature"].astype(float).unique()):
        base = questions[
            (questions["method"] == baseline) & np.isclose(questions["temperature"], temperature)
        ]
        cells = [f"{temperature:g}", f"{mean_tokens_per_s(base):.1f}" if len(base) else "-"]
        for method in methods:
            speed, tau = _speed_and_tau(rows, method, pair, dataset, temperature, baseline)
            cells += [_cell(speed), "-" if tau["measured"] is None else f"{tau['measured']:.2f}"]
        for a, b in ratios:
            ratio = measure(rows, query("ratio", a, pair, dataset, temperature, reference=b))
            cells.append(_cell(ratio))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{pair}, {dataset}. Every speed is EAGLE's estimator ({ESTIMATOR}): {baseline} "
        f"{ESTIMATOR} is the mean over questions of each question's tokens / seconds; speedup "
        f"({ESTIMATOR}) is the method's mean tokens/s over {baseline}'s on the questions both "
        f"ran, 95% bootstrap interval over questions; a / b ({ESTIMATOR}): mean tokens/s of a "
        f"over b's. {TAU_NOTE} Depth is the number of draft levels.",
    ]
    return "\n".join(lines) + "\n"


def sweep_points(
    tidy: pd.DataFrame,
    pair: str,
    dataset: str = "mtbench",
    temperature: float = 0.0,
    baseline: str = "vanilla",
) -> pd.DataFrame:
    """One row per DDD configuration that ran (sweep points and the configured entries): its
    threshold x, check levels S and level cap n, speedup with its interval, tau, and the mean
    number of levels drafted per round."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    rows = rows[np.isclose(rows["temperature"].astype(float), temperature)]
    points = []
    for method, group in rows[rows["algorithm"].isin(["ddd", "ddd_async"])].groupby("method"):
        params = json.loads(group["params"].iloc[0])
        speed, tau = _speed_and_tau(tidy, method, pair, dataset, temperature, baseline)
        levels = [v for cell in group["draft_levels"].fillna("[]") for v in json.loads(cell)]
        points.append(
            {
                "method": method,
                "algorithm": group["algorithm"].iloc[0],
                "threshold": float(params["threshold"]),
                "check_levels": "-".join(str(s) for s in params["check_levels"]),
                "max_levels": int(params["max_levels"]),
                "speedup": speed["measured"],
                "speedup_low": speed["low"],
                "speedup_high": speed["high"],
                "tau": tau["measured"],
                "mean_levels": float(np.mean(levels)) if levels else None,
                "questions": speed["questions"],
            }
        )
    columns = ["method", "algorithm", "threshold", "check_levels", "max_levels", "speedup"]
    columns += ["speedup_low", "speedup_high", "tau", "mean_levels", "questions"]
    frame = pd.DataFrame(points, columns=columns)
    return frame.sort_values(["check_levels", "threshold", "algorithm"], ignore_index=True)


def sweep_markdown(points: pd.DataFrame, title: str) -> str:
    header = f"| method | x | S | n | speedup ({ESTIMATOR}) [95% CI] | tau | mean levels |"
    lines = [f"{title}\n", header, "|---|---|---|---|---|---|---|"]
    for p in points.itertuples():
        speed = "-"
        if not pd.isna(p.speedup):
            speed = f"{p.speedup:.2f} [{p.speedup_low:.2f}, {p.speedup_high:.2f}]"
        tau = "-" if pd.isna(p.tau) else f"{p.tau:.2f}"
        levels = "-" if pd.isna(p.mean_levels) else f"{p.mean_levels:.2f}"
        lines.append(
            f"| {p.method} | {p.threshold:g} | {p.check_levels} | {p.max_levels} | {speed} "
            f"| {tau} | {levels} |"
        )
    lines += [
        "",
        "x: threshold on H (logsumexp of the beam's cumulative draft log-probs), checked after "
        f"each level in S; n: most levels. Speedup ({ESTIMATOR}): mean over questions of "
        "tokens/s over the baseline's, on the same questions (EAGLE's estimator). "
        f"{TAU_NOTE} Mean levels: draft levels per round.",
    ]
    return "\n".join(lines) + "\n"
