"""The Dynamic Depth Decoding paper's table, one per pair: per temperature, vanilla's and every
tree method's (EAGLE, EAGLE-2, DDD, whatever the entries are called) mean tokens/s, speedup over
vanilla and tau, each with its generation rule and n; below it the DDD / EAGLE-2 and EAGLE-2 /
EAGLE speedup ratios, all with 95% bootstrap intervals over questions (report/claims does the
measuring). Also the DDD sweep: speedup, tau and drafted depth against the threshold x and the
check levels S, beside the EAGLE-2 runs of the same group. Speed is EAGLE's estimator throughout
(the mean over questions of tokens/s), the one DDD's paper reports, so that its numbers compare
with the published ones. No ratio is printed between runs of different generation rules."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from specrepro.planning.methods import method_spec
from specrepro.report.aggregate import (
    RULE_NOTE,
    comparable,
    per_question,
    pool_questions,
    rule_label,
    rule_note,
)
from specrepro.report.claims import measure, query
from specrepro.report.tables import NOT_COMPARABLE, TAU_NOTE

PAPER_ORDER = ("eagle", "eagle2", "ddd", "ddd_async")  # then any other method with a head
RATIOS = (("ddd", "eagle2"), ("eagle2", "eagle"), ("ddd_async", "ddd"))  # by algorithm
ESTIMATOR = "mean tok/s"  # the label every speed column of these tables carries
PAPER_THRESHOLD = -0.3  # the DDD paper's x
REFERENCE_ALGORITHM = "eagle2"  # the sweep's reference: DDD's paper compares with EAGLE-2


def _speed_and_tau(
    tidy: pd.DataFrame, method: str, pair: str, dataset: str, temperature: float, baseline: str
) -> tuple[dict, dict]:
    """The method's speedup over the baseline and its tau, each with its interval."""
    speed = measure(tidy, query("value", method, pair, dataset, temperature), baseline)
    tau = measure(tidy, query("value", method, pair, dataset, temperature, metric="tau"))
    return speed, tau


def mean_tokens_per_s(questions: pd.DataFrame) -> float:
    """EAGLE's tokens/s: the mean over questions of each question's tokens / seconds, seeds
    pooled per question as the speedup's bootstrap pools them (per_question rows of one run; a
    question timed in several groups, a split group's parts, at its mean over them)."""
    pooled = pool_questions(questions, [], ["new_tokens", "wall_time_s"])
    return float((pooled["new_tokens"] / pooled["wall_time_s"]).mean())


def _cell(result: dict) -> str:
    if result["measured"] is None:
        return "-"
    return f"{result['measured']:.2f} [{result['low']:.2f}, {result['high']:.2f}]"


def tree_methods(rows: pd.DataFrame, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """{method: algorithm} of the methods with a head that ran, in the paper's order (EAGLE,
    EAGLE-2, DDD, DDD async, then any other), whatever the config entries are called."""
    ran = rows[["method", "algorithm"]].drop_duplicates()
    heads = {a for a in ran["algorithm"].unique() if method_spec(a).needs_head}
    ran = ran[ran["algorithm"].isin(heads) & ~ran["method"].isin(skip)]
    rank = {algorithm: i for i, algorithm in enumerate(PAPER_ORDER)}
    order = sorted(ran.itertuples(), key=lambda r: (rank.get(r.algorithm, len(rank)), r.method))
    return {r.method: r.algorithm for r in order}


def _at(rows: pd.DataFrame, temperature: float) -> pd.DataFrame:
    return rows[np.isclose(rows["temperature"].astype(float), temperature)]


def _method_row(
    rows: pd.DataFrame, method: str, temperature: float, baseline: str, notes: list[str]
) -> list[str]:
    """T, method, rule, n, mean tok/s, speedup and tau of one method at one temperature."""
    at_t = _at(rows, temperature)
    mine, base = at_t[at_t["method"] == method], at_t[at_t["method"] == baseline]
    pair, dataset = str(mine["pair"].iloc[0]), str(mine["dataset"].iloc[0])
    rule = rule_label(mine)
    speed, tau = _speed_and_tau(rows, method, pair, dataset, temperature, baseline)
    if method == baseline:
        speedup = "1.00"
    elif len(base) and not comparable(rule, rule_label(base)):
        speedup = NOT_COMPARABLE
        notes.append(
            f"speedup {NOT_COMPARABLE} ({method} at T={temperature:g}): "
            f"{rule_note(rule, rule_label(base))} ({baseline})."
        )
    else:
        speedup = _cell(speed)
    questions = per_question(mine)
    return [
        f"{temperature:g}", method, rule, str(mine["question_id"].nunique()),
        f"{mean_tokens_per_s(questions):.1f}", speedup,
        "-" if tau["measured"] is None else f"{tau['measured']:.2f}",
    ]  # fmt: skip


def _ratio_row(
    rows: pd.DataFrame, a: str, b: str, temperature: float, notes: list[str]
) -> list[str] | None:
    """T, a / b, rule, n (questions both ran) and the speed ratio; None if one did not run."""
    at_t = _at(rows, temperature)
    mine, theirs = at_t[at_t["method"] == a], at_t[at_t["method"] == b]
    if mine.empty or theirs.empty:
        return None
    rule, their_rule = rule_label(mine), rule_label(theirs)
    name = f"{a} / {b}"
    if not comparable(rule, their_rule):
        notes.append(
            f"{name} {NOT_COMPARABLE} (T={temperature:g}): {rule_note(rule, their_rule, b)}."
        )
        both = set(mine["question_id"]) & set(theirs["question_id"])
        return [f"{temperature:g}", name, f"{rule} / {their_rule}", str(len(both)), "-"]
    pair, dataset = str(mine["pair"].iloc[0]), str(mine["dataset"].iloc[0])
    ratio = measure(rows, query("ratio", a, pair, dataset, temperature, reference=b))
    return [f"{temperature:g}", name, rule, str(ratio["questions"]), _cell(ratio)]


def _markdown(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def ddd_table(
    tidy: pd.DataFrame,
    pair: str,
    dataset: str = "mtbench",
    baseline: str = "vanilla",
    skip: frozenset[str] = frozenset(),
) -> str:
    """Markdown: one row per temperature and method (the baseline, then every tree method),
    then one per temperature and ratio; `skip` leaves methods out (e.g. sweep points)."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    algorithms = tree_methods(rows, skip)
    methods = [baseline, *algorithms]
    ratios = [
        (a, b)
        for num, den in RATIOS
        for a in algorithms
        for b in algorithms
        if algorithms[a] == num and algorithms[b] == den
    ]
    notes: list[str] = []
    body, ratio_body = [], []
    for temperature in sorted(rows["temperature"].astype(float).unique()):
        ran = set(_at(rows, temperature)["method"])
        body += [_method_row(rows, m, temperature, baseline, notes) for m in methods if m in ran]
        ratio_body += [
            cells for a, b in ratios if (cells := _ratio_row(rows, a, b, temperature, notes))
        ]
    speed = f"speedup vs {baseline} ({ESTIMATOR}) [95% CI]"
    lines = _markdown(["T", "method", "rule", "n", ESTIMATOR, speed, "tau"], body)
    if ratio_body:
        header = ["T", "a / b", "rule", "n", f"a / b ({ESTIMATOR}) [95% CI]"]
        lines += ["", *_markdown(header, ratio_body)]
    lines += [
        "",
        f"{pair}, {dataset}. Every speed is EAGLE's estimator ({ESTIMATOR}): {ESTIMATOR} is "
        "the mean over questions of each question's tokens / seconds; speedup "
        f"({ESTIMATOR}) is the method's mean tokens/s over {baseline}'s on the questions both "
        f"ran, 95% bootstrap interval over questions; a / b ({ESTIMATOR}): mean tokens/s of a "
        f"over b's, n the questions both ran. {TAU_NOTE} Depth is the number of draft levels. "
        f"{RULE_NOTE} {NOT_COMPARABLE}: no ratio between runs of different generation rules.",
        *notes,
    ]
    return "\n".join(lines) + "\n"


def _mean_levels(group: pd.DataFrame) -> float | None:
    cells = group["draft_levels"].fillna("[]") if "draft_levels" in group else []
    levels = [v for cell in cells for v in json.loads(cell)]
    return float(np.mean(levels)) if levels else None


def _point(
    tidy: pd.DataFrame, group: pd.DataFrame, base_rule: str | None, where: tuple, baseline: str
) -> dict:
    """Speedup (NaN against a baseline of another rule), tau with its interval, mean levels,
    rule and n of one method."""
    method = str(group["method"].iloc[0])
    speed, tau = _speed_and_tau(tidy, method, *where, baseline)
    rule = rule_label(group)
    same = base_rule is None or comparable(rule, base_rule)
    return {
        "method": method,
        "algorithm": group["algorithm"].iloc[0],
        "rule": rule,
        "comparable": same,
        "speedup": speed["measured"] if same else None,
        "speedup_low": speed["low"] if same else None,
        "speedup_high": speed["high"] if same else None,
        "tau": tau["measured"],
        "tau_low": tau["low"],
        "tau_high": tau["high"],
        "mean_levels": _mean_levels(group),
        # The questions the method ran: those its tau resamples.
        "questions": tau["questions"],
    }


SWEEP_COLUMNS = [
    "method", "algorithm", "reference", "threshold", "paper_x", "check_levels", "max_levels",
    "rule", "comparable", "speedup", "speedup_low", "speedup_high", "tau", "tau_low",
    "tau_high", "mean_levels", "questions",
]  # fmt: skip


def sweep_points(
    tidy: pd.DataFrame,
    pair: str,
    dataset: str = "mtbench",
    temperature: float = 0.0,
    baseline: str = "vanilla",
) -> pd.DataFrame:
    """One row per DDD configuration that ran (sweep points and the configured entries): its
    threshold x (`paper_x` where it is the paper's), check levels S and level cap, rule,
    speedup and tau with their intervals, the mean number of levels drafted per round and n;
    then the EAGLE-2 runs of the same group (`reference`), without x, S or cap."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    rows = _at(rows, temperature)
    base = rows[rows["method"] == baseline]
    base_rule = rule_label(base) if len(base) else None
    where = (pair, dataset, temperature)
    points = []
    for _, group in rows[rows["algorithm"].isin(["ddd", "ddd_async"])].groupby("method"):
        params = json.loads(group["params"].iloc[0])
        threshold = float(params["threshold"])
        points.append(
            {
                **_point(tidy, group, base_rule, where, baseline),
                "reference": False,
                "threshold": threshold,
                "paper_x": bool(np.isclose(threshold, PAPER_THRESHOLD)),
                "check_levels": "-".join(str(s) for s in params["check_levels"]),
                "max_levels": int(params["max_levels"]),
            }
        )
    for _, group in rows[rows["algorithm"] == REFERENCE_ALGORITHM].groupby("method"):
        points.append(
            {
                **_point(tidy, group, base_rule, where, baseline),
                "reference": True,
                "paper_x": False,
                "check_levels": "-",
            }
        )
    frame = pd.DataFrame(points, columns=SWEEP_COLUMNS)
    order = ["reference", "check_levels", "threshold", "algorithm", "method"]
    return frame.sort_values(order, ignore_index=True)


def _interval(point: object, low: object, high: object) -> str:
    if pd.isna(point):
        return "-"
    return f"{point:.2f} [{low:.2f}, {high:.2f}]"


def _sweep_cells(p: Any) -> list[str]:
    if p.reference:
        method, x, levels, cap = f"{p.method} (EAGLE-2 reference)", "-", "-", "-"
    else:
        method, levels, cap = p.method, p.check_levels, str(int(p.max_levels))
        x = f"{p.threshold:g}" + (" (paper's x)" if p.paper_x else "")
    speed = _interval(p.speedup, p.speedup_low, p.speedup_high)
    if not p.comparable:
        speed = NOT_COMPARABLE
    mean_levels = "-" if pd.isna(p.mean_levels) else f"{p.mean_levels:.2f}"
    return [
        method, x, levels, cap, speed, _interval(p.tau, p.tau_low, p.tau_high), mean_levels,
        p.rule, str(p.questions),
    ]  # fmt: skip


def sweep_markdown(points: pd.DataFrame, title: str) -> str:
    """The sweep as a Markdown table, the paper's x and the EAGLE-2 reference rows named."""
    header = [
        "method", "x", "S", "max levels", f"speedup ({ESTIMATOR}) [95% CI]", "tau [95% CI]",
        "mean levels", "rule", "n",
    ]  # fmt: skip
    body = [_sweep_cells(p) for p in points.itertuples()]
    lines = [f"{title}\n", *_markdown(header, body)]
    paper = points[points["paper_x"].astype(bool)]
    where = (
        f"the row(s) of {', '.join(paper['method'])}" if len(paper) else "no row (no run at that x)"
    )
    lines += [
        "",
        "x: threshold on H (logsumexp of the beam's cumulative draft log-probs), checked after "
        f"each level in S; max levels: the most levels (the paper's n). The paper's x = "
        f"{PAPER_THRESHOLD:g}: {where}. Speedup ({ESTIMATOR}): mean over questions of "
        "tokens/s over the baseline's, on the same questions (EAGLE's estimator). "
        f"{TAU_NOTE} tau's interval: 95% bootstrap over questions (tau = all verified tokens / "
        "all verification forwards of the resampled questions). Mean levels: draft levels per "
        f"round. {RULE_NOTE} EAGLE-2 reference: the {REFERENCE_ALGORITHM} runs of the same "
        f"pair, dataset and T. {NOT_COMPARABLE}: no speedup against a baseline of another "
        "generation rule.",
    ]
    return "\n".join(lines) + "\n"
