"""The draft-design study's figures: latency against depth, TAR against task accuracy and
perplexity, speedup per draft at the fixed and the best gamma, speedup against gamma on the
tuning questions, and the drafts' training curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from specrepro.report.draft_design.markdown import fmt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Each figure imports report.figures (matplotlib) when it draws: the study's tables and the
# claims read this package without drawing, and must not pay for matplotlib.


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
) -> list[Path]:
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


def _latency_panel(ax: Axes, rows: list[dict], roles: dict[str, str]) -> None:
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


def tar_figure(table: pd.DataFrame, results: list[dict], out_base: Path, title: str) -> list[Path]:
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
            ax.set_title(f"{dataset}: r = {fmt(c['r'])} [{fmt(c['low'])}, {fmt(c['high'])}], "
                         f"n = {c['n']}", fontsize=8)  # fmt: skip
            label = f"draft alone: {corr['accuracy_metric']}" if key == "accuracy" else None
            ax.set_xlabel(label or "held-out perplexity")
            ax.set_ylabel("TAR (fixed gamma)")
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_base)


def throughput_figure(table: pd.DataFrame, out_base: Path, title: str) -> list[Path]:
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


def gamma_figure(sweep: pd.DataFrame, out_base: Path, title: str) -> list[Path]:
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


def training_figure(logs: dict[str, dict], out_base: Path, title: str) -> list[Path]:
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
