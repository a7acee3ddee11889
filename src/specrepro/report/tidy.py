"""Raw result files -> one tidy table (one row per run, question and turn), scored.

Scoring (EM/F1, SQL execution: each dataset's named scorer, metrics/scorers.py) happens here,
outside every timed and energy window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from specrepro.data import spider_coverage
from specrepro.metrics.scorers import (
    BUILTIN_SCORERS,
    NO_SCORER,
    ScoreContext,
    get_scorer,
    score_answer,
)
from specrepro.records import ResultsError, member_key, read_records


def _rows(path: Path) -> list[dict]:
    metas, records = read_records(path)
    if not metas:
        raise ResultsError(f"{path}: no metadata line; not a specrepro result file")
    rows = []
    # The runs timed together (one result file): a timing group's A/A control governs them.
    group = "/".join([*path.parts[-3:-1], path.stem])
    for rec in records:
        meta = metas.get(member_key(rec))
        if meta is None:
            raise ResultsError(f"{path}: a record of {member_key(rec)} has no metadata line")
        run_id = "/".join(
            [meta["pair"], meta["method"], str(rec.get("dataset")), meta["dtype"]]
            + [f"T{meta['temperature']}-s{meta['seed']}"]
        )
        for turn, t in enumerate(rec["turns"]):
            energy = t.get("energy") or {}
            rows.append(
                {
                    "run_id": run_id,
                    "timing_group": group,
                    "pair": meta["pair"],
                    # The target's weights: runs of pairs that share them share vanilla's output.
                    "target_model": (meta.get("model_fingerprints") or {}).get("target")
                    or meta["pair"],
                    "method": meta["method"],
                    "algorithm": meta["algorithm"],
                    "params": json.dumps(meta.get("params", {}), sort_keys=True),
                    # False: generated to EOS or max_new_tokens, the answer cut out to score.
                    "stop_at_answer": (meta.get("params") or {}).get("stop_at_answer", True),
                    "dataset": rec.get("dataset"),
                    "temperature": meta["temperature"],
                    "seed": meta["seed"],
                    "dtype": meta["dtype"],
                    "device": meta["device"],
                    "hardware": hardware_label(meta),
                    "batch_size": meta.get("batch_size", 1),
                    "question_id": rec["question_id"],
                    "turn": turn,
                    "new_tokens": t["new_tokens"],
                    # eos / stop_string / max_new_tokens / context_limit (absent before it was
                    # recorded)
                    "stop_reason": t.get("stop_reason"),
                    "wall_time_s": t["wall_time"],
                    # Every timing of this turn (the record keeps its fastest repeat's).
                    "wall_time_repeats": json.dumps(
                        [times[turn] for times in (rec.get("timing") or {}).get("wall_times", [])]
                        or [t["wall_time"]]
                    ),
                    "target_forwards": t["target_forwards"],
                    "verify_forwards": t["verify_forwards"],
                    "verified_tokens": t["verified_tokens"],
                    "draft_forwards": t["draft_forwards"],
                    "accept_lengths": json.dumps(t["accept_lengths"]),
                    "draft_levels": json.dumps(
                        ((t.get("extra") or {}).get("rounds") or {}).get("levels", [])
                    ),
                    # DSBD: the width chosen at each level of each round.
                    "level_widths": json.dumps(
                        ((t.get("extra") or {}).get("rounds") or {}).get("widths", [])
                    ),
                    # Beam methods: the beams held at each new position, finished included
                    # (DSBD's rounds, flattened; beam's steps).
                    "beams_carried": json.dumps(beams_carried(t.get("extra") or {})),
                    "kv_bytes_peak": t["kv_bytes_peak"],
                    "peak_gpu_memory_bytes": t.get("peak_gpu_memory_bytes"),
                    "target_loglik": t["target_loglik"],
                    "time_draft_s": t["time_draft"],
                    "time_verify_s": t["time_verify"],
                    "time_other_s": t["time_other"],
                    "energy_j": energy.get("energy_j"),
                    "energy_net_j": energy.get("energy_net_j"),
                    "avg_power_w": energy.get("avg_power_w"),
                    "energy_duration_s": energy.get("duration_s"),
                    "energy_reason": energy.get("reason"),
                    "_text": t["text"],
                    "_token_ids": t["token_ids"],
                    "_reference": rec.get("reference", {}),
                }
            )
    return rows


def hardware_label(meta: dict) -> str:
    """What the run computed on: the GPU's name for a CUDA run, else the CPU model."""
    hardware = meta.get("hardware") or {}
    if str(meta.get("device", "")).startswith("cuda"):
        name = (hardware.get("gpu") or {}).get("name") or "unknown GPU"
        return f"{name} (GPU)"
    cores = hardware.get("cpu_count")
    cpu = hardware.get("cpu_model") or "unknown CPU"
    return f"{cpu}, {cores} cores (CPU)" if cores else f"{cpu} (CPU)"


def _score(row: dict, scorers: Mapping[str, str], ctx: ScoreContext) -> dict:
    """The row's scorer by name, then every quality column (None where it fills none)."""
    name = scorers.get(str(row["dataset"]), NO_SCORER)
    return {"scorer": name, **score_answer(get_scorer(name), row["_text"], row["_reference"], ctx)}


def _lossless(frame: pd.DataFrame) -> pd.Series:
    """1/0 where a T=0 run's tokens equal vanilla's (same target weights, dataset, seed, dtype,
    stop rule): a pair that only swaps the draft (the draft-design study) is checked against the
    vanilla run of the pair it came from. Vanilla's tokens from the run's own timing group come
    first (a split group repeats vanilla in every part), any group's where that has none."""
    keys = ["target_model", "dataset", "seed", "dtype", "stop_at_answer", "question_id", "turn"]
    greedy = frame[frame["temperature"] == 0]
    vanilla = greedy[greedy["algorithm"] == "vanilla"]
    in_group = [*keys, "timing_group"] if "timing_group" in frame else keys
    same = vanilla.drop_duplicates(in_group).set_index(in_group)["_token_ids"]
    base = vanilla.drop_duplicates(keys).set_index(keys)["_token_ids"]
    result = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for idx, row in greedy.iterrows():
        key, group_key = tuple(row[k] for k in keys), tuple(row[k] for k in in_group)
        tokens = same.get(group_key) if group_key in same.index else base.get(key)
        if key in base.index:
            result[idx] = int(list(tokens) == list(row["_token_ids"]))
    return result


def tidy_table(
    paths: list[Path], data_dir: Path, scorers: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """One row per run, question and turn, each scored by its dataset's scorer: `scorers`
    ({dataset: scorer name}, metrics.scorers.dataset_scorers of the config) or a built-in
    dataset's own; any other dataset is not scored."""
    rows = [row for path in paths for row in _rows(path)]
    if not rows:
        raise ResultsError("no question records in the given result files")
    scorers = {**BUILTIN_SCORERS, **(scorers or {})}
    ctx = ScoreContext(data_dir)
    for row in tqdm(rows, desc="scoring", disable=len(rows) < 50):
        row.update(_score(row, scorers, ctx))
    frame = pd.DataFrame(rows)
    frame["lossless_match"] = _lossless(frame)
    return frame.drop(columns=["_text", "_token_ids", "_reference"])


def coverage_notes(
    datasets: list[str], data_dir: Path, scorers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A footnote per dataset table where one is due: Spider's databases, and how a dataset
    of one's own (not built-in) is scored."""
    notes = {}
    for dataset in datasets:
        name = (scorers or {}).get(dataset)
        if dataset not in BUILTIN_SCORERS and name is not None:
            notes[dataset] = f"Scored by {name}: {get_scorer(name).description}."
    if "spider" in datasets:
        cov = spider_coverage(data_dir)
        skipped = ", ".join(f"{db} ({n})" for db, n in sorted(cov["skipped"].items())) or "none"
        notes["spider"] = (
            f"Questions drawn from the {cov['n_available']} of {cov['n_total']} Spider dev "
            f"questions on the pinned databases the data mirror holds; left out: {skipped}."
        )
    return notes


def beams_carried(extra: dict) -> list[int]:
    rounds = extra.get("rounds") or {}
    if "carried" in rounds:
        return [n for per_round in rounds["carried"] for n in per_round]
    return list(extra.get("widths", []))
