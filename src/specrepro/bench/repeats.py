"""The `repeats` bench: how many timings per (run, question) the A/A controls need, read from a
finished run's tidy table (no decoding).

Each timing group's records hold every repeat's wall time (`wall_time_repeats`). For each
statistic over the first r repeats (the first timing alone; the fastest of r; their mean) it
recomputes every A/A control of the claims files, per timing group, in each file's estimator,
and prints the 90% interval of vanilla-aa / vanilla, its margin b_g and the verdict at delta:
the repeat count a config needs is the smallest at which the controls pass on a machine like
the one that ran it, and its cost is r times the timed decoding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from specrepro.controls import load_run_claims
from specrepro.report.claims import check_claims

STATISTICS = {
    "first": lambda times: times[0],
    "min": min,
    "mean": lambda times: float(np.mean(times)),
}


def with_statistic(tidy: pd.DataFrame, statistic: str, repeats: int) -> pd.DataFrame:
    """The table with each turn's wall time replaced by `statistic` over its first `repeats`
    timings (all of them where fewer were recorded)."""
    times = tidy["wall_time_repeats"].map(json.loads)
    return tidy.assign(wall_time_s=[STATISTICS[statistic](t[:repeats]) for t in times])


def run_repeats(args: argparse.Namespace) -> dict:
    tidy = pd.read_csv(args.tidy)
    if "wall_time_repeats" not in tidy:
        raise ValueError(f"{args.tidy} has no wall_time_repeats column: rerun rule tidy")
    recorded = int(tidy["wall_time_repeats"].map(lambda c: len(json.loads(c))).max())
    claims = load_run_claims([Path(p) for p in args.claims], tidy)
    controls = [c for c in claims if c.kind == "control"]
    report: dict = {"tidy": str(args.tidy), "recorded_repeats": recorded, "rows": []}
    for repeats in range(1, recorded + 1):
        for statistic in ("min", "mean") if repeats > 1 else ("first",):
            table = check_claims(with_statistic(tidy, statistic, repeats), controls)
            for row in table.to_dict("records"):
                report["rows"].append({
                    "repeats": repeats, "statistic": statistic, "group": row.get("timing_groups"),
                    "n": row["questions"], "ratio": row["measured"], "low": row["low"],
                    "high": row["high"], "margin": row.get("aa_margin"), "status": row["status"],
                })  # fmt: skip
    return report


def print_repeats(report: dict, args: argparse.Namespace) -> None:
    print(f"{report['tidy']}: {report['recorded_repeats']} timings recorded per (run, question)")
    for r in report["rows"]:
        if r["ratio"] is None or pd.isna(r["ratio"]):
            continue
        margin = "-" if r["margin"] is None or pd.isna(r["margin"]) else f"{100 * r['margin']:.1f}%"
        print(
            f"r={r['repeats']} {r['statistic']:5s} {str(r['group']):45s} n={r['n']:3d} "
            f"aa/vanilla {r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}] b={margin:6s} "
            f"{r['status']}"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("repeats")
    parser.add_argument("--tidy", default="results/default/tidy.csv")
    parser.add_argument("--claims", nargs="+", default=["config/claims/control.yaml"])
    parser.add_argument("--out", help="also write the numbers as JSON")
