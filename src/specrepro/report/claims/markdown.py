"""The claims table as Markdown: the pooled A/A drift line, a row per claim with its status, the
published figure, the measurement with its interval, and for speed its timing group's A/A
margin and the widened interval, and a footer stating the rules the statuses follow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specrepro.report.claims.estimators import pooled_aa


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _given(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _measured_cell(row: dict) -> str:
    reason = row.get("reason")
    if not _given(row["measured"]):
        return reason if isinstance(reason, str) and reason else "-"
    level = " 90%" if row.get("level") == 0.90 else ""
    return (
        f"{row['measured']:.2f} [{_fmt(row['low'])}, {_fmt(row['high'])}]{level} "
        f"(n={row['questions']})"
    )


def _margin_cell(row: dict) -> str:
    """The A/A margin b as a percentage, and for a speed claim the interval widened by it."""
    margin = row.get("aa_margin")
    if not _given(margin):
        return "-"
    cell = f"±{100 * (math.exp(margin) - 1):.1f}%"
    if _given(row.get("low_widened")):
        cell += f" → [{_fmt(row['low_widened'])}, {_fmt(row['high_widened'])}]"
    return cell


def _published_cell(row: dict) -> str:
    if row.get("kind") == "control":
        return f"1 (±{100 * row['delta']:.1f}%)"
    published = _fmt(row["published"])
    if _given(row.get("published_high")):
        published += f"-{_fmt(row['published_high'])}"
    if _given(row.get("threshold")):
        published += f" (bound {_fmt(row['threshold'])})"
    if _given(row.get("margin")):
        published += f" (within ±{_fmt(row['margin'])})"
    return published


def drift_line(table: pd.DataFrame) -> str:
    """The A/A controls pooled over timing groups (`pooled_aa`), as one line."""
    pool = pooled_aa(table)
    if pool is None:
        return "Pooled A/A: no control measured with a bootstrap interval."
    return (
        f"Pooled A/A (random effects, {pool['k']} groups): {pool['ratio']:.3f} "
        f"[{pool['low']:.3f}, {pool['high']:.3f}]; tau^2 = {pool['tau2']:.2e}"
    )


def claims_markdown(table: pd.DataFrame) -> str:
    """`check_claims`'s table as Markdown: the pooled A/A drift line, a row per claim, and the
    footer stating the rules."""
    lines = [
        drift_line(table),
        "",
        "| paper | claim | status | published | measured [95% CI] (n) | A/A margin → widened CI "
        "| measured / published | runs | pairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        pairs = ", ".join(row["pairs"]) if row["pairs"] else "-"
        runs = row["runs"]
        if row.get("kind") == "control" and _given(row.get("timing_groups")):
            runs += f" ({row['timing_groups']})"
        lines.append(
            f"| {row['paper']} | {row['text']} | **{row['status']}** | {_published_cell(row)} "
            f"| {_measured_cell(row)} | {_margin_cell(row)} "
            f"| {_fmt(row['measured_over_published'])} | {runs} | {pairs} |"
        )
    lines += ["", FOOTER]
    return "\n".join(lines) + "\n"


FOOTER = (
    "Status from the paired bootstrap interval over questions: 95%, or 90% (marked) for "
    "equivalence, i.e. two one-sided tests at 5% (n = paired questions; for a correlation, "
    "drafts). No verdict below the claims file's minimum n (default 8), on a zero-width "
    "interval, or with a score at the floor (both sides 0, or fewer than 3 questions scored "
    "differently; a correlation whose drafts' accuracy spreads less than 0.05 or takes fewer "
    "than 3 distinct values). A/A control, per timing group (the runs of one result file, timed "
    "together question by question): d = log(vanilla-aa / vanilla) in each speed estimator, "
    "paired BCa bootstrap (percentile where BCa is degenerate); it passes when its 90% interval "
    "lies inside ±log(1 + delta) (delta from the claims file, default 3%), fails when it lies "
    "wholly outside, and is undetermined otherwise. A control governs only the speed claims "
    "whose runs sit in its timing group: when it failed, is undetermined or has fewer "
    "questions than the minimum, or the group has no control, or a claim's runs were not timed "
    "in one group, that claim is inconclusive. Otherwise its interval is widened by the largest "
    "bias the control admits in the claim's estimator, b = max(|low|, |high|) of d: [low e^-b, "
    "high e^b] (shown as 'A/A margin → widened CI'), and direction and magnitude are judged on "
    "the widened interval. The drift line pools the groups' d by random effects "
    "(DerSimonian-Laird, 95%). Ratio claims get two verdicts: direction (the interval above 1, "
    "strictly) and magnitude (the interval contains the published ratio or meets its range); "
    "tau ratios are not timed (no control, no widening). Speed-value claims are one-sided "
    "(supported when the interval meets the bound, the published number less 10% unless the "
    "claim sets one); a GPU paper's speedup over autoregressive decoding (`hardware: gpu`) "
    "measured on any other device reads 'hardware-bound' and is shown for reference only. Tau "
    "values are two-sided: supported within the tolerance of the published value, not "
    "supported outside it. Score differences: 'higher than' is strict, 'no lower than' is >=, "
    "and no bound may be finer than one question at the minimum n (100 / n points); "
    "'within ±margin' is an equivalence test on the 90% interval. A claim's run is the run of "
    "its algorithm with the fewest parameters differing from the paper's setting, then the "
    "most questions, then the name; every candidate is listed in claims.csv. A run with other "
    "parameters says so in its status, goes through every check above and, for a ratio, gets "
    "a direction verdict only (the published magnitude belongs to the paper's setting); other "
    "kinds are measured for reference. 'not run': no run of the algorithm on that dataset, "
    "temperature and pair; 'not measured': it ran without recording the quantity. Speed "
    "estimators: EAGLE-2 and DDD claims use the mean over questions of tokens/s (EAGLE's and "
    "Spec-Bench's); DSBD claims use total tokens over total time (DSBD's evaluation). "
    "Draft-design claims: a draft's throughput over the pair's existing draft, for a draft "
    "named in advance (95% interval) or the largest over all drafts (simultaneous Bonferroni "
    "interval, never the best picked after the fact), at each draft's lookahead chosen on "
    "separate tuning questions; a correlation over n drafts is decided only from the number of "
    "drafts at which its interval can exclude the bound ('undecided: needs N drafts, has k' "
    "below it)."
)
