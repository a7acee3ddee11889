"""A measured claim's verdict: supported, not supported or inconclusive, by the rules of its
kind (one- or two-sided bound, equivalence, direction and magnitude of a ratio, the A/A
control's equivalence test), or why no verdict may be given (too few questions, the floor,
its timing group's A/A control, a GPU claim measured elsewhere)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from specrepro.report.claims.loading import CORRELATIONS, TIMED, Claim

HARDWARE_BOUND = "hardware-bound: GPU claim, measured here for reference"


@dataclass(frozen=True)
class Gate:
    """What the A/A controls of a timed claim's timing groups allow: why no verdict may be
    given (`withheld`), or the largest bias they admit (`margin`, log scale) to widen by."""

    withheld: str | None = None
    margin: float = 0.0


def widened(low: float, high: float, margin: float) -> tuple[float, float]:
    """A ratio's interval widened by the A/A margin: [low e^-b, high e^b]."""
    return low * math.exp(-margin), high * math.exp(margin)


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


def _withheld(claim: Claim, result: dict, gate: Gate) -> str | None:
    """Why no verdict may be given, if one is withheld."""
    n = result["questions"]
    if n < claim.min_questions and claim.metric not in CORRELATIONS:
        return f"inconclusive (n = {n} questions < {claim.min_questions})"
    if result.get("floor"):
        return "inconclusive (at floor)"
    if claim.kind == "control":
        return None  # an equivalence test: a zero-width interval decides it like any other
    if not result["high"] > result["low"]:
        return "inconclusive (zero-width interval)"
    if claim.metric in TIMED:
        return gate.withheld
    return None


def control_status(claim: Claim, low: float, high: float) -> str:
    """TOST on aa / reference: its interval (the claim's 90%) inside +-log(1 + delta) passes,
    wholly outside fails, anything else is undetermined."""
    bound = math.log1p(claim.delta)
    verdict = _within(math.log(low), math.log(high), -bound, bound)
    return {"supported": "passed", "not supported": "failed"}.get(verdict, "undetermined")


def verdicts(claim: Claim, result: dict, gate: Gate | None = None) -> dict[str, str]:
    """{status, direction, magnitude} of a measured claim (direction and magnitude for ratios,
    '-' elsewhere); a run with other parameters than the paper's says so in its status."""
    none = {"direction": "-", "magnitude": "-"}
    if result.get("floor_reason"):
        # A correlation over drafts whose accuracy barely varies: no number of drafts decides it.
        return {"status": f"inconclusive (at floor: {result['floor_reason']})", **none}
    if result["measured"] is None:
        return {"status": "not measured" if result["reason"] else "not run", **none}
    if result.get("undecided"):
        return {"status": result["undecided"], **none}
    other = result.get("other_parameters")
    suffix = f"; ran with other parameters ({other})" if other else ""
    if result.get("hardware_bound"):
        return {"status": HARDWARE_BOUND + suffix, **none}
    withheld = _withheld(claim, result, gate or Gate())
    if withheld:
        return {"status": withheld + suffix, **none}
    verdict = _decide(claim, result, gate or Gate(), bool(other))
    return {**verdict, "status": verdict["status"] + suffix}


def _decide(claim: Claim, result: dict, gate: Gate, other: bool) -> dict[str, str]:
    none = {"direction": "-", "magnitude": "-"}
    low, high = result["low"], result["high"]
    if claim.kind == "control":
        return {"status": control_status(claim, low, high), **none}
    if claim.metric in TIMED:
        low, high = widened(low, high, gate.margin)
    if claim.kind == "ratio" or claim.metric == "throughput_ratio":
        direction = _one_sided(low, high, 1.0, strict=True)
        if other:
            # The published magnitude belongs to the paper's setting: only the direction is
            # tested on another one.
            return {"status": f"direction {direction}", "direction": direction, "magnitude": "-"}
        magnitude = _magnitude(claim, low, high)
        status = f"direction {direction}; magnitude {magnitude}"
        return {"status": status, "direction": direction, "magnitude": magnitude}
    if other:
        return {"status": "measured for reference", **none}
    if claim.at_most is not None:
        return {"status": _within(low, high, -claim.at_most, claim.at_most), **none}
    if claim.margin is not None:
        return {"status": _within(low, high, -claim.margin, claim.margin), **none}
    band = claim.band()
    if band is not None:
        return {"status": _within(low, high, *band), **none}
    threshold = claim.threshold()
    assert threshold is not None
    strict = claim.higher_than is not None
    return {"status": _one_sided(low, high, threshold, strict), **none}
