"""A timing group: every member run on every question, interleaved in a carryover-balanced
order and timed several times over, with one energy meter and one result file of records for the
whole group."""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from specrepro.config import MethodChoice
from specrepro.energy import (
    IDLE_ACTIVE,
    IDLE_AFTER,
    IDLE_BEFORE,
    EnergyMeter,
    git_commit,
    hardware_info,
)
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.prompting import encode_turn
from specrepro.provenance import code_fingerprint, records_fingerprint
from specrepro.records import ResultWriter
from specrepro.run.decoder import Decoder, LoadedPair
from specrepro.run.question_run import run_question, score_record

# A partial result file is resumed only if all of these match for every run (else the group
# starts over).
RUN_IDENTITY = (
    "pair",
    "method",
    "algorithm",
    "params",
    "temperature",
    "seed",
    "dtype",
    "max_new_tokens",
    "questions",
    "timing_group",
    "timing_repeats",
    "prompts_sha256",
    "model_fingerprints",
    "code_sha256",
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def params_dict(params: object) -> dict:
    return asdict(params) if is_dataclass(params) else {}


@dataclass(frozen=True)
class Member:
    """One run of a timing group: a pair and a method; `questions` limits it to the first
    prompts (the draft-design study's drafts)."""

    pair: str
    method: MethodChoice
    questions: int | None = None

    @property
    def key(self) -> str:
        return f"{self.pair}/{self.method.name}"


def williams_rows(k: int) -> list[list[int]]:
    """A Williams design for k members: orders of 0..k-1 in which every member directly
    follows every other member equally often (once over the k rows for even k; twice over the
    2k rows, the k orders and their reverses, for odd k) and sits in every position equally
    often. A cyclic rotation keeps neighbours together (a member right after the same other
    member in k-1 of k orders), so whatever one run leaves behind (caches, clocks, memory) falls
    on its neighbour; this design spreads it over all members alike."""
    first, low, high = [0], 1, k - 1
    while len(first) < k:
        first.append(low if len(first) % 2 else high)
        low, high = (low + 1, high) if len(first) % 2 == 0 else (low, high - 1)
    rows = [[(x + i) % k for x in first] for i in range(k)]
    return rows + [row[::-1] for row in rows] if k % 2 and k > 1 else rows


def design_period(k: int) -> int:
    """The orders a Williams design for k members cycles through (balance is exact over a
    multiple of it)."""
    return len(williams_rows(k)) if k else 1


def balanced_order(items: list, slot: int) -> list:
    """`items` in the order of the design's row `slot` (modulo the period)."""
    if not items:
        return []
    rows = williams_rows(len(items))
    return [items[i] for i in rows[slot % len(rows)]]


def design_slot(index: int, repeat: int, repeats: int, period: int) -> int:
    """The design row that times question `index`'s `repeat`-th timing: row index + repeat *
    (period // repeats). For each repeat on its own, consecutive questions walk through every
    row, so every member is first, last and after each other member equally often *within each
    repeat*; the repeats of one question use rows far apart (for odd k the second row is the
    first's reverse). Numbering slots index * repeats + repeat instead tied the repeat to the
    row: with 3 members and 2 repeats, the first timing of every question ran rows 0, 2 and 4,
    where the baseline led twice and its A/A twin never, and a question's first timing (right
    after the previous question was scored) ran about 4% faster than its second on the CPU,
    which read as a 3-4% A/A bias."""
    return index + repeat * max(1, period // repeats)


def running_order(members: list[Member], index: int, repeat: int, repeats: int) -> list[Member]:
    """The members that run question `index`, in the order they run its `repeat`-th timing
    (`design_slot`; a member limited to the first questions drops out of the order, the others
    keep theirs)."""
    slot = design_slot(index, repeat, repeats, design_period(len(members)))
    order = balanced_order(members, slot)
    return [m for m in order if m.questions is None or index < m.questions]


def run_group(
    config: dict,
    loaded: dict[str, LoadedPair],
    members: list[Member],
    prompts: list[dict],
    out: Path,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    dtype: str,
    warmup: int = 1,
    progress: bool = True,
    repeats: int = 1,
) -> Path:
    """Time every member on every prompt, interleaved: each question runs every member in
    turn, `repeats` times over (the same tokens each time: T=0 is deterministic and T>0 seeded
    per question), each timing in the next order of a Williams design (`running_order`), so slow
    drift and whatever one run leaves to the next fall on all members alike. A member's record
    of a question is its fastest repeat (`fastest_repeat`), with every repeat's times beside
    it. One record per member and question is appended to `out`."""
    if len({m.key for m in members}) != len(members):
        raise ValueError(f"a timing group names a run twice: {[m.key for m in members]}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    seed_everything(seed)
    runners: dict[tuple[str, int], ModelRunner] = {}
    engines = {m.key: Decoder(loaded[m.pair], m.method, temperature, runners) for m in members}
    device = next(iter(engines.values())).target.device
    energy_cfg = config.get("energy", {})
    meter = open_energy_meter(device, energy_cfg.get("sample_hz", 20.0))
    idle_seconds = energy_cfg.get("idle_seconds", 2.0)
    gpu_start = meter.gpu_state()
    group = [m.key for m in members]
    # What every run of the group shares, computed once (the code hash reads every source file).
    shared = {
        "temperature": temperature,
        "seed": seed,
        "dtype": dtype,
        "device": str(device),
        "batch_size": 1,
        "max_new_tokens": max_new_tokens,
        "timing_group": group,
        "timing_repeats": repeats,
        "timing_order": TIMING_ORDER,
        "timing_statistic": TIMING_STATISTIC,
        "depth_convention": "depth = number of draft levels",
        "tau_definition": "tokens committed by verification forwards / verification forwards "
        "(prefill forward and its token excluded)",
        "hardware": hardware_info(meter),
        # Completed when the group finishes (_complete_energy_meta); as written here it says
        # what a killed group left unmeasured.
        "energy": meter.group_record(gpu_start),
        "git_commit": git_commit(),
        "code_sha256": code_fingerprint(),
        "prompts_sha256": records_fingerprint(prompts),
        "command": sys.argv,
        "config": config,
    }
    metas = [_meta(loaded[m.pair], m, shared) for m in members]
    try:
        writer = ResultWriter(out, metas, RUN_IDENTITY)
    except BaseException:
        meter.close()
        raise
    todo = [
        (index, prompt)
        for index, prompt in enumerate(prompts)
        if any(_pending(writer, m, prompt) for m in running_order(members, index, 0, repeats))
    ]
    warmed: set[str] = set()
    try:
        if todo and meter.available:
            # At rest, before warm-up raises the clocks.
            synchronize(device)
            meter.measure_idle(idle_seconds, IDLE_BEFORE)
        label = f"{out.parent.name}/T={temperature}: {len(members)} runs x {repeats} interleaved"
        for index, prompt in tqdm(todo, desc=label, disable=not progress):
            timings: dict[str, list[dict]] = {}
            positions: dict[str, list[int]] = {}
            for repeat in range(repeats):
                order = running_order(members, index, repeat, repeats)
                for position, member in enumerate(order):
                    if not _pending(writer, member, prompt):
                        continue
                    engine, pair = engines[member.key], loaded[member.pair]
                    if member.key not in warmed:
                        _warm_up(engine, pair, prompt, warmup)
                        if not warmed and meter.available:
                            # Before the first timed window, while the warm-up's clocks are
                            # still up: the idle of a run's CPU-bound steps, which net energy
                            # subtracts.
                            synchronize(device)
                            meter.measure_idle(idle_seconds, IDLE_ACTIVE)
                        warmed.add(member.key)
                    meta = metas[group.index(member.key)]
                    record = run_question(
                        engine, pair, meter, prompt, max_new_tokens, seed, meta, score=False
                    )
                    timings.setdefault(member.key, []).append(record)
                    positions.setdefault(member.key, []).append(position)
            for key, records in timings.items():
                member = members[group.index(key)]
                kept = fastest_repeat(records, positions[key])
                writer.append(score_record(engines[key], loaded[member.pair], prompt, kept))
        if todo and meter.available:
            synchronize(device)
            gpu_end = meter.gpu_state()  # right after the last timed run, before cooling down
            meter.measure_idle(idle_seconds, IDLE_AFTER)
            writer.close()
            _complete_energy_meta(writer.part, meter.group_record(gpu_start, gpu_end))
        return writer.finish()
    finally:
        writer.close()
        meter.close()


TIMING_ORDER = (
    "interleaved per question; a Williams design (every run directly after every other run "
    "and in every position equally often), balanced within each repeat: repeat r of question i "
    "runs row i + r * (period // repeats)"
)
TIMING_STATISTIC = "fastest of the repeats (minimum question wall time)"


def _complete_energy_meta(part: Path, energy: dict) -> None:
    """Put the group's finished energy record (idle after, GPU state at the end) into its
    metadata lines, the first lines of the file, written before the group ran. A resumed group
    records its last part here; every turn's energy names the idle power it subtracted."""
    with part.open() as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record.get("record") != "meta":
            break
        record["energy"] = energy
        lines[i] = json.dumps(record) + "\n"
    # Replaced whole, so a kill leaves the old file or the new one, never a torn one.
    tmp = part.with_name(part.name + ".tmp")
    with tmp.open("w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, part)


def _pending(writer: ResultWriter, member: Member, prompt: dict) -> bool:
    return (member.key, str(prompt["question_id"])) not in writer.done


def fastest_repeat(records: list[dict], positions: list[int]) -> dict:
    """The repeat with the least wall time over the question's turns, with every repeat's
    times and positions beside it. The minimum, as timeit and pyperf's guidance take it: a
    shared machine only ever adds time (another process, a cache flush), so the fastest of
    interleaved repeats is the least disturbed; a burst that hits one repeat of a question is
    dropped instead of moving the question's time."""
    totals = [sum(turn["wall_time"] for turn in r["turns"]) for r in records]
    kept = records[int(np.argmin(totals))]
    kept["timing"] = {
        "repeats": len(records),
        "kept": int(np.argmin(totals)),
        "positions": positions,
        "wall_times": [[turn["wall_time"] for turn in r["turns"]] for r in records],
        # T=0 is deterministic and T>0 seeded per question: every repeat draws the same tokens.
        "same_tokens": all(
            [t["token_ids"] for t in r["turns"]] == [t["token_ids"] for t in records[0]["turns"]]
            for r in records
        ),
    }
    return kept


def _meta(loaded: LoadedPair, member: Member, shared: dict) -> dict:
    method = member.method
    return {
        "record": "meta",
        "pair": loaded.name,
        "method": method.name,
        "algorithm": method.algorithm,
        # stop_at_answer beside the algorithm's parameters, so a claim can ask for either.
        "params": {**params_dict(method.params), "stop_at_answer": method.stop_at_answer},
        "questions": member.questions,
        "model_fingerprints": loaded.fingerprints,
        **shared,
    }


def open_energy_meter(device: torch.device, sample_hz: float) -> EnergyMeter:
    """The NVML meter of the GPU this run computes on; a non-CUDA run measures nothing."""
    if device.type != "cuda":
        return EnergyMeter.not_measured(
            f"run on device {device.type}: GPU energy is measured only for runs on a CUDA GPU"
        )
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return EnergyMeter.open(gpu_uuid=uuid, sample_hz=sample_hz)


def _warm_up(engine: Decoder, loaded: LoadedPair, prompt: dict, n: int) -> None:
    ids = encode_turn(loaded.tokenizer, prompt, 0, [], loaded.conversation)
    for i in range(n):
        engine.generate(ids, 8, seed=i)
