"""Pairing measurements within timing groups.

A timing group is the runs timed together in one `generate` job (one result file); a group too
large for one GPU is split into parts, each its own group repeating the baseline and the A/A
control. A ratio pairs a run's question with its reference's measurement in the same group,
and pools a question's measurements so that it stays one observation.
"""

from __future__ import annotations

import pandas as pd

# The runs timed together in one `generate` job (one result file). A group too large for one
# GPU is split into parts, each its own timing group repeating the baseline and the A/A
# control, so one run (one run_id) can hold a measurement of a question in several groups.
TIMING_GROUP = "timing_group"


def timing_groups(rows: pd.DataFrame) -> pd.Series:
    """Each row's timing group: the result file it came from, or (dataset, temperature, seed)
    where the table does not say (old tables: a file held one of each). The fallback is a
    function of aggregate.MATCH_KEYS, so on such tables pairing within groups is today's pairing."""
    fallback = (
        rows["dataset"].astype(str)
        + "/T"
        + rows["temperature"].astype(float).astype(str)
        + "-s"
        + rows["seed"].astype(str)
    )
    if TIMING_GROUP not in rows:
        return fallback
    return rows[TIMING_GROUP].where(rows[TIMING_GROUP].notna(), fallback).astype(str)


def align_reference(mine: pd.DataFrame, theirs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The reference's measurements to pair with `mine`'s, under mine's timing groups.

    Both frames hold one row per measurement: `keys`, timing_group, question_id and numeric
    columns (only `theirs`' are returned). In a group both runs were timed in, a question of
    `mine` meets the reference's measurement in that same group: the two were interleaved in
    one job, so what the job shares (node, GPU, clocks, thermal state) cancels in a ratio. A
    reference timed in several groups (the baseline in every part of a split group) is never
    paired with a run of another part. Where within `keys` the two share no group at all (runs
    a split put in different parts), the reference's mean per question over its groups stands
    under each of mine's groups: the pairing by question of the tables before splitting.
    """
    groups = [*keys, TIMING_GROUP]
    if mine.empty or theirs.empty:
        return theirs.iloc[:0]
    values = [c for c in theirs.columns if c not in (*groups, "question_id")]
    mine_groups = mine[groups].drop_duplicates()
    shared = mine_groups.merge(theirs[groups].drop_duplicates(), on=groups)
    same = theirs.merge(shared, on=groups)
    alone = mine_groups.merge(shared[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    alone = alone[alone["_merge"] == "left_only"].drop(columns="_merge")
    if alone.empty:
        return same
    means = theirs.groupby([*keys, "question_id"], dropna=False)[values].mean().reset_index()
    return pd.concat([same, means.merge(alone, on=keys)], ignore_index=True)


def pool_questions(
    rows: pd.DataFrame, by: list[str], columns: list[str], means: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One row per (*by, question_id) of per-measurement rows (each with seed, timing group).

    A question measured in several timing groups of one run (the parts of a split group; with
    a reference, the pairs of the groups both ran in) is averaged over them: the question stays
    one observation, so a bootstrap over questions resamples it with all its measurements and
    n counts questions, not parts. Its seeds are then summed as they always were (each seed
    its own run, pooled per question), or averaged for the `means` columns (scores).
    """
    per_seed = rows.groupby([*by, "seed", "question_id"], dropna=False)[columns].mean()
    level = [*by, "question_id"]
    summed = per_seed.groupby(level=level, dropna=False).sum()
    if means:
        averaged = per_seed.groupby(level=level, dropna=False)[list(means)].mean()
        summed[list(means)] = averaged
    return summed
