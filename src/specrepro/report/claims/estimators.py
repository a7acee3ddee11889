"""A claim's measurement: per-question rows of its runs, the statistic its kind and metric read
(speed ratio by the paper's estimator, tau or its ratio, energy ratio, score or log-likelihood
difference), its mean over pairs and the bootstrap interval over questions (95%, or 90% for
equivalence). Also the A/A control per timing group (a paired BCa bootstrap of the log speed
ratio in each estimator) and the random-effects pool of the controls over groups."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from specrepro.report.aggregate import per_question, prepare
from specrepro.report.claims.loading import ESTIMATORS, SCORE_COLUMNS, Z95, Claim
from specrepro.report.claims.runs import claim_rows
from specrepro.report.pairing import TIMING_GROUP, align_reference, pool_questions, timing_groups

N_RESAMPLES = 2000
# Fewer questions than this scored differently by the two sides: the difference is noise.
MIN_DIFFERING = 3
# One measurement: a run's question in one timing group (each seed is a run of its own). A
# claim pairs measurements within a timing group (align_reference), then pools them per
# (pair, question) (pool_questions): the bootstrap below resamples questions within a pair.
MEASUREMENT = ["pair", "seed", TIMING_GROUP, "question_id"]


def _claim_rows(rows: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    """The rows of the run named `method` on the claim's dataset, temperature and pair."""
    rows = rows[
        (rows["method"] == method)
        & (rows["dataset"] == claim.dataset)
        & np.isclose(rows["temperature"].astype(float), claim.temperature)
    ]
    return rows if claim.pair == "all" else rows[rows["pair"] == claim.pair]


def _paired(mine: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Per measurement of `mine` (MEASUREMENT columns, then values): its values, then the
    reference's (suffix _ref) in the same timing group (align_reference)."""
    ref = align_reference(mine, theirs, ["pair", "seed"])
    return mine.merge(ref, on=MEASUREMENT, suffixes=("", "_ref"))


def _pooled(table: pd.DataFrame, means: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per (pair, question) of per-measurement rows: every value column pooled over the
    question's timing groups and seeds (pool_questions)."""
    values = [c for c in table.columns if c not in MEASUREMENT]
    return pool_questions(table, ["pair"], values, means)


def _scores(tidy: pd.DataFrame, claim: Claim, method: str) -> tuple[pd.DataFrame, str | None]:
    """Per measurement of `method`: tokens, energy (and the turns it lacks), the task score and
    the target log-likelihood (means over turns); and why energy was not measured, if said."""
    rows = _claim_rows(prepare(tidy), claim, method)
    grouped = rows.groupby(MEASUREMENT, dropna=False)
    out = grouped[["new_tokens"]].sum()
    # min_count: one unmeasured turn leaves the question's energy unmeasured, never zero; the
    # count of such turns travels along so that no pooling over groups or seeds can hide it.
    out["energy_j"] = grouped["energy_j"].sum(min_count=1)
    out["energy_missing"] = grouped.size() - grouped["energy_j"].count()
    for metric, columns in SCORE_COLUMNS.items():
        out[metric] = grouped[columns.get(claim.dataset, "em")].mean()
    out["loglik"] = grouped["target_loglik"].mean()
    reasons = rows["energy_reason"].dropna() if "energy_reason" in rows else pd.Series()
    return out.reset_index(), (str(reasons.iloc[0]) if len(reasons) else None)


def _speeds(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    """Per measurement of `method`: tokens and seconds (turns summed)."""
    rows = _claim_rows(per_question(tidy), claim, method)
    return rows[[*MEASUREMENT, "new_tokens", "wall_time_s"]]


def _speed_pairs(tidy: pd.DataFrame, claim: Claim, method: str, reference: str) -> pd.DataFrame:
    """Per (pair, question) both ran: tokens and seconds of `method`, then of `reference`,
    each measurement paired with the reference's in its timing group, then pooled."""
    joined = _paired(_speeds(tidy, claim, method), _speeds(tidy, claim, reference))
    return _pooled(joined)


def _forwards(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    rows = _claim_rows(prepare(tidy), claim, method)
    # Tau (docs/measurement.md): tokens committed by verification forwards per verification forward.
    columns = ["verified_tokens", "verify_forwards"]
    return rows.groupby(MEASUREMENT, dropna=False)[columns].sum().reset_index()


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


def _tau_ratio(rows: np.ndarray) -> float:
    return _tau(rows[:, :2]) / _tau(rows[:, 2:])


def _energy_ratio(rows: np.ndarray) -> float:
    # columns: tokens, J, reference tokens, reference J -> reference J/token over the method's
    return float((rows[:, 3].sum() / rows[:, 2].sum()) / (rows[:, 1].sum() / rows[:, 0].sum()))


def _score_difference(rows: np.ndarray) -> float:
    return float(100 * (rows[:, 0].mean() - rows[:, 1].mean()))


def _loglik_difference(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean() - rows[:, 1].mean())


def _paired_scores(tidy: pd.DataFrame, claim: Claim) -> tuple[dict, str | None, bool]:
    """Per pair, the rows the energy, score or log-likelihood statistic reads; why energy
    is missing; and whether the score sits at the floor."""
    assert claim.reference is not None and claim.reference.name is not None
    mine, my_reason = _scores(tidy, claim, str(claim.method.name))
    theirs, their_reason = _scores(tidy, claim, claim.reference.name)
    paired = _paired(mine, theirs)
    # Scores and log-likelihoods are means (over seeds too); tokens and joules are summed.
    means = tuple(c for c in paired.columns if c.removesuffix("_ref") in (*SCORE_COLUMNS, "loglik"))
    joined = _pooled(paired, means)
    for side in ("", "_ref"):
        missing = joined[f"energy_missing{side}"] > 0
        joined[f"energy_j{side}"] = joined[f"energy_j{side}"].where(~missing)
    floor = False
    if claim.metric == "energy":
        columns = ["new_tokens", "energy_j", "new_tokens_ref", "energy_j_ref"]
        if len(joined) and joined[columns].isna().any().any():
            reason = my_reason or their_reason or "not recorded"
            return {}, f"energy not measured: {reason}", False
    else:
        columns = [claim.metric, f"{claim.metric}_ref"]
        joined = joined.dropna(subset=columns)
        if claim.metric in SCORE_COLUMNS and len(joined):
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
    if claim.metric == "tau":
        table = _forwards(tidy, claim, method)
        statistic = _tau
        if claim.kind == "ratio":
            assert claim.reference is not None
            table = _paired(table, _forwards(tidy, claim, str(claim.reference.name)))
            statistic = _tau_ratio
        pooled = _pooled(table)
        groups = {p: g.to_numpy(dtype=float) for p, g in pooled.groupby(level="pair")}
    elif claim.metric in ("energy", "quality", "f1", "loglik"):
        groups, reason, floor = _paired_scores(tidy, claim)
        statistic = {
            "energy": _energy_ratio, "quality": _score_difference, "f1": _score_difference,
            "loglik": _loglik_difference,
        }[claim.metric]  # fmt: skip
    else:
        denominator = claim.reference.name if claim.reference else baseline
        joined = _speed_pairs(tidy, claim, method, str(denominator))
        groups = {p: g.to_numpy(dtype=float) for p, g in joined.groupby(level="pair")}
        statistic = SPEED_ESTIMATORS[claim.estimator]
    groups = {p: rows for p, rows in groups.items() if len(rows)}
    if not groups:
        return empty_result(reason)
    point, reps = _replicates(groups, statistic, seed)
    tail = (1 - claim.level) / 2
    low, high = np.quantile(reps, [tail, 1 - tail])
    return {
        "measured": point,
        "low": float(low),
        "high": float(high),
        "pairs": sorted(groups),
        "questions": int(sum(len(rows) for rows in groups.values())),
        "reason": None,
        "floor": floor,
    }


def _log_mean_tps(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, axis: int = -1
) -> np.ndarray:
    return np.log(np.mean(a / b, axis=axis) / np.mean(c / d, axis=axis))


def _log_totals(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, axis: int = -1
) -> np.ndarray:
    return np.log((a.sum(axis=axis) / b.sum(axis=axis)) / (c.sum(axis=axis) / d.sum(axis=axis)))


# The speed estimators on the log scale, vectorised over bootstrap resamples (scipy's form).
LOG_SPEED = {"mean_tps": _log_mean_tps, "totals": _log_totals}
SPEED_COLUMNS = ["new_tokens", "wall_time_s", "new_tokens_ref", "wall_time_s_ref"]


def paired_interval(
    columns: tuple[np.ndarray, ...], statistic: Callable, level: float, seed: int = 0
) -> tuple[float, float, float]:
    """(low, high, standard error) of `statistic` by a paired bootstrap over questions: BCa,
    or percentile where BCa is degenerate (every resample alike); a point below 2 questions."""
    if len(columns[0]) < 2:
        point = float(statistic(*columns))
        return point, point, 0.0
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap(
                columns, statistic, n_resamples=N_RESAMPLES, confidence_level=level,
                method=method, paired=True, vectorized=True, rng=np.random.default_rng(seed),
            )  # fmt: skip
        low, high = res.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high), float(res.standard_error)
    point = float(statistic(*columns))
    return point, point, 0.0


def measure_control(tidy: pd.DataFrame, claim: Claim, seed: int = 0) -> dict[str, dict]:
    """Per timing group of a control's runs: its pairs, paired questions `n` and, per speed
    estimator, d = log(aa / reference) with its interval at the claim's level and bootstrap
    standard error ({"log", "low", "high", "se"}). Sides must name their runs."""
    assert claim.reference is not None
    method, reference = str(claim.method.name), str(claim.reference.name)
    rows = claim_rows(tidy, claim)
    groups = timing_groups(rows)
    out = {}
    for group in sorted(set(groups[rows["method"] == method])):
        joined = _speed_pairs(rows[groups == group], claim, method, reference)
        if joined.empty:
            continue
        columns = tuple(joined[c].to_numpy(dtype=float) for c in SPEED_COLUMNS)
        entry: dict = {"n": len(joined), "pairs": sorted(set(joined.index.get_level_values(0)))}
        for estimator in ESTIMATORS:
            statistic = LOG_SPEED[estimator]
            low, high, se = paired_interval(columns, statistic, claim.level, seed)
            entry[estimator] = {
                "log": float(statistic(*columns)), "low": low, "high": high, "se": se,
            }  # fmt: skip
        out[group] = entry
    return out


def pooled(log_ratios: list[float], errors: list[float]) -> dict | None:
    """DerSimonian-Laird random-effects mean of per-group log ratios with standard errors:
    {k, ratio, low, high (95%), tau2 (between-group variance, log scale)}; None without a
    group that has a positive standard error."""
    kept = [(y, s) for y, s in zip(log_ratios, errors, strict=True) if np.isfinite(s) and s > 0]
    if not kept:
        return None
    y, v = np.array([k[0] for k in kept]), np.array([k[1] for k in kept]) ** 2
    w = 1 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - fixed) ** 2))
    scale = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (len(y) - 1)) / scale) if scale > 0 else 0.0
    w = 1 / (v + tau2)
    mu, se = float(np.sum(w * y) / np.sum(w)), math.sqrt(1 / float(np.sum(w)))
    return {
        "k": len(y), "ratio": math.exp(mu), "low": math.exp(mu - Z95 * se),
        "high": math.exp(mu + Z95 * se), "tau2": tau2,
    }  # fmt: skip


def pooled_aa(table: pd.DataFrame) -> dict | None:
    """The A/A controls of a claims table (`check_claims`) pooled over timing groups, each in
    its claims file's estimator: `pooled` of their log ratios and bootstrap standard errors."""
    if "log_ratio" not in table:
        return None
    rows = table[(table["kind"] == "control") & table["log_ratio"].notna()]
    return pooled(rows["log_ratio"].astype(float).tolist(), rows["log_se"].astype(float).tolist())
