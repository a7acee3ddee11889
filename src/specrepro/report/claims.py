"""Papers' claims as data, checked against the measurements (SPEC 7).

A claims file (YAML) names a paper, optionally `min_questions` (default 8) and `estimator`
(how speed is summarised for that paper: `mean_tps`, EAGLE's and Spec-Bench's mean over
questions of tokens/s, or `totals`, all tokens over all seconds as DSBD's evaluation computes),
and lists claims, each on one dataset and temperature. A claim names the runs it compares by
their setting: `method: ddd` (an algorithm), or a mapping `{algorithm: ddd, params: {...}}`
with the parameters that define the paper's setting, or `{name: vanilla-aa}` (one config
entry). Kinds:
- `ratio`: method over `reference` on the questions both ran: speed (the paper's estimator) or,
  with `metric: energy`, the reference's J/token over the method's. Two verdicts: the
  direction (is the interval above 1?) and the magnitude (does it contain the published ratio,
  or meet `published`..`published_high` when the paper gives a range?).
- `value`: a method's `speedup` over the baseline, or its `tau`. Speedup depends on the
  hardware: one-sided, supported when the interval meets `at_least` (default: published less
  `tolerance`). Tau does not: two-sided, supported when the interval lies within `tolerance`
  (default 10%) of the published value, not supported when it lies outside.
- `difference`: the method's score minus the reference's on the questions both ran: `quality`
  (task score, percentage points) or `loglik` (the target's mean log-probability per token).
  `at_least` reads "no lower than" (>=); `higher_than` reads "higher than" (strictly >).
- `study`: a figure of the draft-design study (report/draft_design.py), never a maximum picked
  after the fact. `throughput_ratio`: a member's mean tokens/s over the pair's existing draft,
  judged as a ratio, with `member:` a draft named in advance (its 95% interval) or `all` (the
  largest ratio over every member, judged by the simultaneous Bonferroni interval
  [max low_i, max high_i]); `lookahead: tuned` (each draft at its best gamma, chosen on tuning
  questions and reported on the others, the default) or `fixed`. `tar_accuracy_r` (TAR against
  the drafts' own task accuracy, as the paper plots it) or `tar_perplexity_r`, with `at_most`
  (|r| bound) and `min_drafts`, the drafts a Fisher-z interval needs to be able to lie within
  the bound at r = 0 (`decidable_n`; a file may state more, never fewer): with fewer drafts
  the status is "undecided: needs N drafts, has k".
- `control`: the A/A control, a run over an identical run (`{name: vanilla-aa}` over
  `{name: vanilla}`): it passes when its interval contains 1 with a half-width of at most
  `tolerance` (default 5%); when a control fails, every speed verdict is withheld.
`pair: all` (the default) averages the per-pair values over every pair that ran both sides.

No verdict (only "inconclusive (...)") below `min_questions` paired questions, on a zero-width
interval, with quality at the floor (both sides 0, or fewer than 3 questions scored
differently), or when the A/A control failed (speed claims). A claim whose algorithm ran only
with other parameters is reported with that run's measurement as "ran with other parameters",
never as "not run".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from specrepro.report.aggregate import per_question, prepare

N_RESAMPLES = 2000
MIN_QUESTIONS = 8
# Fewer questions than this scored differently by the two sides: the difference is noise.
MIN_DIFFERING = 3
CONTROL_TOLERANCE = 0.05
KINDS = ("ratio", "value", "difference", "study", "control")
METRICS = {
    "ratio": ("speedup", "energy"),
    "value": ("speedup", "tau"),
    "difference": ("quality", "loglik"),
    "study": ("throughput_ratio", "tar_accuracy_r", "tar_perplexity_r"),
    "control": ("speedup",),
}
# Quantities the hardware does not change: checked two-sided against the published value.
HARDWARE_INDEPENDENT = ("tau", "quality", "loglik")
# Measured from timings: withheld when the A/A control shows the machine drifted.
TIMED = ("speedup", "throughput_ratio")
QUALITY_COLUMNS = {"squad": "em", "spider": "exec_match"}
ESTIMATORS = ("mean_tps", "totals")
CORRELATIONS = ("tar_accuracy_r", "tar_perplexity_r")
LOOKAHEADS = ("tuned", "fixed")
Z95 = 1.959963984540054


def decidable_n(bound: float, z: float = Z95) -> int:
    """The fewest points at which a Fisher-z interval around r = 0 lies strictly within
    (-bound, bound): tanh(z / sqrt(n - 3)) < bound. 16 for |r| <= 0.5 at 95%."""
    if not 0 < bound < 1:
        raise ValueError(f"a correlation bound must lie in (0, 1), not {bound}")
    n = 4
    while math.tanh(z / math.sqrt(n - 3)) >= bound:
        n += 1
    return n


class ClaimError(ValueError):
    """A claims file that does not say what it must."""


@dataclass(frozen=True)
class Setting:
    """Which runs a claim side means: one config entry by `name`, or every run of `algorithm`
    whose parameters include `params` (the paper's setting)."""

    algorithm: str | None = None
    name: str | None = None
    params: tuple[tuple[str, str], ...] = ()  # (key, JSON value), sorted: hashable

    @classmethod
    def parse(cls, value: object, where: str) -> Setting:
        if isinstance(value, str):
            return cls(algorithm=value)
        if not isinstance(value, dict) or not ({"algorithm", "name"} & value.keys()):
            raise ClaimError(f"{where}: give an algorithm, or a mapping with `algorithm` or `name`")
        unknown = value.keys() - {"algorithm", "name", "params"}
        if unknown:
            raise ClaimError(f"{where}: unknown keys {sorted(unknown)}")
        params = value.get("params") or {}
        return cls(
            algorithm=value.get("algorithm"),
            name=value.get("name"),
            params=tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in params.items())),
        )

    @property
    def label(self) -> str:
        return self.name or self.algorithm or "?"

    def differing(self, params: dict) -> dict[str, tuple[object, object]]:
        """{key: (run's value, setting's value)} where a run's parameters differ."""
        out = {}
        for key, wanted in self.params:
            have = params.get(key)
            if have is None or not _same(have, json.loads(wanted)):
                out[key] = (have, json.loads(wanted))
        return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return bool(np.isclose(float(a), float(b)))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@dataclass(frozen=True)
class Claim:
    paper: str
    id: str
    text: str
    kind: str
    method: Setting
    dataset: str
    temperature: float
    reference: Setting | None = None  # ratio / difference / control: the runs compared against
    metric: str = "speedup"
    pair: str = "all"
    published: float | None = None
    published_high: float | None = None  # a published range's upper end (ratio magnitude)
    at_least: float | None = None
    higher_than: float | None = None
    at_most: float | None = None  # study correlation: |r| at most this
    min_drafts: int | None = None  # study correlation: drafts needed for a decidable interval
    member: str | None = None  # study ratio: a draft named in advance, or "all" (Bonferroni)
    lookahead: str = "tuned"  # study ratio: each draft's best gamma (tuned) or the fixed one
    tolerance: float = 0.1
    estimator: str = "mean_tps"
    min_questions: int = MIN_QUESTIONS

    def threshold(self) -> float | None:
        """The bound a one-sided claim is checked against (None for two-sided ones)."""
        for bound in (self.at_most, self.higher_than, self.at_least):
            if bound is not None:
                return bound
        if self.kind == "value" and self.published is not None and not self.two_sided:
            return self.published * (1 - self.tolerance)
        return None

    @property
    def two_sided(self) -> bool:
        return self.kind == "value" and self.metric in HARDWARE_INDEPENDENT

    def band(self) -> tuple[float, float] | None:
        if not self.two_sided or self.published is None:
            return None
        spread = abs(self.published) * self.tolerance
        return self.published - spread, self.published + spread


def query(
    kind: str, method: str, pair: str, dataset: str, temperature: float, **extra: object
) -> Claim:
    """A claim used only to measure (report tables): the runs named exactly, no paper, text or
    threshold of its own."""
    reference = extra.pop("reference", None)
    return Claim(
        paper="", id="", text="", kind=kind, method=Setting(name=method), dataset=dataset,
        temperature=temperature, pair=pair, at_least=0.0,
        reference=Setting(name=str(reference)) if reference else None, **extra,
    )  # fmt: skip


def load_claims(paths: list[Path]) -> list[Claim]:
    claims = []
    for path in paths:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict) or "paper" not in data or "claims" not in data:
            raise ClaimError(f"{path}: needs `paper` and a `claims` list")
        defaults = {
            "estimator": data.get("estimator", "mean_tps"),
            "min_questions": int(data.get("min_questions", MIN_QUESTIONS)),
        }
        if defaults["estimator"] not in ESTIMATORS:
            raise ClaimError(f"{path}: estimator must be one of {ESTIMATORS}")
        for entry in data["claims"]:
            claims.append(_claim(path, data["paper"], defaults, dict(entry)))
    return claims


def _claim(path: Path, paper: str, defaults: dict, entry: dict) -> Claim:
    where = f"{path}: claim {entry.get('id', '?')!r}"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ClaimError(f"{where}: kind must be one of {KINDS}")
    if "method" not in entry:
        raise ClaimError(f"{where}: needs `method`")
    entry["method"] = Setting.parse(entry["method"], f"{where}: method")
    if kind in ("ratio", "difference", "control"):
        if not entry.get("reference"):
            raise ClaimError(f"{where}: a {kind} claim needs `reference`")
        entry["reference"] = Setting.parse(entry["reference"], f"{where}: reference")
    if kind == "difference":
        entry.setdefault("metric", "quality")
    if kind == "control":
        entry.setdefault("tolerance", CONTROL_TOLERANCE)
    try:
        claim = Claim(paper=paper, **{**defaults, **entry})
    except TypeError as err:
        raise ClaimError(f"{where}: {err}") from err
    if claim.metric not in METRICS[kind]:
        raise ClaimError(f"{where}: a {kind} claim's metric must be one of {METRICS[kind]}")
    if claim.metric == "quality" and claim.dataset not in QUALITY_COLUMNS:
        raise ClaimError(
            f"{where}: no task score on {claim.dataset!r} (only {sorted(QUALITY_COLUMNS)})"
        )
    if kind in ("ratio",) or claim.metric == "throughput_ratio":
        if claim.published is None:
            raise ClaimError(f"{where}: a ratio claim needs `published` (its magnitude)")
    elif kind == "difference":
        if (claim.at_least is None) == (claim.higher_than is None):
            raise ClaimError(f"{where}: give one of `at_least` (no lower) or `higher_than`")
    elif kind == "value" and claim.published is None:
        raise ClaimError(f"{where}: a value claim needs `published`")
    if (claim.metric in CORRELATIONS) != (claim.at_most is not None):
        raise ClaimError(f"{where}: `at_most` belongs to (and is needed by) {CORRELATIONS} claims")
    if claim.metric in CORRELATIONS:
        needed = decidable_n(claim.at_most)
        if claim.min_drafts is None or claim.min_drafts < needed:
            raise ClaimError(
                f"{where}: state `min_drafts` (at least {needed}: a Fisher-z 95% interval around "
                f"r = 0 lies within |r| < {claim.at_most} only from {needed} drafts)"
            )
    elif claim.min_drafts is not None:
        raise ClaimError(f"{where}: `min_drafts` belongs to correlation claims")
    if claim.metric == "throughput_ratio":
        if not claim.member:
            raise ClaimError(
                f"{where}: name the `member` compared with the existing draft (fixed in advance), "
                "or `all` (every member, Bonferroni-corrected)"
            )
        if claim.lookahead not in LOOKAHEADS:
            raise ClaimError(f"{where}: lookahead must be one of {LOOKAHEADS}")
    elif claim.member is not None:
        raise ClaimError(f"{where}: `member` belongs to throughput_ratio claims")
    return claim


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


def _empty(reason: str | None = None, **extra: object) -> dict:
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
        return _empty(reason)
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


def measure_study(claim: Claim, study: dict[str, list[dict]] | None) -> dict:
    """A study claim's figure from the study results ({base pair: draft_design results}); for
    a correlation, `questions` counts the drafts."""
    label = claim.method.label
    entries = [
        (pair, entry)
        for pair, results in (study or {}).items()
        if claim.pair in ("all", pair)
        for entry in results
        if entry["method"] == label and np.isclose(entry["temperature"], claim.temperature)
    ]
    if not entries:
        return _empty()
    pair, entry = entries[0]
    values = entry.get("datasets", {}).get(claim.dataset)
    if claim.metric == "throughput_ratio":
        if not values:
            return _empty()
        if claim.member == "all":
            ratio = values["max"][claim.lookahead]
            note = f"largest of {ratio['comparisons']} drafts, Bonferroni" if ratio else None
        else:
            found = values["comparisons"].get(str(claim.member))
            ratio = found[claim.lookahead] if found else None
            note = None
        if not ratio or ratio.get("measured") is None:
            return _empty()
        return {
            "measured": ratio["measured"], "low": ratio["low"], "high": ratio["high"],
            "pairs": [pair], "questions": ratio["questions"], "reason": None, "floor": False,
            "note": note,
        }  # fmt: skip
    key = "accuracy" if claim.metric == "tar_accuracy_r" else "perplexity"
    corr = ((entry.get("correlations") or {}).get(claim.dataset) or {}).get(key)
    if not corr:
        return _empty()
    n = int(corr["n"])
    if n == 0:
        return _empty(f"no draft's {key} measured on {claim.dataset}", pairs=[pair])
    result = {
        "measured": corr["r"] if np.isfinite(corr["r"]) else None,
        "low": corr["low"] if np.isfinite(corr["low"]) else None,
        "high": corr["high"] if np.isfinite(corr["high"]) else None,
        "pairs": [pair], "questions": n, "reason": corr.get("reason"), "floor": False,
    }  # fmt: skip
    assert claim.min_drafts is not None
    if n < claim.min_drafts:
        result["undecided"] = f"undecided: needs {claim.min_drafts} drafts, has {n}"
    elif result["low"] is None:
        result["measured"] = None
        result["reason"] = corr.get("reason") or f"no interval from {n} drafts"
    return result


def _runs(tidy: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The runs (method, algorithm, params) on the claim's dataset, temperature and pair, with
    how many questions each ran."""
    rows = tidy[
        (tidy["dataset"] == claim.dataset)
        & np.isclose(tidy["temperature"].astype(float), claim.temperature)
    ]
    if claim.pair != "all":
        rows = rows[rows["pair"] == claim.pair]
    params = rows["params"] if "params" in rows else pd.Series("{}", index=rows.index)
    rows = rows.assign(params=params.fillna("{}"))
    return (
        rows.groupby(["method", "algorithm", "params"])["question_id"]
        .nunique()
        .rename("questions")
        .reset_index()
    )


def resolve(runs: pd.DataFrame, setting: Setting) -> tuple[str | None, str | None]:
    """(the run a setting means, what its parameters differ in from the setting's), by the
    most questions then the name; (None, None) when no run of it exists."""
    if setting.name is not None:
        found = runs[runs["method"] == setting.name]
        return (setting.name, None) if len(found) else (None, None)
    found = runs[runs["algorithm"] == setting.algorithm]
    if found.empty:
        return None, None
    found = found.assign(
        differs=[setting.differing(json.loads(p)) for p in found["params"]],
        order=lambda f: [(-q, m) for q, m in zip(f["questions"], f["method"], strict=True)],
    )
    exact = found[[not d for d in found["differs"]]]
    if len(exact):
        return str(min(exact.itertuples(), key=lambda r: r.order).method), None
    best = min(found.itertuples(), key=lambda r: r.order)
    parts = ", ".join(f"{k} {have} (paper {want})" for k, (have, want) in best.differs.items())
    return str(best.method), f"{best.method}: {parts}"


def _one_sided(low: float, high: float, bound: float, strict: bool) -> str:
    """At least `bound` (strict: above it)."""
    if (low > bound) if strict else (low >= bound):
        return "supported"
    if (high <= bound) if strict else (high < bound):
        return "not supported"
    return "inconclusive"


def _within(low: float, high: float, lo: float, hi: float) -> str:
    """Two-sided: the whole interval inside [lo, hi], or none of it."""
    if lo <= low and high <= hi:
        return "supported"
    if high < lo or low > hi:
        return "not supported"
    return "inconclusive"


def _magnitude(claim: Claim, low: float, high: float) -> str:
    """Does the interval contain the published ratio (or meet the published range)?"""
    assert claim.published is not None
    top = claim.published if claim.published_high is None else claim.published_high
    if high < claim.published or low > top:
        return "not supported"
    return "supported"


def _withheld(claim: Claim, result: dict, noisy: bool) -> str | None:
    """Why no verdict may be given, if one is withheld."""
    n = result["questions"]
    if n < claim.min_questions and claim.metric not in CORRELATIONS:
        return f"inconclusive (n = {n} questions < {claim.min_questions})"
    if result.get("floor"):
        return "inconclusive (at floor)"
    if not result["high"] > result["low"]:
        return "inconclusive (zero-width interval)"
    if noisy and claim.metric in TIMED and claim.kind != "control":
        return "inconclusive (A/A control failed: the machine was too noisy)"
    return None


def verdicts(claim: Claim, result: dict, noisy: bool = False) -> dict[str, str]:
    """{status, direction, magnitude} of a measured claim (direction and magnitude for ratios,
    '-' elsewhere)."""
    none = {"direction": "-", "magnitude": "-"}
    if result.get("undecided"):
        return {"status": result["undecided"], **none}
    if result["measured"] is None:
        return {"status": "not measured" if result["reason"] else "not run", **none}
    if result.get("other_parameters"):
        return {"status": "ran with other parameters", **none}
    withheld = _withheld(claim, result, noisy)
    if withheld:
        return {"status": withheld, **none}
    low, high = result["low"], result["high"]
    if claim.kind == "control":
        half = (high - low) / 2
        ok = low <= 1.0 <= high and half <= claim.tolerance
        status = "passed" if ok else "failed: the machine was too noisy for speed verdicts"
        return {"status": status, **none}
    if claim.kind == "ratio" or claim.metric == "throughput_ratio":
        direction = _one_sided(low, high, 1.0, strict=True)
        magnitude = _magnitude(claim, low, high)
        status = f"direction {direction}; magnitude {magnitude}"
        return {"status": status, "direction": direction, "magnitude": magnitude}
    if claim.at_most is not None:
        return {"status": _within(low, high, -claim.at_most, claim.at_most), **none}
    band = claim.band()
    if band is not None:
        return {"status": _within(low, high, *band), **none}
    threshold = claim.threshold()
    assert threshold is not None
    strict = claim.higher_than is not None
    return {"status": _one_sided(low, high, threshold, strict), **none}


def _resolved(tidy: pd.DataFrame, claim: Claim) -> tuple[Claim | None, list[str]]:
    """The claim with both sides naming runs, and what those runs differ in from the paper's
    setting; None when a side did not run."""
    runs = _runs(tidy, claim)
    names, notes = [], []
    for setting in (claim.method, claim.reference):
        if setting is None:
            names.append(None)
            continue
        name, note = resolve(runs, setting)
        if name is None:
            return None, []
        names.append(Setting(name=name))
        if note:
            notes.append(note)
    return replace(claim, method=names[0], reference=names[1]), notes


def check_claims(
    tidy: pd.DataFrame,
    claims: list[Claim],
    baseline: str = "vanilla",
    study: dict[str, list[dict]] | None = None,
) -> pd.DataFrame:
    rows = []
    # Controls first: a failed A/A control withholds every speed verdict of the table.
    ordered = sorted(claims, key=lambda c: c.kind != "control")
    noisy = False
    for claim in ordered:
        runs, notes = "-", []
        if claim.kind == "study":
            result = measure_study(claim, study)
        else:
            resolved, notes = _resolved(tidy, claim)
            if resolved is None:
                result = _empty()
            else:
                result = measure(tidy, resolved, baseline)
                sides = [resolved.method, resolved.reference]
                runs = " / ".join(s.label for s in sides if s is not None)
        result["other_parameters"] = "; ".join(notes) if notes else None
        verdict = verdicts(claim, result, noisy)
        if claim.kind == "control" and verdict["status"].startswith("failed"):
            noisy = True
        published = claim.published
        rows.append(
            {
                "paper": claim.paper,
                "claim": claim.id,
                "text": claim.text,
                **verdict,
                "published": published,
                "published_high": claim.published_high,
                "threshold": claim.threshold(),
                "runs": runs,
                **result,
                "measured_over_published": (
                    result["measured"] / published
                    if result["measured"] is not None and published
                    else None
                ),
            }
        )
    order = {claim.id: i for i, claim in enumerate(claims)}
    return pd.DataFrame(rows).sort_values("claim", key=lambda s: s.map(order), kind="stable")


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _measured_cell(row: dict) -> str:
    reason = row.get("reason")
    if row["measured"] is None or pd.isna(row["measured"]):
        return reason if isinstance(reason, str) and reason else "-"
    return f"{row['measured']:.2f} [{_fmt(row['low'])}, {_fmt(row['high'])}] (n={row['questions']})"


def claims_markdown(table: pd.DataFrame) -> str:
    lines = []
    controls = table[table["status"].str.startswith("failed")]
    if len(controls):
        lines += [
            "**The A/A control failed: the machine was too noisy for speed verdicts; every "
            "speed claim below is withheld.**",
            "",
        ]
    lines += [
        "| paper | claim | status | published | measured [95% CI] (n) | measured / published "
        "| runs | pairs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        status = f"**{row['status']}**"
        other = row.get("other_parameters")
        if isinstance(other, str) and other:
            status += f" ({other})"
        pairs = ", ".join(row["pairs"]) if row["pairs"] else "-"
        published = _fmt(row["published"])
        high = row.get("published_high")
        if high is not None and not pd.isna(high):
            published += f"-{_fmt(high)}"
        if row.get("threshold") is not None and not pd.isna(row.get("threshold")):
            published += f" (bound {_fmt(row['threshold'])})"
        lines.append(
            f"| {row['paper']} | {row['text']} | {status} | {published} | {_measured_cell(row)} "
            f"| {_fmt(row['measured_over_published'])} | {row['runs']} | {pairs} |"
        )
    lines += ["", FOOTER]
    return "\n".join(lines) + "\n"


FOOTER = (
    "Status from the 95% paired bootstrap interval over questions (n = paired questions; for "
    "a correlation, drafts). No verdict below the claims file's minimum n (default 8), on a "
    "zero-width interval, with quality at the floor (both sides 0, or fewer than 3 questions "
    "scored differently), or for speed when the A/A control failed. Ratio claims get two "
    "verdicts: direction (the interval above 1, strictly) and magnitude (the interval contains "
    "the published ratio or meets its range). Speed-value claims are one-sided (the hardware "
    "sets speed): supported when the interval meets the bound, the published number less 10% "
    "unless the claim sets one. Tau and quality values are two-sided: supported within the "
    "tolerance of the published value, not supported outside it. 'Higher than' is strict; "
    "'no lower than' is >=. 'ran with other parameters' gives the measurement of the run of "
    "the claim's algorithm that ran, and how its setting differs from the paper's; 'not run': "
    "no run of the algorithm on that dataset, temperature and pair; 'not measured': it ran "
    "without recording the quantity. Speed estimators: EAGLE-2 and DDD claims use the mean over "
    "questions of tokens/s (EAGLE's and Spec-Bench's); DSBD claims use total tokens over total "
    "time (DSBD's evaluation). The A/A control passes when its interval contains 1 with a "
    "half-width of at most 5%. Draft-design claims: a draft's throughput over the pair's "
    "existing draft, for a draft named in advance (95% interval) or the largest over all drafts "
    "(simultaneous Bonferroni interval, never the best picked after the fact), at each draft's "
    "lookahead chosen on separate tuning questions; a correlation over n drafts is decided only "
    "from the number of drafts at which its interval can exclude the bound ('undecided: needs "
    "N drafts, has k' below it)."
)
