"""The draft-model design study (SPEC 4.8, "Decoding Speculative Decoding", arXiv 2402.01528).

Per draft: its family (the pair's `existing` draft, the `depth` family at the target's hidden
size, the `wide` family at a wider one, `other` drafts such as hub releases), shape, counted
(non-embedding) size and embedding size, KV-cache bytes per token, decode latency with its
spread, held-out perplexity and agreement on the target's generations, its own task accuracy
(the draft alone, vanilla decoding at T=0: SQuAD F1/EM, Spider execution accuracy) and the
steps its training ran; per dataset its acceptance and throughput with the target.

What is compared, so that no figure is a maximum picked after the fact:
- every member against the existing draft, each with its 95% paired bootstrap interval over
  questions and a Bonferroni-corrected one (level 1 - 0.05 / m over the m members compared);
  the maximum over members is judged with the simultaneous interval [max low_i, max high_i],
  which holds the largest true ratio with 95% confidence when every corrected interval holds.
- at the fixed lookahead (the method's gamma) on every study question, and at each draft's
  own best gamma: the best gamma is chosen on the first `tune` questions of a dataset (never
  trained on: training prompts exclude every evaluated question) and reported on the others.
- acceptance (TAR at the fixed gamma, every study question) against the drafts' task accuracy
  across drafts (the paper's Fig. 5), and against perplexity as a second column: Pearson's r
  with a Fisher-z interval, n = drafts.

TAR (token acceptance rate) = accepted draft tokens / drafted tokens = (tau - 1) / gamma, with
tau = committed tokens per target forward (bonus token included). The last round of a turn can
draft fewer than gamma tokens, which biases TAR down by at most one round per turn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from specrepro.report.aggregate import prepare

Z95 = 1.959963984540054
N_RESAMPLES = 4000
ALPHA = 0.05
# The task score a dataset's accuracy is read as (the draft alone), in the order reported.
ACCURACY_METRIC = {"squad": "f1", "spider": "exec_match"}
ROLE_ORDER = {"existing": 0, "depth": 1, "wide": 2, "other": 3}


@dataclass(frozen=True)
class Member:
    """One draft of the study: the pair that runs it, its quality record (the `draft-quality`
    JSON: shape, counted size, held-out perplexity and agreement, task accuracy, training) and
    its role (existing, depth, wide, other)."""

    pair: str
    draft: str
    quality: dict
    role: str = "existing"

    @property
    def shape(self) -> dict:
        return self.quality["shape"]

    @property
    def depth(self) -> int:
        return int(self.shape["num_layers"])

    @property
    def hidden(self) -> int:
        return int(self.shape.get("hidden_size", 0))

    def kv_bytes_per_token(self, dtype_bytes: int = 4) -> int:
        s = self.shape
        heads = s.get("num_key_value_heads") or s.get("num_attention_heads") or 0
        head_dim = s.get("head_dim") or (s.get("hidden_size", 0) // max(1, heads))
        return 2 * self.depth * heads * head_dim * dtype_bytes

    def embedding_parameters(self) -> int:
        s = self.shape
        tied = s.get("tie_word_embeddings", False)
        return int(s.get("vocab_size", 0) * s.get("hidden_size", 0) * (1 if tied else 2))

    def accuracy(self, dataset: str) -> dict:
        return (self.quality.get("accuracy") or {}).get(dataset) or {}


def _order(members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: (ROLE_ORDER.get(m.role, 9), m.hidden, m.depth, m.draft))


# --- per-question data ---------------------------------------------------------------------


def question_rows(
    tidy: pd.DataFrame, pairs: list[str], methods: list[str], baseline: str
) -> pd.DataFrame:
    """Per (pair, method, dataset, temperature, question): tokens, seconds, verified tokens
    and verification forwards (turns and seeds summed), with each run's gamma; the base
    pair's baseline rows copied under every pair (the target alone loads no draft)."""
    rows = prepare(tidy)
    rows = rows[rows["pair"].isin(pairs) & rows["method"].isin([*methods, baseline])]
    for column in ("verified_tokens", "verify_forwards"):
        if column not in rows:
            rows = rows.assign(**{column: np.nan})
    keys = ["pair", "method", "dataset", "temperature", "question_id"]
    summed = rows.groupby(keys)[
        ["new_tokens", "wall_time_s", "verified_tokens", "verify_forwards"]
    ].sum(min_count=1)
    params = rows.groupby(keys)["params"].first() if "params" in rows else None
    out = summed.reset_index()
    out["gamma"] = [_gamma(p) for p in params.to_numpy()] if params is not None else np.nan
    out["question_id"] = out["question_id"].astype(str)
    return out


def _gamma(params: object) -> float:
    try:
        value = json.loads(params).get("gamma") if isinstance(params, str) else None
    except ValueError:
        value = None
    return float(value) if value else float("nan")


def _select(q: pd.DataFrame, pair: str, method: str, dataset: str, temperature: float):
    rows = q[
        (q["pair"] == pair)
        & (q["method"] == method)
        & (q["dataset"] == dataset)
        & np.isclose(q["temperature"].astype(float), temperature)
    ]
    return rows.set_index("question_id")


def _bootstrap(
    numerator: pd.DataFrame, denominator: pd.DataFrame, questions: list[str], m: int, seed: int
) -> dict:
    """Mean tokens/s of `numerator` over `denominator` on `questions` (EAGLE's estimator), with
    its 95% paired bootstrap interval and the Bonferroni interval for m comparisons."""
    keep = [q for q in questions if q in numerator.index and q in denominator.index]
    out = {"measured": None, "low": None, "high": None, "low_bonferroni": None,
           "high_bonferroni": None, "questions": len(keep), "comparisons": m}  # fmt: skip
    if not keep:
        return out
    a = (numerator.loc[keep, "new_tokens"] / numerator.loc[keep, "wall_time_s"]).to_numpy(float)
    b = (denominator.loc[keep, "new_tokens"] / denominator.loc[keep, "wall_time_s"]).to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keep), size=(N_RESAMPLES, len(keep)))
    reps = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    corrected = ALPHA / max(1, m)
    out.update(
        measured=float(a.mean() / b.mean()),
        low=float(np.quantile(reps, ALPHA / 2)),
        high=float(np.quantile(reps, 1 - ALPHA / 2)),
        low_bonferroni=float(np.quantile(reps, corrected / 2)),
        high_bonferroni=float(np.quantile(reps, 1 - corrected / 2)),
    )
    return out


def _tau(rows: pd.DataFrame) -> float:
    forwards = rows["verify_forwards"].sum()
    return float(rows["verified_tokens"].sum() / forwards) if forwards else float("nan")


def split_questions(
    order: list[str], ran: set[str], tune: int | None
) -> tuple[list[str], list[str]]:
    """(tuning, report) questions: of the questions every member ran, in the prompt file's
    order, the first `tune` choose each draft's lookahead and the rest report it."""
    ordered = [q for q in order if q in ran] + sorted(ran - set(order))
    if not tune:
        return [], ordered
    return ordered[:tune], ordered[tune:]


# --- the table -----------------------------------------------------------------------------


@dataclass
class StudyInputs:
    tidy: pd.DataFrame
    base_pair: str
    members: list[Member]
    latency: list[dict]
    baseline: str = "vanilla"
    sweep: dict[str, list[str]] | None = None  # method -> its lookahead entries (itself incl.)
    tune: dict[str, int] | None = None  # dataset -> tuning questions
    order: dict[str, list[str]] | None = None  # dataset -> question ids in prompt-file order
    seed: int = 0


def _common(q: pd.DataFrame, pairs: list[str], names: list[str], dataset: str, t: float) -> set:
    sets = []
    for pair in pairs:
        for name in names:
            rows = _select(q, pair, name, dataset, t)
            sets.append(set(rows.index))
    return set.intersection(*sets) if sets and all(sets) else set()


def study(inputs: StudyInputs) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(the per-draft table, the lookahead sweep table, the results the claims read)."""
    members = _order(inputs.members)
    existing = next((m for m in members if m.role == "existing"), members[0])
    others = [m for m in members if m is not existing]
    sweep = inputs.sweep or {}
    tidy = inputs.tidy
    methods = sorted({*tidy.loc[tidy["pair"].isin([m.pair for m in members]), "method"]})
    study_methods = {method: names for method, names in sweep.items() if method in methods} or {
        m: [m] for m in methods if m != inputs.baseline
    }
    all_names = [n for names in study_methods.values() for n in names]
    q = question_rows(tidy, [m.pair for m in members], all_names, inputs.baseline)
    base_rows = q[(q["pair"] == inputs.base_pair) & (q["method"] == inputs.baseline)]
    latency = {r["name"]: r for r in inputs.latency}
    rows, sweep_rows, results = [], [], []
    combos = (
        q[q["method"].isin(study_methods)][["method", "temperature"]].drop_duplicates().to_numpy()
    )
    for method, temperature in sorted(combos.tolist()):
        names = study_methods[method]
        entry = {"method": method, "temperature": float(temperature), "members": len(others),
                 "existing": existing.draft, "datasets": {}}  # fmt: skip
        datasets = sorted(q.loc[q["method"] == method, "dataset"].unique())
        for dataset in datasets:
            ran = _common(q, [m.pair for m in members], names, dataset, temperature)
            if not ran:
                continue  # a run of the base pair outside the study (another temperature)
            order = (inputs.order or {}).get(dataset, [])
            tune, report = split_questions(order, ran, (inputs.tune or {}).get(dataset))
            base = base_rows[
                (base_rows["dataset"] == dataset)
                & np.isclose(base_rows["temperature"].astype(float), temperature)
            ].set_index("question_id")
            every = sorted(ran)
            best: dict[str, str] = {}
            for member in members:
                per_gamma = {}
                for name in names:
                    mine = _select(q, member.pair, name, dataset, temperature)
                    gamma = float(mine["gamma"].iloc[0]) if len(mine) else float("nan")
                    for split, questions in (("tune", tune), ("report", report)):
                        value = _bootstrap(mine, base, questions, 1, inputs.seed)
                        kept = mine.loc[[x for x in questions if x in mine.index]]
                        sweep_rows.append({
                            "draft": member.draft, "role": member.role, "method": method,
                            "entry": name, "gamma": gamma, "dataset": dataset,
                            "temperature": float(temperature), "split": split,
                            "n_questions": value["questions"], "speedup": value["measured"],
                            "speedup_low": value["low"], "speedup_high": value["high"],
                            "tau": _tau(kept) if len(kept) else float("nan"),
                        })  # fmt: skip
                        if split == "tune" and value["measured"] is not None:
                            per_gamma[name] = value["measured"]
                # Chosen on the tuning questions only; without them, the fixed gamma.
                best[member.pair] = max(per_gamma, key=per_gamma.get) if per_gamma else method
            comparisons = {}
            for member in members:
                mine = _select(q, member.pair, method, dataset, temperature)
                fixed_speed = _bootstrap(mine, base, every, 1, inputs.seed)
                tuned_rows = _select(q, member.pair, best[member.pair], dataset, temperature)
                tuned_speed = _bootstrap(tuned_rows, base, report, 1, inputs.seed)
                report_fixed = _bootstrap(mine, base, report, 1, inputs.seed)
                kept = mine.loc[[x for x in every if x in mine.index]]
                gamma = float(mine["gamma"].iloc[0]) if len(mine) else float("nan")
                tau = _tau(kept) if len(kept) else float("nan")
                vs = {"fixed": None, "tuned": None}
                if member is not existing:
                    theirs = _select(q, existing.pair, method, dataset, temperature)
                    their_best = _select(
                        q, existing.pair, best[existing.pair], dataset, temperature
                    )
                    vs = {
                        "fixed": _bootstrap(mine, theirs, every, len(others), inputs.seed),
                        "tuned": _bootstrap(
                            tuned_rows, their_best, report, len(others), inputs.seed
                        ),
                    }
                    comparisons[member.draft] = {"role": member.role, **vs}
                lat = latency.get(member.draft, {})
                accuracy = member.accuracy(dataset)
                metric = ACCURACY_METRIC.get(dataset)
                rows.append({
                    "draft": member.draft, "pair": member.pair, "role": member.role,
                    "depth": member.depth, "hidden": member.hidden,
                    "heads": member.shape.get("num_attention_heads"),
                    "ffn": member.shape.get("intermediate_size"),
                    "counted_parameters": member.quality.get("counted_parameters"),
                    "embedding_parameters": member.embedding_parameters(),
                    "kv_bytes_per_token": member.kv_bytes_per_token(),
                    "latency_ms": lat.get("ms_per_token", float("nan")),
                    "latency_p10": lat.get("ms_token_p10", float("nan")),
                    "latency_p90": lat.get("ms_token_p90", float("nan")),
                    "latency_min": lat.get("ms_per_token_min", float("nan")),
                    "latency_max": lat.get("ms_per_token_max", float("nan")),
                    "perplexity": member.quality.get("holdout_perplexity"),
                    "agreement": member.quality.get("holdout_agreement"),
                    "accuracy": accuracy.get(metric) if metric else None,
                    "accuracy_metric": metric,
                    "accuracy_em": accuracy.get("em"),
                    "accuracy_n": accuracy.get("n"),
                    "training_steps": member.quality.get("training_steps"),
                    "training_stop": member.quality.get("training_stop"),
                    "method": method, "dataset": dataset, "temperature": float(temperature),
                    "gamma": gamma, "n_questions": fixed_speed["questions"],
                    "tokens_per_s": _totals(kept),
                    "speedup": fixed_speed["measured"], "speedup_low": fixed_speed["low"],
                    "speedup_high": fixed_speed["high"], "tau": tau,
                    "tar": (tau - 1) / gamma if gamma else float("nan"),
                    "best_entry": best[member.pair],
                    "best_gamma": float(tuned_rows["gamma"].iloc[0]) if len(tuned_rows) else None,
                    "n_tune": len(tune), "n_report": len(report),
                    "report_speedup_fixed": report_fixed["measured"],
                    "report_speedup_fixed_low": report_fixed["low"],
                    "report_speedup_fixed_high": report_fixed["high"],
                    "report_speedup_best": tuned_speed["measured"],
                    "report_speedup_best_low": tuned_speed["low"],
                    "report_speedup_best_high": tuned_speed["high"],
                    **_vs_columns(vs),
                })  # fmt: skip
            entry["datasets"][dataset] = {
                "tune_questions": tune,
                "report_questions": report,
                "comparisons": comparisons,
                "max": {kind: simultaneous_max(comparisons, kind) for kind in ("fixed", "tuned")},
            }
        if entry["datasets"]:
            results.append(entry)
    table = pd.DataFrame(rows)
    for entry in results:
        entry["correlations"] = correlations(table, entry["method"], entry["temperature"])
    return table, pd.DataFrame(sweep_rows), results


def _totals(rows: pd.DataFrame) -> float:
    seconds = rows["wall_time_s"].sum() if len(rows) else 0.0
    return float(rows["new_tokens"].sum() / seconds) if seconds else float("nan")


def _vs_columns(vs: dict) -> dict:
    out = {}
    for kind in ("fixed", "tuned"):
        value = vs.get(kind) or {}
        for key in ("measured", "low", "high", "low_bonferroni", "high_bonferroni", "questions"):
            out[f"vs_existing_{kind}_{key}"] = value.get(key)
    return out


def simultaneous_max(comparisons: dict[str, dict], kind: str) -> dict:
    """The largest member-over-existing ratio, judged without picking it: when every
    Bonferroni interval holds (95% jointly), the largest true ratio lies in [max of the lower
    ends, max of the upper ends]. The point is the largest measured ratio."""
    values = [c[kind] for c in comparisons.values() if c.get(kind) and c[kind]["measured"]]
    if not values:
        return {"measured": None, "low": None, "high": None, "questions": 0, "comparisons": 0}
    return {
        "measured": max(v["measured"] for v in values),
        "low": max(v["low_bonferroni"] for v in values),
        "high": max(v["high_bonferroni"] for v in values),
        "questions": min(v["questions"] for v in values),
        "comparisons": len(values),
    }


# --- correlations --------------------------------------------------------------------------


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
        out[dataset] = {
            "accuracy": pearson(per_draft["accuracy"].astype(float).tolist(), tar),
            "accuracy_metric": ACCURACY_METRIC.get(dataset),
            "perplexity": pearson(per_draft["perplexity"].astype(float).tolist(), tar),
        }
    return out


# --- Markdown ------------------------------------------------------------------------------


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(point: object, low: object, high: object) -> str:
    if point is None or (isinstance(point, float) and not np.isfinite(point)):
        return "-"
    return f"{point:.2f} [{_fmt(low)}, {_fmt(high)}]"


def draft_markdown(
    table: pd.DataFrame, sweep: pd.DataFrame, results: list[dict], title: str
) -> str:
    lines = [f"### {title}", ""]
    if table.empty:
        return "\n".join([*lines, "No study runs found.", ""])
    first = table.drop_duplicates("draft")
    lines += [
        "Drafts (counted = non-embedding parameters, the same count for every family):",
        "",
        "| draft | role | depth | hidden | heads | FFN | counted (M) | embedding (M) "
        "| KV bytes/token | latency ms/token: median [p10, p90] (repeats min-max) "
        "| held-out ppl | agreement | training steps (stop) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in first.to_dict("records"):
        counted = r["counted_parameters"]
        lines.append(
            f"| {r['draft']} | {r['role']} | {r['depth']} | {r['hidden']} | {_fmt(r['heads'])} "
            f"| {_fmt(r['ffn'])} | {_fmt(counted / 1e6 if counted else None)} "
            f"| {_fmt(r['embedding_parameters'] / 1e6)} | {r['kv_bytes_per_token']} "
            f"| {_fmt(r['latency_ms'])} [{_fmt(r['latency_p10'])}, {_fmt(r['latency_p90'])}] "
            f"({_fmt(r['latency_min'])}-{_fmt(r['latency_max'])}) | {_fmt(r['perplexity'])} "
            f"| {_fmt(r['agreement'])} | {_fmt(r['training_steps'])} "
            f"({_fmt(r['training_stop'])}) |"
        )
    lines += [
        "",
        "Per dataset (fixed gamma: every study question; best gamma: chosen on the tuning "
        "questions, reported on the others; ratios over the existing draft with their 95% and "
        "Bonferroni intervals):",
        "",
        "| draft | role | method | dataset | T | task acc. (alone) | gamma | n | tok/s (totals) "
        "| speedup, fixed gamma [95% CI] | tau | TAR | best gamma (tune n) "
        "| report: fixed gamma | report: best gamma (n) | / existing, fixed [95%] {Bonf.} "
        "| / existing, best [95%] {Bonf.} |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---|---|",
    ]
    ordered = table.assign(_o=table["role"].map(ROLE_ORDER).fillna(9))
    ordered = ordered.sort_values(["method", "temperature", "dataset", "_o", "hidden", "depth"])
    for r in ordered.to_dict("records"):
        acc = f"{r['accuracy_metric']} {_fmt(r['accuracy'])}" if r["accuracy_metric"] else "-"
        vs = []
        for kind in ("fixed", "tuned"):
            point = r[f"vs_existing_{kind}_measured"]
            vs.append(
                "-"
                if point is None or (isinstance(point, float) and not np.isfinite(point))
                else f"{point:.2f} [{_fmt(r[f'vs_existing_{kind}_low'])}, "
                f"{_fmt(r[f'vs_existing_{kind}_high'])}] "
                f"{{{_fmt(r[f'vs_existing_{kind}_low_bonferroni'])}, "
                f"{_fmt(r[f'vs_existing_{kind}_high_bonferroni'])}}}"
            )
        lines.append(
            f"| {r['draft']} | {r['role']} | {r['method']} | {r['dataset']} "
            f"| {r['temperature']:g} | {acc} | {_fmt(r['gamma'], 0)} | {r['n_questions']} "
            f"| {_fmt(r['tokens_per_s'])} "
            f"| {_ci(r['speedup'], r['speedup_low'], r['speedup_high'])} | {_fmt(r['tau'])} "
            f"| {_fmt(r['tar'])} | {_fmt(r['best_gamma'], 0)} ({r['n_tune']}) "
            f"| {_ci(r['report_speedup_fixed'], r['report_speedup_fixed_low'], r['report_speedup_fixed_high'])} "  # noqa: E501
            f"| {_ci(r['report_speedup_best'], r['report_speedup_best_low'], r['report_speedup_best_high'])} ({r['n_report']}) "  # noqa: E501
            f"| {vs[0]} | {vs[1]} |"
        )
    for entry in results:
        lines += ["", f"**{entry['method']}, T={entry['temperature']:g}** "
                  f"({entry['members']} drafts compared with {entry['existing']}):"]  # fmt: skip
        for dataset, values in entry["datasets"].items():
            for kind, label in (("fixed", "fixed gamma"), ("tuned", "each draft's best gamma")):
                top = values["max"][kind]
                if top["measured"] is None:
                    continue
                lines.append(
                    f"- {dataset}, {label}: the largest ratio over the existing draft is "
                    f"{top['measured']:.2f}; simultaneous 95% interval for the largest true "
                    f"ratio [{top['low']:.2f}, {top['high']:.2f}] (Bonferroni over "
                    f"{top['comparisons']} drafts, {top['questions']} questions)"
                )
        for dataset, corr in entry.get("correlations", {}).items():
            acc, ppl = corr["accuracy"], corr["perplexity"]
            metric = corr["accuracy_metric"] or "accuracy"
            lines.append(
                f"- {dataset}: TAR against the drafts' own {metric}: "
                f"r = {_fmt(acc['r'])} [{_fmt(acc['low'])}, {_fmt(acc['high'])}] over "
                f"{acc['n']} drafts; against held-out perplexity: r = {_fmt(ppl['r'])} "
                f"[{_fmt(ppl['low'])}, {_fmt(ppl['high'])}] (Fisher z)"
                + (f"; {acc['reason']}" if acc.get("reason") else "")
            )
    if not sweep.empty:
        lines += ["", "Lookahead sweep (speedup over the target alone, mean tok/s):", ""]
        pivot = sweep.pivot_table(
            index=["draft", "dataset", "split"], columns="gamma", values="speedup", aggfunc="first"
        )
        gammas = list(pivot.columns)
        lines += [
            "| draft | dataset | split | " + " | ".join(f"gamma {g:g}" for g in gammas) + " |",
            "|---|---|---|" + "---:|" * len(gammas),
        ]
        for (draft, dataset, split), values in pivot.iterrows():
            cells = " | ".join(_fmt(values[g]) for g in gammas)
            lines.append(f"| {draft} | {dataset} | {split} | {cells} |")
    lines += [
        "",
        "Counted parameters: decoder layers and final norm (non-embedding), for every family; "
        "the embedding column is vocabulary x hidden size (x2 when not tied). The depth family "
        "shares the target's frozen embedding; the wide family has its own at its width. KV "
        "bytes per context token at float32. Latency: a one-token forward with a KV cache "
        "(random weights of the draft's shape), the median repeat, the 10th-90th percentiles "
        "over all timed forwards and the fastest-slowest repeat. Task accuracy: the draft "
        "alone, vanilla decoding at T=0 on the evaluated questions (SQuAD F1, Spider execution "
        "accuracy). tok/s (totals): all tokens over all seconds; speedup: the mean over "
        "questions of tokens/s over the target alone's (EAGLE's estimator), 95% paired "
        "bootstrap interval; tau = tokens committed by verification forwards / verification "
        "forwards; TAR = (tau - 1) / gamma.",
        "",
    ]
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and bool(np.isfinite(value))


def _style(role: str) -> dict:
    return {
        "existing": {"marker": "*", "color": "black"},
        "depth": {"marker": "o", "color": "tab:blue"},
        "wide": {"marker": "s", "color": "tab:orange"},
    }.get(role, {"marker": "^", "color": "tab:green"})


def latency_figure(
    rows: list[dict],
    roles: dict[str, str],
    out_base: Path,
    title: str,
    paper: list[dict] | None = None,
):
    """Latency per token against depth, a marker per family, bars over the 10th-90th
    percentiles of the timed forwards; a second panel for the paper's shapes when profiled."""
    from specrepro.report.figures import _empty, _panels, _save

    fig, axes = _panels(2 if paper is not None else 1)
    for ax, scale, points in zip(axes, ("the study's drafts", "paper scale (LLaMA shapes)"),
                                 (rows, paper or []), strict=False):  # fmt: skip
        _latency_panel(ax, points, roles)
        ax.set_title(scale, fontsize=8)
        if not points:
            _empty(ax, "not profiled")
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def _latency_panel(ax, rows: list[dict], roles: dict[str, str]) -> None:
    for row in rows:
        role = roles.get(row["name"], "other")
        y = row["ms_per_token"]
        low, high = row.get("ms_token_p10", y), row.get("ms_token_p90", y)
        ax.errorbar(
            row["num_layers"], y, yerr=[[max(0, y - low)], [max(0, high - y)]], capsize=3,
            linestyle="none", **_style(role),
        )  # fmt: skip
        ax.annotate(f"{row['name']}\nH={row['hidden_size']}", (row["num_layers"], y), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("draft depth (layers)")
    ax.set_ylabel("ms per token (one-token forward), p10-p90")
    ax.set_ylim(bottom=0)


def tar_figure(table: pd.DataFrame, results: list[dict], out_base: Path, title: str):
    """TAR against the drafts' own task accuracy and against perplexity, per dataset."""
    from specrepro.report.figures import _empty, _panels, _save

    panels = [(e, d) for e in results for d in e.get("correlations", {})]
    fig, axes = _panels(2 * max(1, len(panels)))
    if not panels:
        _empty(axes[0], "no study runs")
    for i, (entry, dataset) in enumerate(panels):
        rows = table[
            (table["method"] == entry["method"])
            & np.isclose(table["temperature"], entry["temperature"])
            & (table["dataset"] == dataset)
        ]
        corr = entry["correlations"][dataset]
        for ax, column, key in (
            (axes[2 * i], "accuracy", "accuracy"), (axes[2 * i + 1], "perplexity", "perplexity")
        ):  # fmt: skip
            for r in rows.to_dict("records"):
                if not _finite(r[column]) or not _finite(r["tar"]):
                    continue
                ax.plot(r[column], r["tar"], linestyle="none", **_style(r["role"]))
                ax.annotate(r["draft"], (r[column], r["tar"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
            c = corr[key]
            ax.set_title(f"{dataset}: r = {_fmt(c['r'])} [{_fmt(c['low'])}, {_fmt(c['high'])}], "
                         f"n = {c['n']}", fontsize=8)  # fmt: skip
            label = f"draft alone: {corr['accuracy_metric']}" if key == "accuracy" else None
            ax.set_xlabel(label or "held-out perplexity")
            ax.set_ylabel("TAR (fixed gamma)")
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def throughput_figure(table: pd.DataFrame, out_base: Path, title: str):
    """Speedup over the target alone per draft: fixed gamma and each draft's best gamma, on
    the report questions, with intervals."""
    from specrepro.report.figures import _empty, _interval_bars, _panels, _save

    combos = (
        sorted(table.groupby(["method", "temperature", "dataset"]).groups) if len(table) else []
    )
    fig, axes = _panels(max(1, len(combos)))
    if not combos:
        _empty(axes[0], "no study runs")
    for ax, (method, temperature, dataset) in zip(axes, combos, strict=False):
        rows = table[
            (table["method"] == method)
            & np.isclose(table["temperature"], temperature)
            & (table["dataset"] == dataset)
        ]
        x = np.arange(len(rows))
        for offset, key, label in ((-0.15, "report_speedup_fixed", "fixed gamma"),
                                   (0.15, "report_speedup_best", "best gamma")):  # fmt: skip
            y = rows[key].astype(float).to_numpy()
            yerr = _interval_bars(y, rows[f"{key}_low"].astype(float),
                                  rows[f"{key}_high"].astype(float))  # fmt: skip
            ax.errorbar(x + offset, y, yerr=yerr, marker="o", linestyle="none", capsize=3,
                        label=label)  # fmt: skip
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(x, rows["draft"], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{method}, {dataset}, T={temperature:g} (report questions)", fontsize=8)
        ax.set_ylabel("speedup over the target alone")
        ax.legend(fontsize="small")
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def gamma_figure(sweep: pd.DataFrame, out_base: Path, title: str):
    """Speedup against gamma per draft, on the tuning questions (where the best is chosen)."""
    from specrepro.report.figures import _empty, _panels, _save

    tune = sweep[sweep["split"] == "tune"] if len(sweep) else sweep
    datasets = sorted(tune["dataset"].unique()) if len(tune) else []
    fig, axes = _panels(max(1, len(datasets)))
    if not datasets:
        _empty(axes[0], "no lookahead sweep (or no tuning questions)")
    for ax, dataset in zip(axes, datasets, strict=False):
        for draft, line in tune[tune["dataset"] == dataset].groupby("draft"):
            line = line.sort_values("gamma")
            style = _style(line["role"].iloc[0])
            ax.plot(line["gamma"], line["speedup"], label=draft, marker=style["marker"])
        ax.set_title(f"{dataset}: tuning questions", fontsize=8)
        ax.set_xlabel("gamma (draft tokens per round)")
        ax.set_ylabel("speedup over the target alone")
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def training_figure(logs: dict[str, dict], out_base: Path, title: str):
    """The training loss (smoothed) of every built draft against steps, held-out loss points,
    and where each stopped."""
    from specrepro.report.figures import _empty, _panels, _save

    fig, (ax,) = _panels(1, width=6.0)
    if not logs:
        _empty(ax, "no built drafts")
    for draft, log in logs.items():
        entries = [e for e in log.get("log", []) if "loss" in e]
        if not entries:
            continue
        steps = [e["step"] for e in entries]
        smooth = [e.get("smoothed_loss", e["loss"]) for e in entries]
        (line,) = ax.plot(steps, smooth, label=f"{draft} ({log.get('stop', 'cap')})")
        held = [(e["step"], e["holdout_loss"]) for e in log["log"] if "holdout_loss" in e]
        if held:
            ax.plot(*zip(*held, strict=True), linestyle="none", marker="x", color=line.get_color())
    ax.set_xlabel("update step")
    ax.set_ylabel("distillation loss (line: smoothed train, x: held out)")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)
