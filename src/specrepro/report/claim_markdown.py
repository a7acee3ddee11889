"""The claims table as Markdown: a row per claim with its status, the published figure and the
measurement with its interval, and a footer stating the rules the statuses follow."""

from __future__ import annotations

import numpy as np
import pandas as pd


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
    """`check_claims`'s table as Markdown: a warning when the A/A control failed, a row per
    claim, and the footer stating the rules."""
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
