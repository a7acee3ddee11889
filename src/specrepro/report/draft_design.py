"""The draft-model design study (SPEC 4.8, "Decoding Speculative Decoding"): per draft of an
equal-size family its shape, size, measured decode latency and language-modelling quality, and
per dataset its acceptance and throughput with the target; the correlation of acceptance with
perplexity; and the throughput of the fastest draft over the deepest.

TAR (token acceptance rate) = accepted draft tokens / drafted tokens = (tau - 1) / gamma, with
tau = committed tokens per target forward (bonus token included). The last round of a turn can
draft fewer than gamma tokens, which biases TAR down by at most one round per turn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from specrepro.report.aggregate import summarise
from specrepro.report.claims import measure, query

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Member:
    """One draft of the study: the pair that runs it, and its quality record (the
    `draft-quality` JSON: shape, counted size, held-out perplexity and agreement)."""

    pair: str
    draft: str
    quality: dict

    @property
    def shape(self) -> dict:
        return self.quality["shape"]

    @property
    def depth(self) -> int:
        return int(self.shape["num_layers"])


def study_tidy(
    tidy: pd.DataFrame, base_pair: str, members: list[Member], baseline: str = "vanilla"
) -> pd.DataFrame:
    """The members' runs on the questions every member ran (the pair's own draft may have run
    a larger subset), with the base pair's baseline rows copied under each member's pair: the
    baseline never loads a draft, so one target-alone run serves every member."""
    pairs = [m.pair for m in members]
    runs = tidy[tidy["pair"].isin(pairs) & (tidy["method"] != baseline)]
    keys = ["method", "dataset", "temperature"]
    kept = []
    for _, group in runs.groupby(keys):
        per_pair = [set(g["question_id"]) for _, g in group.groupby("pair")]
        common = set.intersection(*per_pair) if len(per_pair) == len(pairs) else set()
        kept.append(group[group["question_id"].isin(common)])
    base = tidy[(tidy["pair"] == base_pair) & (tidy["method"] == baseline)]
    parts = [*kept, *(base.assign(pair=pair) for pair in pairs)]
    return pd.concat(parts, ignore_index=True) if parts else tidy.iloc[:0]


def _gamma(tidy: pd.DataFrame, pair: str, method: str) -> float:
    rows = tidy[(tidy["pair"] == pair) & (tidy["method"] == method)]
    if rows.empty or "params" not in rows:
        return float("nan")
    gamma = json.loads(rows["params"].iloc[0]).get("gamma")
    return float(gamma) if gamma else float("nan")


def draft_table(
    tidy: pd.DataFrame,
    base_pair: str,
    members: list[Member],
    latency: list[dict],
    baseline: str = "vanilla",
) -> pd.DataFrame:
    """One row per (draft, method, dataset, temperature) of the study: shape, counted size,
    latency per token (the profile of a random-weight model of the same shape), held-out
    perplexity and agreement with the target, tokens/s, speedup over the target alone with its
    interval, tau and TAR."""
    joined = study_tidy(tidy, base_pair, members, baseline)
    summary = summarise(joined, baseline=baseline)
    summary = summary[summary["method"] != baseline]
    latency_by_draft = {r["name"]: r["ms_per_token"] for r in latency}
    rows = []
    for member in sorted(members, key=lambda m: m.depth):
        quality = member.quality
        mine = summary[summary["pair"] == member.pair]
        for record in mine.to_dict("records"):
            gamma = _gamma(joined, member.pair, record["method"])
            rows.append(
                {
                    "draft": member.draft,
                    "pair": member.pair,
                    "depth": member.depth,
                    "heads": member.shape.get("num_attention_heads"),
                    "ffn": member.shape.get("intermediate_size"),
                    "counted_parameters": quality["counted_parameters"],
                    "latency_ms": latency_by_draft.get(member.draft, float("nan")),
                    "perplexity": quality["holdout_perplexity"],
                    "agreement": quality["holdout_agreement"],
                    "training_steps": quality.get("training_steps"),
                    "method": record["method"],
                    "dataset": record["dataset"],
                    "temperature": record["temperature"],
                    "n_questions": record["n_questions"],
                    "tokens_per_s": record["tokens_per_s"],
                    "speedup": record["speedup"],
                    "speedup_low": record["speedup_low"],
                    "speedup_high": record["speedup_high"],
                    "tau": record["tau"],
                    "tar": (record["tau"] - 1) / gamma,
                }
            )
    return pd.DataFrame(rows)


def pearson(x: list[float], y: list[float]) -> dict:
    """Pearson's r with its 95% interval from Fisher's z (needs 4 points or more)."""
    points = [(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(a) and np.isfinite(b)]
    n = len(points)
    out = {"r": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    if n < 3:
        return out
    a, b = np.array(points).T
    if np.std(a) == 0 or np.std(b) == 0:
        return out
    r = float(np.corrcoef(a, b)[0, 1])
    out["r"] = r
    if n > 3:
        z, se = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1 / math.sqrt(n - 3)
        out["low"], out["high"] = math.tanh(z - Z95 * se), math.tanh(z + Z95 * se)
    return out


def tar_perplexity_correlation(table: pd.DataFrame, method: str, temperature: float) -> dict:
    """r between each draft's held-out perplexity and its TAR (mean over datasets): one point
    per draft, so the interval is honest about how few drafts there are."""
    rows = table[(table["method"] == method) & np.isclose(table["temperature"], temperature)]
    per_draft = rows.groupby("draft").agg(perplexity=("perplexity", "first"), tar=("tar", "mean"))
    return {
        **pearson(per_draft["perplexity"].tolist(), per_draft["tar"].tolist()),
        "method": method,
        "temperature": temperature,
    }


def throughput_ratio(
    tidy: pd.DataFrame,
    table: pd.DataFrame,
    members: list[Member],
    method: str,
    dataset: str,
    temperature: float,
) -> dict:
    """Mean tokens/s of the fastest draft over the deepest one's on the same questions, with the
    claims' bootstrap interval (the paper's best wide draft against the deep draft it replaces).
    The fastest is picked on the same measurements, which favours it slightly."""
    rows = table[
        (table["method"] == method)
        & (table["dataset"] == dataset)
        & np.isclose(table["temperature"], temperature)
    ]
    if len(rows) < 2:
        return {"measured": None, "low": None, "high": None, "questions": 0}
    by_pair = {m.pair: m for m in members}
    fast = by_pair[rows.loc[rows["tokens_per_s"].idxmax(), "pair"]]
    deep = by_pair[rows.loc[rows["depth"].idxmax(), "pair"]]
    sides = []
    for member, label in ((fast, "fast"), (deep, "deep")):
        mine = tidy[(tidy["pair"] == member.pair) & (tidy["method"] == method)]
        sides.append(mine[mine["dataset"] == dataset].assign(pair="study", method=label))
    claim = query("ratio", "fast", "study", dataset, temperature, reference="deep")
    return {**measure(pd.concat(sides), claim), "fast": fast.draft, "deep": deep.draft}


def study_results(tidy: pd.DataFrame, table: pd.DataFrame, members: list[Member]) -> list[dict]:
    """What the study's claims read, per (method, temperature) that ran: the throughput ratio
    per dataset and the correlation."""
    out = []
    if table.empty:
        return out
    for (method, temperature), rows in table.groupby(["method", "temperature"]):
        out.append(
            {
                "method": method,
                "temperature": float(temperature),
                "throughput_ratio": {
                    d: throughput_ratio(tidy, table, members, method, d, temperature)
                    for d in sorted(rows["dataset"].unique())
                },
                "tar_perplexity_r": tar_perplexity_correlation(table, method, temperature),
            }
        )
    return out


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def draft_markdown(table: pd.DataFrame, results: list[dict], title: str) -> str:
    lines = [f"### {title}", ""]
    if table.empty:
        return "\n".join([*lines, "No study runs found.", ""])
    lines += [
        "| draft | depth | heads | FFN | counted params (M) | latency ms/token | held-out ppl "
        "| agreement | method | dataset | T | n | tok/s (totals) | speedup, mean tok/s [95% CI] "
        "| tau | TAR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in table.sort_values(["method", "temperature", "dataset", "depth"]).to_dict("records"):
        params = r["counted_parameters"]
        speedup = (
            f"{r['speedup']:.2f} [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]"
            if np.isfinite(r["speedup"])
            else "-"
        )
        lines.append(
            f"| {r['draft']} | {r['depth']} | {_fmt(r['heads'])} | {_fmt(r['ffn'])} "
            f"| {_fmt(params / 1e6 if params else None)} | {_fmt(r['latency_ms'])} "
            f"| {_fmt(r['perplexity'])} | {_fmt(r['agreement'])} | {r['method']} "
            f"| {r['dataset']} | {r['temperature']:g} | {r['n_questions']} "
            f"| {_fmt(r['tokens_per_s'])} | {speedup} "
            f"| {_fmt(r['tau'])} | {_fmt(r['tar'])} |"
        )
    for entry in results:
        corr = entry["tar_perplexity_r"]
        lines += [
            "",
            f"{entry['method']}, T={entry['temperature']:g}: TAR against held-out perplexity "
            f"(one point per draft, TAR averaged over datasets): r = {_fmt(corr['r'])} "
            f"[{_fmt(corr['low'])}, {_fmt(corr['high'])}] over {corr['n']} drafts (Fisher z).",
        ]
        for dataset, ratio in entry["throughput_ratio"].items():
            if ratio.get("measured") is None:
                continue
            lines.append(
                f"- {dataset}: mean tokens/s of the fastest draft ({ratio['fast']}) over the "
                f"deepest ({ratio['deep']}), same questions: "
                f"{ratio['measured']:.2f} [{ratio['low']:.2f}, {ratio['high']:.2f}] "
                f"({ratio['questions']} questions)"
            )
    lines += [
        "",
        "Counted parameters are the non-embedding ones (layers and final norm); every draft "
        "shares the target's frozen embedding and lm_head. Latency: one-token forward with a KV "
        "cache, median of the profile's repeats. Perplexity: on held-out target generations. "
        "tok/s (totals): all tokens over all seconds; speedup: the mean over questions of "
        "tokens/s over the target alone's (EAGLE's estimator), 95% paired bootstrap interval; "
        "n: questions. tau = tokens committed by verification forwards / verification forwards; "
        "TAR = (tau - 1) / gamma.",
        "",
    ]
    return "\n".join(lines)
