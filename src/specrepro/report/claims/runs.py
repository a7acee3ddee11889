"""Which runs of the tidy table a claim's sides mean: a config entry by name, or the run of an
algorithm closest to the paper's setting (fewest differing parameters, then most questions);
every run that could stand for a side is kept as a candidate. Also the timing groups a run's
rows were timed in (one result file each: its runs were interleaved question by question; a
split group's parts are groups of their own; aggregate.timing_groups reads them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from specrepro.report.claims.loading import Claim, Setting
from specrepro.report.pairing import timing_groups


@dataclass(frozen=True)
class Candidate:
    """A run that could stand for one side of a claim, and how its parameters differ from the
    side's setting ({key: (run's value, setting's value)})."""

    side: str
    run: str
    differs: dict
    questions: int

    @property
    def note(self) -> str | None:
        if not self.differs:
            return None
        parts = ", ".join(f"{k} {have} (paper {want})" for k, (have, want) in self.differs.items())
        return f"{self.run}: {parts}"


def claim_rows(tidy: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The tidy rows on the claim's dataset, temperature and pair."""
    rows = tidy[
        (tidy["dataset"] == claim.dataset)
        & np.isclose(tidy["temperature"].astype(float), claim.temperature)
    ]
    return rows if claim.pair == "all" else rows[rows["pair"] == claim.pair]


def run_groups(tidy: pd.DataFrame, claim: Claim, method: str) -> list[str]:
    """The timing groups the run `method` has rows in (claim's dataset, temperature, pair)."""
    rows = claim_rows(tidy, claim)
    rows = rows[rows["method"] == method]
    return sorted(set(timing_groups(rows))) if len(rows) else []


def _runs(tidy: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The runs (method, algorithm, params) on the claim's dataset, temperature and pair, with
    how many questions each ran."""
    rows = claim_rows(tidy, claim)
    params = rows["params"] if "params" in rows else pd.Series("{}", index=rows.index)
    rows = rows.assign(params=params.fillna("{}"))
    return (
        rows.groupby(["method", "algorithm", "params"])["question_id"]
        .nunique()
        .rename("questions")
        .reset_index()
    )


def candidates(runs: pd.DataFrame, setting: Setting, side: str = "method") -> list[Candidate]:
    """Every run that could stand for `setting`, best first: fewest differing parameters, then
    most questions, then the name (only so that ties resolve the same way every time)."""
    if setting.name is not None:
        found = runs[runs["method"] == setting.name]
    else:
        found = runs[runs["algorithm"] == setting.algorithm]
    out = [
        Candidate(side, str(r.method), setting.differing(json.loads(r.params)), int(r.questions))
        for r in found.itertuples()
    ]
    return sorted(out, key=lambda c: (len(c.differs), -c.questions, c.run))


def resolve(runs: pd.DataFrame, setting: Setting) -> tuple[str | None, str | None]:
    """(the run a setting means, what its parameters differ in from the setting's); (None,
    None) when no run of it exists."""
    found = candidates(runs, setting)
    return (found[0].run, found[0].note) if found else (None, None)


def resolve_sides(
    tidy: pd.DataFrame, claim: Claim
) -> tuple[Claim | None, list[str], list[Candidate]]:
    """The claim with both sides naming runs, what those runs differ in from the paper's
    setting, and every candidate run of each side; None when a side did not run."""
    runs = _runs(tidy, claim)
    names, notes, found = [], [], []
    for side, setting in (("method", claim.method), ("reference", claim.reference)):
        if setting is None:
            names.append(None)
            continue
        options = candidates(runs, setting, side)
        if not options:
            return None, [], []
        found += options
        names.append(Setting(name=options[0].run))
        if options[0].note:
            notes.append(options[0].note)
    return replace(claim, method=names[0], reference=names[1]), notes, found
