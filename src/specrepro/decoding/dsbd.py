"""dsbd: Dynamic-Width Speculative Beam Decoding (Qin et al., AAAI 2025; SPEC 4.7).

A round: the draft runs beam sampling for gamma levels from the live beams (W i.i.d. draws per
level from its own joint q, its cache a trie so every drafted node stays addressable); the
target scores the whole forest in one forward (engine/forest.py: one cache row per beam, or the
memory-saving shared sequence); then the levels are verified in order. At each level the
target's joint p over the surviving beams is computed, the level's width n is the largest with
P(K >= n) >= w_thres (K: accepted drafts, floored at min_width), and the drafts fill n slots
(engine/beams.py: verify_level). A level whose slots are all filled by drafts continues the
round; otherwise the missing beams are drawn from the residual and the round ends. When every
level passes, a bonus level of W beams is drawn from p. Every level's beams are independent
samples of the target's joint, so with the width held at W the output follows `beam` exactly.

Not copied from the reference code (SPEC 4.7): gamma is the configured one; the harness times
wall clock; draws are exact multinomials (no p < 1e-3 to argmax); the seeded generator drives
every draw; and the energy window holds generation only (the harness scores outside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError
from specrepro.decoding.beam import check_beam_params, require_sampling
from specrepro.engine.beams import (
    Beam,
    BeamPool,
    accepted_count_distribution,
    draw,
    draw_on_device,
    dynamic_width,
    extend,
    joint_distribution,
    verify_level,
)
from specrepro.engine.forest import keep_paths, keep_rows, rows_forward, shared_forward
from specrepro.engine.tree import to_device

NEEDS_DRAFT = True
NEEDS_SAMPLING = True


@dataclass
class Params:
    width: int = 3  # W: beams per level, and drafts per level
    gamma: int = 3  # draft levels per round
    w_thres: float = 0.7  # a level's width: largest n with P(K >= n) >= w_thres
    min_width: int = 1
    memory_saving: bool = False  # one shared target sequence (a trie) instead of a row per beam
    top_k: int = 10
    top_p: float = 0.9

    def validate(self) -> None:
        check_beam_params("dsbd", self.width, self.top_k, self.top_p)
        if not isinstance(self.gamma, int) or self.gamma < 1:
            raise MethodError(f"dsbd: gamma must be a positive integer, got {self.gamma!r}")
        if not isinstance(self.w_thres, int | float) or not 0.0 <= self.w_thres <= 1.0:
            raise MethodError(f"dsbd: w_thres must be in [0, 1], got {self.w_thres!r}")
        if not isinstance(self.min_width, int) or not 1 <= self.min_width <= self.width:
            raise MethodError(
                f"dsbd: min_width must be an integer in [1, width={self.width}], "
                f"got {self.min_width!r}"
            )
        if not isinstance(self.memory_saving, bool):
            raise MethodError(
                f"dsbd: memory_saving must be true or false, got {self.memory_saving!r}"
            )


@dataclass
class LiveBeam:
    beam: Beam
    feed: list[int]  # target tokens not yet cached: the newest token (the prompt at first)
    path: list[int]  # memory-saving mode: the beam's cached target positions
    draft_feed: list[int]
    draft_path: list[int]


@dataclass
class DraftNode:
    parent: int  # index in the previous level (level 1: a live beam)
    token: int
    tokens: list[int]  # the beam's generated tokens, this one last
    score: float  # the draft's beam score
    finished: bool
    up: DraftNode | None = None  # the node it was drawn from (None for a live beam's root)
    path: list[int] | None = None  # draft cache positions, once fed


@dataclass
class DraftLevel:
    nodes: list[DraftNode]
    q: torch.Tensor  # the draft's joint over (previous-level node, token), flat
    picks: list[int]  # the W drafts, flat indices into q


def chain_nodes(feeds: list[list[int]]) -> tuple[list[int], list[int], list[int], int]:
    """Nodes for each beam's uncached tokens: (tokens, parents, bases, skip). All but the last
    token of every chain come first (the `skip` nodes that need no logits); node skip + b is
    beam b's newest token."""
    tokens: list[int] = []
    parents: list[int] = []
    bases: list[int] = []
    last: list[int] = []
    for b, feed in enumerate(feeds):
        parent = -1
        for token in feed[:-1]:
            tokens.append(token)
            parents.append(parent)
            bases.append(b)
            parent = len(tokens) - 1
        last.append(parent)
    skip = len(tokens)
    for b, feed in enumerate(feeds):
        tokens.append(feed[-1])
        parents.append(last[b])
        bases.append(b)
    return tokens, parents, bases, skip


def draft_forest(
    ctx: DecodingContext, live: list[LiveBeam], depth: int, params: Params, pool: BeamPool
) -> tuple[list[DraftNode], list[DraftLevel]]:
    """Beam-sample `depth` levels with the draft; returns the root nodes and the levels."""
    draft = ctx.draft
    assert draft is not None
    tokens, parents, bases, skip = chain_nodes([lv.draft_feed for lv in live])
    base_paths = [lv.draft_path for lv in live]
    roots = [
        DraftNode(
            parent=b, token=lv.feed[-1], tokens=lv.beam.tokens, score=lv.beam.score, finished=False
        )
        for b, lv in enumerate(live)
    ]
    previous = roots
    levels: list[DraftLevel] = []
    for level in range(1, depth + 1):
        logits, paths = shared_forward(draft, tokens, parents, bases, base_paths, logits_from=skip)
        for node, path in zip(previous, paths[skip:], strict=True):
            node.path = path
        logq = torch.log_softmax(logits, dim=-1)
        beam_scores = to_device(
            torch.tensor([float("-inf") if n.finished else n.score for n in previous]),
            logq.device,
        )
        q = joint_distribution(
            beam_scores[:, None] + logq, ctx.temperature, params.top_k, params.top_p
        )
        drawn = draw_on_device(q, params.width, ctx.generator)
        # The draws and their log joint probabilities reach the host in one read (float64
        # holds both exactly).
        flat, kept = torch.stack([drawn.double(), q[drawn].log().double()]).tolist()
        picks = [int(x) for x in flat]
        vocab = logq.shape[-1]
        nodes = []
        for x, score in zip(picks, kept, strict=True):
            row, token = divmod(x, vocab)
            seq = previous[row].tokens + [token]
            nodes.append(DraftNode(row, token, seq, score, pool.is_finished(seq), previous[row]))
        levels.append(DraftLevel(nodes, q, picks))
        if level == depth or all(n.finished for n in nodes):
            break
        tokens = [n.token for n in nodes]
        parents = [-1] * len(nodes)
        bases = list(range(len(nodes)))
        base_paths = [previous[n.parent].path for n in nodes]
        skip = 0
        previous = nodes
    return roots, levels


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
    params: Params,
    pool: BeamPool,
) -> RoundOutcome:
    """Level-by-level acceptance. logits: the target's, one row per forest node in the order
    roots, then each level's nodes."""
    logp = torch.log_softmax(logits, dim=-1)
    vocab = logp.shape[-1]
    rows_of_previous = list(range(len(live)))  # logits row of each previous-level node
    valid = {b: lv.beam for b, lv in enumerate(live)}  # previous-level index -> live beam
    next_row = len(live)
    widths: list[int] = []

    def joint(valid: dict[int, Beam], rows: list[int]) -> torch.Tensor:
        scores = torch.full((len(rows),), float("-inf"), device=logp.device)
        for index, beam in valid.items():
            scores[index] = beam.score
        return joint_distribution(
            scores[:, None] + logp[rows], ctx.temperature, params.top_k, params.top_p
        )

    def candidates(p: torch.Tensor, picks: list[int]) -> list[tuple[Beam, int]]:
        if not picks:
            return []
        split = [divmod(x, vocab) for x in picks]
        parent_rows = [rows_of_previous[index] for index, _ in split]
        where = to_device(
            torch.tensor([picks, parent_rows, [token for _, token in split]]), p.device
        )
        # Every candidate's joint and token log-probabilities in one host read, not one each.
        kept, token_logps = torch.stack(
            [p[where[0]].log().double(), logp[where[1], where[2]].double()]
        ).tolist()
        out = []
        for (index, token), parent_row, score, token_logp in zip(
            split, parent_rows, kept, token_logps, strict=True
        ):
            out.append((extend(valid[index], token, score, token_logp), parent_row))
        return out

    def finish(made: list[tuple[Beam, int]]) -> list[tuple[Beam, int]]:
        still = []
        for beam, row in made:
            if pool.is_finished(beam.tokens):
                pool.add(beam)
            else:
                still.append((beam, row))
        return still

    for count, level in enumerate(levels):
        p = joint(valid, rows_of_previous)
        law = accepted_count_distribution(p, level.q, len(level.picks))
        width = dynamic_width(law, params.w_thres, params.min_width)
        widths.append(width)
        outcome = verify_level(p, level.q, level.picks, width, ctx.generator)
        made = candidates(p, outcome.samples)
        if not outcome.complete:
            return RoundOutcome(finish(made), widths, count, count + 1)
        accepted = {j: beam for j, (beam, _) in zip(outcome.accepted, made, strict=True)}
        valid = {j: beam for j, beam in accepted.items() if not pool.is_finished(beam.tokens)}
        for j, beam in accepted.items():
            if j not in valid:
                pool.add(beam)
        rows_of_previous = list(range(next_row, next_row + len(level.nodes)))
        next_row += len(level.nodes)
        if not valid:
            return RoundOutcome([], widths, count + 1, count + 1)
    p = joint(valid, rows_of_previous)
    bonus = candidates(p, draw(p, params.width, ctx.generator))
    return RoundOutcome(finish(bonus), widths, len(levels), len(levels) + 1)


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    require_sampling("dsbd", ctx.temperature)
    draft, target = ctx.draft, ctx.target
    if draft is None:
        raise MethodError("dsbd needs a draft model; the pair has none")
    result = GenerationResult(tokens=[], target_forwards=0)
    pool = BeamPool(ctx.stop)
    prompt = list(prompt_ids)
    live = [LiveBeam(Beam([], 0.0, 0.0), prompt, [], prompt, [])]
    rounds: dict[str, list] = {"levels": [], "widths": [], "accepted": [], "final_width": []}
    while live:
        depth = min(params.gamma, ctx.stop.max_new_tokens - len(live[0].beam.tokens))
        with ctx.timer.section("draft"):
            roots, levels = draft_forest(ctx, live, depth, params, pool)
        with ctx.timer.section("verify"):
            tokens, parents, bases, skip = chain_nodes([lv.feed for lv in live])
            root_index = list(range(skip, len(tokens)))
            node_of_row: list[DraftNode] = list(roots)
            parent_rows = root_index
            for level in levels:
                rows_here = []
                for node in level.nodes:
                    tokens.append(node.token)
                    parents.append(parent_rows[node.parent])
                    bases.append(bases[parent_rows[node.parent]])
                    rows_here.append(len(tokens) - 1)
                node_of_row += level.nodes
                parent_rows = rows_here
            past = target.cache_len
            if params.memory_saving:
                logits, paths = shared_forward(
                    target, tokens, parents, bases, [lv.path for lv in live], logits_from=skip
                )
            else:
                logits, paths = rows_forward(target, tokens, parents, bases, logits_from=skip)
            outcome = verify_round(ctx, live, levels, logits, params, pool)
            target.ensure_finite()
            draft.ensure_finite()
        result.target_forwards += 1
        result.accept_lengths.append(outcome.new_levels)
        rounds["levels"].append(len(levels))
        rounds["widths"].append(outcome.widths)
        rounds["accepted"].append(outcome.complete)
        rounds["final_width"].append(len(outcome.final))
        live = _next_beams(ctx, outcome.final, node_of_row, paths, bases, skip, past, params)
    result.tokens = pool.best([]).tokens
    result.draft_forwards = draft.forwards
    result.extra = {"rounds": rounds}
    return result


def _next_beams(
    ctx: DecodingContext,
    final: list[tuple[Beam, int]],
    node_of_row: list[DraftNode],
    paths: list[list[int]],
    bases: list[int],
    skip: int,
    past: int,
    params: Params,
) -> list[LiveBeam]:
    """Keep the surviving beams' histories in both caches; their newest tokens become the
    next round's feeds."""
    if not final:
        return []
    target, draft = ctx.target, ctx.draft
    assert draft is not None
    target_paths = [paths[skip + row] for _, row in final]
    if params.memory_saving:
        target_paths = keep_paths(target, target_paths)
    else:
        keep_rows(target, [bases[skip + row] for _, row in final], target_paths, past)
    draft_paths, draft_feeds = [], []
    for beam, row in final:
        node = node_of_row[row]
        if node.path is not None:
            draft_paths.append(node.path)
            draft_feeds.append([beam.tokens[-1]])
        else:  # a last-level node: drafted, never fed to the draft
            assert node.up is not None and node.up.path is not None
            draft_paths.append(node.up.path)
            draft_feeds.append([node.token, beam.tokens[-1]])
    draft_paths = keep_paths(draft, draft_paths)
    return [
        LiveBeam(beam, [beam.tokens[-1]], path, feed, draft_path)
        for (beam, _), path, feed, draft_path in zip(
            final, target_paths, draft_feeds, draft_paths, strict=True
        )
    ]
