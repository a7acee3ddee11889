"""Papers' claims as data, checked against the measurements (docs/measurement.md#claims).

A claims file (YAML) names a paper, optionally `min_questions` (default 8), `estimator` (how
speed is summarised for that paper: `mean_tps`, EAGLE's and Spec-Bench's mean over questions of
tokens/s, or `totals`, all tokens over all seconds as DSBD's evaluation computes), `delta` (the
A/A equivalence bound, default 0.03) and `hardware` (`gpu`: its speedups over autoregressive
decoding were measured on a GPU), and lists claims, each on one dataset and temperature; a claim
may override `min_questions` and `hardware`. A claim names the runs it compares by their
setting: `method: ddd` (an algorithm), or a mapping `{algorithm: ddd, params: {...}}` with the
parameters that define the paper's setting, or `{name: vanilla-aa}` (one config entry). A
setting's run is the run of its algorithm with the fewest parameters differing from the setting,
then the most questions, then the name (a deterministic last resort); every candidate run is
measured and listed (`candidates`, JSON). Kinds:
- `ratio`: method over `reference` on the questions both ran: speed (the paper's estimator),
  with `metric: energy` the reference's GPU board J/token over the method's, or with
  `metric: tau` the method's tau over the reference's (not timed). Two verdicts: the
  direction (is the interval above 1?) and the magnitude (does it contain the published ratio,
  or meet `published`..`published_high` when the paper gives a range?).
- `value`: a method's `speedup` over the baseline, or its `tau`. Speedup depends on the
  hardware: one-sided, supported when the interval meets `at_least` (default: published less
  `tolerance`); with `hardware: gpu` and a run not on a GPU (its `device`/`hardware` column) it
  reads "hardware-bound: GPU claim, measured here for reference". Tau does not: two-sided,
  supported when the interval lies within `tolerance` (default 10%) of the published value, not
  supported when it lies outside.
- `difference`: the method's score minus the reference's on the questions both ran: `quality`
  (task score: SQuAD exact match, Spider execution accuracy), `f1` (SQuAD), both in percentage
  points, or `loglik` (the target's mean log-probability per token). `at_least` reads "no lower
  than" (>=); `higher_than` "higher than" (strictly >); `margin` is two-sided equivalence on the
  90% interval (two one-sided tests): supported inside +-margin, not supported wholly outside.
  A score bound finer than one question at `min_questions` (0 < |bound| < 100 / n) is refused.
- `study`: a figure of the draft-design study (report/draft_design), never a maximum picked
  after the fact. `throughput_ratio`: a member's mean tokens/s over the pair's existing draft,
  judged as a ratio, with `member:` a draft named in advance (its 95% interval) or `all` (the
  largest ratio over every member, judged by the simultaneous Bonferroni interval
  [max low_i, max high_i]); `lookahead: tuned` (each draft at its best gamma, chosen on tuning
  questions and reported on the others, the default) or `fixed`. `tar_accuracy_r` (TAR against
  the drafts' own task accuracy, as the paper plots it) or `tar_perplexity_r`, with `at_most`
  (|r| bound) and `min_drafts`, the drafts a Fisher-z interval needs to be able to lie within
  the bound at r = 0 (`decidable_n`; a file may state more, never fewer): with fewer drafts
  the status is "undecided: needs N drafts, has k"; when the drafts' accuracy spreads less than
  MIN_X_SPREAD or takes fewer than MIN_X_DISTINCT values, "inconclusive (at floor: ...)".
- `control`: the A/A control, a run over an identical run (`{name: vanilla-aa}` over
  `{name: vanilla}`), measured per timing group g (the runs of one result file, timed together
  question by question; without a `timing_group` column, one per dataset, temperature and seed)
  as d_g = log(aa / reference) in each speed estimator, by a paired BCa bootstrap over
  questions (percentile where BCa is degenerate). It passes when the 90% interval of d_g lies
  inside +-log(1 + delta), fails when it lies wholly outside, and is undetermined otherwise.
  A group too large for one GPU is split into parts (`...-part1`, `...-part2`: one job and
  one result file each, every part repeating the baseline and the control): each part is a
  timing group of its own, with its own control.

Every comparison of two runs pairs a question's measurement of one with the other's in the
same timing group (aggregate.align_reference: the baseline of a split group is measured in
every part, a method in one); two runs that share no group are paired by question on their
means over their groups. A run measured in several groups has each question's measurements
averaged, so that n and the bootstrap over questions count questions, never parts
(aggregate.pool_questions).

Timed claims (speed, throughput ratios) are gated by the control of their timing group only:
when it failed, is undetermined or has fewer than `min_questions`, when the group has no
control, or when the claim's runs were not timed in one group, the claim is "inconclusive
(...)". Otherwise its interval is widened by b_g = max(|low|, |high|) of d_g in the claim's
estimator, [low e^-b_g, high e^b_g], before direction, magnitude or bound are judged. The
controls pooled over groups by random effects (DerSimonian-Laird, `pooled_aa`) give the
table's drift line.

No verdict (only "inconclusive (...)") below `min_questions` paired questions, on a zero-width
interval, or with a score at the floor (both sides 0, or fewer than 3 questions scored
differently). A claim whose run has other parameters than the paper's goes through every check
and says so in its status ("; ran with other parameters (...)"): a ratio gets its direction
only (the published magnitude belongs to the paper's setting), other kinds are "measured for
reference".

This module checks a list of claims (`check_claims`); the work is split by job: reading and
validating claims files (claims/loading), matching a claim's sides to runs and timing groups
(claims/runs), measuring them and pooling controls (claims/estimators; claims/study for the
`study` kind), judging the measurement (claims/verdicts) and writing the table (claims/markdown).
Their public names are importable from here.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd

from specrepro.report.claims.estimators import (
    MIN_DIFFERING,
    N_RESAMPLES,
    SPEED_ESTIMATORS,
    empty_result,
    measure,
    measure_control,
    paired_interval,
    pooled,
    pooled_aa,
)
from specrepro.report.claims.loading import (
    CORRELATIONS,
    DELTA,
    ESTIMATORS,
    HARDWARE,
    HARDWARE_INDEPENDENT,
    KINDS,
    LOOKAHEADS,
    METRICS,
    MIN_QUESTIONS,
    MIN_X_DISTINCT,
    MIN_X_SPREAD,
    QUALITY_COLUMNS,
    SCORE_COLUMNS,
    TIMED,
    Z95,
    Claim,
    ClaimError,
    Setting,
    decidable_n,
    load_claims,
    query,
)
from specrepro.report.claims.markdown import FOOTER, claims_markdown, drift_line
from specrepro.report.claims.runs import (
    Candidate,
    claim_rows,
    resolve,
    resolve_sides,
    run_groups,
    timing_groups,
)
from specrepro.report.claims.study import measure_study
from specrepro.report.claims.verdicts import HARDWARE_BOUND, Gate, control_status, verdicts

__all__ = [
    "CORRELATIONS",
    "DELTA",
    "ESTIMATORS",
    "FOOTER",
    "HARDWARE",
    "HARDWARE_BOUND",
    "HARDWARE_INDEPENDENT",
    "KINDS",
    "LOOKAHEADS",
    "METRICS",
    "MIN_DIFFERING",
    "MIN_QUESTIONS",
    "MIN_X_DISTINCT",
    "MIN_X_SPREAD",
    "N_RESAMPLES",
    "QUALITY_COLUMNS",
    "SCORE_COLUMNS",
    "SPEED_ESTIMATORS",
    "TIMED",
    "Z95",
    "Claim",
    "ClaimError",
    "Gate",
    "Setting",
    "check_claims",
    "claims_markdown",
    "control_status",
    "decidable_n",
    "drift_line",
    "load_claims",
    "measure",
    "measure_control",
    "measure_study",
    "paired_interval",
    "pooled",
    "pooled_aa",
    "query",
    "resolve",
    "verdicts",
]

# Per timing group, per speed estimator: its A/A control's status and margin b (log scale).
Controls = dict[str, dict[str, tuple[str, float]]]


def check_claims(
    tidy: pd.DataFrame,
    claims: list[Claim],
    baseline: str = "vanilla",
    study: dict[str, list[dict]] | None = None,
) -> pd.DataFrame:
    """A row per claim (a control: per timing group), in the claims' order: its verdict, the
    published figure and bound, the runs compared, every candidate run, the measurement and,
    for speed, its group's A/A margin and the widened interval (`study`: {base pair:
    draft-design results})."""
    rows, controls = [], {}
    # Controls first: a timing group's control gates every timed claim of that group.
    for claim in claims:
        if claim.kind == "control":
            rows += _control_rows(tidy, claim, controls)
    for claim in claims:
        if claim.kind != "control":
            rows.append(_claim_row(tidy, claim, baseline, study, controls))
    order = {claim.id: i for i, claim in enumerate(claims)}
    return pd.DataFrame(rows).sort_values("claim", key=lambda s: s.map(order), kind="stable")


def _row(claim: Claim, verdict: dict, runs: str, result: dict) -> dict:
    published = claim.published
    return {
        "paper": claim.paper,
        "claim": claim.id,
        "kind": claim.kind,
        "text": claim.text,
        **verdict,
        "published": published,
        "published_high": claim.published_high,
        "threshold": claim.threshold(),
        "margin": claim.margin,
        "delta": claim.delta if claim.kind == "control" else None,
        "level": claim.level,
        "runs": runs,
        **result,
        "measured_over_published": (
            result["measured"] / published if result["measured"] is not None and published else None
        ),
    }


def _control_rows(tidy: pd.DataFrame, claim: Claim, controls: Controls) -> list[dict]:
    """A row per timing group of an A/A control, each group's status and margin per estimator
    recorded in `controls` (the worst where two controls share a group)."""
    resolved, _, _ = resolve_sides(tidy, claim)
    groups = measure_control(tidy, resolved) if resolved is not None else {}
    if not groups:
        return [_row(claim, verdicts(claim, empty_result()), "-", empty_result())]
    assert resolved is not None and resolved.reference is not None
    runs = f"{resolved.method.label} / {resolved.reference.label}"
    out = []
    for group, entry in groups.items():
        states = controls.setdefault(group, {})
        for estimator in ESTIMATORS:
            result = _control_result(entry, estimator, group)
            status = verdicts(claim, result)["status"]
            previous = states.get(estimator, ("passed", 0.0))
            worst = previous[0] if previous[0] != "passed" else status
            states[estimator] = (worst, max(previous[1], result["aa_margin"]))
        result = _control_result(entry, claim.estimator, group)
        out.append(_row(claim, verdicts(claim, result), runs, result))
    return out


def _control_result(entry: dict, estimator: str, group: str) -> dict:
    """One group's control in one estimator as a claim measurement (ratio scale)."""
    d = entry[estimator]
    return {
        "measured": math.exp(d["log"]), "low": math.exp(d["low"]), "high": math.exp(d["high"]),
        "pairs": entry["pairs"], "questions": entry["n"], "reason": None, "floor": False,
        "timing_groups": group, "aa_margin": max(abs(d["low"]), abs(d["high"])),
        "log_ratio": d["log"], "log_se": d["se"],
    }  # fmt: skip


def _claim_row(
    tidy: pd.DataFrame,
    claim: Claim,
    baseline: str,
    study: dict[str, list[dict]] | None,
    controls: Controls,
) -> dict:
    runs, found, groups = "-", [], ([], [])
    if claim.kind == "study":
        result = measure_study(claim, study)
        resolved = None
        # The study's drafts run in their base pair's timing group, beside its A/A control; in
        # a split study, the ratio names the parts it was timed in (results without: every
        # group of the base pair).
        used = result.pop("groups", None)
        if used:
            groups = (used, used)
        elif result["pairs"] and len(tidy):
            rows = claim_rows(tidy, claim)
            base = sorted(set(timing_groups(rows[rows["pair"].isin(result["pairs"])])))
            groups = (base, base)
    else:
        resolved, notes, found = resolve_sides(tidy, claim)
        result = empty_result() if resolved is None else measure(tidy, resolved, baseline)
        result["other_parameters"] = "; ".join(notes) if notes else None
    if resolved is not None:
        sides = [resolved.method, resolved.reference]
        runs = " / ".join(s.label for s in sides if s is not None)
        reference = resolved.reference.label if resolved.reference else baseline
        groups = (
            run_groups(tidy, resolved, resolved.method.label),
            run_groups(tidy, resolved, reference),
        )
        result["hardware_bound"] = claim.hardware_bound and not _on_gpu(tidy, resolved)
    result["timing_groups"] = ", ".join(sorted(set(groups[0]) & set(groups[1]))) or None
    gate = _gate(claim, *groups, controls) if claim.metric in TIMED else Gate()
    if claim.metric in TIMED and result["measured"] is not None and not gate.withheld:
        result["aa_margin"] = gate.margin
        result["low_widened"], result["high_widened"] = (
            result["low"] * math.exp(-gate.margin),
            result["high"] * math.exp(gate.margin),
        )
    result["candidates"] = _candidates(tidy, claim, resolved, result, found, baseline)
    return _row(claim, verdicts(claim, result, gate), runs, result)


def _gate(claim: Claim, mine: list[str], theirs: list[str], controls: Controls) -> Gate:
    """What the A/A controls of a timed claim's timing groups allow: the groups where one side
    ran, each of which must hold the other side too (a baseline runs in every group)."""
    shared = sorted(set(mine) & set(theirs))
    if shared not in (mine, theirs):
        return Gate("inconclusive (its runs were not timed in one group)")
    margins = []
    for group in shared:
        state = controls.get(group, {}).get(claim.estimator)
        if state is None:
            return Gate("inconclusive (no A/A control in this group)")
        status, margin = state
        if status != "passed":
            why = status.removeprefix("inconclusive (").removesuffix(")")
            return Gate(f"inconclusive (A/A control {why})")
        margins.append(margin)
    if not margins:
        return Gate("inconclusive (no A/A control in this group)")
    # A claim over several groups (pairs) is widened by the largest bias any of them admits.
    return Gate(margin=max(margins))


def _on_gpu(tidy: pd.DataFrame, claim: Claim) -> bool:
    """Whether every row of the claim's method ran on a GPU (the device or hardware column)."""
    rows = claim_rows(tidy, claim)
    rows = rows[rows["method"] == claim.method.label]
    if "device" in rows and rows["device"].notna().all():
        return bool(len(rows)) and rows["device"].astype(str).str.startswith("cuda").all()
    if "hardware" in rows and rows["hardware"].notna().all():
        return bool(len(rows)) and rows["hardware"].astype(str).str.endswith("(GPU)").all()
    return False


def _candidates(
    tidy: pd.DataFrame,
    claim: Claim,
    resolved: Claim | None,
    result: dict,
    found: list[Candidate],
    baseline: str,
) -> str:
    """Every run that could stand for a side, measured with the other side at its chosen run,
    as JSON: [{side, run, differs, measured, low, high, n}]."""
    out = []
    for candidate in found:
        assert resolved is not None
        chosen = getattr(resolved, candidate.side).label == candidate.run
        if chosen:
            measured = result
        else:
            swapped = replace(resolved, **{candidate.side: Setting(name=candidate.run)})
            measured = measure(tidy, swapped, baseline)
        out.append(
            {
                "side": candidate.side, "run": candidate.run, "chosen": chosen,
                "differs": {k: list(v) for k, v in candidate.differs.items()},
                "measured": measured["measured"], "low": measured["low"],
                "high": measured["high"], "n": measured["questions"],
            }
        )  # fmt: skip
    return json.dumps(out)
