"""The `study` claim kind: a figure read from the draft-design study's results (a member's
throughput over the existing draft, or the acceptance correlations across drafts), never
measured again from the tidy table."""

from __future__ import annotations

import numpy as np

from specrepro.report.claims.estimators import empty_result
from specrepro.report.claims.loading import MIN_X_DISTINCT, MIN_X_SPREAD, Claim


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
            "note": note, "groups": ratio.get("timing_groups") or None,
        }  # fmt: skip
    key = "accuracy" if claim.metric == "tar_accuracy_r" else "perplexity"
    per_dataset = (entry.get("correlations") or {}).get(claim.dataset) or {}
    corr = per_dataset.get(key)
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
    floor = _x_floor(per_dataset.get(f"{key}_values"))
    if floor:
        result.update(floor=True, floor_reason=floor)
    assert claim.min_drafts is not None
    if n < claim.min_drafts:
        result["undecided"] = f"undecided: needs {claim.min_drafts} drafts, has {n}"
    elif result["low"] is None:
        result["measured"] = None
        result["reason"] = corr.get("reason") or f"no interval from {n} drafts"
    return result


def _x_floor(values: list[float] | None) -> str | None:
    """Why the drafts' x-values (e.g. their accuracy) cannot carry a correlation: too little
    spread or too few distinct values; None when they can, or were not stored."""
    if not values:
        return None
    spread, distinct = max(values) - min(values), len(set(values))
    if spread < MIN_X_SPREAD or distinct < MIN_X_DISTINCT:
        return (
            f"drafts' x spread {spread:.3f} (min {MIN_X_SPREAD}), {distinct} distinct values "
            f"(min {MIN_X_DISTINCT})"
        )
    return None
