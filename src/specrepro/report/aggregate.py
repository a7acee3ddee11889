"""Aggregate the tidy per-(run, question, turn) table into one row per configuration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from specrepro.metrics.speed import paired_speedup_ci
from specrepro.report.pairing import TIMING_GROUP, align_reference, pool_questions, timing_groups

GROUP_KEYS = ["pair", "dataset", "method", "temperature", "dtype"]
# A method run is compared with the baseline run that differs from it only in the method.
MATCH_KEYS = ["pair", "dataset", "temperature", "dtype", "seed"]
# Where a run's measurement of a question meets its reference's: the same configuration but
# the method, timed in the same job (prepare() fills the column for tables without one).
PAIR_KEYS = [*MATCH_KEYS, TIMING_GROUP]
REQUIRED_COLUMNS = [*GROUP_KEYS, "seed", "question_id", "new_tokens", "wall_time_s"]
NUMERIC_COLUMNS = [
    "new_tokens",
    "wall_time_s",
    "target_forwards",
    "verify_forwards",
    "verified_tokens",
    "draft_forwards",
    "time_draft_s",
    "time_verify_s",
    "time_other_s",
    "energy_j",
    "energy_net_j",
    "energy_duration_s",
    "avg_power_w",
    "em",
    "f1",
    "exec_match",
    "lossless_match",
    "kv_bytes_peak",
    "peak_gpu_memory_bytes",
    "target_loglik",
    "exec_excluded",
]
# Summary column prefix -> definition name in metrics.speed.paired_speedup_ci (docs/measurement.md).
# "speedup" is the headline: EAGLE's and Spec-Bench's mean(method tok/s) / mean(baseline
# tok/s), comparable with published numbers. "speedup_totals" is the ratio of total tokens per
# total second. The mean of per-question ratios is kept in runs.csv only: it is heavy-tailed
# at T>0, where outputs of different lengths make single ratios large.
SPEEDUP_DEFINITIONS = {
    "speedup": "ratio_of_mean_tps",
    "speedup_totals": "ratio_of_totals",
    "speedup_mean_of_ratios": "mean_of_ratios",
}
SPEEDUP_ESTIMATORS = {
    "speedup": "mean over questions of the method's tokens/s divided by the mean of the "
    "baseline's (EAGLE/Spec-Bench)",
    "speedup_totals": "all tokens / all seconds of the method divided by the baseline's",
}
SPEEDUP_COLUMNS = [
    f"{prefix}{suffix}" for prefix in SPEEDUP_DEFINITIONS for suffix in ("", "_low", "_high")
]
PAIRING_COLUMNS = ["n_paired", "n_unpaired_method", "n_unpaired_baseline"]
# stop_at_answer -> the generation rule every table and figure prints.
RULE_LABELS = {True: "to answer", False: "full length"}
MIXED_RULE = "mixed"
RULE_COLUMNS = ["rule", "baseline_rule", "comparable"]
RULE_NOTE = (
    "rule: the generation rule, to answer = stopped at the token that ends the task's answer, "
    "full length = to EOS or max_new_tokens; n: questions run."
)


def prepare(tidy: pd.DataFrame) -> pd.DataFrame:
    """Check required columns, add absent optional ones as null and coerce numbers.

    CSV round trips turn all-empty columns into floats or strings depending on the reader,
    so every numeric column is coerced once here instead of in each statistic.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in tidy.columns]
    if missing:
        raise ValueError(f"tidy table lacks required columns: {missing}")
    out = tidy.copy()
    for column in NUMERIC_COLUMNS:
        values = out[column] if column in out.columns else np.nan
        out[column] = pd.to_numeric(values, errors="coerce")
    if "energy_reason" not in out.columns:
        out["energy_reason"] = None
    out[TIMING_GROUP] = timing_groups(out)
    return out


def collapse_groups(tidy: pd.DataFrame) -> pd.DataFrame:
    """A prepared tidy table with one row per run, question and turn: a run timed in several
    groups (the baseline and A/A control in every part of a split group) has each turn's
    numbers averaged over its groups, so that its own statistics count every question once and
    its time per question is the mean of its measurements (tokens and scores are the same at
    T=0; at T>0 the parts' samples differ and are averaged too); peaks take the largest."""
    keys = [*GROUP_KEYS, "seed", "question_id"] + (["turn"] if "turn" in tidy else [])
    if not len(tidy) or tidy.groupby(keys, dropna=False)[TIMING_GROUP].nunique().max() <= 1:
        return tidy  # one group per run: nothing to average, every number exactly as it was
    peaks = ("kv_bytes_peak", "peak_gpu_memory_bytes")
    how = {
        c: ("max" if c in peaks else "mean" if c in NUMERIC_COLUMNS else "first")
        for c in tidy.columns
        if c not in keys
    }
    return tidy.groupby(keys, dropna=False, sort=False).agg(how).reset_index()


def per_question(tidy: pd.DataFrame) -> pd.DataFrame:
    """Sum turns per question: one row per (configuration, seed, timing group, question_id),
    a measurement (a run timed in several groups has one per group)."""
    keys = [*GROUP_KEYS, "seed", TIMING_GROUP, "question_id"]
    summed = (
        prepare(tidy)
        .groupby(keys, dropna=False, sort=True)[["new_tokens", "wall_time_s"]]
        .sum()
        .reset_index()
    )
    summed["tokens_per_s"] = summed["new_tokens"] / summed["wall_time_s"]
    return summed


def _params_rule(params: object) -> object:
    return json.loads(params).get("stop_at_answer", True) if isinstance(params, str) else True


def stop_rules(tidy: pd.DataFrame) -> pd.Series:
    """Each row's stop_at_answer as a bool, True where unrecorded (tidy's default).

    Tables written before the column existed carry it in params only. A CSV round trip gives
    bools, or strings where some cells are blank.
    """
    if "stop_at_answer" in tidy:
        values = tidy["stop_at_answer"]
    elif "params" in tidy:
        values = tidy["params"].map(_params_rule)
    else:
        return pd.Series(True, index=tidy.index)
    return values.map(lambda v: str(v).strip().lower() not in {"false", "0"})


def rule_label(rows: pd.DataFrame) -> str:
    """The generation rule of these rows ("to answer", "full length"), "mixed" if both."""
    rules = set(stop_rules(rows))
    return MIXED_RULE if len(rules) > 1 else RULE_LABELS[next(iter(rules), True)]


def comparable(rule: str, reference_rule: str) -> bool:
    """Whether a ratio between runs of these rules compares like with like: tokens/s of runs
    stopped at the answer and of runs to full length differ by their length alone."""
    return rule == reference_rule and rule != MIXED_RULE


def rule_note(rule: str, reference_rule: str, reference: str = "the baseline") -> str:
    """Why a ratio is not printed."""
    return f"different generation rule from {reference}: {rule} vs {reference_rule}"


def config_rules(tidy: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """Per configuration: its rule, its baseline's (same pair, dataset, T, dtype; NaN with no
    baseline run) and whether a speedup over that baseline is comparable."""
    rows = [
        {**dict(zip(GROUP_KEYS, key, strict=True)), "rule": rule_label(group)}
        for key, group in tidy.groupby(GROUP_KEYS, dropna=False, sort=True)
    ]
    rules = pd.DataFrame(rows, columns=[*GROUP_KEYS, "rule"])
    base = rules[rules["method"] == baseline].drop(columns="method")
    keys = [k for k in GROUP_KEYS if k != "method"]
    rules = rules.merge(base.rename(columns={"rule": "baseline_rule"}), on=keys, how="left")
    rules["comparable"] = [
        method == baseline or (pd.notna(base_rule) and comparable(rule, base_rule))
        for method, rule, base_rule in rules[["method", "rule", "baseline_rule"]].itertuples(
            index=False
        )
    ]
    return rules.astype({"comparable": bool})


def _with_baseline(tidy: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every method's measurements next to the matching baseline measurement, same timing
    group (align_reference; outer join, with the `_merge` indicator: "both", "left_only" = no
    baseline, "right_only" = baseline only)."""
    questions = per_question(tidy)
    measured = [*PAIR_KEYS, "question_id", "new_tokens", "wall_time_s"]
    base = questions.loc[questions["method"] == baseline, measured]
    rows = []
    for method in questions["method"].unique():
        mine = questions[questions["method"] == method].drop(columns="method")
        # A method run pairs only with baseline runs of its own configurations and groups.
        theirs = align_reference(mine, base, MATCH_KEYS).rename(
            columns={"new_tokens": "base_new_tokens", "wall_time_s": "base_wall_time_s"}
        )
        theirs["base_tokens_per_s"] = theirs["base_new_tokens"] / theirs["base_wall_time_s"]
        merged = mine.merge(theirs, on=[*PAIR_KEYS, "question_id"], how="outer", indicator=True)
        merged["method"] = method
        rows.append(merged)
    return pd.concat(rows, ignore_index=True) if rows else questions.assign(_merge=[])


def question_speedups(tidy: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """Per-question tokens/s of every method next to its matching baseline run.

    Only paired questions appear here; pairing_counts() says how many were not paired.
    """
    joined = _with_baseline(tidy, baseline)
    paired = joined[joined["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    paired["speedup"] = paired["tokens_per_s"] / paired["base_tokens_per_s"]
    return paired


def pairing_counts(tidy: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """Per configuration: questions paired with the baseline, and those on one side only."""
    joined = _with_baseline(tidy, baseline)
    counts = (
        joined.groupby([*GROUP_KEYS, "_merge"], dropna=False, observed=True)["question_id"]
        .nunique()
        .unstack("_merge", fill_value=0)
    )
    counts = counts.reindex(columns=["both", "left_only", "right_only"], fill_value=0)
    counts.columns = PAIRING_COLUMNS
    return counts.reset_index().astype(dict.fromkeys(PAIRING_COLUMNS, int))


def _speedup_stats(paired: pd.DataFrame, seed: int) -> dict[str, float]:
    # Seeds (and the parts of a split group) are pooled per question so the bootstrap
    # resamples questions (docs/measurement.md) rather than (seed, group, question) rows that are
    # not independent.
    columns = ["new_tokens", "wall_time_s", "base_new_tokens", "base_wall_time_s"]
    pooled = pool_questions(paired, [], columns)
    result = paired_speedup_ci(
        pooled["new_tokens"].to_numpy(dtype=float),
        pooled["wall_time_s"].to_numpy(dtype=float),
        pooled["base_new_tokens"].to_numpy(dtype=float),
        pooled["base_wall_time_s"].to_numpy(dtype=float),
        seed=seed,
    )
    stats = {}
    for prefix, definition in SPEEDUP_DEFINITIONS.items():
        interval = result[definition]
        stats[prefix] = interval["point"]
        stats[f"{prefix}_low"] = interval["low"]
        stats[f"{prefix}_high"] = interval["high"]
    return stats


def speedup_table(tidy: pd.DataFrame, baseline: str = "vanilla", seed: int = 0) -> pd.DataFrame:
    """Every speedup definition with 95% bootstrap intervals, one row per configuration; NaN
    where the configuration's generation rule differs from its baseline's."""
    paired = question_speedups(tidy, baseline)
    allowed = config_rules(prepare(tidy), baseline).set_index(GROUP_KEYS)["comparable"]
    rows = []
    for key, group in paired.groupby(GROUP_KEYS, dropna=False, sort=True):
        if key[GROUP_KEYS.index("method")] == baseline:
            # Exactly 1 by definition; computing it would only add rounding noise.
            stats = dict.fromkeys(SPEEDUP_COLUMNS, 1.0)
        elif not allowed[key]:
            stats = dict.fromkeys(SPEEDUP_COLUMNS, float("nan"))
        else:
            try:
                stats = _speedup_stats(group, seed)
            except ValueError as exc:
                where = dict(zip(GROUP_KEYS, key, strict=True))
                raise ValueError(f"cannot compute speedup for {where}: {exc}") from exc
        rows.append({**dict(zip(GROUP_KEYS, key, strict=True)), **stats})
    table = pd.DataFrame(rows, columns=[*GROUP_KEYS, *SPEEDUP_COLUMNS])
    # With no baseline at all the frame is empty and would leave the columns as objects.
    return table.astype(dict.fromkeys(SPEEDUP_COLUMNS, float))


def _ratio(numerator: float, denominator: float) -> float:
    if pd.isna(numerator) or pd.isna(denominator) or denominator == 0:
        return float("nan")
    return float(numerator) / float(denominator)


def _energy_per_token(energy: pd.Series, tokens: float) -> float:
    # A partial sum would understate the energy, so one missing window voids the figure.
    if energy.isna().any():
        return float("nan")
    return _ratio(energy.sum(), tokens)


def _first_valid(values: pd.Series) -> str | None:
    present = values.dropna()
    present = present[present.astype(str).str.len() > 0]
    return str(present.iloc[0]) if len(present) else None


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if values.notna().any() else float("nan")


def _energy_over_time(group: pd.DataFrame) -> float:
    if group["energy_j"].isna().any():
        return float("nan")
    seconds = group["energy_duration_s"].fillna(group["wall_time_s"])
    return _ratio(group["energy_j"].sum(), seconds.sum())


MIB = 2**20  # memory is reported in MiB, never in decimal MB


def peak_mib(values: pd.Series) -> float:
    """The largest value over every question and turn, in MiB: a configuration needs the
    memory of its most demanding generation, which a mean would hide."""
    return float(values.max()) / MIB if values.notna().any() else float("nan")


def excluded_questions(group: pd.DataFrame) -> float:
    """Distinct questions whose gold query failed (Spider), NaN where nothing was executed:
    a question excluded in every seed is one question, not one per seed."""
    if group["exec_excluded"].isna().all():
        return float("nan")
    return float(group.loc[group["exec_excluded"] == 1, "question_id"].nunique())


def group_stats(group: pd.DataFrame) -> dict[str, object]:
    """Speed, tau, time split, energy, memory and quality of one configuration (a prepared
    tidy slice, one row per run, question and turn: collapse_groups): every figure pools all
    its questions, turns and seeds."""
    tokens = group["new_tokens"].sum()
    wall = group["wall_time_s"].sum()
    return {
        "n_questions": int(group["question_id"].nunique()),
        "n_seeds": int(group["seed"].nunique()),
        "n_runs": int(group["run_id"].nunique()) if "run_id" in group else 1,
        "new_tokens": float(tokens),
        "wall_time_s": float(wall),
        "tokens_per_s": _ratio(tokens, wall),
        # docs/measurement.md: tokens committed by verification forwards per verification
        # forward (the prefill forward and its token left out), one definition for every method.
        "tau": _ratio(group["verified_tokens"].sum(), group["verify_forwards"].sum(min_count=1)),
        "frac_draft": _ratio(group["time_draft_s"].sum(min_count=1), wall),
        "frac_verify": _ratio(group["time_verify_s"].sum(min_count=1), wall),
        "frac_other": _ratio(group["time_other_s"].sum(min_count=1), wall),
        "j_per_token": _energy_per_token(group["energy_j"], tokens),
        "j_per_token_net": _energy_per_token(group["energy_net_j"], tokens),
        # Total energy over total time, not a mean of per-window averages.
        "avg_power_w": _energy_over_time(group),
        "energy_reason": _first_valid(group["energy_reason"]),
        "hardware": _first_valid(group["hardware"]) if "hardware" in group else None,
        "em": _mean(group["em"]),
        "f1": _mean(group["f1"]),
        "exec_acc": _mean(group["exec_match"]),
        "lossless_match_rate": _mean(group["lossless_match"]),
        "n_exec_excluded": excluded_questions(group),
        "target_loglik": _mean(group["target_loglik"]),
        # KV cache of every model, each at its own peak, for every method alike; beside it the
        # measured device peak (NaN on a CPU), which also holds weights and activations.
        "kv_peak_mib": peak_mib(group["kv_bytes_peak"]),
        "peak_device_mib": peak_mib(group["peak_gpu_memory_bytes"]),
    }


def summarise(tidy: pd.DataFrame, baseline: str = "vanilla", seed: int = 0) -> pd.DataFrame:
    """One row per (pair, dataset, method, temperature, dtype) with speed, energy, quality.

    Speedups are NaN where no matching baseline run exists or where the configuration's
    generation rule differs from its baseline's (`comparable` False, `rule` and
    `baseline_rule` say which); the baseline's own are 1.0.
    """
    tidy = prepare(tidy)
    rows = [
        {**dict(zip(GROUP_KEYS, key, strict=True)), **group_stats(group)}
        for key, group in collapse_groups(tidy).groupby(GROUP_KEYS, dropna=False, sort=True)
    ]
    stats = pd.DataFrame(rows)
    summary = stats.merge(speedup_table(tidy, baseline, seed), on=GROUP_KEYS, how="left")
    summary = summary.merge(pairing_counts(tidy, baseline), on=GROUP_KEYS, how="left")
    summary = summary.merge(config_rules(tidy, baseline), on=GROUP_KEYS, how="left")
    front = [*GROUP_KEYS, "n_questions", "n_seeds", "n_runs", "new_tokens", "wall_time_s"]
    front += ["tokens_per_s", *SPEEDUP_COLUMNS, *PAIRING_COLUMNS, *RULE_COLUMNS]
    rest = [c for c in summary.columns if c not in front]
    return summary[front + rest]
