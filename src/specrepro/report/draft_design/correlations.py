"""Acceptance against draft quality across the study's drafts: Pearson's r of TAR (fixed gamma)
with each draft's own task accuracy and with its held-out perplexity, with a Fisher-z interval
(n = drafts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specrepro.report.draft_design.members import ACCURACY_METRIC

Z95 = 1.959963984540054


def pearson(x: list[float], y: list[float]) -> dict:
    """Pearson's r with its 95% interval from Fisher's z (needs 4 points or more)."""
    points = [
        (a, b)
        for a, b in zip(x, y, strict=True)
        if a is not None and b is not None and np.isfinite(a) and np.isfinite(b)
    ]
    n = len(points)
    out = {"r": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    if n < 3:
        return out
    a, b = np.array(points).T
    if np.std(a) == 0 or np.std(b) == 0:
        out["reason"] = "no spread: every draft has the same value"
        return out
    r = float(np.corrcoef(a, b)[0, 1])
    out["r"] = r
    if n > 3:
        z, se = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1 / math.sqrt(n - 3)
        out["low"], out["high"] = math.tanh(z - Z95 * se), math.tanh(z + Z95 * se)
    return out


def correlations(table: pd.DataFrame, method: str, temperature: float) -> dict:
    """Per dataset, one point per draft: its TAR (fixed gamma) against its own task accuracy
    on that dataset (the paper's Fig. 5) and against its held-out perplexity."""
    out = {}
    if table.empty:
        return out
    rows = table[(table["method"] == method) & np.isclose(table["temperature"], temperature)]
    for dataset, per_draft in rows.groupby("dataset"):
        tar = per_draft["tar"].astype(float).tolist()
        accuracy = per_draft["accuracy"].astype(float).tolist()
        out[dataset] = {
            "accuracy": pearson(accuracy, tar),
            # The x-values themselves: a claim checks whether they spread enough to correlate.
            "accuracy_values": [a for a in accuracy if np.isfinite(a)],
            "accuracy_metric": ACCURACY_METRIC.get(dataset),
            "perplexity": pearson(per_draft["perplexity"].astype(float).tolist(), tar),
        }
    return out
