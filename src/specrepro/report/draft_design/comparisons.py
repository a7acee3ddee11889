"""The draft-design study's speed comparisons: per-question tokens and seconds of its runs,
the split of questions into tuning and report ones, a run's ratio over another with its 95%
and Bonferroni-corrected paired bootstrap intervals, and the judgement of the largest ratio
over every member.

The study's drafts may not fit one GPU beside the target: its timing group is then split into
parts (separate jobs), each repeating the base pair's baseline. A run is compared with the
baseline's measurement in its own part; two drafts timed in different parts are compared
through that baseline (the ratio of their speedups, each within its part), never directly
across jobs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from specrepro.report.aggregate import prepare
from specrepro.report.pairing import TIMING_GROUP, align_reference, pool_questions

N_RESAMPLES = 4000
ALPHA = 0.05
# A run's measurement of a question: its seed and timing group, besides the question.
MEASURED = ["seed", TIMING_GROUP, "question_id"]
SPEED = ["new_tokens", "wall_time_s"]


def question_rows(
    tidy: pd.DataFrame, pairs: list[str], methods: list[str], baseline: str
) -> pd.DataFrame:
    """Per (pair, method, dataset, temperature, seed, timing group, question): tokens,
    seconds, verified tokens and verification forwards (turns summed), with each run's gamma;
    the base pair's baseline rows copied under every pair (the target alone loads no draft).
    Seeds and groups are pooled per question where a figure is computed (pool_questions)."""
    rows = prepare(tidy)
    rows = rows[rows["pair"].isin(pairs) & rows["method"].isin([*methods, baseline])]
    for column in ("verified_tokens", "verify_forwards"):
        if column not in rows:
            rows = rows.assign(**{column: np.nan})
    keys = ["pair", "method", "dataset", "temperature", *MEASURED]
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


def _paired_rates(
    numerator: pd.DataFrame, denominator: pd.DataFrame, questions: list[str]
) -> pd.DataFrame:
    """Per question of `questions` both ran, in their order: tokens and seconds of
    `numerator`, then of `denominator` (suffix _ref), each measurement paired with the
    denominator's in its timing group (align_reference), then pooled (pool_questions)."""
    mine = numerator.reset_index()[[*MEASURED, *SPEED]]
    mine = mine[mine["question_id"].isin(questions)]
    theirs = denominator.reset_index()[[*MEASURED, *SPEED]]
    joined = mine.merge(align_reference(mine, theirs, ["seed"]), on=MEASURED, suffixes=("", "_ref"))
    pooled = pool_questions(joined, [], [*SPEED, *(f"{c}_ref" for c in SPEED)])
    return pooled.reindex([q for q in questions if q in pooled.index])


def _rates(pooled: pd.DataFrame, side: str = "") -> np.ndarray:
    return (pooled[f"new_tokens{side}"] / pooled[f"wall_time_s{side}"]).to_numpy(float)


def _groups(rows: pd.DataFrame) -> set[tuple]:
    return set(zip(rows["seed"], rows[TIMING_GROUP], strict=True))


def speed_ratio(
    numerator: pd.DataFrame,
    denominator: pd.DataFrame,
    questions: list[str],
    m: int,
    seed: int,
    bridge: pd.DataFrame | None = None,
) -> dict:
    """Mean tokens/s of `numerator` over `denominator` on `questions` (EAGLE's estimator), with
    its 95% paired bootstrap interval and the Bonferroni interval for m comparisons.

    Each question pairs the two runs' measurements in one timing group. Two runs that share no
    group (a split study put them in different parts, separate jobs) are compared through
    `bridge`, the baseline timed in every part: the numerator's speedup over the bridge's
    measurements in its part, over the denominator's in its own (`bridged` True), so that no
    difference between the jobs enters the ratio; the bootstrap resamples the questions all
    four share."""
    out = {"measured": None, "low": None, "high": None, "low_bonferroni": None,
           "high_bonferroni": None, "questions": 0, "comparisons": m,
           "bridged": False, "timing_groups": []}  # fmt: skip
    ran = not numerator.empty and not denominator.empty
    shared = _groups(numerator) & _groups(denominator)
    # The groups whose timings enter the ratio: whose A/A controls must gate it (claims).
    used = shared or _groups(numerator) | _groups(denominator)
    out["timing_groups"] = sorted({group for _, group in used})
    if bridge is not None and ran and not shared:
        mine, theirs = (_paired_rates(rows, bridge, questions) for rows in (numerator, denominator))
        keep = [q for q in mine.index if q in theirs.index]
        mine, theirs = mine.loc[keep], theirs.loc[keep]
        # (mean numerator / mean its bridge) / (mean denominator / mean its bridge)
        factors = [(_rates(mine), _rates(mine, "_ref")), (_rates(theirs, "_ref"), _rates(theirs))]
        out["bridged"] = True
    else:
        pooled = _paired_rates(numerator, denominator, questions)
        keep = list(pooled.index)
        factors = [(_rates(pooled), _rates(pooled, "_ref"))]
    out["questions"] = len(keep)
    if not keep:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keep), size=(N_RESAMPLES, len(keep)))
    reps = np.prod([a[idx].mean(axis=1) / b[idx].mean(axis=1) for a, b in factors], axis=0)
    corrected = ALPHA / max(1, m)
    out.update(
        measured=float(np.prod([a.mean() / b.mean() for a, b in factors])),
        low=float(np.quantile(reps, ALPHA / 2)),
        high=float(np.quantile(reps, 1 - ALPHA / 2)),
        low_bonferroni=float(np.quantile(reps, corrected / 2)),
        high_bonferroni=float(np.quantile(reps, 1 - corrected / 2)),
    )
    return out


def tau_of(rows: pd.DataFrame) -> float:
    """Tokens committed by verification forwards per verification forward (select_run rows;
    a question timed in several groups at its mean over them)."""
    pooled = _own(rows, ["verified_tokens", "verify_forwards"])
    forwards = pooled["verify_forwards"].sum()
    return float(pooled["verified_tokens"].sum() / forwards) if forwards else float("nan")


def _own(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One run's select_run rows pooled per question: its own figures count each once."""
    return pool_questions(rows.reset_index(), [], columns)


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
    """All tokens over all seconds (a question timed in several groups at its mean)."""
    if not len(rows):
        return float("nan")
    pooled = _own(rows, SPEED)
    seconds = pooled["wall_time_s"].sum()
    return float(pooled["new_tokens"].sum() / seconds) if seconds else float("nan")


def simultaneous_max(comparisons: dict[str, dict], kind: str) -> dict:
    """The largest member-over-existing ratio, judged without picking it: when every
    Bonferroni interval holds (95% jointly), the largest true ratio lies in [max of the lower
    ends, max of the upper ends]. The point is the largest measured ratio."""
    values = [c[kind] for c in comparisons.values() if c.get(kind) and c[kind]["measured"]]
    if not values:
        return {"measured": None, "low": None, "high": None, "questions": 0, "comparisons": 0,
                "timing_groups": []}  # fmt: skip
    return {
        "measured": max(v["measured"] for v in values),
        "low": max(v["low_bonferroni"] for v in values),
        "high": max(v["high_bonferroni"] for v in values),
        "questions": min(v["questions"] for v in values),
        "comparisons": len(values),
        "timing_groups": sorted({g for v in values for g in v.get("timing_groups", [])}),
    }
