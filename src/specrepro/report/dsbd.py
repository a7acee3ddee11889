"""The DSBD paper's comparison, one table per pair and dataset: every method that ran at T > 0
against beam sampling of the same width (tokens/s, speedup, J/token, energy ratio, task quality,
the width DSBD used, KV memory, target forwards per token); and the w_thres and per-level
width views behind the two DSBD figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from specrepro.report.aggregate import per_question, prepare
from specrepro.report.claims import measure, query

QUALITY = {"squad": ("em", "EM"), "spider": ("exec_match", "EA")}
ORDER = ("beam", "dsbd", "sps", "vanilla")
FLOOR_QUALITY = 5.0  # % below which a task score says nothing about a method's quality


def _params(group: pd.DataFrame) -> dict:
    return json.loads(group["params"].iloc[0]) if "params" in group else {}


def _widths(group: pd.DataFrame) -> list[list[int]]:
    cells = group["level_widths"].fillna("[]") if "level_widths" in group else []
    return [levels for cell in cells for levels in json.loads(cell)]


def beam_reference(rows: pd.DataFrame, width: int | None) -> str | None:
    """The beam-sampling entry to compare with: the one of equal width, else the first."""
    beams = rows[rows["algorithm"] == "beam"]
    if beams.empty:
        return None
    by_width = {m: _params(g).get("width") for m, g in beams.groupby("method")}
    same = sorted(m for m, w in by_width.items() if w == width)
    return same[0] if same else sorted(by_width)[0]


def _ratio(tidy: pd.DataFrame, method: str, reference: str, pair, dataset, temperature) -> dict:
    return measure(tidy, query("ratio", method, pair, dataset, temperature, reference=reference))


def method_summary(rows: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per method of one pair, dataset and temperature: the table's columns before the
    comparisons."""
    column = QUALITY.get(dataset, (None, None))[0]
    out = []
    for method, group in prepare(rows).groupby("method"):
        params = _params(group)
        algorithm = group["algorithm"].iloc[0]
        tokens = group["new_tokens"].sum()
        energy = group["energy_j"]
        widths = [w for levels in _widths(group) for w in levels]
        kv = group["kv_bytes_peak"]
        if "kv_cache_bytes" in group:
            kv = kv.fillna(pd.to_numeric(group["kv_cache_bytes"], errors="coerce"))
        questions = per_question(group)
        out.append(
            {
                "method": method,
                "algorithm": algorithm,
                "width": params.get("width"),
                "w_thres": params.get("w_thres"),
                "tokens_per_s": questions["tokens_per_s"].mean(),
                "j_per_token": energy.sum() / tokens if energy.notna().all() and tokens else None,
                "energy_reason": group["energy_reason"].dropna().iloc[0]
                if "energy_reason" in group and group["energy_reason"].notna().any()
                else None,
                "quality": 100 * group[column].mean()
                if column and group[column].notna().any()
                else None,
                "mean_width": float(np.mean(widths)) if widths else params.get("width"),
                "kv_mb": kv.mean() / 2**20 if kv.notna().any() else None,
                "forwards_per_token": group["target_forwards"].sum() / tokens if tokens else None,
                "questions": len(questions),
            }
        )
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    rank = {a: i for i, a in enumerate(ORDER)}
    frame["_rank"] = frame["algorithm"].map(lambda a: rank.get(a, len(ORDER)))
    return frame.sort_values(["_rank", "width", "method"], na_position="last").drop(columns="_rank")


def dsbd_table(tidy: pd.DataFrame, pair: str, dataset: str) -> str:
    """Markdown: one block per temperature > 0 at which beam sampling ran."""
    rows = tidy[(tidy["pair"] == pair) & (tidy["dataset"] == dataset)]
    label = QUALITY.get(dataset, (None, "quality"))[1]
    header = [
        "method", "W", "tokens/s", "speedup vs beam [95% CI]", "J/token", "energy ratio vs beam",
        f"{label} (%)", "mean width", "KV MB", "target forwards / token", "questions",
    ]  # fmt: skip
    lines = []
    reasons = set()
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
        for r in summary.itertuples():
            reference = beam_reference(at_t, r.width)
            if r.method == reference:
                speed, energy = "1.00", "1.00" if r.j_per_token else "n/a"
            else:
                ratio = _ratio(tidy, r.method, reference, pair, dataset, temperature)
                speed = _ci(ratio)
                ref_j = j_of.get(reference)
                energy = f"{ref_j / r.j_per_token:.2f}" if ref_j and r.j_per_token else "n/a"
            if r.energy_reason:
                reasons.add(r.energy_reason)
            if r.quality is not None and not np.isnan(r.quality):
                qualities.append(r.quality)
            cells = [
                f"{r.method}" + (f" (vs {reference})" if r.method != reference else ""),
                _num(r.width, "{:.0f}"), f"{r.tokens_per_s:.2f}", speed,
                _num(r.j_per_token, "{:.3f}"), energy, _num(r.quality, "{:.1f}"),
                _num(r.mean_width, "{:.2f}"), _num(r.kv_mb, "{:.1f}"),
                _num(r.forwards_per_token, "{:.2f}"), str(r.questions),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if not lines:
        return f"{pair}, {dataset}: beam sampling did not run at T > 0.\n"
    notes = [
        f"{pair}, {dataset}. Speedup vs beam: mean tokens/s over the mean tokens/s of beam "
        "sampling of the same width W (else the first beam entry) on the questions both ran, "
        "95% bootstrap interval over questions. Energy ratio: beam's J/token over the method's "
        f"(how many times less energy). {label}: "
        + ("exact match of the first answer line." if dataset == "squad" else "")
        + ("execution accuracy of the SQL." if dataset == "spider" else "")
        + " Mean width: the width DSBD chose per verified level (W for beam). KV MB: peak KV "
        "cache of target and draft, mean over questions. Target forwards / token: target "
        "forward passes per output token.",
    ]
    if reasons:
        notes.append("J/token n/a: " + "; ".join(sorted(reasons)) + ".")
    if qualities and max(qualities) < FLOOR_QUALITY:
        notes.append(
            f"Every method scores below {FLOOR_QUALITY:g}% {label} here: at this floor the "
            "quality columns cannot show a difference between methods."
        )
    return "\n".join(lines + notes) + "\n"


def _ci(result: dict) -> str:
    if result["measured"] is None:
        return "-"
    return f"{result['measured']:.2f} [{result['low']:.2f}, {result['high']:.2f}]"


def _num(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return fmt.format(value)


def threshold_points(tidy: pd.DataFrame, pair: str) -> pd.DataFrame:
    """One row per (dataset, temperature, dsbd entry): its w_thres, min width, speedup over
    beam of the same width with the interval, and quality; for the w_thres figure."""
    points = []
    rows = tidy[tidy["pair"] == pair]
    keys = ["dataset", "temperature"]
    for (dataset, temperature), group in rows.groupby(keys):
        temperature = float(temperature)
        summary = method_summary(group, dataset)
        if summary.empty:
            continue
        quality = dict(zip(summary["method"], summary["quality"], strict=True))
        for r in summary[summary["algorithm"] == "dsbd"].itertuples():
            reference = beam_reference(group, r.width)
            if reference is None:
                continue
            ratio = _ratio(tidy, r.method, reference, pair, dataset, temperature)
            params = _params(group[group["method"] == r.method])
            points.append(
                {
                    "dataset": dataset,
                    "temperature": temperature,
                    "method": r.method,
                    "width": r.width,
                    "w_thres": r.w_thres,
                    "min_width": params.get("min_width"),
                    "speedup": ratio["measured"],
                    "low": ratio["low"],
                    "high": ratio["high"],
                    "quality": r.quality,
                    "beam_quality": quality.get(reference),
                    "mean_width": r.mean_width,
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
