"""sps: speculative sampling with a draft model (Leviathan et al.; Chen et al.; docs/methods.md).

Invariant between rounds: both caches hold every committed token except the newest, which is
fed at the start of the next round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError, commit
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import draw, probs_from_logits, residual, sample

NEEDS_DRAFT = True


@dataclass
class Params:
    gamma: int = 4

    def lookahead(self) -> int:
        return self.gamma

    def validate(self) -> None:
        if not isinstance(self.gamma, int) or self.gamma < 1:
            raise MethodError(f"sps: gamma must be a positive integer, got {self.gamma!r}")


def draft_tokens(
    ctx: DecodingContext, draft: ModelRunner, pending: list[int], gamma: int
) -> tuple[list[int], list[torch.Tensor]]:
    """Propose gamma tokens autoregressively; returns them and the draft's distributions q
    (logits at T=0, since greedy needs only argmax). Each drafted token stays on the device and
    is the next forward's input as it is; the host reads all gamma in one read at the end."""
    drafted: list[torch.Tensor] = []
    dists: list[torch.Tensor] = []
    feed: list[int] | torch.Tensor = pending
    for _ in range(gamma):
        logits = draft.forward(feed, logits_from=len(feed) - 1).logits[-1]
        if ctx.temperature == 0:
            token = torch.argmax(logits).view(1)
            dists.append(logits)
        else:
            q = probs_from_logits(logits, ctx.temperature)
            token = draw(q, ctx.generator)
            dists.append(q)
        drafted.append(token)
        feed = token
    return torch.cat(drafted).tolist(), dists


def verify(
    ctx: DecodingContext, logits: torch.Tensor, drafted: list[int], dists: list[torch.Tensor]
) -> list[int]:
    """Accepted draft prefix plus one corrected or bonus token. logits: [gamma+1, V]."""
    if ctx.temperature == 0:
        target_choice = torch.argmax(logits, dim=-1).tolist()
        out: list[int] = []
        for i, token in enumerate(drafted):
            if token != target_choice[i]:
                return out + [target_choice[i]]
            out.append(token)
        return out + [target_choice[len(drafted)]]
    p_all = probs_from_logits(logits, ctx.temperature)
    out = []
    for i, token in enumerate(drafted):
        p, q = p_all[i], dists[i]
        u = torch.rand((), generator=ctx.generator, device=p.device)
        if u * q[token] <= p[token]:
            out.append(token)
            continue
        return out + [sample(residual(p, q), ctx.generator)]
    return out + [sample(p_all[len(drafted)], ctx.generator)]


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    draft = ctx.draft
    if draft is None:
        raise MethodError("sps needs a draft model; the pair has none")
    result = GenerationResult(tokens=[], target_forwards=0)
    generated: list[int] = []
    target_pending = list(prompt_ids)
    draft_pending = list(prompt_ids)
    done = False
    while not done:
        gamma = min(params.gamma, ctx.stop.max_new_tokens - len(generated))
        with ctx.timer.section("draft"):
            base = draft.cache_len
            drafted, dists = (
                draft_tokens(ctx, draft, draft_pending, gamma) if gamma > 0 else ([], [])
            )
        with ctx.timer.section("verify"):
            start = ctx.target.cache_len
            n_prev = len(target_pending)
            out = ctx.target.forward(target_pending + drafted, logits_from=n_prev - 1)
            accepted = verify(ctx, out.logits, drafted, dists)
            ctx.target.ensure_finite()
            draft.ensure_finite()
        result.target_forwards += 1
        n_acc = len(accepted) - 1
        # Keep committed tokens only: the pending ones plus the accepted draft prefix.
        ctx.target.crop(start + n_prev + n_acc)
        committed_in_draft = base + len(draft_pending) + n_acc
        draft.crop(min(committed_in_draft, draft.cache_len))
        done = commit(ctx, generated, accepted, result)
        target_pending = [accepted[-1]]
        # If every draft token was accepted, the draft never saw the last one: feed it next round.
        draft_pending = ([drafted[-1]] if n_acc == gamma and gamma > 0 else []) + [accepted[-1]]
    result.tokens = generated
    result.draft_forwards = draft.forwards
    return result
