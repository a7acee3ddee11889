"""The Dynamic Depth Decoding paper's table, one per pair: vanilla tokens/s; EAGLE, EAGLE-2 and
DDD speedup and tau at each temperature; the DDD / EAGLE-2 and EAGLE-2 / EAGLE speedup ratios,
all with 95% bootstrap intervals over questions (report/claims.py does the measuring)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from specrepro.report.aggregate import per_question
from specrepro.report.claims import Claim, measure

TREE_METHODS = ("eagle", "eagle2", "ddd", "ddd-async")
RATIOS = (("ddd", "eagle2"), ("eagle2", "eagle"), ("ddd-async", "ddd"))


def _claim(kind: str, method: str, pair: str, dataset: str, temperature: float, **extra) -> Claim:
    return Claim(
        paper="", id="", text="", kind=kind, method=method, dataset=dataset,
        temperature=temperature, pair=pair, at_least=0.0, **extra,
    )  # fmt: skip


def _cell(result: dict) -> str:
    if result["measured"] is None:
        return "-"
    return f"{result['measured']:.2f} [{result['low']:.2f}, {result['high']:.2f}]"


def ddd_table(
    tidy: pd.DataFrame, pair: str, dataset: str = "mtbench", baseline: str = "vanilla"
) -> str:
    """Markdown: one row per temperature."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    methods = [m for m in TREE_METHODS if m in set(rows["method"])]
    ratios = [(a, b) for a, b in RATIOS if a in methods and b in methods]
    header = ["T", f"{baseline} tok/s"]
    header += [f"{m} {what}" for m in methods for what in ("speedup", "tau")]
    header += [f"{a} / {b}" for a, b in ratios]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    questions = per_question(rows)
    for temperature in sorted(rows["temperature"].astype(float).unique()):
        base = questions[
            (questions["method"] == baseline) & np.isclose(questions["temperature"], temperature)
        ]
        cells = [f"{temperature:g}", f"{base['tokens_per_s'].mean():.1f}" if len(base) else "-"]
        for method in methods:
            speed = measure(rows, _claim("value", method, pair, dataset, temperature), baseline)
            tau = measure(
                rows, _claim("value", method, pair, dataset, temperature, metric="tau"), baseline
            )
            cells += [_cell(speed), "-" if tau["measured"] is None else f"{tau['measured']:.2f}"]
        for a, b in ratios:
            ratio = measure(rows, _claim("ratio", a, pair, dataset, temperature, reference=b))
            cells.append(_cell(ratio))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{pair}, {dataset}. Speedup: mean tokens/s over mean tokens/s of {baseline} (EAGLE's "
        "estimator) on the questions both ran, 95% bootstrap interval over questions; tau: new "
        "tokens per target forward; a / b: mean tokens/s of a over b. Depth is the number of "
        "draft levels.",
    ]
    return "\n".join(lines) + "\n"
