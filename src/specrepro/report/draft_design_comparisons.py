"""The draft-design study's speed comparisons: per-question tokens and seconds of its runs,
the split of questions into tuning and report ones, a run's ratio over another with its 95%
and Bonferroni-corrected paired bootstrap intervals, and the judgement of the largest ratio
over every member."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from specrepro.report.aggregate import prepare

N_RESAMPLES = 4000
ALPHA = 0.05


def question_rows(
    tidy: pd.DataFrame, pairs: list[str], methods: list[str], baseline: str
) -> pd.DataFrame:
    """Per (pair, method, dataset, temperature, question): tokens, seconds, verified tokens
    and verification forwards (turns and seeds summed), with each run's gamma; the base
    pair's baseline rows copied under every pair (the target alone loads no draft)."""
    rows = prepare(tidy)
    rows = rows[rows["pair"].isin(pairs) & rows["method"].isin([*methods, baseline])]
    for column in ("verified_tokens", "verify_forwards"):
        if column not in rows:
            rows = rows.assign(**{column: np.nan})
    keys = ["pair", "method", "dataset", "temperature", "question_id"]
    summed = rows.groupby(keys)[
        ["new_tokens", "wall_time_s", "verified_tokens", "verify_forwards"]
    ].sum(min_count=1)
    params = rows.groupby(keys)["params"].first() if "params" in rows else None
    out = summed.reset_index()
    out["gamma"] = [_gamma(p) for p in params.to_numpy()] if params is not None else np.nan
    out["question_id"] = out["question_id"].astype(str)
    return out


def _gamma(params: object) -> float:
    try:
        value = json.loads(params).get("gamma") if isinstance(params, str) else None
    except ValueError:
        value = None
    return float(value) if value else float("nan")


def select_run(
    q: pd.DataFrame, pair: str, method: str, dataset: str, temperature: float
) -> pd.DataFrame:
    """The question rows (indexed by question) of one run: a pair's method on a dataset at T."""
    rows = q[
        (q["pair"] == pair)
        & (q["method"] == method)
        & (q["dataset"] == dataset)
        & np.isclose(q["temperature"].astype(float), temperature)
    ]
    return rows.set_index("question_id")


def speed_ratio(
    numerator: pd.DataFrame, denominator: pd.DataFrame, questions: list[str], m: int, seed: int
) -> dict:
    """Mean tokens/s of `numerator` over `denominator` on `questions` (EAGLE's estimator), with
    its 95% paired bootstrap interval and the Bonferroni interval for m comparisons."""
    keep = [q for q in questions if q in numerator.index and q in denominator.index]
    out = {"measured": None, "low": None, "high": None, "low_bonferroni": None,
           "high_bonferroni": None, "questions": len(keep), "comparisons": m}  # fmt: skip
    if not keep:
        return out
    a = (numerator.loc[keep, "new_tokens"] / numerator.loc[keep, "wall_time_s"]).to_numpy(float)
    b = (denominator.loc[keep, "new_tokens"] / denominator.loc[keep, "wall_time_s"]).to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keep), size=(N_RESAMPLES, len(keep)))
    reps = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    corrected = ALPHA / max(1, m)
    out.update(
        measured=float(a.mean() / b.mean()),
        low=float(np.quantile(reps, ALPHA / 2)),
        high=float(np.quantile(reps, 1 - ALPHA / 2)),
        low_bonferroni=float(np.quantile(reps, corrected / 2)),
        high_bonferroni=float(np.quantile(reps, 1 - corrected / 2)),
    )
    return out


def tau_of(rows: pd.DataFrame) -> float:
    """Tokens committed by verification forwards per verification forward."""
    forwards = rows["verify_forwards"].sum()
    return float(rows["verified_tokens"].sum() / forwards) if forwards else float("nan")


def split_questions(
    order: list[str], ran: set[str], tune: int | None
) -> tuple[list[str], list[str]]:
    """(tuning, report) questions: of the questions every member ran, in the prompt file's
    order, the first `tune` choose each draft's lookahead and the rest report it."""
    ordered = [q for q in order if q in ran] + sorted(ran - set(order))
    if not tune:
        return [], ordered
    return ordered[:tune], ordered[tune:]


def common_questions(
    q: pd.DataFrame, pairs: list[str], names: list[str], dataset: str, t: float
) -> set:
    """The questions every pair ran under every entry name (empty when one ran none)."""
    sets = []
    for pair in pairs:
        for name in names:
            rows = select_run(q, pair, name, dataset, t)
            sets.append(set(rows.index))
    return set.intersection(*sets) if sets and all(sets) else set()


def totals_tokens_per_s(rows: pd.DataFrame) -> float:
    """All tokens over all seconds."""
    seconds = rows["wall_time_s"].sum() if len(rows) else 0.0
    return float(rows["new_tokens"].sum() / seconds) if seconds else float("nan")


def simultaneous_max(comparisons: dict[str, dict], kind: str) -> dict:
    """The largest member-over-existing ratio, judged without picking it: when every
    Bonferroni interval holds (95% jointly), the largest true ratio lies in [max of the lower
    ends, max of the upper ends]. The point is the largest measured ratio."""
    values = [c[kind] for c in comparisons.values() if c.get(kind) and c[kind]["measured"]]
    if not values:
        return {"measured": None, "low": None, "high": None, "questions": 0, "comparisons": 0}
    return {
        "measured": max(v["measured"] for v in values),
        "low": max(v["low_bonferroni"] for v in values),
        "high": max(v["high_bonferroni"] for v in values),
        "questions": min(v["questions"] for v in values),
        "comparisons": len(values),
    }
