"""One method on one loaded pair: the pair's models (LoadedPair) and the Decoder that runs
every generation of the method the same way, timed."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.config import MethodChoice
from specrepro.decoding.base import (
    DecodingContext,
    GenerationResult,
    get_method,
    lookahead,
)
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import make_generator
from specrepro.engine.stopping import StopRule, token_budget
from specrepro.engine.timing import StepTimer
from specrepro.models.loader import ModelError
from specrepro.planning.methods import needed_roles

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
        # Read once: the registry parses the method's source, which no generation should redo.
        self.roles = needed_roles(method.algorithm)
        self.temperature = temperature
        runners = {} if runners is None else runners
        self.shared_runners = runners

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
        if "head" in self.roles and self.head is None:
            raise ModelError(f"method {method.name!r} needs an EAGLE head; none loaded")
        if self.draft is not None and self.draft.vocab_size != self.target.vocab_size:
            # The residual max(p - q, 0) needs both distributions over the same vocabulary.
            raise ModelError(
                f"pair {loaded.name!r}: the draft's logits are {self.draft.vocab_size} wide, the "
                f"target's {self.target.vocab_size}; speculative sampling needs equal widths"
            )

    def release_buffers(self) -> None:
        """Free the cache buffers of every runner this decoder shares with its timing group
        (another member's beam rows included), so the next generation's memory peak is its own.
        """
        for runner in self.shared_runners.values():
            runner.release()

    def used_runners(self) -> list[ModelRunner]:
        return [self.target] + [
            runner
            for role, runner in (("draft", self.draft), ("head", self.head))
            if role in self.roles and runner is not None
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
            head=self.head if "head" in self.roles else None,
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
