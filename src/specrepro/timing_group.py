"""A timing group: every member run on every question, interleaved in a rotated order, with one
energy meter and one result file of records for the whole group."""

from __future__ import annotations

import random
import sys
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from specrepro.config import MethodChoice
from specrepro.decoder import Decoder, LoadedPair
from specrepro.energy import EnergyMeter, git_commit, hardware_info
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.prompting import encode_turn
from specrepro.provenance import code_fingerprint, records_fingerprint
from specrepro.question_run import run_question
from specrepro.records import ResultWriter

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


def rotated(items: list, index: int) -> list:
    """`items` in the order they run question `index`: rotated by one per question, so no run
    is always first (or always right after the same other run)."""
    if not items:
        return []
    shift = index % len(items)
    return items[shift:] + items[:shift]


def rotation(members: list[Member], index: int) -> list[Member]:
    """The members that run question `index`, in the order they run it."""
    return rotated([m for m in members if m.questions is None or index < m.questions], index)


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
) -> Path:
    """Time every member on every prompt, interleaved: each question runs every member in
    turn (order rotated per question), so slow drift of the machine falls on all members
    alike instead of on whichever job ran at a bad moment. One record per member and question
    is appended to `out`."""
    if len({m.key for m in members}) != len(members):
        raise ValueError(f"a timing group names a run twice: {[m.key for m in members]}")
    seed_everything(seed)
    runners: dict[tuple[str, int], ModelRunner] = {}
    engines = {m.key: Decoder(loaded[m.pair], m.method, temperature, runners) for m in members}
    device = next(iter(engines.values())).target.device
    energy_cfg = config.get("energy", {})
    meter = open_energy_meter(device, energy_cfg.get("sample_hz", 20.0))
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
        "timing_order": "interleaved per question, order rotated by one per question",
        "depth_convention": "depth = number of draft levels",
        "tau_definition": "tokens committed by verification forwards / verification forwards "
        "(prefill forward and its token excluded)",
        "hardware": hardware_info(meter),
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
        (index, prompt, member)
        for index, prompt in enumerate(prompts)
        for member in rotation(members, index)
        if (member.key, str(prompt["question_id"])) not in writer.done
    ]
    warmed: set[str] = set()
    try:
        if todo and meter.available:
            # At rest, before warm-up raises the clocks.
            synchronize(device)
            meter.measure_idle(energy_cfg.get("idle_seconds", 2.0))
        label = f"{out.parent.name}/T={temperature}: {len(members)} runs interleaved"
        for _, prompt, member in tqdm(todo, desc=label, disable=not progress):
            engine, pair = engines[member.key], loaded[member.pair]
            if member.key not in warmed:
                _warm_up(engine, pair, prompt, warmup)
                warmed.add(member.key)
            meta = metas[group.index(member.key)]
            writer.append(run_question(engine, pair, meter, prompt, max_new_tokens, seed, meta))
        return writer.finish()
    finally:
        writer.close()
        meter.close()


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
