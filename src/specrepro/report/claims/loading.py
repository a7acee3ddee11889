"""Claims files (YAML) read into validated `Claim`s: the vocabulary of kinds, metrics and
bounds a claim may use, and every rule a file must keep (report/claims describes the format)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

MIN_QUESTIONS = 8
# The A/A control's equivalence bound: |log(aa / vanilla)| within log(1 + delta).
DELTA = 0.03
KINDS = ("ratio", "value", "difference", "study", "control")
METRICS = {
    "ratio": ("speedup", "energy", "tau"),
    "value": ("speedup", "tau"),
    "difference": ("quality", "f1", "loglik"),
    "study": ("throughput_ratio", "tar_accuracy_r", "tar_perplexity_r"),
    "control": ("speedup",),
}
# Quantities the hardware does not change: checked two-sided against the published value.
HARDWARE_INDEPENDENT = ("tau", "quality", "loglik")
# Measured from timings: gated by their timing group's A/A control and widened by its margin.
TIMED = ("speedup", "throughput_ratio")
QUALITY_COLUMNS = {"squad": "em", "spider": "exec_match"}
# Per-question scores in percentage points (0..1 in the tidy table), by metric and dataset.
SCORE_COLUMNS = {"quality": QUALITY_COLUMNS, "f1": {"squad": "f1"}}
# `hardware: gpu`: a speed value measured against the baseline on a GPU in the paper; on any
# other device it is reported for reference, never judged.
HARDWARE = ("any", "gpu")
# A correlation's x-variable (the drafts' accuracy) must spread at least this much (absolute,
# accuracy in 0..1) over at least this many distinct values, else the correlation is at floor.
MIN_X_SPREAD = 0.05
MIN_X_DISTINCT = 3
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
    margin: float | None = None  # difference: two-sided equivalence bound (TOST, 90%)
    tolerance: float = 0.1
    estimator: str = "mean_tps"
    min_questions: int = MIN_QUESTIONS
    delta: float = DELTA  # control: equivalence bound on aa / vanilla
    hardware: str = "any"

    def threshold(self) -> float | None:
        """The bound a one-sided claim is checked against (None for two-sided ones)."""
        for bound in (self.at_most, self.higher_than, self.at_least):
            if bound is not None:
                return bound
        if self.kind == "value" and self.published is not None and not self.two_sided:
            return self.published * (1 - self.tolerance)
        return None

    @property
    def level(self) -> float:
        """The interval's confidence: 90% for equivalence (two one-sided tests at 5%)."""
        return 0.90 if self.kind == "control" or self.margin is not None else 0.95

    @property
    def hardware_bound(self) -> bool:
        """A speed value against the baseline that the paper measured on a GPU."""
        return self.hardware == "gpu" and self.kind == "value" and self.metric == "speedup"

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
            "delta": float(data.get("delta", DELTA)),
            "hardware": data.get("hardware", "any"),
        }
        if defaults["estimator"] not in ESTIMATORS:
            raise ClaimError(f"{path}: estimator must be one of {ESTIMATORS}")
        if not 0 < defaults["delta"] < 1:
            raise ClaimError(f"{path}: delta must lie in (0, 1)")
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
    try:
        claim = Claim(paper=paper, **{**defaults, **entry})
    except TypeError as err:
        raise ClaimError(f"{where}: {err}") from err
    if claim.metric not in METRICS[kind]:
        raise ClaimError(f"{where}: a {kind} claim's metric must be one of {METRICS[kind]}")
    columns = SCORE_COLUMNS.get(claim.metric)
    if columns is not None and claim.dataset not in columns:
        raise ClaimError(f"{where}: no task score on {claim.dataset!r} (only {sorted(columns)})")
    if claim.hardware not in HARDWARE:
        raise ClaimError(f"{where}: hardware must be one of {HARDWARE}")
    if kind == "ratio" or claim.metric == "throughput_ratio":
        if claim.published is None:
            raise ClaimError(f"{where}: a ratio claim needs `published` (its magnitude)")
    elif kind == "difference":
        _check_difference(claim, where)
    elif kind == "value" and claim.published is None:
        raise ClaimError(f"{where}: a value claim needs `published`")
    if claim.margin is not None and kind != "difference":
        raise ClaimError(f"{where}: `margin` belongs to difference claims")
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


def _check_difference(claim: Claim, where: str) -> None:
    bounds = [b for b in (claim.at_least, claim.higher_than, claim.margin) if b is not None]
    if len(bounds) != 1:
        raise ClaimError(
            f"{where}: give one of `at_least` (no lower), `higher_than` or `margin` (equivalence)"
        )
    if claim.margin is not None and not claim.margin > 0:
        raise ClaimError(f"{where}: `margin` must be positive")
    if claim.metric not in SCORE_COLUMNS:
        return
    # A score moves in steps of one question (100 / n points): a bound finer than that step at
    # the minimum n separates outcomes that differ by less than one question.
    step = 100 / claim.min_questions
    if 0 < abs(bounds[0]) < step:
        raise ClaimError(
            f"{where}: a bound of {abs(bounds[0])} points is finer than one question at "
            f"min_questions {claim.min_questions} ({step:.2f} points); raise the bound or "
            "min_questions"
        )
