"""DSBD's verification: the drafted levels accepted in order against the target's joint over
the surviving beams, each level's width from its acceptance count law (engine/beams.py).

A level's target joint is computed on its candidates (engine/joint.py, `sparse_joint`), from
the log-probabilities of the level's forest rows alone, when the level is verified: a round
that stops at its first level never pays for the rows of the levels after it."""

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
    level_tables,
    sample_joint,
)
from specrepro.engine.forest_draft import DraftLevel, ForestParams, LiveBeam
from specrepro.engine.joint import Joint, full_joint, joint_distribution, sparse_joint
from specrepro.engine.level_draws import require_finite_joint
from specrepro.engine.tree import to_device

if TYPE_CHECKING:
    from specrepro.decoding.base import DecodingContext


@dataclass
class RoundOutcome:
    final: list[tuple[Beam, int]]  # live beams after the round and their parent forest node
    widths: list[int]  # the width chosen at each verified level
    complete: int  # levels whose every slot was filled by an accepted draft
    new_levels: int  # levels that produced beams (tokens advanced this round)
    # Beams held at each new position, finished ones included: a full level's width, then
    # the beams the round ends with (W or n refilled, 1 memory-efficient, or the bonus level's).
    carried: list[int]


def level_log_probs(logits: torch.Tensor, rows: range) -> torch.Tensor:
    """[len(rows), V]: the target's token log-probabilities at one level's forest rows."""
    return torch.log_softmax(logits[rows.start : rows.stop].double(), dim=-1)


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
    device = logits.device
    vocab = logits.shape[-1]
    rows_of_previous = range(len(live))  # logits rows of the previous level's nodes
    valid = {b: lv.beam for b, lv in enumerate(live)}  # previous-level index -> live beam
    widths: list[int] = []
    width_at_end = 1 if params.memory_efficient else params.width

    def joint(
        valid: dict[int, Beam], rows: range, dense: bool = False
    ) -> tuple[Joint, torch.Tensor]:
        """(p, the token log-probabilities of every (previous node, token), flat); `dense`:
        p over every candidate (when the candidates spilled)."""
        scores = [float("-inf")] * len(rows)
        for index, beam in valid.items():
            scores[index] = beam.score
        token_logp = level_log_probs(logits, rows)
        beam_scores = to_device(torch.tensor(scores, dtype=torch.float64), device)
        joint_scores = beam_scores[:, None] + token_logp
        args = (joint_scores, ctx.temperature, params.top_k, params.top_p)
        p = full_joint(joint_distribution(*args)) if dense else sparse_joint(*args)
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

    def read(drawn: torch.Tensor, p: Joint, flat_logp: torch.Tensor):
        """Draws with their joint and token log-probabilities, in one host read; None when p
        spilled (only a bonus level's p is read here first)."""
        picks, scores, token_logps, spilled = torch.stack(
            [
                drawn.double(),
                p.at(drawn).log(),
                flat_logp[drawn],
                p.spilled.double().expand(drawn.shape),
            ]
        ).tolist()
        if spilled[0]:
            return None
        require_finite_joint(scores, "dsbd verification", ctx.target)
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
        if tables.spilled:  # ties past the candidates: the level again on the dense joint
            p, flat_logp = joint(valid, rows_of_previous, dense=True)
            tables = level_tables(p, level.q, drafts, draws, extra=flat_logp[None])
        require_finite_joint(tables.alphas, "dsbd verification", ctx.target, ctx.draft)
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
            pending = read(outcome.pending, p, flat_logp)
            assert pending is not None  # p passed its level's read
            made += pending
            if params.memory_efficient:  # one beam goes on; finished ones are still pooled
                kept = made[outcome.residual]
                finish([m for i, m in enumerate(made) if i != outcome.residual])
                made = [kept]
            carried = widths[:count] + [len(made)]
            return RoundOutcome(finish(made), widths, count, count + 1, carried)
        accepted = {j: beam for j, (beam, _) in zip(outcome.accepted, made, strict=True)}
        valid = {j: beam for j, beam in accepted.items() if not pool.done(beam)}
        for j, beam in accepted.items():
            if j not in valid:
                pool.add(beam)
        rows_of_previous = range(rows_of_previous.stop, rows_of_previous.stop + len(level.nodes))
        if not valid:
            return RoundOutcome([], widths, count + 1, count + 1, list(widths))
    p, flat_logp = joint(valid, rows_of_previous)
    bonus = read(sample_joint(draws, p, width_at_end), p, flat_logp)
    if bonus is None:
        p, flat_logp = joint(valid, rows_of_previous, dense=True)
        bonus = read(sample_joint(draws, p, width_at_end), p, flat_logp)
    assert bonus is not None
    carried = widths + [len(bonus)]
    return RoundOutcome(finish(bonus), widths, len(levels), len(levels) + 1, carried)
