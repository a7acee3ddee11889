"""Running one method over a prompt file: models loaded once, one timer, one record per question."""

from __future__ import annotations

import random
import sys
import zlib
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.config import MethodChoice, model_spec, resolve_pair
from specrepro.decoding.base import DecodingContext, GenerationResult, get_method, needed_roles
from specrepro.energy import EnergyMeter, git_commit, hardware_info
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import make_generator
from specrepro.engine.stopping import StopRule, eos_token_ids, token_texts
from specrepro.engine.timing import StepTimer, synchronize
from specrepro.models.eagle_head import load_head_model
from specrepro.models.loader import ModelError, fingerprint, load_model, load_tokenizer
from specrepro.prompting import default_conversation, encode_turn
from specrepro.provenance import code_fingerprint, records_fingerprint
from specrepro.records import ResultWriter

# A partial result file is resumed only if all of these match (else the run starts over).
RUN_IDENTITY = (
    "pair",
    "method",
    "algorithm",
    "params",
    "temperature",
    "seed",
    "dtype",
    "max_new_tokens",
    "prompts_sha256",
    "model_fingerprints",
    "code_sha256",
)
# Cache positions allocated beyond prompt + max_new_tokens, for drafted tokens under verification.
CACHE_HEADROOM = 256


@dataclass
class LoadedPair:
    name: str
    target: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    draft: PreTrainedModel | None
    conversation: str  # prompting.CONVERSATIONS
    eos_ids: frozenset[int]
    token_text: tuple[str, ...]
    fingerprints: dict[str, str] = field(default_factory=dict)  # role -> model fingerprint
    head: torch.nn.Module | None = None  # an EAGLE head over the target (models/eagle_head.py)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_pair(
    config: dict, pair_name: str, dtype: str, device: str, roles: tuple[str, ...] = ()
) -> LoadedPair:
    """The pair's target plus the members in `roles` ("draft", "head")."""
    pair = resolve_pair(config, pair_name)
    cache_root = Path(config["models"]["cache_dir"])
    target_spec = model_spec(config, pair["target"])
    draft_spec = model_spec(config, pair["draft"]) if "draft" in roles else None
    tokenizer = load_tokenizer(target_spec, cache_root)
    # Tokenizers first: a mismatched pair fails before gigabytes of weights load.
    if draft_spec is not None:
        if load_tokenizer(draft_spec, cache_root).get_vocab() != tokenizer.get_vocab():
            raise ModelError(
                f"pair {pair_name!r}: draft {pair['draft']!r} and target {pair['target']!r} "
                "use different tokenizers"
            )
    target, _ = load_model(target_spec, dtype, device, cache_root)
    fingerprints = {"target": fingerprint(target_spec, target, cache_root)}
    draft = None
    if draft_spec is not None:
        draft, _ = load_model(draft_spec, dtype, device, cache_root)
        fingerprints["draft"] = fingerprint(draft_spec, draft, cache_root)
    head = None
    if "head" in roles:
        head_spec = model_spec(config, pair["head"])
        head = load_head_model(head_spec, target, cache_root)
        fingerprints["head"] = fingerprint(head_spec, head, cache_root)
    return LoadedPair(
        name=pair_name,
        target=target,
        tokenizer=tokenizer,
        draft=draft,
        conversation=pair.get("conversation") or default_conversation(tokenizer),
        eos_ids=eos_token_ids(tokenizer, target.generation_config.eos_token_id),
        token_text=token_texts(tokenizer),
        fingerprints=fingerprints,
        head=head,
    )


def question_seed(seed: int, question_id: str, turn: int) -> int:
    """Per-question seed, so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + zlib.crc32(f"{question_id}/{turn}".encode())) % 2**63


class Decoder:
    """Drives one method on one loaded pair; every generation is timed the same way."""

    def __init__(self, loaded: LoadedPair, method: MethodChoice, temperature: float) -> None:
        self.loaded = loaded
        self.method = method
        self.module = get_method(method.algorithm)
        self.temperature = temperature
        self.target = ModelRunner(loaded.target, "target")
        self.draft = ModelRunner(loaded.draft, "draft") if loaded.draft is not None else None
        self.head = ModelRunner(loaded.head, "head") if loaded.head is not None else None
        if self.module.NEEDS_DRAFT and self.draft is None:
            raise ModelError(f"method {method.name!r} needs a draft model; none loaded")
        if "head" in needed_roles(self.method.algorithm) and self.head is None:
            raise ModelError(f"method {method.name!r} needs an EAGLE head; none loaded")
        if self.draft is not None and self.draft.vocab_size != self.target.vocab_size:
            # The residual max(p - q, 0) needs both distributions over the same vocabulary.
            raise ModelError(
                f"pair {loaded.name!r}: the draft's logits are {self.draft.vocab_size} wide, the "
                f"target's {self.target.vocab_size}; speculative sampling needs equal widths"
            )

    def stop_rule(self, max_new_tokens: int, answer_format: str) -> StopRule:
        return StopRule(
            eos_ids=self.loaded.eos_ids,
            max_new_tokens=max_new_tokens,
            answer_format=answer_format,
            token_text=self.loaded.token_text,
        )

    def generate(
        self, prompt_ids: list[int], max_new_tokens: int, seed: int, answer_format: str = "free"
    ) -> tuple[GenerationResult, StepTimer]:
        capacity = len(prompt_ids) + max_new_tokens + CACHE_HEADROOM
        self.target.reset(capacity)
        for runner in (self.draft, self.head):
            if runner is not None:
                runner.reset(capacity)
        timer = StepTimer(self.target.device)
        ctx = DecodingContext(
            target=self.target,
            stop=self.stop_rule(max_new_tokens, answer_format),
            temperature=self.temperature,
            generator=make_generator(seed, self.target.device),
            timer=timer,
            draft=self.draft if self.module.NEEDS_DRAFT else None,
            head=self.head if "head" in needed_roles(self.method.algorithm) else None,
        )
        timer.start()
        result = self.module.generate(ctx, prompt_ids, self.method.params)
        timer.stop()
        return result, timer


def params_dict(params: object) -> dict:
    return asdict(params) if is_dataclass(params) else {}


def run_prompts(
    config: dict,
    loaded: LoadedPair,
    method: MethodChoice,
    prompts: list[dict],
    out: Path,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    dtype: str,
    warmup: int = 1,
    progress: bool = True,
) -> Path:
    """Generate every turn of every prompt; append one record per question to `out`."""
    seed_everything(seed)
    engine = Decoder(loaded, method, temperature)
    energy_cfg = config.get("energy", {})
    meter = open_energy_meter(engine.target.device, energy_cfg.get("sample_hz", 20.0))
    meta = {
        "record": "meta",
        "pair": loaded.name,
        "method": method.name,
        "algorithm": method.algorithm,
        "params": params_dict(method.params),
        "temperature": temperature,
        "seed": seed,
        "dtype": dtype,
        "device": str(engine.target.device),
        "batch_size": 1,
        "max_new_tokens": max_new_tokens,
        "depth_convention": "depth = number of draft levels",
        "hardware": hardware_info(meter),
        "git_commit": git_commit(),
        "code_sha256": code_fingerprint(),
        "prompts_sha256": records_fingerprint(prompts),
        "model_fingerprints": loaded.fingerprints,
        "command": sys.argv,
        "config": config,
    }
    try:
        writer = ResultWriter(out, meta, RUN_IDENTITY)
    except BaseException:
        meter.close()
        raise
    todo = [p for p in prompts if str(p["question_id"]) not in writer.done]
    try:
        if todo:
            if meter.available:
                # At rest, before warm-up raises the clocks.
                synchronize(engine.target.device)
                meter.measure_idle(energy_cfg.get("idle_seconds", 2.0))
            _warm_up(engine, loaded, todo[0], warmup)
        bar = tqdm(todo, desc=f"{loaded.name}/{method.name}/T={temperature}", disable=not progress)
        for prompt in bar:
            writer.append(_run_question(engine, loaded, meter, prompt, max_new_tokens, seed, meta))
        return writer.finish()
    finally:
        writer.close()
        meter.close()


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


def _run_question(
    engine: Decoder,
    loaded: LoadedPair,
    meter: EnergyMeter,
    prompt: dict,
    max_new_tokens: int,
    seed: int,
    meta: dict,
) -> dict:
    qid = str(prompt["question_id"])
    answers: list[str] = []
    turns: list[dict] = []
    for t in range(len(prompt["turns"])):
        prompt_ids = encode_turn(loaded.tokenizer, prompt, t, answers, loaded.conversation)
        answer_format = prompt.get("answer_format", "free")
        if engine.target.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.target.device)
        with meter.window() as energy:
            result, timer = engine.generate(
                prompt_ids, max_new_tokens, question_seed(seed, qid, t), answer_format
            )
        text = loaded.tokenizer.decode(result.tokens, skip_special_tokens=True)
        answers.append(text)
        split = timer.split()
        turns.append(
            {
                "text": text,
                "token_ids": result.tokens,
                "new_tokens": result.new_tokens,
                "wall_time": timer.total,
                "target_forwards": result.target_forwards,
                "draft_forwards": result.draft_forwards,
                "accept_lengths": result.accept_lengths,
                "time_draft": split["draft"],
                "time_verify": split["verify"],
                "time_other": split["other"],
                "prompt_tokens": len(prompt_ids),
                "kv_cache_bytes": engine.target.cache_bytes(),
                "peak_gpu_memory_bytes": (
                    torch.cuda.max_memory_allocated(engine.target.device)
                    if engine.target.device.type == "cuda"
                    else None
                ),
                "energy": energy.to_dict(),
                "extra": result.extra,
            }
        )
    return {
        "record": "question",
        "question_id": qid,
        "dataset": prompt.get("dataset"),
        "pair": meta["pair"],
        "method": meta["method"],
        "algorithm": meta["algorithm"],
        "temperature": meta["temperature"],
        "seed": meta["seed"],
        "dtype": meta["dtype"],
        "batch_size": 1,
        "model_id": f"{meta['pair']}-{meta['method']}",
        "choices": [
            {
                "index": 0,
                "turns": [t["text"] for t in turns],
                "new_tokens": [t["new_tokens"] for t in turns],
                "wall_time": [t["wall_time"] for t in turns],
                "idxs": [t["target_forwards"] for t in turns],
            }
        ],
        "turns": turns,
        "reference": prompt.get("reference", {}),
    }
