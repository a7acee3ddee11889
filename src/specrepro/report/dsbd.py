"""The DSBD paper's comparison, one table per pair and dataset: every method that ran at T > 0
against beam sampling of the same width (tokens/s, speedup, GPU board J/token, energy ratio, task
quality, the target's log-likelihood, the width DSBD used, KV and device memory, target forwards
per token), each with its generation rule and n; and the w_thres and per-level width views behind
the two DSBD figures. Speed is the DSBD paper's estimator throughout: total tokens over total
seconds (docs/measurement.md). No ratio is printed between runs of different generation rules."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from specrepro.report.aggregate import (
    collapse_groups,
    comparable,
    group_stats,
    prepare,
    rule_label,
    rule_note,
)
from specrepro.report.claims import measure, query
from specrepro.report.tables import (
    ENERGY_COLUMN,
    ENERGY_NOTE,
    LOGLIK_NOTE,
    MEMORY_NOTE,
    NOT_COMPARABLE,
    TAU_NOTE,
    TOKS_TOTALS,
)

# Per dataset, (summary column, label) of each task score, F1 always beside EM.
QUALITY = {
    "squad": (("em", "EM"), ("f1", "F1")),
    "spider": (("exec_acc", "EA"),),
}
ORDER = ("beam", "dsbd", "sps", "vanilla")
FLOOR_QUALITY = 5.0  # % below which a task score says nothing about a method's quality
ESTIMATOR = "totals"  # claims.Claim.estimator of every speed ratio here


def _params(group: pd.DataFrame) -> dict:
    return json.loads(group["params"].iloc[0]) if "params" in group else {}


def _widths(group: pd.DataFrame) -> list[list[int]]:
    cells = group["level_widths"].fillna("[]") if "level_widths" in group else []
    return [levels for cell in cells for levels in json.loads(cell)]


def _carried(group: pd.DataFrame) -> list[int]:
    cells = group["beams_carried"].fillna("[]") if "beams_carried" in group else []
    return [n for cell in cells for n in json.loads(cell)]


def beam_reference(rows: pd.DataFrame, width: int | None) -> str | None:
    """The beam-sampling entry to compare with: the one of equal width, else the first."""
    beams = rows[rows["algorithm"] == "beam"]
    if beams.empty:
        return None
    by_width = {m: _params(g).get("width") for m, g in beams.groupby("method")}
    same = sorted(m for m, w in by_width.items() if w == width)
    return same[0] if same else sorted(by_width)[0]


def _ratio(
    tidy: pd.DataFrame, method: str, reference: str, pair, dataset, temperature, **extra: object
) -> dict:
    """The method over the reference on the questions both ran, each measurement paired with
    the reference's in its timing group (claims.measure): speed, or `metric="energy"`."""
    claim = query("ratio", method, pair, dataset, temperature, reference=reference,
                  estimator=ESTIMATOR, **extra)  # fmt: skip
    return measure(tidy, claim)


def _percent(value: float) -> float | None:
    return None if pd.isna(value) else 100 * float(value)


def _forwards_per_token(group: pd.DataFrame) -> float | None:
    # 1 / tau: the same forwards and tokens as tau (prefill left out) for every method.
    tokens = group["verified_tokens"].sum()
    forwards = group["verify_forwards"].sum(min_count=1)
    return None if pd.isna(forwards) or not tokens else float(forwards / tokens)


def method_summary(rows: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per method of one pair, dataset and temperature: the table's columns before the
    comparisons."""
    out = []
    # One row per run, question and turn: a run timed in several groups counts each once.
    for method, group in collapse_groups(prepare(rows)).groupby("method"):
        params = _params(group)
        stats = group_stats(group)
        widths = [w for levels in _widths(group) for w in levels]
        carried = _carried(group)
        scores = {column: _percent(stats[column]) for column, _ in QUALITY.get(dataset, ())}
        out.append(
            {
                "method": method,
                "algorithm": group["algorithm"].iloc[0],
                "width": params.get("width"),
                "w_thres": params.get("w_thres"),
                "tokens_per_s": stats["tokens_per_s"],  # totals, as the speedup
                "j_per_token": None if pd.isna(stats["j_per_token"]) else stats["j_per_token"],
                "energy_reason": stats["energy_reason"],
                # The first score (EM, EA) is the one the figures and claims compare.
                "quality": next(iter(scores.values()), None),
                **scores,
                "n_exec_excluded": stats["n_exec_excluded"],
                "target_loglik": stats["target_loglik"],
                "mean_width": float(np.mean(widths)) if widths else params.get("width"),
                # The width chosen per level is not what a beam search keeps: a level that
                # ends a round holds the refill (W, n or 1) or the bonus level's W beams.
                "beams_carried": float(np.mean(carried)) if carried else None,
                "kv_peak_mib": stats["kv_peak_mib"],
                "peak_device_mib": stats["peak_device_mib"],
                "forwards_per_token": _forwards_per_token(group),
                # New tokens per question, every turn: the length the speed was measured at.
                "new_tokens": float(group.groupby("question_id")["new_tokens"].sum().mean()),
                "rule": rule_label(group),
                "questions": stats["n_questions"],
            }
        )
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    rank = {a: i for i, a in enumerate(ORDER)}
    frame["_rank"] = frame["algorithm"].map(lambda a: rank.get(a, len(ORDER)))
    return frame.sort_values(["_rank", "width", "method"], na_position="last").drop(columns="_rank")


def _header(dataset: str) -> list[str]:
    scores = [f"{label} (%)" for _, label in QUALITY.get(dataset, ())]
    scores += ["gold failed"] if dataset == "spider" else []
    return [
        "method", "W", TOKS_TOTALS, "speedup vs beam, totals [95% CI]", ENERGY_COLUMN,
        "energy ratio vs beam", *scores, "target log-lik/token", "mean width",
        "beams carried / position",
        "KV peak (MiB)", "peak device MiB", "target forwards / token", "rule",
        "new tokens / question", "n",
    ]  # fmt: skip


def _cells(r: Any, reference: str, speed: str, energy: str, dataset: str) -> list[str]:
    scores = [_num(getattr(r, column), "{:.1f}") for column, _ in QUALITY.get(dataset, ())]
    scores += [_num(r.n_exec_excluded, "{:.0f}")] if dataset == "spider" else []
    return [
        f"{r.method}" + (f" (vs {reference})" if r.method != reference else ""),
        _num(r.width, "{:.0f}"), f"{r.tokens_per_s:.2f}", speed,
        _num(r.j_per_token, "{:.3f}"), energy, *scores, _num(r.target_loglik, "{:.2f}"),
        _num(r.mean_width, "{:.2f}"), _num(r.beams_carried, "{:.2f}"),
        _num(r.kv_peak_mib, "{:.1f}"),
        _num(r.peak_device_mib, "{:.1f}"), _num(r.forwards_per_token, "{:.2f}"),
        r.rule, _num(r.new_tokens, "{:.1f}"), str(r.questions),
    ]  # fmt: skip


def _notes(pair: str, dataset: str) -> list[str]:
    quality = {
        "squad": "EM: exact match of the first answer line; F1: token overlap with the best "
        "reference answer.",
        "spider": "EA: execution accuracy of the SQL over the questions whose gold query runs; "
        "gold failed: questions left out of EA because the gold query failed on its database.",
    }.get(dataset, "")
    return [
        f"{pair}, {dataset}. Every speed is the DSBD paper's estimator, total tokens over total "
        f"seconds: {TOKS_TOTALS} is all new tokens / all wall seconds of the method; speedup vs "
        f"beam, totals is its {TOKS_TOTALS} over that of beam sampling of the same width W "
        "(else the first beam entry) on the questions both ran, 95% bootstrap interval over "
        f"questions. Energy ratio: beam's {ENERGY_COLUMN} over the method's on the questions "
        f"both ran (how many times less GPU board energy). {quality} Mean width: the width "
        "DSBD chose per verified level (W for beam); beams carried / position: the beams held "
        "at each new token position, finished ones included (a level that ends a round holds "
        "its refill, W with the reference's rule, and a round that passes every level holds "
        "the bonus level's W), so DSBD's search is wider than its mean width says.",
        MEMORY_NOTE,
        ENERGY_NOTE,
        LOGLIK_NOTE,
        f"Target forwards / token = 1 / tau, with {TAU_NOTE}",
        "rule: the generation rule, full length = to EOS or the dataset's max_new_tokens, every "
        "token counted, as the DSBD paper's evaluation runs (the answer is cut only for "
        "scoring); to answer = stopped at the token that ends the task's answer; n: questions "
        "run. Speeds and energies compare only at equal lengths (a run stopped at the answer "
        "is a few tokens long, where the prefill dominates): no ratio between runs of "
        f"different rules is printed ({NOT_COMPARABLE}).",
    ]


def dsbd_table(tidy: pd.DataFrame, pair: str, dataset: str) -> str:
    """Markdown: one block per temperature > 0 at which beam sampling ran."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    label = next(iter(QUALITY.get(dataset, ())), (None, "quality"))[1]
    header = _header(dataset)
    lines = []
    reasons = set()
    different: list[str] = []
    qualities: list[float] = []
    temperatures = sorted(t for t in rows["temperature"].astype(float).unique() if t > 0)
    for temperature in temperatures:
        at_t = rows[np.isclose(rows["temperature"].astype(float), temperature)]
        summary = method_summary(at_t, dataset)
        if summary.empty or "beam" not in set(summary["algorithm"]):
            continue
        lines += [f"#### T = {temperature:g}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        j_of = dict(zip(summary["method"], summary["j_per_token"], strict=True))
        rule_of = dict(zip(summary["method"], summary["rule"], strict=True))
        for r in summary.itertuples():
            reference = beam_reference(at_t, r.width)
            if r.method == reference:
                speed, energy = "1.00", "1.00" if r.j_per_token else "n/a"
            elif not comparable(r.rule, rule_of[reference]):
                speed = energy = NOT_COMPARABLE
                different.append(
                    f"{r.method} at T={temperature:g}: "
                    f"{rule_note(r.rule, rule_of[reference], reference)}"
                )
            else:
                ratio = _ratio(tidy, r.method, reference, pair, dataset, temperature)
                speed = _ci(ratio)
                energy = "n/a"
                if j_of.get(reference) and r.j_per_token:
                    # Paired like the speedup, not one run's J/token over the other's: a
                    # question's energy meets the reference's from the same timing group.
                    where = (pair, dataset, temperature)
                    joules = _ratio(tidy, r.method, reference, *where, metric="energy")
                    if joules["measured"] is not None:
                        energy = f"{joules['measured']:.2f}"
            if r.energy_reason:
                reasons.add(r.energy_reason)
            if r.quality is not None and not np.isnan(r.quality):
                qualities.append(r.quality)
            lines.append("| " + " | ".join(_cells(r, reference, speed, energy, dataset)) + " |")
        lines.append("")
    if not lines:
        return f"{pair}, {dataset}: beam sampling did not run at T > 0.\n"
    notes = _notes(pair, dataset)
    if reasons:
        notes.append(f"{ENERGY_COLUMN} n/a: " + "; ".join(sorted(reasons)) + ".")
    if different:
        notes.append(f"speedup and energy ratio {NOT_COMPARABLE}: " + "; ".join(different) + ".")
    if qualities and max(qualities) < FLOOR_QUALITY:
        notes.append(
            f"Every method scores below {FLOOR_QUALITY:g}% {label} here: at this floor the "
            "quality columns cannot show a difference between methods."
        )
    # Blank lines between notes: each stays its own paragraph when the Markdown is rendered.
    return "\n".join(lines) + "\n" + "\n\n".join(notes) + "\n"


def _ci(result: dict) -> str:
    if result["measured"] is None:
        return "-"
    return f"{result['measured']:.2f} [{result['low']:.2f}, {result['high']:.2f}]"


def _num(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return fmt.format(value)


def threshold_points(tidy: pd.DataFrame, pair: str) -> pd.DataFrame:
    """One row per (dataset, temperature, dsbd entry): its w_thres, min width, the beam entry
    it is compared with, its rule, speedup over that beam (totals, as the table; NaN where the
    rules differ, `comparable` False) with the interval, and quality (EM or EA, and F1 on
    SQuAD; NaN elsewhere) beside beam's; for the w_thres figure."""
    points = []
    rows = tidy[tidy["pair"] == pair]
    keys = ["dataset", "temperature"]
    for (dataset, temperature), group in rows.groupby(keys):
        temperature = float(temperature)
        summary = method_summary(group, dataset)
        if summary.empty:
            continue
        quality = dict(zip(summary["method"], summary["quality"], strict=True))
        rule_of = dict(zip(summary["method"], summary["rule"], strict=True))
        f1 = summary.set_index("method")["f1"] if "f1" in summary else pd.Series(dtype=float)
        for r in summary[summary["algorithm"] == "dsbd"].itertuples():
            reference = beam_reference(group, r.width)
            if reference is None:
                continue
            same = comparable(r.rule, rule_of[reference])
            ratio = (
                _ratio(tidy, r.method, reference, pair, dataset, temperature)
                if same
                else {"measured": None, "low": None, "high": None}
            )
            params = _params(group[group["method"] == r.method])
            points.append(
                {
                    "dataset": dataset,
                    "temperature": temperature,
                    "method": r.method,
                    "reference": reference,
                    "rule": r.rule,
                    "comparable": same,
                    "width": r.width,
                    "w_thres": r.w_thres,
                    "min_width": params.get("min_width"),
                    "speedup": ratio["measured"],
                    "low": ratio["low"],
                    "high": ratio["high"],
                    "quality": r.quality,
                    "beam_quality": quality.get(reference),
                    "f1": f1.get(r.method, float("nan")),
                    "beam_f1": f1.get(reference, float("nan")),
                    "mean_width": r.mean_width,
                    "beams_carried": r.beams_carried,
                }
            )
    return pd.DataFrame(points)


def widths_by_level(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean width DSBD chose at each level of a round (1 = first), per method and dataset."""
    out = []
    dsbd = prepare(tidy)
    dsbd = dsbd[dsbd["algorithm"] == "dsbd"]
    for (method, dataset), group in dsbd.groupby(["method", "dataset"]):
        per_level: dict[int, list[int]] = {}
        for levels in _widths(group):
            for level, width in enumerate(levels, start=1):
                per_level.setdefault(level, []).append(width)
        for level, widths in sorted(per_level.items()):
            out.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "level": level,
                    "mean_width": float(np.mean(widths)),
                    "levels": len(widths),
                }
            )
    return pd.DataFrame(out, columns=["method", "dataset", "level", "mean_width", "levels"])
