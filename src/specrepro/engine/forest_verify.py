"""DSBD's verification: the drafted levels accepted in order against the target's joint over
the surviving beams, each level's width from its acceptance count law (engine/beams.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from specrepro.engine.beams import (
    Beam,
    BeamPool,
    Draws,
    count_law,
    dynamic_width,
    fill_level,
    joint_distribution,
    level_tables,
)
from specrepro.engine.forest_draft import DraftLevel, ForestParams, LiveBeam
from specrepro.engine.tree import to_device

if TYPE_CHECKING:
    from specrepro.decoding.base import DecodingContext


@dataclass
class RoundOutcome:
    final: list[tuple[Beam, int]]  # live beams after the round and their parent forest node
    widths: list[int]  # the width chosen at each verified level
    complete: int  # levels whose every slot was filled by an accepted draft
    new_levels: int  # levels that produced beams (tokens advanced this round)


def verify_round(
    ctx: DecodingContext,
    live: list[LiveBeam],
    levels: list[DraftLevel],
    logits: torch.Tensor,
    params: ForestParams,
    pool: BeamPool,
    draws: Draws,
) -> RoundOutcome:
    """Level-by-level acceptance. logits: the target's, one row per forest node in the order
    roots, then each level's nodes. Host reads: one per verified level (`level_tables`), one
    more for the draws of a level's unfilled slots or of the bonus level."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    device = logp.device
    vocab = logp.shape[-1]
    rows_of_previous = list(range(len(live)))  # logits row of each previous-level node
    valid = {b: lv.beam for b, lv in enumerate(live)}  # previous-level index -> live beam
    next_row = len(live)
    widths: list[int] = []
    width_at_end = 1 if params.memory_efficient else params.width

    def joint(valid: dict[int, Beam], rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(p, the token log-probabilities of every (previous node, token), flat)."""
        scores = [float("-inf")] * len(rows)
        for index, beam in valid.items():
            scores[index] = beam.score
        where = to_device(torch.tensor(rows + scores, dtype=torch.float64), device)
        token_logp = logp[where[: len(rows)].long()]
        p = joint_distribution(
            where[len(rows) :, None] + token_logp, ctx.temperature, params.top_k, params.top_p
        )
        return p, token_logp.reshape(-1)

    def beams_of(
        picks: list[int], scores: list[float], token_logps: list[float]
    ) -> list[tuple[Beam, int]]:
        out = []
        for x, score, token_logp in zip(picks, scores, token_logps, strict=True):
            index, token = divmod(int(x), vocab)
            beam = pool.extend(valid[index], token, score, token_logp)
            out.append((beam, rows_of_previous[index]))
        return out

    def read(drawn: torch.Tensor, p: torch.Tensor, flat_logp: torch.Tensor):
        """Draws with their joint and token log-probabilities, in one host read."""
        picks, scores, token_logps = torch.stack(
            [drawn.double(), p[drawn].log(), flat_logp[drawn]]
        ).tolist()
        return beams_of([int(x) for x in picks], scores, token_logps)

    def finish(made: list[tuple[Beam, int]]) -> list[tuple[Beam, int]]:
        still = []
        for beam, row in made:
            if pool.done(beam):
                pool.add(beam)
            else:
                still.append((beam, row))
        return still

    for count, level in enumerate(levels):
        p, flat_logp = joint(valid, rows_of_previous)
        drafts = level.picks
        tables = level_tables(p, level.q, drafts, draws, extra=flat_logp[None])
        width = dynamic_width(
            count_law(tables.alphas, len(drafts)), params.w_thres, params.min_width
        )
        widths.append(width)
        # When the level is not fully accepted: the reference's refill to W, the level's own
        # width, or (memory-efficient) the open slot's draw alone.
        fill = 0 if params.memory_efficient else (
            params.width if params.refill == "W" else width
        )  # fmt: skip
        outcome = fill_level(p, tables, drafts, width, draws, fill)
        made = beams_of(
            outcome.samples,
            [tables.log_p[j] for j in outcome.accepted],
            [tables.extra[0][j] for j in outcome.accepted],
        )
        if not outcome.complete:
            assert outcome.pending is not None
            made += read(outcome.pending, p, flat_logp)
            if params.memory_efficient:
                made = [made[outcome.residual]]
            return RoundOutcome(finish(made), widths, count, count + 1)
        accepted = {j: beam for j, (beam, _) in zip(outcome.accepted, made, strict=True)}
        valid = {j: beam for j, beam in accepted.items() if not pool.done(beam)}
        for j, beam in accepted.items():
            if j not in valid:
                pool.add(beam)
        rows_of_previous = list(range(next_row, next_row + len(level.nodes)))
        next_row += len(level.nodes)
        if not valid:
            return RoundOutcome([], widths, count + 1, count + 1)
    p, flat_logp = joint(valid, rows_of_previous)
    bonus = read(draws.sample(p, width_at_end), p, flat_logp)
    return RoundOutcome(finish(bonus), widths, len(levels), len(levels) + 1)
