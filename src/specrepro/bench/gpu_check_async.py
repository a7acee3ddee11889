"""ddd_async reads no stale flag: with a sleep queued on the stream after every head forward (so
each depth check's flag is still in flight when the host polls it), ddd_async's tokens, trees
and H values equal ddd's, and some levels were drafted past a stop (proof that the flags were
pending when polled)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from specrepro.bench.gpu_check_core import CheckContext, CheckResult
from specrepro.bench.gpu_check_models import CheckModels, check_decoder, check_prompts
from specrepro.bench.gpu_check_syncs import wrapped_forward
from specrepro.decoding.base import GenerationResult

ASYNC_PROMPTS = 3
ASYNC_PROMPT_LEN = 24
ASYNC_NEW_TOKENS = 48
# Small enough that some rounds stop at each check level and some run to the last level.
ASYNC_PARAMS = {"top_k": 4, "total_tokens": 24, "check_levels": [2, 3, 4], "max_levels": 6}
ASYNC_THRESHOLDS = (-0.3, -1.0, -3.0, -10.0)


def delayed(cycles: int) -> Callable[[Callable], Callable]:
    """A head forward followed by a sleep queued on the stream: the check computed after it
    (and the flag's copy) lands on the host late, while the host drafts on."""

    def around(forward: Callable) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            out = forward(*args, **kwargs)
            if cycles:
                torch.cuda._sleep(cycles)
            return out

        return run

    return around


def tree_record(result: GenerationResult) -> tuple:
    rounds = result.extra["rounds"]
    return (result.tokens, rounds["levels"], rounds["tree_size"], rounds["checks"])


def _runs(
    models: CheckModels, name: str, temperature: float, params: dict, cycles: int
) -> list[GenerationResult]:
    decoder = check_decoder(models, name, temperature, params)
    assert decoder.head is not None
    vocab = models.target.get_output_embeddings().weight.shape[0]
    prompts = check_prompts(vocab, ASYNC_PROMPTS, ASYNC_PROMPT_LEN)
    with wrapped_forward(decoder.head, delayed(cycles)):
        return [
            decoder.generate(ids, ASYNC_NEW_TOKENS, seed)[0] for seed, ids in enumerate(prompts)
        ]


def check_async_trees(ctx: CheckContext) -> CheckResult:
    """ddd_async against ddd with the head's stream delayed by ctx.sleep_cycles per forward."""
    models = ctx.models()
    mismatches, rounds, dropped, stopped = [], 0, 0, 0
    for threshold in ASYNC_THRESHOLDS:
        params = {**ASYNC_PARAMS, "threshold": threshold}
        for temperature in (0.0, 1.0):
            ref = _runs(models, "ddd", temperature, params, ctx.sleep_cycles)
            got = _runs(models, "ddd_async", temperature, params, ctx.sleep_cycles)
            for seed, (a, b) in enumerate(zip(ref, got, strict=True)):
                if tree_record(a) != tree_record(b):
                    mismatches.append(f"x={threshold} T={temperature:g} prompt {seed}")
                levels = b.extra["rounds"]["levels"]
                drafted = b.extra["rounds"]["drafted"]
                rounds += len(levels)
                stopped += sum(n < ASYNC_PARAMS["max_levels"] for n in levels)
                dropped += sum(d - n for d, n in zip(drafted, levels, strict=True))
    counts = f"{rounds} rounds, {stopped} stopped early, {dropped} levels drafted past a stop"
    if mismatches:
        return CheckResult(False, f"trees differ from ddd's: {mismatches[:5]} ({counts})")
    if dropped == 0:
        return CheckResult(
            False, f"no flag was pending when polled: the delay did not bite ({counts})"
        )
    return CheckResult(True, f"tokens, trees and H equal ddd's; {counts}")
