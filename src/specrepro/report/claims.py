"""Papers' claims as data, checked against the measurements (SPEC 7).

A claims file (YAML) names a paper and lists claims of two kinds, each on one dataset and
temperature:
- `ratio`: speedup(method) / speedup(reference), i.e. mean tokens/s of `method` over mean
  tokens/s of `reference` on the questions both ran (the baseline cancels), e.g. DDD over
  EAGLE-2 >= 1.04.
  With `metric: energy` the ratio is J/token of `reference` over J/token of `method` ("x
  times less energy"), totals over the questions both ran.
- `value`: a method's `speedup` over the baseline (EAGLE's estimator, mean tok/s over mean
  tok/s) or its `tau`, beside the published number.
- `difference`: `metric: quality`, the task score of `method` minus that of `reference` in
  percentage points (SQuAD exact match, Spider execution accuracy) on the questions both ran,
  e.g. DSBD loses no quality against beam sampling.
- `study`: a figure of the draft-design study (report/draft_design.py), read from its results:
  `metric: throughput_ratio` (tokens/s of the fastest draft over the deepest one's, same
  questions) or `metric: tar_perplexity_r` (Pearson's r of TAR against
  held-out perplexity over the drafts). A weak-correlation claim sets `at_most`: supported when
  the whole interval lies within [-at_most, at_most], not supported when none of it does.
`pair: all` (the default) averages the per-pair values over every pair that ran both sides, as
the papers' "average" claims do; a named pair takes that pair alone.

Status, from a 95% bootstrap interval over questions (pairs resampled independently):
supported when the whole interval meets `at_least`, not supported when none of it does,
inconclusive otherwise, not run when a side has no measurements, and not measured when the
runs exist but the quantity was not recorded (energy on a CPU; the reason is given). A `value`
claim without `at_least` is checked against `published * (1 - tolerance)` (tolerance 0.1 by
default: a reproduction on other hardware is not expected to hit the exact number).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from specrepro.report.aggregate import per_question, prepare

N_RESAMPLES = 2000
KINDS = ("ratio", "value", "difference", "study")
METRICS = {
    "ratio": ("speedup", "energy"),
    "value": ("speedup", "tau"),
    "difference": ("quality",),
    "study": ("throughput_ratio", "tar_perplexity_r"),
}
QUALITY_COLUMNS = {"squad": "em", "spider": "exec_match"}


class ClaimError(ValueError):
    """A claims file that does not say what it must."""


@dataclass(frozen=True)
class Claim:
    paper: str
    id: str
    text: str
    kind: str
    method: str
    dataset: str
    temperature: float
    reference: str | None = None  # ratio / difference: the method compared against
    metric: str = "speedup"  # ratio: speedup or energy; value: speedup or tau; difference: quality
    pair: str = "all"
    published: float | None = None
    at_least: float | None = None
    at_most: float | None = None  # study correlation: |r| at most this
    tolerance: float = 0.1

    def threshold(self) -> float | None:
        if self.at_most is not None:
            return self.at_most
        if self.at_least is not None:
            return self.at_least
        if self.published is not None:
            return self.published * (1 - self.tolerance)
        return None


def query(
    kind: str, method: str, pair: str, dataset: str, temperature: float, **extra: object
) -> Claim:
    """A claim used only to measure (report tables): no paper, text or threshold of its own."""
    return Claim(
        paper="", id="", text="", kind=kind, method=method, dataset=dataset,
        temperature=temperature, pair=pair, at_least=0.0, **extra,
    )  # fmt: skip


def load_claims(paths: list[Path]) -> list[Claim]:
    claims = []
    for path in paths:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict) or "paper" not in data or "claims" not in data:
            raise ClaimError(f"{path}: needs `paper` and a `claims` list")
        for entry in data["claims"]:
            try:
                claim = Claim(paper=data["paper"], **entry)
            except TypeError as err:
                raise ClaimError(f"{path}: claim {entry.get('id', '?')!r}: {err}") from err
            if claim.kind not in KINDS:
                raise ClaimError(f"{path}: claim {claim.id!r}: kind must be one of {KINDS}")
            if claim.kind in ("ratio", "difference") and not claim.reference:
                raise ClaimError(
                    f"{path}: claim {claim.id!r}: a {claim.kind} claim needs `reference`"
                )
            metrics = METRICS[claim.kind]
            metric = "quality" if claim.kind == "difference" and "metric" not in entry else None
            claim = claim if metric is None else Claim(**{**claim.__dict__, "metric": metric})
            if claim.metric not in metrics:
                raise ClaimError(
                    f"{path}: claim {claim.id!r}: a {claim.kind} claim's metric must be one of "
                    f"{metrics}"
                )
            if claim.metric == "quality" and claim.dataset not in QUALITY_COLUMNS:
                raise ClaimError(
                    f"{path}: claim {claim.id!r}: no task score on {claim.dataset!r} (only "
                    f"{sorted(QUALITY_COLUMNS)})"
                )
            if claim.threshold() is None:
                raise ClaimError(f"{path}: claim {claim.id!r}: needs `at_least` or `published`")
            if (claim.metric == "tar_perplexity_r") != (claim.at_most is not None):
                raise ClaimError(
                    f"{path}: claim {claim.id!r}: `at_most` belongs to (and is needed by) "
                    "tar_perplexity_r claims"
                )
            claims.append(claim)
    return claims


def _claim_rows(rows: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    """The rows of `method` on the claim's dataset, temperature and pair."""
    rows = rows[
        (rows["method"] == method)
        & (rows["dataset"] == claim.dataset)
        & np.isclose(rows["temperature"].astype(float), claim.temperature)
    ]
    return rows if claim.pair == "all" else rows[rows["pair"] == claim.pair]


def _scores(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    """Per question of `method`: energy, tokens and the task score (mean over seeds)."""
    rows = _claim_rows(prepare(tidy), claim, method)
    grouped = rows.groupby(["pair", "question_id"])
    out = grouped[["new_tokens"]].sum()
    # min_count: one unmeasured turn leaves the question's energy unmeasured, never zero.
    out["energy_j"] = grouped["energy_j"].sum(min_count=1)
    out["energy_j"] = out["energy_j"].where(grouped["energy_j"].count() == grouped.size())
    out["quality"] = grouped[QUALITY_COLUMNS.get(claim.dataset, "em")].mean()
    reasons = rows["energy_reason"].dropna() if "energy_reason" in rows else pd.Series()
    out.attrs["reason"] = str(reasons.iloc[0]) if len(reasons) else None
    return out


def _questions(tidy: pd.DataFrame, claim: Claim, method: str) -> pd.DataFrame:
    rows = _claim_rows(per_question(tidy), claim, method)
    # Seeds pooled per question: the bootstrap resamples questions.
    return rows.groupby(["pair", "question_id"])[["new_tokens", "wall_time_s"]].sum()


def _forwards(tidy: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    rows = _claim_rows(prepare(tidy), claim, claim.method)
    return rows.groupby(["pair", "question_id"])[["new_tokens", "target_forwards"]].sum()


def _replicates(pairs: dict[str, np.ndarray], statistic, seed: int) -> tuple[float, np.ndarray]:
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


def _tau(rows: np.ndarray) -> float:
    return float(rows[:, 0].sum() / rows[:, 1].sum())


def _energy_ratio(rows: np.ndarray) -> float:
    # columns: tokens, J, reference tokens, reference J -> reference J/token over the method's
    return float((rows[:, 3].sum() / rows[:, 2].sum()) / (rows[:, 1].sum() / rows[:, 0].sum()))


def _quality_difference(rows: np.ndarray) -> float:
    return float(100 * (rows[:, 0].mean() - rows[:, 1].mean()))


def _paired_scores(tidy: pd.DataFrame, claim: Claim) -> tuple[dict, str | None]:
    """Per pair, the rows the energy or quality statistic reads, and why energy is missing."""
    assert claim.reference is not None
    mine, theirs = _scores(tidy, claim, claim.method), _scores(tidy, claim, claim.reference)
    joined = mine.merge(theirs, left_index=True, right_index=True, suffixes=("", "_ref"))
    if claim.metric == "energy":
        columns = ["new_tokens", "energy_j", "new_tokens_ref", "energy_j_ref"]
        if len(joined) and joined[columns].isna().any().any():
            reason = mine.attrs.get("reason") or theirs.attrs.get("reason") or "not recorded"
            return {}, f"energy not measured: {reason}"
    else:
        columns = ["quality", "quality_ref"]
        joined = joined.dropna(subset=columns)
    groups = {p: g[columns].to_numpy(dtype=float) for p, g in joined.groupby(level="pair")}
    return groups, None


def measure(tidy: pd.DataFrame, claim: Claim, baseline: str = "vanilla", seed: int = 0) -> dict:
    """The measured value with its interval and the pairs and questions it rests on."""
    reason = None
    if claim.kind == "value" and claim.metric == "tau":
        table = _forwards(tidy, claim)
        groups = {p: g.to_numpy(dtype=float) for p, g in table.groupby(level="pair")}
        statistic = _tau
    elif claim.metric in ("energy", "quality"):
        groups, reason = _paired_scores(tidy, claim)
        statistic = _energy_ratio if claim.metric == "energy" else _quality_difference
    else:
        denominator = claim.reference if claim.kind == "ratio" else baseline
        mine = _questions(tidy, claim, claim.method)
        theirs = _questions(tidy, claim, denominator)
        joined = mine.merge(theirs, left_index=True, right_index=True, suffixes=("", "_ref"))
        groups = {p: g.to_numpy(dtype=float) for p, g in joined.groupby(level="pair")}
        statistic = _mean_tps_ratio
    groups = {p: rows for p, rows in groups.items() if len(rows)}
    if not groups:
        return {
            "measured": None, "low": None, "high": None, "pairs": [], "questions": 0,
            "reason": reason,
        }  # fmt: skip
    point, reps = _replicates(groups, statistic, seed)
    low, high = np.quantile(reps, [0.025, 0.975])
    return {
        "measured": point,
        "low": float(low),
        "high": float(high),
        "pairs": sorted(groups),
        "questions": int(sum(len(rows) for rows in groups.values())),
        "reason": None,
    }


def measure_study(claim: Claim, study: dict[str, list[dict]] | None) -> dict:
    """A study claim's figure from the study results ({base pair: draft_design.study_results})."""
    empty = {"measured": None, "low": None, "high": None, "pairs": [], "questions": 0}
    entries = [
        (pair, entry)
        for pair, results in (study or {}).items()
        if claim.pair in ("all", pair)
        for entry in results
        if entry["method"] == claim.method and np.isclose(entry["temperature"], claim.temperature)
    ]
    if not entries:
        return {**empty, "reason": None}
    pair, entry = entries[0]
    if claim.metric == "throughput_ratio":
        ratio = entry["throughput_ratio"].get(claim.dataset) or {}
        if ratio.get("measured") is None:
            return {**empty, "reason": None}
        return {
            "measured": ratio["measured"], "low": ratio["low"], "high": ratio["high"],
            "pairs": [pair], "questions": ratio["questions"], "reason": None,
        }  # fmt: skip
    corr = entry["tar_perplexity_r"]
    if not np.isfinite(corr["low"]):
        reason = f"an interval needs 4 drafts or more, {corr['n']} ran"
        return {**empty, "pairs": [pair], "reason": reason}
    return {
        "measured": corr["r"], "low": corr["low"], "high": corr["high"], "pairs": [pair],
        "questions": 0, "reason": None,
    }  # fmt: skip


def _status(claim: Claim, result: dict) -> str:
    threshold = claim.threshold()
    if result["measured"] is None:
        return "not measured" if result["reason"] else "not run"
    if claim.at_most is not None:
        if -threshold <= result["low"] and result["high"] <= threshold:
            return "supported"
        if result["low"] > threshold or result["high"] < -threshold:
            return "not supported"
        return "inconclusive"
    if result["low"] >= threshold:
        return "supported"
    if result["high"] < threshold:
        return "not supported"
    return "inconclusive"


def check_claims(
    tidy: pd.DataFrame,
    claims: list[Claim],
    baseline: str = "vanilla",
    study: dict[str, list[dict]] | None = None,
) -> pd.DataFrame:
    rows = []
    for claim in claims:
        if claim.kind == "study":
            result = measure_study(claim, study)
        else:
            result = measure(tidy, claim, baseline)
        published = claim.published
        rows.append(
            {
                "paper": claim.paper,
                "claim": claim.id,
                "text": claim.text,
                "status": _status(claim, result),
                "published": published,
                "threshold": claim.threshold(),
                **result,
                "measured_over_published": (
                    result["measured"] / published
                    if result["measured"] is not None and published
                    else None
                ),
            }
        )
    return pd.DataFrame(rows)


def claims_markdown(table: pd.DataFrame) -> str:
    def fmt(value: object) -> str:
        return (
            "-"
            if value is None or (isinstance(value, float) and np.isnan(value))
            else (f"{value:.2f}" if isinstance(value, float) else str(value))
        )

    lines = [
        "| paper | claim | status | published | measured [95% CI] | measured / published "
        "| threshold | pairs (questions) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        reason = row.get("reason")
        measured = (
            (reason if isinstance(reason, str) and reason else "-")
            if row["measured"] is None or pd.isna(row["measured"])
            else f"{row['measured']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"
        )
        pairs = ", ".join(row["pairs"]) if row["pairs"] else "-"
        lines.append(
            f"| {row['paper']} | {row['text']} | **{row['status']}** | {fmt(row['published'])} "
            f"| {measured} | {fmt(row['measured_over_published'])} | {fmt(row['threshold'])} "
            f"| {pairs} ({row['questions']}) |"
        )
    lines.append("")
    lines.append(
        "Status from the 95% bootstrap interval over questions: supported when all of it meets "
        "the threshold, not supported when none of it does, inconclusive otherwise; not run "
        "when the configuration was not measured, not measured when it ran without recording "
        "the quantity. A study's correlation claim bounds |r| by its threshold. Speedups are "
        "mean tokens/s over mean tokens/s "
        "(EAGLE's estimator); a value claim's threshold is the published number less 10% unless "
        "the claim sets one."
    )
    return "\n".join(lines) + "\n"
