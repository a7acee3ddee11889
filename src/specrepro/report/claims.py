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

This module checks a list of claims (`check_claims`); the work is split by job: reading and
validating claims files (claim_loading), matching a claim's sides to runs (claim_runs),
measuring them (claim_estimators; claim_study for the `study` kind), judging the measurement
(claim_verdicts) and writing the table (claim_markdown). Their public names are importable
from here.
"""

from __future__ import annotations

import pandas as pd

from specrepro.report.claim_estimators import (
    MIN_DIFFERING,
    N_RESAMPLES,
    SPEED_ESTIMATORS,
    empty_result,
    measure,
)
from specrepro.report.claim_loading import (
    CONTROL_TOLERANCE,
    CORRELATIONS,
    ESTIMATORS,
    HARDWARE_INDEPENDENT,
    KINDS,
    LOOKAHEADS,
    METRICS,
    MIN_QUESTIONS,
    QUALITY_COLUMNS,
    TIMED,
    Z95,
    Claim,
    ClaimError,
    Setting,
    decidable_n,
    load_claims,
    query,
)
from specrepro.report.claim_markdown import FOOTER, claims_markdown
from specrepro.report.claim_runs import resolve, resolve_sides
from specrepro.report.claim_study import measure_study
from specrepro.report.claim_verdicts import verdicts

__all__ = [
    "CONTROL_TOLERANCE",
    "CORRELATIONS",
    "ESTIMATORS",
    "FOOTER",
    "HARDWARE_INDEPENDENT",
    "KINDS",
    "LOOKAHEADS",
    "METRICS",
    "MIN_DIFFERING",
    "MIN_QUESTIONS",
    "N_RESAMPLES",
    "QUALITY_COLUMNS",
    "SPEED_ESTIMATORS",
    "TIMED",
    "Z95",
    "Claim",
    "ClaimError",
    "Setting",
    "check_claims",
    "claims_markdown",
    "decidable_n",
    "load_claims",
    "measure",
    "measure_study",
    "query",
    "resolve",
    "verdicts",
]


def check_claims(
    tidy: pd.DataFrame,
    claims: list[Claim],
    baseline: str = "vanilla",
    study: dict[str, list[dict]] | None = None,
) -> pd.DataFrame:
    """A row per claim, in the claims' order: its verdict, the published figure and bound, the
    runs compared and the measurement (`study`: {base pair: draft-design results})."""
    rows = []
    # Controls first: a failed A/A control withholds every speed verdict of the table.
    ordered = sorted(claims, key=lambda c: c.kind != "control")
    noisy = False
    for claim in ordered:
        runs, notes = "-", []
        if claim.kind == "study":
            result = measure_study(claim, study)
        else:
            resolved, notes = resolve_sides(tidy, claim)
            if resolved is None:
                result = empty_result()
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
