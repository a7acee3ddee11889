"""Which runs of the tidy table a claim's sides mean: a config entry by name, or the run of an
algorithm whose parameters match the paper's setting (else the closest, with how it differs)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from specrepro.report.claim_loading import Claim, Setting


def _runs(tidy: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The runs (method, algorithm, params) on the claim's dataset, temperature and pair, with
    how many questions each ran."""
    rows = tidy[
        (tidy["dataset"] == claim.dataset)
        & np.isclose(tidy["temperature"].astype(float), claim.temperature)
    ]
    if claim.pair != "all":
        rows = rows[rows["pair"] == claim.pair]
    params = rows["params"] if "params" in rows else pd.Series("{}", index=rows.index)
    rows = rows.assign(params=params.fillna("{}"))
    return (
        rows.groupby(["method", "algorithm", "params"])["question_id"]
        .nunique()
        .rename("questions")
        .reset_index()
    )


def resolve(runs: pd.DataFrame, setting: Setting) -> tuple[str | None, str | None]:
    """(the run a setting means, what its parameters differ in from the setting's), by the
    most questions then the name; (None, None) when no run of it exists."""
    if setting.name is not None:
        found = runs[runs["method"] == setting.name]
        return (setting.name, None) if len(found) else (None, None)
    found = runs[runs["algorithm"] == setting.algorithm]
    if found.empty:
        return None, None
    found = found.assign(
        differs=[setting.differing(json.loads(p)) for p in found["params"]],
        order=lambda f: [(-q, m) for q, m in zip(f["questions"], f["method"], strict=True)],
    )
    exact = found[[not d for d in found["differs"]]]
    if len(exact):
        return str(min(exact.itertuples(), key=lambda r: r.order).method), None
    best = min(found.itertuples(), key=lambda r: r.order)
    parts = ", ".join(f"{k} {have} (paper {want})" for k, (have, want) in best.differs.items())
    return str(best.method), f"{best.method}: {parts}"


def resolve_sides(tidy: pd.DataFrame, claim: Claim) -> tuple[Claim | None, list[str]]:
    """The claim with both sides naming runs, and what those runs differ in from the paper's
    setting; None when a side did not run."""
    runs = _runs(tidy, claim)
    names, notes = [], []
    for setting in (claim.method, claim.reference):
        if setting is None:
            names.append(None)
            continue
        name, note = resolve(runs, setting)
        if name is None:
            return None, []
        names.append(Setting(name=name))
        if note:
            notes.append(note)
    return replace(claim, method=names[0], reference=names[1]), notes
