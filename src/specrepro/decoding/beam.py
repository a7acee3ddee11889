"""beam: beam sampling with the target alone, the baseline DSBD is measured against
(docs/methods.md).

The beams are rows of one batch: each step is one target forward over every live beam's newest
token, and the cache rows are then reordered by the sampled parents (engine/beams.py has the
step's distribution, the finished pool and the output rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError
from specrepro.engine.beams import (
    Beam,
    BeamPool,
    Draws,
    make_draws,
)
from specrepro.engine.level_draws import draw_level, require_finite_joint
from specrepro.engine.tree import to_device

NEEDS_DRAFT = False
NEEDS_SAMPLING = True  # at T=0 the joint is a point mass and beam sampling is greedy decoding


@dataclass
class Params:
    width: int = 3
    top_k: int = 10
    top_p: float = 0.9

    def lookahead(self) -> int:
        return 0  # one target token per step, no drafts

    def validate(self) -> None:
        check_beam_params("beam", self.width, self.top_k, self.top_p)


def check_beam_params(method: str, width: object, top_k: object, top_p: object) -> None:
    if not isinstance(width, int) or width < 1:
        raise MethodError(f"{method}: width must be a positive integer, got {width!r}")
    if not isinstance(top_k, int) or top_k < 0:
        raise MethodError(f"{method}: top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if not isinstance(top_p, int | float) or not 0.0 < top_p <= 1.0:
        raise MethodError(f"{method}: top_p must be in (0, 1] (1 = off), got {top_p!r}")


def require_sampling(method: str, temperature: float) -> None:
    if temperature <= 0:
        raise MethodError(
            f"{method} samples from the joint beam distribution and needs T > 0 (at T = 0 it "
            "is greedy decoding); run it at T > 0 (runs.only_temperatures)"
        )


def step(
    ctx: DecodingContext,
    beams: list[Beam],
    logits: torch.Tensor,
    params: Params,
    pool: BeamPool,
    draws: Draws,
) -> tuple[list[int], list[Beam]]:
    """Sample the next level: (parent row of each new beam, the new beams), finished or not."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    scores = to_device(torch.tensor([b.score for b in beams], dtype=logp.dtype), logp.device)
    level = draw_level(
        draws, scores[:, None] + logp, ctx.temperature, params.top_k, params.top_p,
        params.width, extra=logp.view(-1),
    )  # fmt: skip
    require_finite_joint(level.log_joint, "beam", ctx.target)
    vocab = logp.shape[-1]
    parents = [x // vocab for x in level.picks]
    new = [
        pool.extend(beams[row], x % vocab, score, token_logp)
        for row, x, score, token_logp in zip(
            parents, level.picks, level.log_joint, level.extra, strict=True
        )
    ]
    return parents, new


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    require_sampling("beam", ctx.temperature)
    result = GenerationResult(tokens=[], target_forwards=0)
    pool = BeamPool(ctx.stop)
    draws = make_draws(ctx.generator)
    live = [Beam(tokens=[], score=0.0, logprob=0.0, scan=ctx.stop.begin())]
    feed = torch.tensor([prompt_ids])
    widths: list[int] = []
    while live:
        with ctx.timer.section("verify"):
            logits = ctx.target.forward(feed, logits_from=feed.shape[1] - 1).logits[:, -1]
            parents, candidates = step(ctx, live, logits, params, pool, draws)
            ctx.target.ensure_finite()
        result.target_forwards += 1
        result.accept_lengths.append(1)
        widths.append(len(candidates))
        live, rows = [], []
        for row, beam in zip(parents, candidates, strict=True):
            if pool.done(beam):
                pool.add(beam)
            else:
                live.append(beam)
                rows.append(row)
        if live:
            ctx.target.select_rows(rows)
            feed = torch.tensor([[b.tokens[-1]] for b in live])
    result.tokens = pool.best(live).tokens
    result.extra = {"widths": widths}
    return result
