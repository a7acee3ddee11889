"""The draft-model design study ("Decoding Speculative Decoding", arXiv 2402.01528;
docs/methods.md).

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

This module builds the study's table, sweep and results (`study`); the work is split by job:
the drafts (draft_design/members), per-question speeds and their ratios
(draft_design/comparisons), the lookahead sweep (draft_design/tuning), the correlations
(draft_design/correlations), the Markdown (draft_design/markdown) and the figures
(draft_design/figures). Their public names are importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from specrepro.report.draft_design.comparisons import (
    ALPHA,
    N_RESAMPLES,
    common_questions,
    question_rows,
    select_run,
    simultaneous_max,
    speed_ratio,
    split_questions,
    tau_of,
    totals_tokens_per_s,
)
from specrepro.report.draft_design.correlations import Z95, correlations, pearson
from specrepro.report.draft_design.figures import (
    gamma_figure,
    latency_figure,
    tar_figure,
    throughput_figure,
    training_figure,
)
from specrepro.report.draft_design.markdown import draft_markdown
from specrepro.report.draft_design.members import (
    ACCURACY_METRIC,
    ROLE_ORDER,
    Member,
    order_members,
)
from specrepro.report.draft_design.tuning import sweep_lookaheads

__all__ = [
    "ACCURACY_METRIC",
    "ALPHA",
    "N_RESAMPLES",
    "ROLE_ORDER",
    "Z95",
    "Member",
    "StudyInputs",
    "correlations",
    "draft_markdown",
    "gamma_figure",
    "latency_figure",
    "pearson",
    "question_rows",
    "simultaneous_max",
    "split_questions",
    "study",
    "tar_figure",
    "throughput_figure",
    "training_figure",
]


@dataclass
class StudyInputs:
    """What `study` reads: the tidy table, the base pair, the drafts, their latency profile, the
    lookahead sweep's entries, the tuning questions per dataset and the prompt order."""

    tidy: pd.DataFrame
    base_pair: str
    members: list[Member]
    latency: list[dict]
    baseline: str = "vanilla"
    sweep: dict[str, list[str]] | None = None  # method -> its lookahead entries (itself incl.)
    tune: dict[str, int] | None = None  # dataset -> tuning questions
    order: dict[str, list[str]] | None = None  # dataset -> question ids in prompt-file order
    seed: int = 0
    # The draft every other is compared with, trained by the members' own rule; None: the pair's
    # existing draft. With a reference, the existing draft (trained otherwise) is in the table
    # but left out of the ratios, so no ratio mixes two training rules.
    reference: str | None = None


def study(inputs: StudyInputs) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(the per-draft table, the lookahead sweep table, the results the claims read)."""
    members = order_members(inputs.members)
    own = next((m for m in members if m.role == "existing"), members[0])
    existing = next((m for m in members if m.draft == inputs.reference), own)
    if inputs.reference and existing.draft != inputs.reference:
        raise ValueError(f"the study's reference draft {inputs.reference!r} is not a member")
    others = [m for m in members if m is not existing and (m is not own or not inputs.reference)]
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
            ran = common_questions(q, [m.pair for m in members], names, dataset, temperature)
            if not ran:
                continue  # a run of the base pair outside the study (another temperature)
            order = (inputs.order or {}).get(dataset, [])
            tune, report = split_questions(order, ran, (inputs.tune or {}).get(dataset))
            base = base_rows[
                (base_rows["dataset"] == dataset)
                & np.isclose(base_rows["temperature"].astype(float), temperature)
            ].set_index("question_id")
            every = sorted(ran)
            best, swept = sweep_lookaheads(
                q, members, method, names, dataset, temperature, base, tune, report, inputs.seed
            )
            sweep_rows += swept
            comparisons = {}
            for member in members:
                mine = select_run(q, member.pair, method, dataset, temperature)
                fixed_speed = speed_ratio(mine, base, every, 1, inputs.seed)
                tuned_rows = select_run(q, member.pair, best[member.pair], dataset, temperature)
                tuned_speed = speed_ratio(tuned_rows, base, report, 1, inputs.seed)
                report_fixed = speed_ratio(mine, base, report, 1, inputs.seed)
                kept = mine.loc[[x for x in every if x in mine.index]]
                gamma = float(mine["gamma"].iloc[0]) if len(mine) else float("nan")
                tau = tau_of(kept) if len(kept) else float("nan")
                vs = {"fixed": None, "tuned": None}
                if member in others:
                    theirs = select_run(q, existing.pair, method, dataset, temperature)
                    their_best = select_run(
                        q, existing.pair, best[existing.pair], dataset, temperature
                    )
                    # Through the base pair's baseline where a split put the two drafts in
                    # different parts (speed_ratio's bridge).
                    vs = {
                        "fixed": speed_ratio(
                            mine, theirs, every, len(others), inputs.seed, bridge=base
                        ),
                        "tuned": speed_ratio(
                            tuned_rows, their_best, report, len(others), inputs.seed, bridge=base
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
                    "tokens_per_s": totals_tokens_per_s(kept),
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


def _vs_columns(vs: dict) -> dict:
    """The ratios over the existing draft as flat table columns."""
    out = {}
    for kind in ("fixed", "tuned"):
        value = vs.get(kind) or {}
        for key in ("measured", "low", "high", "low_bonferroni", "high_bonferroni", "questions"):
            out[f"vs_existing_{kind}_{key}"] = value.get(key)
    return out
