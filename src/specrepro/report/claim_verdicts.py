"""A measured claim's verdict: supported, not supported or inconclusive, by the rules of its
kind (one- or two-sided bound, direction and magnitude of a ratio, the A/A control), or why no
verdict may be given."""

from __future__ import annotations

from specrepro.report.claim_loading import CORRELATIONS, TIMED, Claim


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
