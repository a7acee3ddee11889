"""Per-dataset result tables in Markdown and LaTeX (booktabs), written without templates."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from specrepro.metrics.scorers import BUILTIN_SCORERS, get_scorer
from specrepro.report.aggregate import RULE_NOTE, SPEEDUP_ESTIMATORS, rule_note

Row = pd.Series
NOT_COMPARED = "\u2013"  # en dash: a cell with no comparison to make, unlike n/a (not measured)
NOT_COMPARABLE = "-"  # a ratio between runs of different generation rules, never printed
# One wording per quantity, shared by every table (dataset, DDD, DSBD) so that the same label
# always means the same estimator.
TOKS_TOTALS = "tok/s (totals)"
# NVML measures the GPU board, not the machine: the label says so wherever energy is shown.
ENERGY_COLUMN = "GPU board J/token"
TOKS_TOTALS_NOTE = (
    f"{TOKS_TOTALS}: all new tokens / all wall seconds of the configuration (every question, "
    "turn and seed pooled), the DSBD paper's estimator."
)
TAU_NOTE = (
    "tau = tokens committed by verification forwards / verification forwards (prefill "
    "excluded, bonus token included), one definition for every method."
)
MEMORY_NOTE = (
    "KV peak (MiB): the largest over questions and turns of the KV cache peak of one "
    "generation (every model's live KV cache, each at its own peak, summed), the same "
    "quantity for every method; peak device MiB: the largest measured peak of device memory "
    "(weights and activations included), n/a where not measured (CPU). MiB = 1,048,576 bytes."
)
ENERGY_NOTE = (
    "GPU board J/token: the energy NVML reports for the GPU board (its energy counter, or its "
    "power samples where the counter is missing) over the timed generations, per new token; "
    "the board alone, not the whole machine (CPU, host memory, fans and power supply excluded)."
)
LOGLIK_NOTE = (
    "target log-lik/token: the target model's mean log-probability per generated token (at "
    "T=1), mean over turns; a quality signal for every method, dataset and temperature."
)


@dataclass(frozen=True)
class Column:
    markdown: str
    latex: str
    align: str  # LaTeX column alignment
    cell: Callable[[Row], str]


def _number(value: float, fmt: str = "{:.2f}") -> str:
    return "n/a" if pd.isna(value) else fmt.format(value)


def _percent(value: float) -> str:
    return _number(value * 100 if pd.notna(value) else value, "{:.1f}")


def _with_ci(row: Row, prefix: str) -> str:
    point, low, high = row[prefix], row[f"{prefix}_low"], row[f"{prefix}_high"]
    if pd.isna(point):
        return "n/a"
    if pd.isna(low) or pd.isna(high):
        return f"{point:.2f}"
    return f"{point:.2f} [{low:.2f}, {high:.2f}]"


def incomparable(row: Row) -> bool:
    """A run whose baseline ran under another generation rule (no baseline at all is n/a)."""
    return pd.notna(row["baseline_rule"]) and not row["comparable"]


def _speedup(row: Row, prefix: str) -> str:
    return NOT_COMPARABLE if incomparable(row) else _with_ci(row, prefix)


def _count(value: float) -> str:
    return "n/a" if pd.isna(value) else str(int(value))


def _lossless(row: Row, baseline: str) -> str:
    # The baseline is what the others are compared with, never with itself (an A/A control
    # entry under another name is compared and shows its rate); token-identical output is only
    # expected under greedy decoding.
    if row["method"] == baseline or row["temperature"] != 0:
        return NOT_COMPARED
    return _percent(row["lossless_match_rate"])


def _mib(value: float) -> str:
    return _number(value, "{:.1f}")


BASE_COLUMNS = [
    Column("pair", "pair", "l", lambda r: str(r["pair"])),
    Column("method", "method", "l", lambda r: str(r["method"])),
    Column("T", "$T$", "r", lambda r: f"{r['temperature']:g}"),
    Column("rule", "rule", "l", lambda r: str(r["rule"])),
    Column("n", "$n$", "r", lambda r: _count(r["n_questions"])),
    Column(TOKS_TOTALS, TOKS_TOTALS, "r", lambda r: _number(r["tokens_per_s"], "{:.1f}")),
    Column(
        "speedup, mean tok/s [95% CI]",
        "speedup, mean tok/s [95\\% CI]",
        "r",
        lambda r: _speedup(r, "speedup"),
    ),
    Column(
        "speedup, totals [95% CI]",
        "speedup, totals [95\\% CI]",
        "r",
        lambda r: _speedup(r, "speedup_totals"),
    ),
    Column("paired", "paired", "r", lambda r: _count(r["n_paired"])),
    Column("tau", "$\\tau$", "r", lambda r: _number(r["tau"])),
    Column("KV peak (MiB)", "KV peak (MiB)", "r", lambda r: _mib(r["kv_peak_mib"])),
    Column("peak device MiB", "peak device MiB", "r", lambda r: _mib(r["peak_device_mib"])),
    Column(ENERGY_COLUMN, ENERGY_COLUMN, "r", lambda r: _number(r["j_per_token"], "{:.3f}")),
]
QUALITY_COLUMNS = {
    "em": Column("EM (%)", "EM (\\%)", "r", lambda r: _percent(r["em"])),
    "f1": Column("F1 (%)", "F1 (\\%)", "r", lambda r: _percent(r["f1"])),
    "exec_acc": Column("EA (%)", "EA (\\%)", "r", lambda r: _percent(r["exec_acc"])),
    "n_exec_excluded": Column(
        "gold failed", "gold failed", "r", lambda r: _count(r["n_exec_excluded"])
    ),
}
LOGLIK_COLUMN = Column(
    "target log-lik/token", "target log-lik/token", "r", lambda r: _number(r["target_loglik"])
)
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    NOT_COMPARED: "--",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _quality_metrics(dataset: str, rows: pd.DataFrame, scorer: str | None = None) -> list[str]:
    """The quality columns the dataset's scorer declares (a built-in dataset's own when none is
    given); without either (a tidy table from before scorers were named), the scores the rows
    carry."""
    name = scorer or BUILTIN_SCORERS.get(dataset)
    if name is not None:
        return list(get_scorer(name).table_columns)
    return [m for m in QUALITY_COLUMNS if m in rows and rows[m].notna().any()]


def scorers_of(tidy: pd.DataFrame) -> dict[str, str]:
    """{dataset: scorer name} as the tidy table's `scorer` column names them."""
    if "scorer" not in tidy:
        return {}
    named = tidy.dropna(subset=["scorer"])
    return dict(zip(named["dataset"].astype(str), named["scorer"].astype(str), strict=True))


def lossless_column(baseline: str) -> Column:
    return Column("lossless (%)", "lossless (\\%)", "r", lambda r: _lossless(r, baseline))


def table_columns(
    dataset: str, rows: pd.DataFrame, baseline: str = "vanilla", scorer: str | None = None
) -> list[Column]:
    """The columns shown for one dataset: speed, memory, energy, its scorer's quality columns,
    the target's log-likelihood, lossless."""
    quality = [QUALITY_COLUMNS[m] for m in _quality_metrics(dataset, rows, scorer)]
    return [*BASE_COLUMNS, *quality, LOGLIK_COLUMN, lossless_column(baseline)]


def _energy_footnote(reason: object) -> str:
    # A reason read back from CSV may be NaN rather than None.
    if pd.isna(reason) or not str(reason).strip():
        return "energy not measured (no reason recorded)"
    reason = str(reason)
    if reason.startswith("energy not measured"):
        return reason
    return f"energy not measured: {reason}"


def table_footnotes(rows: pd.DataFrame, baseline: str) -> list[str]:
    """What the speedup columns are, which questions were not paired, why cells read n/a."""
    hardware = sorted({str(h) for h in rows.get("hardware", pd.Series(dtype=str)).dropna()})
    notes = [f"Measured on {'; '.join(hardware)}."] if hardware else []
    notes += [
        RULE_NOTE,
        TOKS_TOTALS_NOTE,
        f"speedup, mean tok/s: {SPEEDUP_ESTIMATORS['speedup']}; "
        f"speedup, totals: {SPEEDUP_ESTIMATORS['speedup_totals']}. Both over the paired "
        f"questions (paired = questions run by the method and by {baseline} with the same "
        "pair, dataset, T, dtype and seed, timed in the same job: a group split into parts "
        f"repeats {baseline} in each), with 95% paired bootstrap intervals over questions.",
        TAU_NOTE,
        MEMORY_NOTE,
        ENERGY_NOTE,
        LOGLIK_NOTE,
        f"lossless: share of T=0 outputs token-identical to {baseline}'s; {NOT_COMPARED} for "
        f"{baseline} itself and at nonzero T, where nothing is compared.",
    ]
    if "n_exec_excluded" in rows and rows["n_exec_excluded"].notna().any():
        notes.append(
            "EA: execution accuracy over the questions whose gold query runs; gold failed: "
            "questions left out of EA because the gold query failed on its own database."
        )
    for _, row in rows.iterrows():
        alone, missing = row["n_unpaired_method"], row["n_unpaired_baseline"]
        if row["method"] == baseline or incomparable(row) or not (alone or missing):
            continue
        notes.append(
            f"{row['method']} at T={row['temperature']:g}: {int(alone)} question(s) without a "
            f"{baseline} run and {int(missing)} {baseline} question(s) without a "
            f"{row['method']} run are left out of the speedup."
        )
    no_energy = rows[rows["j_per_token"].isna()]
    reasons = dict.fromkeys(_energy_footnote(r) for r in no_energy["energy_reason"])
    notes += [f"{ENERGY_COLUMN} n/a: {reason}." for reason in reasons]
    different = rows["baseline_rule"].notna() & ~rows["comparable"].astype(bool)
    unmatched = rows[(rows["method"] != baseline) & rows["speedup"].isna() & ~different]
    if len(unmatched):
        notes.append(f"speedup n/a: no matching {baseline} run.")
    return notes + _rule_footnotes(rows[different], baseline)


def _rule_footnotes(rows: pd.DataFrame, baseline: str) -> list[str]:
    """One note per pair of rules: which runs print no speedup, and why."""
    notes = []
    for (rule, base_rule), group in rows.groupby(["rule", "baseline_rule"], sort=True):
        runs = ", ".join(f"{r.method} at T={r.temperature:g}" for r in group.itertuples())
        notes.append(
            f"speedup {NOT_COMPARABLE} ({runs}): {rule_note(rule, base_rule)} ({baseline}); "
            "tokens/s of runs of different lengths do not compare."
        )
    return notes


def _sorted_rows(rows: pd.DataFrame, baseline: str) -> pd.DataFrame:
    order = rows.assign(_not_base=rows["method"] != baseline)
    order = order.sort_values(["pair", "dtype", "temperature", "_not_base", "method"])
    return order.drop(columns="_not_base")


def markdown_table(
    dataset: str, rows: pd.DataFrame, columns: list[Column], notes: list[str]
) -> str:
    """A GitHub-flavoured Markdown table with notes below it."""
    header = "| " + " | ".join(c.markdown for c in columns) + " |"
    rule = "|" + "|".join("---:" if c.align == "r" else "---" for c in columns) + "|"
    body = [
        "| " + " | ".join(_markdown_escape(c.cell(row)) for c in columns) + " |"
        for _, row in rows.iterrows()
    ]
    lines = [f"### {dataset}", "", header, rule, *body, ""]
    lines += [f"{_markdown_escape(note)}  " for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def latex_table(dataset: str, rows: pd.DataFrame, columns: list[Column], notes: list[str]) -> str:
    """A booktabs LaTeX table with notes below it, inside a table float."""
    label = re.sub(r"[^A-Za-z0-9]+", "-", dataset)
    body = [
        " & ".join(latex_escape(c.cell(row)) for c in columns) + r" \\"
        for _, row in rows.iterrows()
    ]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{Speculative decoding results on {latex_escape(dataset)}.}}",
        rf"\label{{tab:{label}}}",
        r"\begin{tabular}{" + "".join(c.align for c in columns) + "}",
        r"\toprule",
        " & ".join(c.latex for c in columns) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if notes:
        lines += [r"\par\smallskip", r"{\footnotesize"]
        lines += [latex_escape(note) + r"\par" for note in notes]
        lines.append("}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _file_stem(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)


def write_dataset_tables(
    summary: pd.DataFrame,
    out_dir: Path,
    notes: dict[str, str] | None = None,
    baseline: str = "vanilla",
    scorers: dict[str, str] | None = None,
) -> list[Path]:
    """Write table_<dataset>.md/.tex per dataset and runs.csv; return the paths written.
    `scorers` ({dataset: scorer name}, scorers_of the tidy table) picks each dataset's quality
    columns; a built-in dataset it leaves out has its own."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes, scorers = notes or {}, scorers or {}
    written = []
    for dataset, rows in summary.groupby("dataset", sort=True):
        rows = _sorted_rows(rows, baseline)
        columns = table_columns(str(dataset), rows, baseline, scorers.get(str(dataset)))
        extra = [notes[dataset]] if dataset in notes else []
        below = extra + table_footnotes(rows, baseline)
        stem = out_dir / f"table_{_file_stem(str(dataset))}"
        md_path, tex_path = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".tex")
        md_path.write_text(markdown_table(str(dataset), rows, columns, below))
        tex_path.write_text(latex_table(str(dataset), rows, columns, below))
        written += [md_path, tex_path]
    runs = out_dir / "runs.csv"
    summary.to_csv(runs, index=False)
    return [*written, runs]
