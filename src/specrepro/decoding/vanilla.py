"""vanilla: the autoregressive baseline, one target forward per new token (docs/methods.md)."""

from __future__ import annotations

from dataclasses import dataclass

from specrepro.decoding.base import DecodingContext, GenerationResult, commit
from specrepro.engine.sampling import greedy, probs_from_logits, sample

NEEDS_DRAFT = False


@dataclass
class Params:
    def lookahead(self) -> int:
        return 0  # one target token per forward, no drafts


def next_token(ctx: DecodingContext, logits) -> int:
    if ctx.temperature == 0:
        return greedy(logits)
    return sample(probs_from_logits(logits, ctx.temperature), ctx.generator)


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    result = GenerationResult(tokens=[], target_forwards=0)
    generated: list[int] = []
    pending = list(prompt_ids)  # tokens not yet in the target's cache
    done = False
    while not done:
        with ctx.timer.section("verify"):
            logits = ctx.target.forward(pending, logits_from=len(pending) - 1).logits[-1]
        result.target_forwards += 1
        token = next_token(ctx, logits)
        ctx.target.ensure_finite()
        done = commit(ctx, generated, [token], result)
        pending = [token]
    result.tokens = generated
    # The first forward reads the prompt; every later one "verifies" exactly one token.
    result.prefill_forwards = 1
    return result
