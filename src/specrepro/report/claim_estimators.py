"""A claim's measurement: per-question rows of its runs, the statistic its kind and metric read
(speed ratio by the paper's estimator, tau, energy ratio, quality or log-likelihood
difference), its mean over pairs and the 95% bootstrap interval over questions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from specrepro.report.aggregate import per_question, prepare
from specrepro.report.claim_loading import QUALITY_COLUMNS, Claim

N_RESAMPLES = 2000
# Fewer questions than this scored differently by the two sides: the difference is noise.
MIN_DIFFERING = 3


def _claim_rows(rows: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    """The rows of the run named `method` on the claim's dataset, temperature and pair."""
    rows = rows[
        (rows["method"] == method)
        & (rows["dataset"] == claim.dataset)
        & np.isclose(rows["temperature"].astype(float), claim.temperature)
    ]
    return rows if claim.pair == "all" else rows[rows["pair"] == claim.pair]


def _scores(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    """Per question of `method`: energy, tokens, the task score and the target log-likelihood
    (means over turns and seeds)."""
    rows = _claim_rows(prepare(tidy), claim, method)
    grouped = rows.groupby(["pair", "question_id"])
    out = grouped[["new_tokens"]].sum()
    # min_count: one unmeasured turn leaves the question's energy unmeasured, never zero.
    out["energy_j"] = grouped["energy_j"].sum(min_count=1)
    out["energy_j"] = out["energy_j"].where(grouped["energy_j"].count() == grouped.size())
    out["quality"] = grouped[QUALITY_COLUMNS.get(claim.dataset, "em")].mean()
    out["loglik"] = grouped["target_loglik"].mean()
    reasons = rows["energy_reason"].dropna() if "energy_reason" in rows else pd.Series()
    out.attrs["reason"] = str(reasons.iloc[0]) if len(reasons) else None
    return out


def _questions(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    rows = _claim_rows(per_question(tidy), claim, method)
    # Seeds pooled per question: the bootstrap resamples questions.
    return rows.groupby(["pair", "question_id"])[["new_tokens", "wall_time_s"]].sum()


def _forwards(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    rows = _claim_rows(prepare(tidy), claim, method)
    # Tau (SPEC 6): tokens committed by verification forwards per verification forward.
    return rows.groupby(["pair", "question_id"])[["verified_tokens", "verify_forwards"]].sum()


def _replicates(
    pairs: dict[str, np.ndarray], statistic: Callable[[np.ndarray], float], seed: int
) -> tuple[float, np.ndarray]:
    """Mean over pairs of `statistic(rows)`, and its bootstrap replicates (questions resampled
    within each pair, pairs independently)."""
    rng = np.random.default_rng(seed)
    points, reps = [], []
    for rows in pairs.values():
        points.append(statistic(rows))
        idx = rng.integers(0, len(rows), size=(N_RESAMPLES, len(rows)))
        reps.append(np.array([statistic(rows[i]) for i in idx]))
    return float(np.mean(points)), np.mean(reps, axis=0)


def _mean_tps_ratio(rows: np.ndarray) -> float:
    return float(np.mean(rows[:, 0] / rows[:, 1]) / np.mean(rows[:, 2] / rows[:, 3]))


def _totals_ratio(rows: np.ndarray) -> float:
    return float((rows[:, 0].sum() / rows[:, 1].sum()) / (rows[:, 2].sum() / rows[:, 3].sum()))


SPEED_ESTIMATORS = {"mean_tps": _mean_tps_ratio, "totals": _totals_ratio}


def _tau(rows: np.ndarray) -> float:
    return float(rows[:, 0].sum() / rows[:, 1].sum())


def _energy_ratio(rows: np.ndarray) -> float:
    # columns: tokens, J, reference tokens, reference J -> reference J/token over the method's
    return float((rows[:, 3].sum() / rows[:, 2].sum()) / (rows[:, 1].sum() / rows[:, 0].sum()))


def _quality_difference(rows: np.ndarray) -> float:
    return float(100 * (rows[:, 0].mean() - rows[:, 1].mean()))


def _loglik_difference(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean() - rows[:, 1].mean())


def _paired_scores(tidy: pd.DataFrame, claim: Claim) -> tuple[dict, str | None, bool]:
    """Per pair, the rows the energy, quality or log-likelihood statistic reads; why energy
    is missing; and whether quality sits at the floor."""
    assert claim.reference is not None and claim.reference.name is not None
    mine = _scores(tidy, claim, str(claim.method.name))
    theirs = _scores(tidy, claim, claim.reference.name)
    joined = mine.merge(theirs, left_index=True, right_index=True, suffixes=("", "_ref"))
    floor = False
    if claim.metric == "energy":
        columns = ["new_tokens", "energy_j", "new_tokens_ref", "energy_j_ref"]
        if len(joined) and joined[columns].isna().any().any():
            reason = mine.attrs.get("reason") or theirs.attrs.get("reason") or "not recorded"
            return {}, f"energy not measured: {reason}", False
    else:
        columns = [claim.metric, f"{claim.metric}_ref"]
        joined = joined.dropna(subset=columns)
        if claim.metric == "quality" and len(joined):
            both_zero = joined[columns].to_numpy().max() == 0
            differing = int((joined[columns[0]] != joined[columns[1]]).sum())
            floor = both_zero or differing < MIN_DIFFERING
    groups = {p: g[columns].to_numpy(dtype=float) for p, g in joined.groupby(level="pair")}
    return groups, None, floor


def empty_result(reason: str | None = None, **extra: object) -> dict:
    """A measurement with no value: the claim's runs are missing, or `reason` says why."""
    return {"measured": None, "low": None, "high": None, "pairs": [], "questions": 0,
            "reason": reason, "floor": False, **extra}  # fmt: skip


def measure(tidy: pd.DataFrame, claim: Claim, baseline: str = "vanilla", seed: int = 0) -> dict:
    """The measured value with its interval and the pairs and questions it rests on; the
    claim's sides must name their runs (`Setting.name`)."""
    reason, floor = None, False
    method = str(claim.method.name)
    if claim.kind == "value" and claim.metric == "tau":
        table = _forwards(tidy, claim, method)
        groups = {p: g.to_numpy(dtype=float) for p, g in table.groupby(level="pair")}
        statistic = _tau
    elif claim.metric in ("energy", "quality", "loglik"):
        groups, reason, floor = _paired_scores(tidy, claim)
        statistic = {
            "energy": _energy_ratio, "quality": _quality_difference, "loglik": _loglik_difference,
        }[claim.metric]  # fmt: skip
    else:
        denominator = claim.reference.name if claim.reference else baseline
        mine = _questions(tidy, claim, method)
        theirs = _questions(tidy, claim, str(denominator))
        joined = mine.merge(theirs, left_index=True, right_index=True, suffixes=("", "_ref"))
        groups = {p: g.to_numpy(dtype=float) for p, g in joined.groupby(level="pair")}
        statistic = SPEED_ESTIMATORS[claim.estimator]
    groups = {p: rows for p, rows in groups.items() if len(rows)}
    if not groups:
        return empty_result(reason)
    point, reps = _replicates(groups, statistic, seed)
    low, high = np.quantile(reps, [0.025, 0.975])
    return {
        "measured": point,
        "low": float(low),
        "high": float(high),
        "pairs": sorted(groups),
        "questions": int(sum(len(rows) for rows in groups.values())),
        "reason": None,
        "floor": floor,
    }
