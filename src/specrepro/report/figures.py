"""Report figures (PNG + PDF): speedup, accepted lengths, time split, drafted depth.

Figures are built on `matplotlib.figure.Figure` directly rather than through pyplot, so
no backend is switched and no figure is registered globally: nothing needs closing and a
notebook that imports this module keeps its inline backend.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from specrepro.report.aggregate import rule_note
from specrepro.report.ddd import PAPER_THRESHOLD

SERIES_KEYS = ["pair", "method", "temperature", "dtype"]
# A method keeps its colour in every figure and panel, whichever others it stands beside:
# the default config's methods have fixed ones (a family in shades of one hue) ...
METHOD_COLORS = {
    "vanilla": "#7f7f7f",
    "vanilla-aa": "#c7c7c7",
    "sps": "#1f77b4",
    "eagle": "#2ca02c",
    "eagle2": "#ff7f0e",
    "eagle2-cpu": "#ffbb78",
    "ddd": "#d62728",
    "ddd-cpu": "#ff9896",
    "beam": "#9467bd",
    "dsbd": "#8c564b",
    "dsbd-t0p9": "#c49c94",
}
# ... and any other name hashes into a second palette (md5, not hash(): that is salted per
# process, and the colour must not change between runs).
OTHER_COLORS = [to_hex(c) for c in colormaps["tab20b"].colors]
HATCHES = ["", "//", "..", "xx", "\\\\", "++"]  # series of one method in one panel
QUALITY_LABELS = {"squad": "EM", "spider": "EA"}  # the first task score of each dataset
SPLIT_PARTS = [("frac_draft", "draft"), ("frac_verify", "verify"), ("frac_other", "other")]


def _format_key(column: str, value: object) -> str:
    return f"T={value:g}" if column == "temperature" else str(value)


def method_color(name: str) -> str:
    """The colour of a method (or any named series) in every figure."""
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    digest = hashlib.md5(name.encode()).digest()
    return OTHER_COLORS[int.from_bytes(digest[:4], "big") % len(OTHER_COLORS)]


def series_styles(frame: pd.DataFrame, labels: pd.Series) -> dict[str, dict[str, str]]:
    """Bar style per series label: its method's colour, and a hatch where one panel holds
    several series of the same method (other pairs, temperatures or dtypes)."""
    styles: dict[str, dict[str, str]] = {}
    seen: dict[str, int] = {}
    pairs = pd.DataFrame({"label": labels, "method": frame["method"].astype(str)})
    for label, method in (
        pairs.drop_duplicates("label").sort_values("label").itertuples(index=False)
    ):
        index = seen[method] = seen.get(method, -1) + 1
        styles[label] = {"color": method_color(method), "hatch": HATCHES[index % len(HATCHES)]}
    return styles


def series_labels(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Legend labels: the method plus only the other keys that vary, so labels stay short."""
    shown = [k for k in keys if k == "method" or frame[k].nunique(dropna=False) > 1]
    return frame.apply(lambda r: " ".join(_format_key(k, r[k]) for k in shown), axis=1)


def _save(fig: Figure, out_base: Path) -> list[Path]:
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    # with_suffix would eat a dot in the stem, e.g. "speedup_T0.7".
    paths = [out_base.with_name(out_base.name + ext) for ext in (".png", ".pdf")]
    # No timestamps in the files: a rerun on the same results gives byte-identical figures.
    metadata = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "Producer": None}}
    for path in paths:
        fig.savefig(path, dpi=150, metadata=metadata[path.suffix])
    return paths


def _interval_bars(y: np.ndarray, low: pd.Series, high: pd.Series) -> np.ndarray:
    """errorbar's yerr from an interval around y (no bar where the interval is missing)."""
    below = np.nan_to_num(y - low.to_numpy(float))
    above = np.nan_to_num(high.to_numpy(float) - y)
    return np.clip(np.vstack([below, above]), 0, None)


def _panels(n: int, width: float = 4.5, height: float = 3.5) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * max(n, 1), height), layout="constrained")
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    return fig, list(axes)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


def _legend_on_top(ax: Axes, ncols: int) -> None:
    # Headroom above the tallest bar keeps the legend off the data.
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
    ax.legend(fontsize="small", loc="upper center", ncols=max(1, min(ncols, 3)))


def _grouped_bars(
    ax: Axes,
    groups: list[str],
    heights: dict[str, list[float]],
    styles: dict[str, dict[str, str]],
    errors: dict | None = None,
    notes: dict[str, list[str]] | None = None,
) -> None:
    """Bars for each series side by side within each group on the x axis, in the series'
    style, optionally with a short note (e.g. the number of paired questions) at the foot of
    each bar."""
    positions = np.arange(len(groups))
    width = 0.8 / max(len(heights), 1)
    for i, (label, values) in enumerate(heights.items()):
        offset = (i - (len(heights) - 1) / 2) * width
        yerr = None if errors is None else errors[label]
        ax.bar(positions + offset, values, width, yerr=yerr, capsize=3, label=label,
               edgecolor="black", linewidth=0.3, **styles[label])  # fmt: skip
        for x, text in zip(positions + offset, (notes or {}).get(label, []), strict=False):
            ax.annotate(text, (x, 0), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, rotation=90)  # fmt: skip
    ax.set_xticks(positions, groups)


def _bar_note(row: pd.Series) -> str:
    if pd.notna(row["baseline_rule"]) and not row["comparable"]:
        return "rule \u2260"  # no bar: its baseline ran under another generation rule
    return "" if pd.isna(row["n_paired"]) else f"n={int(row['n_paired'])}"


def _speedup_panel(ax: Axes, rows: pd.DataFrame, datasets: list[str]) -> None:
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    if rows.empty:
        _empty(ax, "no speculative runs")
        ax.set_xticks(np.arange(len(datasets)), datasets)
        return
    rows = rows.assign(label=series_labels(rows, SERIES_KEYS))
    heights, errors, notes = {}, {}, {}
    for label, series in rows.groupby("label", sort=True):
        by_dataset = series.set_index("dataset").reindex(datasets)
        # summarise leaves the speedup of a run of another rule than its baseline's NaN.
        point = by_dataset["speedup"].to_numpy(dtype=float)
        heights[label] = point
        errors[label] = _interval_bars(point, by_dataset["speedup_low"], by_dataset["speedup_high"])
        notes[label] = [
            "" if pd.isna(row["method"]) else _bar_note(row) for _, row in by_dataset.iterrows()
        ]
    _grouped_bars(ax, datasets, heights, series_styles(rows, rows["label"]), errors, notes)
    _legend_on_top(ax, len(heights))


def _rule_caption(rows: pd.DataFrame, baseline: str, width: int) -> str:
    """Which bars are absent because the run's rule differs from its baseline's, and why."""
    different = rows[rows["baseline_rule"].notna() & ~rows["comparable"].astype(bool)]
    notes = []
    for (rule, base_rule), group in different.groupby(["rule", "baseline_rule"], sort=True):
        runs = ", ".join(f"{r.method} T={r.temperature:g} {r.dataset}" for r in group.itertuples())
        notes.append(f"no bar (rule \u2260) for {runs}: {rule_note(rule, base_rule)} ({baseline})")
    # Wrapped to the figure's width: one panel is narrower than a note.
    return "\n".join(textwrap.fill(note, width) for note in notes)


def speedup_figure(summary: pd.DataFrame, out_base: Path, baseline: str = "vanilla") -> list[Path]:
    """Headline speedup (mean tokens/s over mean baseline tokens/s, EAGLE's estimator, the
    tables' "speedup, mean tok/s") with 95% CI bars by dataset and method, a panel per T."""
    datasets = sorted(summary["dataset"].astype(str).unique())
    temperatures = sorted(summary["temperature"].unique())
    fig, axes = _panels(len(temperatures))
    methods = summary[summary["method"] != baseline].assign(
        dataset=lambda f: f["dataset"].astype(str)
    )
    for ax, temperature in zip(axes, temperatures, strict=False):
        _speedup_panel(ax, methods[methods["temperature"] == temperature], datasets)
        ax.set_title(f"T = {temperature:g}")
        ax.set_ylabel(f"speedup over {baseline}, mean tok/s\n(mean tok/s / {baseline}'s)")
    caption = _rule_caption(methods, baseline, 70 * len(axes))
    if caption:
        fig.supxlabel(caption, fontsize=7)
    hardware = sorted({str(h) for h in summary.get("hardware", pd.Series(dtype=str)).dropna()})
    if hardware:
        fig.suptitle("; ".join(hardware), fontsize=8, y=0.995)
    return _save(fig, out_base)


def parse_lengths(cell: object) -> list[int]:
    """Accepted lengths from a JSON string or a list; empty for missing cells."""
    if isinstance(cell, str):
        return [int(v) for v in json.loads(cell)] if cell.strip() else []
    if isinstance(cell, list | tuple | np.ndarray):
        return [int(v) for v in cell]
    return []


def length_distribution(cells: pd.Series) -> np.ndarray:
    """Share of rounds committing k tokens, indexed by k (index 0 is always 0)."""
    lengths = [length for cell in cells for length in parse_lengths(cell)]
    if not lengths:
        return np.zeros(1)
    counts = np.bincount(np.asarray(lengths, dtype=int))
    return counts / counts.sum()


def verification_lengths(tidy: pd.DataFrame) -> pd.Series:
    """Each row's accepted lengths without its prefill rounds (the first target forwards minus
    verification forwards of them), so that the histogram's mean is tau as the tables define
    it. Rows without forward counts keep every round."""
    lengths = tidy["accept_lengths"]
    if "verify_forwards" not in tidy or "target_forwards" not in tidy:
        return lengths
    prefill = pd.to_numeric(tidy["target_forwards"], errors="coerce") - pd.to_numeric(
        tidy["verify_forwards"], errors="coerce"
    )
    return pd.Series(
        [
            parse_lengths(cell)[int(skip) if pd.notna(skip) and skip > 0 else 0 :]
            for cell, skip in zip(lengths, prefill, strict=True)
        ],
        index=tidy.index,
        dtype=object,
    )


def _length_panel(ax: Axes, rows: pd.DataFrame, column: str = "accept_lengths") -> None:
    labels = series_labels(rows, SERIES_KEYS)
    distributions = {
        label: length_distribution(series[column])
        for label, series in rows.groupby(labels, sort=True)
    }
    distributions = {k: v for k, v in distributions.items() if v.sum() > 0}
    if not distributions:
        _empty(ax, "no rounds recorded")
        return
    longest = max(len(v) for v in distributions.values())
    padded = {k: np.pad(v, (0, longest - len(v)))[1:] for k, v in distributions.items()}
    _grouped_bars(ax, [str(k) for k in range(1, longest)], padded, series_styles(rows, labels))
    _legend_on_top(ax, len(padded))


def accepted_length_figure(
    tidy: pd.DataFrame, out_base: Path, baseline: str = "vanilla"
) -> list[Path]:
    """Normalised histogram of tokens committed per verification forward (prefill left out),
    a panel per dataset."""
    datasets = sorted(tidy["dataset"].astype(str).unique())
    fig, axes = _panels(len(datasets))
    methods = tidy[tidy["method"] != baseline]
    methods = methods.assign(accept_lengths=verification_lengths(methods))
    for ax, dataset in zip(axes, datasets, strict=False):
        rows = methods[methods["dataset"].astype(str) == dataset]
        if rows.empty:
            _empty(ax, "no speculative runs")
        else:
            _length_panel(ax, rows)
        ax.set_title(dataset)
        ax.set_xlabel("tokens committed per verification forward (mean = tau)")
        ax.set_ylabel("share of rounds")
    return _save(fig, out_base)


def draft_depth_figure(tidy: pd.DataFrame, out_base: Path) -> list[Path]:
    """Share of rounds by the number of draft levels drafted, per tree method, a panel per
    dataset that ran one: EAGLE and EAGLE-2 always draft their depth; DDD stops at a check
    level."""
    has_levels = tidy.get("draft_levels", pd.Series("[]", index=tidy.index)).fillna("[]") != "[]"
    trees = tidy[has_levels]
    # A panel per dataset with tree-method runs (one empty panel says there are none).
    datasets = sorted(trees["dataset"].astype(str).unique()) or ["(none)"]
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=False):
        rows = trees[trees["dataset"].astype(str) == dataset]
        if rows.empty:
            _empty(ax, "no tree-method runs")
        else:
            _length_panel(ax, rows, "draft_levels")
        ax.set_title(dataset)
        ax.set_xlabel("draft levels per round (depth)")
        ax.set_ylabel("share of rounds")
    return _save(fig, out_base)


def _split_panel(ax: Axes, rows: pd.DataFrame) -> None:
    labels = series_labels(rows, SERIES_KEYS).tolist()
    positions = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for column, name in SPLIT_PARTS:
        share = np.nan_to_num(rows[column].to_numpy(dtype=float))
        ax.bar(positions, share, 0.6, bottom=bottom, label=name)
        bottom += share
    ax.set_xticks(positions, labels, rotation=30, ha="right")


def time_split_figure(summary: pd.DataFrame, out_base: Path) -> list[Path]:
    """Stacked draft / verify / other shares of wall time per configuration and dataset."""
    datasets = sorted(summary["dataset"].astype(str).unique())
    fig, axes = _panels(len(datasets), height=4.0)
    for ax, dataset in zip(axes, datasets, strict=False):
        _split_panel(ax, summary[summary["dataset"].astype(str) == dataset])
        _legend_on_top(ax, len(SPLIT_PARTS))
        ax.set_title(dataset)
        ax.set_ylabel("share of wall time")
    return _save(fig, out_base)


SWEEP_PANELS = [
    ("speedup", "speedup, mean tok/s"),
    ("tau", "tau (95% CI over questions)"),
    ("mean_levels", "levels"),
]


def _sweep_bars(line: pd.DataFrame, column: str, y: np.ndarray) -> np.ndarray | None:
    if column == "mean_levels":
        return None
    return _interval_bars(y, line[f"{column}_low"], line[f"{column}_high"])


def _sweep_references(ax: Axes, references: pd.DataFrame, column: str) -> None:
    """Each EAGLE-2 run of the group as a horizontal line in its method's colour."""
    for r in references.itertuples():
        value = getattr(r, column)
        if pd.notna(value):
            ax.axhline(float(value), color=method_color(r.method), linestyle="-.",
                       linewidth=1.2, label=f"{r.method} (EAGLE-2)")  # fmt: skip


def ddd_sweep_figure(points: pd.DataFrame, out_base: Path, title: str) -> list[Path]:
    """Speedup and tau (with their 95% intervals) and mean drafted levels against the
    threshold x, one line per set of check levels S, n beside each point, the paper's x as a
    vertical line and the EAGLE-2 runs of the group as horizontal ones (from
    report.ddd.sweep_points)."""
    fig, axes = _panels(3)
    sweep = points[~points["reference"].astype(bool)] if len(points) else points
    references = points[points["reference"].astype(bool)] if len(points) else points
    for ax, (column, label) in zip(axes, SWEEP_PANELS, strict=True):
        ax.set_xlabel("threshold x on H")
        ax.set_ylabel(label)
        if sweep.empty:
            _empty(ax, "no DDD runs")
            continue
        for (levels, algorithm), line in sweep.groupby(["check_levels", "algorithm"], sort=True):
            line = line.sort_values("threshold")
            x, y = line["threshold"].to_numpy(float), line[column].to_numpy(float)
            name = f"S={levels}" + (" (async)" if algorithm == "ddd_async" else "")
            ax.errorbar(x, y, yerr=_sweep_bars(line, column, y), marker="o", capsize=3,
                        label=name, color=method_color(name))  # fmt: skip
            if column == "tau":
                for xi, yi, n in zip(x, y, line["questions"], strict=True):
                    ax.annotate(f"n={n}", (xi, yi), xytext=(3, -10), textcoords="offset points",
                                fontsize=6)  # fmt: skip
        _sweep_references(ax, references, column)
        ax.axvline(PAPER_THRESHOLD, color="black", linestyle=":", linewidth=1,
                   label=f"paper's x = {PAPER_THRESHOLD:g}")  # fmt: skip
        if column == "speedup":
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.legend(fontsize="small")
    different = sweep[~sweep["comparable"].astype(bool)] if len(sweep) else sweep
    if len(different):
        fig.supxlabel(f"no speedup point for {', '.join(different['method'])}: different "
                      "generation rule from the baseline", fontsize=7)  # fmt: skip
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def _method_points(
    ax: Axes, line: pd.DataFrame, x: np.ndarray, y: np.ndarray, marker: str = "o"
) -> None:
    """Each point in its method's colour, each method in the legend once."""
    named = set(ax.get_legend_handles_labels()[1])
    for method, xi, yi in zip(line["method"].astype(str), x, y, strict=True):
        ax.scatter([xi], [yi], color=method_color(method), marker=marker, edgecolors="black",
                   linewidths=0.5, zorder=3, label=None if method in named else method)  # fmt: skip
        named.add(method)


def _beam_line(ax: Axes, values: pd.Series, color: str, label: str, style: str = "--") -> None:
    """Beam sampling's score, one per (W, T), as a horizontal line in its series' colour."""
    present = values.dropna()
    if len(present):
        ax.axhline(float(present.iloc[0]), color=color, linestyle=style, linewidth=1, label=label)


def dsbd_threshold_figure(points: pd.DataFrame, out_base: Path, title: str) -> list[Path]:
    """DSBD against w_thres, a column per dataset: speedup over beam sampling of the same width
    (totals, the DSBD paper's estimator, with its interval) on top, task quality below (EM or
    EA, and F1 dotted on SQuAD) with beam sampling's as a dashed line (from
    report.dsbd.threshold_points). One line per (W, min width, T)."""
    datasets = sorted(points["dataset"].unique()) if not points.empty else ["(none)"]
    fig = Figure(figsize=(4.5 * len(datasets), 6.0), layout="constrained")
    grid = fig.subplots(2, len(datasets), squeeze=False)
    for col, dataset in enumerate(datasets):
        score = QUALITY_LABELS.get(dataset, "quality")
        top, bottom = grid[0][col], grid[1][col]
        top.set_title(dataset)
        top.set_ylabel("speedup over beam, totals\n(total tok/s ratio)")
        bottom.set_ylabel("quality (%): EM, F1 (SQuAD) / EA (Spider)")
        bottom.set_xlabel("w_thres")
        rows = points[points["dataset"] == dataset] if not points.empty else points
        if rows.empty:
            _empty(top, "no DSBD runs next to beam sampling")
            _empty(bottom, "no DSBD runs next to beam sampling")
            continue
        keys = ["width", "min_width", "temperature"]
        for (width, min_width, temperature), line in rows.groupby(keys, sort=True, dropna=False):
            line = line.sort_values("w_thres")
            x = line["w_thres"].to_numpy(float)
            y = line["speedup"].to_numpy(float)
            yerr = _interval_bars(y, line["low"], line["high"])
            name = f"W={width:g} min={min_width} T={temperature:g}"
            # A line joins several methods (one per w_thres): it takes its setting's colour,
            # each point its method's.
            color = method_color(name)
            top.errorbar(x, y, yerr=yerr, capsize=3, color=color, label=name)
            _method_points(top, line, x, y)
            quality = line["quality"].to_numpy(float)
            bottom.plot(x, quality, color=color, label=f"{score} {name}")
            _method_points(bottom, line, x, quality)
            beam = str(line["reference"].iloc[0])
            beam_color = method_color(beam)
            _beam_line(bottom, line["beam_quality"], beam_color, f"{beam} {score} W={width:g}")
            if "f1" in line and line["f1"].notna().any():
                f1 = line["f1"].to_numpy(float)
                bottom.plot(x, f1, linestyle=":", color=color, label=f"F1 {name}")
                _method_points(bottom, line, x, f1, "s")
                _beam_line(bottom, line["beam_f1"], beam_color, f"{beam} F1 W={width:g}", ":")
        top.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        top.legend(fontsize="small")
        bottom.legend(fontsize="small")
    different = points[~points["comparable"].astype(bool)] if len(points) else points
    if len(different):
        runs = ", ".join(
            f"{r.method} T={r.temperature:g} {r.dataset}" for r in different.itertuples()
        )
        fig.supxlabel(f"no speedup point for {runs}: different generation rule from the beam "
                      "entry", fontsize=7)  # fmt: skip
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def dsbd_width_figure(widths: pd.DataFrame, out_base: Path, title: str) -> list[Path]:
    """The width DSBD chose at each level of a round, mean over rounds, a panel per dataset
    (from report.dsbd.widths_by_level); the bars' labels count the levels verified."""
    datasets = sorted(widths["dataset"].unique()) if not widths.empty else ["(none)"]
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        ax.set_title(dataset)
        ax.set_xlabel("level within a round")
        ax.set_ylabel("mean width chosen")
        rows = widths[widths["dataset"] == dataset] if not widths.empty else widths
        if rows.empty:
            _empty(ax, "no DSBD runs")
            continue
        methods = sorted(rows["method"].unique())
        step = 0.8 / len(methods)
        for i, method in enumerate(methods):
            line = rows[rows["method"] == method].sort_values("level")
            x = line["level"].to_numpy(float) + (i - (len(methods) - 1) / 2) * step
            bars = ax.bar(x, line["mean_width"].to_numpy(float), step, label=method,
                          color=method_color(method))  # fmt: skip
            ax.bar_label(bars, labels=[str(n) for n in line["levels"]], fontsize=6)
        ax.set_xticks(sorted(rows["level"].unique()))
        _legend_on_top(ax, len(methods))
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)
