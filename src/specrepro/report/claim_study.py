"""The `study` claim kind: a figure read from the draft-design study's results (a member's
throughput over the existing draft, or the acceptance correlations across drafts), never
measured again from the tidy table."""

from __future__ import annotations

import numpy as np

from specrepro.report.claim_estimators import empty_result
from specrepro.report.claim_loading import Claim


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
        return empty_result()
    pair, entry = entries[0]
    values = entry.get("datasets", {}).get(claim.dataset)
    if claim.metric == "throughput_ratio":
        if not values:
            return empty_result()
        if claim.member == "all":
            ratio = values["max"][claim.lookahead]
            note = f"largest of {ratio['comparisons']} drafts, Bonferroni" if ratio else None
        else:
            found = values["comparisons"].get(str(claim.member))
            ratio = found[claim.lookahead] if found else None
            note = None
        if not ratio or ratio.get("measured") is None:
            return empty_result()
        return {
            "measured": ratio["measured"], "low": ratio["low"], "high": ratio["high"],
            "pairs": [pair], "questions": ratio["questions"], "reason": None, "floor": False,
            "note": note,
        }  # fmt: skip
    key = "accuracy" if claim.metric == "tar_accuracy_r" else "perplexity"
    corr = ((entry.get("correlations") or {}).get(claim.dataset) or {}).get(key)
    if not corr:
        return empty_result()
    n = int(corr["n"])
    if n == 0:
        return empty_result(f"no draft's {key} measured on {claim.dataset}", pairs=[pair])
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
