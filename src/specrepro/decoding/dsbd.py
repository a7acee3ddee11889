"""dsbd: Dynamic-Width Speculative Beam Decoding (Qin et al., AAAI 2025; docs/methods.md#dsbd).

A round: the draft runs beam sampling for gamma levels from the live beams (W i.i.d. draws per
level from its own joint q, its cache a trie so every drafted node stays addressable); the
target scores the whole forest in one forward (engine/forest.py: one cache row per beam with
`layout: rows`, or one shared trie sequence with `layout: shared_prefix`, the same decisions
with common prefixes cached once); then the levels are verified in order. At each level the
target's joint p over the surviving beams is computed, the level's width n is the largest with
P(K >= n) >= w_thres (K: accepted drafts, floored at min_width), and the drafts fill n slots
(engine/beams.py: level_tables, fill_level). A level whose slots are all filled by drafts
continues the round; otherwise the round ends with that level's beams: the accepted drafts,
one draw from the open slot's residual, and further draws from p up to W (`refill: W`, the
reference's rule) or up to n (`refill: width`). When every level passes, a bonus level of W
beams is drawn from p.

The law. Every level's beams are exact samples of the target's joint over the previous level's
beams. With every level's width at W (min_width = W, or w_thres = 0) the output therefore
follows `beam` exactly, under either refill rule and either layout (test_dsbd_exact.py, by
exact enumeration). With widths below W it does not: how many beams a level keeps then depends
on its acceptances (a fully accepted level goes on with n beams, a refilled one holds W), so
the output is beam sampling with a width that depends on the draws, neither `beam` at W nor
at n (measured exactly in the same tests).

memory_efficient (the paper's memory-efficient DSBD; the reference code's extra_sample_cnt=1):
each round starts from ONE beam and ends with ONE beam: the drafts and the level-by-level
verification are as above, and the output beam is the open slot's draw at the first level not
fully accepted (its residual after the trailing rejections, or p itself if the last draft was
accepted) or, when every level passes, one draw from the bonus level's joint; the other
accepted beams are dropped (one that finishes inside a round is pooled, as in every mode). At
width 1 (w_thres = 1, min_width = 1) each output token is thus one exact draw of the target's
next-token distribution under T, top-k and top-p: the law of multinomial sampling of the
warped target (tested exactly). At wider levels the output is one exact sample of a level's
joint over beams whose number and values depend on the acceptances: neither multinomial nor
beam sampling's law; the paper trades that for memory.

The output among pooled beams is the reference's: the best beam score over length
(engine/beams.py, Beam.normalised), shared with `beam`.

This module holds the parameters and the round loop; a round's two phases are engine
machinery: engine/forest_draft.py drafts the forest, engine/forest_verify.py verifies it.

Host work per round: the prompt is cached once through the runner's plain causal forward
(`prefill`), so the forest holds only each beam's newest token and the drafts; a verified level
is read to the host once (its acceptance tests against every residual in the chain, its count
law and its drafts' scores together), plus one read for the draws of a level's unfilled slots
or the bonus level; each beam's stop-rule scan continues its parent's.

Not copied from the reference code (docs/methods.md#dsbd): gamma is the configured one; the
harness times wall clock; draws are exact multinomials (no p < 1e-3 to argmax); the seeded
generator drives every draw; and the energy window holds generation only (the harness scores
outside it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError
from specrepro.decoding.beam import check_beam_params, require_sampling
from specrepro.engine.beams import Beam, BeamPool, make_draws
from specrepro.engine.forest import keep_paths, keep_rows, rows_forward, shared_forward
from specrepro.engine.forest_draft import (
    DraftNode,
    LiveBeam,
    chain_nodes,
    draft_forest,
)
from specrepro.engine.forest_verify import verify_round
from specrepro.engine.tree import to_device

__all__ = [
    "LAYOUTS",
    "NEEDS_DRAFT",
    "NEEDS_SAMPLING",
    "REFILL_RULES",
    "RENAMED_KEYS",
    "Params",
    "generate",
    "prefill",
]

NEEDS_DRAFT = True
NEEDS_SAMPLING = True
# Its rounds accept beams, not a prefix of one drafted path: report/dsbd.py reports its widths
# instead of acceptance by depth.
DEPTH_ACCEPTANCE = False


REFILL_RULES = ("W", "width")
RENAMED_KEYS = {
    "memory_saving": "its lossless shared-prefix cache is now `layout: shared_prefix` (the "
    "default; `layout: rows` is one cache row per beam); the paper's memory-efficient DSBD "
    "(one beam per round) is `memory_efficient: true`",
}
LAYOUTS = ("rows", "shared_prefix")


@dataclass
class Params:
    width: int = 3  # W: beams per level, and drafts per level
    gamma: int = 3  # draft levels per round
    w_thres: float = 0.7  # a level's width: largest n with P(K >= n) >= w_thres
    min_width: int = 1
    # The beams a round ends with when a level is not fully accepted: "W" (the reference's:
    # the accepted drafts, the open slot's residual draw, the rest drawn from p) or "width"
    # (the level's dynamic width only).
    refill: str = "W"
    # The target's cache: "shared_prefix" (one trie sequence holding every beam, common
    # prefixes once, no padded slots) or "rows" (one row per beam, every row padded to the
    # longest, as the reference code); lossless, the same decisions. shared_prefix is the
    # default by measurement (`bench beams`: 18.1 vs 12.3 tokens/s on the CPU).
    layout: str = "shared_prefix"
    # The paper's memory-efficient DSBD: one input beam per round and one output beam at the
    # round's end (module docstring); not beam sampling's law.
    memory_efficient: bool = False
    top_k: int = 10
    top_p: float = 0.9

    def lookahead(self) -> int:
        return self.gamma

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
        if self.refill not in REFILL_RULES:
            raise MethodError(f"dsbd: refill must be 'W' or 'width', got {self.refill!r}")
        if self.layout not in LAYOUTS:
            raise MethodError(
                f"dsbd: layout must be 'rows' or 'shared_prefix', got {self.layout!r}"
            )
        if not isinstance(self.memory_efficient, bool):
            raise MethodError(
                f"dsbd: memory_efficient must be true or false, got {self.memory_efficient!r}"
            )


def prefill(ctx: DecodingContext, prompt: list[int]) -> list[int]:
    """Cache all but the prompt's last token in both models through the plain causal path
    (the forest then holds only the newest token and the drafts); returns the cached
    positions. This is the first round's target forward split in two, not another round."""
    draft = ctx.draft
    assert draft is not None
    head = prompt[:-1]
    if head:
        # Copied from pinned memory: a queued copy, no host sync (the draft's forwards run
        # under CUDA's sync debug mode in bench gpu-check).
        with ctx.timer.section("verify"):
            ctx.target.forward(
                to_device(torch.tensor(head), ctx.target.device), logits_from=len(head)
            )
        with ctx.timer.section("draft"):
            draft.forward(to_device(torch.tensor(head), draft.device), logits_from=len(head))
    return list(range(len(head)))


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    require_sampling("dsbd", ctx.temperature)
    draft, target = ctx.draft, ctx.target
    if draft is None:
        raise MethodError("dsbd needs a draft model; the pair has none")
    result = GenerationResult(tokens=[], target_forwards=0)
    pool = BeamPool(ctx.stop)
    draws = make_draws(ctx.generator)
    prompt = list(prompt_ids)
    cached = prefill(ctx, prompt)
    root = Beam([], 0.0, 0.0, scan=ctx.stop.begin())
    live = [LiveBeam(root, [prompt[-1]], cached, [prompt[-1]], list(cached))]
    rounds: dict[str, list] = {
        "levels": [], "widths": [], "accepted": [], "final_width": [], "carried": [],
        "forest_nodes": [], "forest_slots": [],
    }  # fmt: skip
    while live:
        depth = min(params.gamma, ctx.stop.max_new_tokens - len(live[0].beam.tokens))
        with ctx.timer.section("draft"):
            roots, levels = draft_forest(ctx, live, depth, params, pool, draws)
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
            rounds["forest_nodes"].append(len(tokens))
            rounds["forest_slots"].append(forest_slots(params.layout, bases))
            if params.layout == "shared_prefix":
                logits, paths = shared_forward(
                    target, tokens, parents, bases, [lv.path for lv in live], logits_from=skip
                )
            else:
                logits, paths = rows_forward(target, tokens, parents, bases, logits_from=skip)
            outcome = verify_round(ctx, live, levels, logits, params, pool, draws)
            target.ensure_finite()
            draft.ensure_finite()
        result.target_forwards += 1
        result.accept_lengths.append(outcome.new_levels)
        rounds["levels"].append(len(levels))
        rounds["widths"].append(outcome.widths)
        rounds["accepted"].append(outcome.complete)
        rounds["final_width"].append(len(outcome.final))
        rounds["carried"].append(outcome.carried)
        live = _next_beams(ctx, outcome.final, node_of_row, paths, bases, skip, past, params)
    result.tokens = pool.best([]).tokens
    result.draft_forwards = draft.forwards
    result.extra = {"rounds": rounds}
    return result


def forest_slots(layout: str, bases: list[int]) -> int:
    """The positions the target's forest forward runs: one per node in the shared layout; in
    `rows`, every row padded to the longest."""
    if layout == "shared_prefix":
        return len(bases)
    return (max(bases) + 1) * max(Counter(bases).values())


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
    if params.layout == "shared_prefix":
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
