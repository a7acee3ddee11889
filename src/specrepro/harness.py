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
from specrepro.decoding.base import (
    DecodingContext,
    GenerationResult,
    get_method,
    lookahead,
    needed_roles,
)
from specrepro.energy import EnergyMeter, git_commit, hardware_info
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import make_generator
from specrepro.engine.stopping import StopRule, eos_token_ids, token_budget, token_texts
from specrepro.engine.timing import StepTimer, synchronize
from specrepro.models.eagle_head import load_head_model
from specrepro.models.loader import (
    ModelError,
    ModelSpec,
    fingerprint,
    load_model,
    load_tokenizer,
)
from specrepro.prompting import default_conversation, encode_turn
from specrepro.provenance import code_fingerprint, records_fingerprint
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
    config: dict,
    pair_name: str,
    dtype: str,
    device: str,
    roles: tuple[str, ...] = (),
    models: dict[str, tuple[torch.nn.Module, str]] | None = None,
) -> LoadedPair:
    """The pair's target plus the members in `roles` ("draft", "head").

    `models` ({name: (model, fingerprint)}) shares the weights of a model that several pairs
    name: it is loaded once per job."""
    models = {} if models is None else models
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

    def load(spec: ModelSpec, build) -> tuple[torch.nn.Module, str]:
        if spec.name not in models:
            model = build()
            models[spec.name] = (model, fingerprint(spec, model, cache_root))
        return models[spec.name]

    target, target_print = load(
        target_spec, lambda: load_model(target_spec, dtype, device, cache_root)[0]
    )
    fingerprints = {"target": target_print}
    draft = None
    if draft_spec is not None:
        draft, fingerprints["draft"] = load(
            draft_spec, lambda: load_model(draft_spec, dtype, device, cache_root)[0]
        )
    head = None
    if "head" in roles:
        head_spec = model_spec(config, pair["head"])
        head, fingerprints["head"] = load(
            head_spec, lambda: load_head_model(head_spec, target, cache_root)
        )
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
    """Drives one method on one loaded pair; every generation is timed the same way.

    `runners` shares one ModelRunner (and its cache buffers) per model between the decoders of
    one job, so members of a timing group that use the same target do not each hold a cache.
    """

    def __init__(
        self,
        loaded: LoadedPair,
        method: MethodChoice,
        temperature: float,
        runners: dict[tuple[str, int], ModelRunner] | None = None,
    ) -> None:
        self.loaded = loaded
        self.method = method
        self.module = get_method(method.algorithm)
        self.temperature = temperature
        runners = {} if runners is None else runners

        def runner(model: torch.nn.Module | None, name: str) -> ModelRunner | None:
            if model is None:
                return None
            # By role too: a pair may use one model as both target and draft.
            key = (name, id(model))
            if key not in runners:
                runners[key] = ModelRunner(model, name)
            return runners[key]

        self.target = runner(loaded.target, "target")
        self.draft = runner(loaded.draft, "draft")
        self.head = runner(loaded.head, "head")
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

    def used_runners(self) -> list[ModelRunner]:
        roles = needed_roles(self.method.algorithm)
        return [self.target] + [
            runner
            for role, runner in (("draft", self.draft), ("head", self.head))
            if role in roles and runner is not None
        ]

    def stop_rule(
        self, max_new_tokens: int, answer_format: str, budget_reason: str = "max_new_tokens"
    ) -> StopRule:
        return StopRule(
            eos_ids=self.loaded.eos_ids,
            max_new_tokens=max_new_tokens,
            answer_format=answer_format,
            token_text=self.loaded.token_text,
            budget_reason=budget_reason,
        )

    def max_positions(self) -> int | None:
        """The smallest position limit among the models this method runs (None: no limit)."""
        limits = [r.max_positions for r in self.used_runners() if r.max_positions is not None]
        return min(limits) if limits else None

    def generate(
        self, prompt_ids: list[int], max_new_tokens: int, seed: int, answer_format: str = "free"
    ) -> tuple[GenerationResult, StepTimer]:
        budget, budget_reason = token_budget(
            max_new_tokens, len(prompt_ids), self.max_positions(), lookahead(self.method.params)
        )
        capacity = len(prompt_ids) + budget + CACHE_HEADROOM
        runners = self.used_runners()
        for runner in runners:
            runner.reset(capacity)
        timer = StepTimer(self.target.device)
        stop = self.stop_rule(budget, answer_format, budget_reason)
        ctx = DecodingContext(
            target=self.target,
            stop=stop,
            temperature=self.temperature,
            generator=make_generator(seed, self.target.device),
            timer=timer,
            draft=self.draft if self.module.NEEDS_DRAFT else None,
            head=self.head if "head" in needed_roles(self.method.algorithm) else None,
        )
        timer.start()
        if budget > 0:
            result = self.module.generate(ctx, prompt_ids, self.method.params)
        else:
            # The prompt alone fills the positions: even reading it would run past them. The
            # record says so (stop_reason context_limit) and the run goes on.
            result = GenerationResult(tokens=[], target_forwards=0)
        timer.stop()
        result.kv_bytes_peak = sum(runner.peak_cache_bytes for runner in runners)
        result.stop_reason = stop.reason(result.tokens)
        return result, timer

    @torch.inference_mode()
    def target_loglik(self, prompt_ids: list[int], tokens: list[int]) -> float | None:
        """The target's mean log-probability (at T=1) per token of `tokens` after the prompt:
        a quality signal for every method and temperature, computed outside the timed window."""
        if not tokens:
            return None
        self.target.reset(len(prompt_ids) + len(tokens))
        out = self.target.forward(prompt_ids + tokens, logits_from=len(prompt_ids) - 1)
        logp = torch.log_softmax(out.logits[: len(tokens)], dim=-1)
        picked = logp.gather(1, torch.as_tensor(tokens, device=logp.device).view(-1, 1))
        return float(picked.mean())


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
            writer.append(_run_question(engine, pair, meter, prompt, max_new_tokens, seed, meta))
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
        # Full-length methods still have their answer extracted when scored (report/tidy.py).
        answer_format = "free"
        if engine.method.stop_at_answer:
            answer_format = prompt.get("answer_format", "free")
        if engine.target.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.target.device)
        with meter.window() as energy:
            result, timer = engine.generate(
                prompt_ids, max_new_tokens, question_seed(seed, qid, t), answer_format
            )
        cuda = engine.target.device.type == "cuda"
        peak = torch.cuda.max_memory_allocated(engine.target.device) if cuda else None
        text = loaded.tokenizer.decode(result.tokens, skip_special_tokens=True)
        answers.append(text)
        # Scored after the timed and energy windows: quality is not part of the speed.
        loglik = engine.target_loglik(prompt_ids, result.tokens)
        split = timer.split()
        turns.append(
            {
                "text": text,
                "token_ids": result.tokens,
                "new_tokens": result.new_tokens,
                "wall_time": timer.total,
                "target_forwards": result.target_forwards,
                "verify_forwards": result.verify_forwards,
                "verified_tokens": result.verified_tokens,
                "draft_forwards": result.draft_forwards,
                "accept_lengths": result.accept_lengths,
                "time_draft": split["draft"],
                "time_verify": split["verify"],
                "time_other": split["other"],
                "prompt_tokens": len(prompt_ids),
                "kv_bytes_peak": result.kv_bytes_peak,
                "stop_reason": result.stop_reason,
                "target_loglik": loglik,
                "peak_gpu_memory_bytes": peak,
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
