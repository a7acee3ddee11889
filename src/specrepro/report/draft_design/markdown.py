"""The draft-design study's report as Markdown: the drafts, every member's speed and acceptance
per dataset with its ratios over the existing draft, the largest ratio and the correlations
per method, and the lookahead sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd

from specrepro.report.draft_design.members import ROLE_ORDER


def fmt(value: object, digits: int = 2) -> str:
    """A number for a table cell: "-" when missing or not finite."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(point: object, low: object, high: object) -> str:
    if point is None or (isinstance(point, float) and not np.isfinite(point)):
        return "-"
    return f"{point:.2f} [{fmt(low)}, {fmt(high)}]"


def draft_markdown(
    table: pd.DataFrame, sweep: pd.DataFrame, results: list[dict], title: str
) -> str:
    """The report of `study`'s outputs (the per-draft table, the sweep, the results)."""
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
            f"| {r['draft']} | {r['role']} | {r['depth']} | {r['hidden']} | {fmt(r['heads'])} "
            f"| {fmt(r['ffn'])} | {fmt(counted / 1e6 if counted else None)} "
            f"| {fmt(r['embedding_parameters'] / 1e6)} | {r['kv_bytes_per_token']} "
            f"| {fmt(r['latency_ms'])} [{fmt(r['latency_p10'])}, {fmt(r['latency_p90'])}] "
            f"({fmt(r['latency_min'])}-{fmt(r['latency_max'])}) | {fmt(r['perplexity'])} "
            f"| {fmt(r['agreement'])} | {fmt(r['training_steps'])} "
            f"({fmt(r['training_stop'])}) |"
        )
    reference = (
        ", ".join(sorted({str(entry["existing"]) for entry in results})) or "the existing draft"
    )
    lines += [
        "",
        "Per dataset (fixed gamma: every study question; best gamma: chosen on the tuning "
        f"questions, reported on the others; ratios over {reference} with their 95% and "
        "Bonferroni intervals; a draft trained by another rule is left out of the ratios):",
        "",
        "| draft | role | method | dataset | T | task acc. (alone) | gamma | n | tok/s (totals) "
        "| speedup, fixed gamma [95% CI] | tau | TAR | best gamma (tune n) "
        "| report: fixed gamma | report: best gamma (n) | / reference, fixed [95%] {Bonf.} "
        "| / reference, best [95%] {Bonf.} |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---|---|",
    ]
    ordered = table.assign(_o=table["role"].map(ROLE_ORDER).fillna(9))
    ordered = ordered.sort_values(["method", "temperature", "dataset", "_o", "hidden", "depth"])
    for r in ordered.to_dict("records"):
        acc = f"{r['accuracy_metric']} {fmt(r['accuracy'])}" if r["accuracy_metric"] else "-"
        vs = []
        for kind in ("fixed", "tuned"):
            point = r[f"vs_existing_{kind}_measured"]
            vs.append(
                "-"
                if point is None or (isinstance(point, float) and not np.isfinite(point))
                else f"{point:.2f} [{fmt(r[f'vs_existing_{kind}_low'])}, "
                f"{fmt(r[f'vs_existing_{kind}_high'])}] "
                f"{{{fmt(r[f'vs_existing_{kind}_low_bonferroni'])}, "
                f"{fmt(r[f'vs_existing_{kind}_high_bonferroni'])}}}"
            )
        lines.append(
            f"| {r['draft']} | {r['role']} | {r['method']} | {r['dataset']} "
            f"| {r['temperature']:g} | {acc} | {fmt(r['gamma'], 0)} | {r['n_questions']} "
            f"| {fmt(r['tokens_per_s'])} "
            f"| {_ci(r['speedup'], r['speedup_low'], r['speedup_high'])} | {fmt(r['tau'])} "
            f"| {fmt(r['tar'])} | {fmt(r['best_gamma'], 0)} ({r['n_tune']}) "
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
                    f"- {dataset}, {label}: the largest ratio over {entry['existing']} is "
                    f"{top['measured']:.2f}; simultaneous 95% interval for the largest true "
                    f"ratio [{top['low']:.2f}, {top['high']:.2f}] (Bonferroni over "
                    f"{top['comparisons']} drafts, {top['questions']} questions)"
                )
        for dataset, corr in entry.get("correlations", {}).items():
            acc, ppl = corr["accuracy"], corr["perplexity"]
            metric = corr["accuracy_metric"] or "accuracy"
            lines.append(
                f"- {dataset}: TAR against the drafts' own {metric}: "
                f"r = {fmt(acc['r'])} [{fmt(acc['low'])}, {fmt(acc['high'])}] over "
                f"{acc['n']} drafts; against held-out perplexity: r = {fmt(ppl['r'])} "
                f"[{fmt(ppl['low'])}, {fmt(ppl['high'])}] (Fisher z)"
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
            cells = " | ".join(fmt(values[g]) for g in gammas)
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
