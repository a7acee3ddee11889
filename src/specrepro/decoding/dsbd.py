"""dsbd: Dynamic-Width Speculative Beam Decoding (Qin et al., AAAI 2025; SPEC 4.7).

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

Host work per round: the prompt is cached once through the runner's plain causal forward
(`prefill`), so the forest holds only each beam's newest token and the drafts; a verified level
is read to the host once (its acceptance tests against every residual in the chain, its count
law and its drafts' scores together), plus one read for the draws of a level's unfilled slots
or the bonus level; each beam's stop-rule scan continues its parent's.

Not copied from the reference code (SPEC 4.7): gamma is the configured one; the harness times
wall clock; draws are exact multinomials (no p < 1e-3 to argmax); the seeded generator drives
every draw; and the energy window holds generation only (the harness scores outside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError
from specrepro.decoding.beam import check_beam_params, require_sampling
from specrepro.engine.beams import (
    Beam,
    BeamPool,
    Draws,
    count_law,
    dynamic_width,
    fill_level,
    joint_distribution,
    level_tables,
    make_draws,
)
from specrepro.engine.forest import keep_paths, keep_rows, rows_forward, shared_forward
from specrepro.engine.stopping import StopScan
from specrepro.engine.tree import to_device

NEEDS_DRAFT = True
NEEDS_SAMPLING = True


REFILL_RULES = ("W", "width")
RENAMED_KEYS = {
    "memory_saving": "its lossless shared-prefix cache is now `layout: shared_prefix` (default "
    "`layout: rows`); the paper's memory-efficient DSBD (one beam per round) is "
    "`memory_efficient: true`",
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
    # The target's cache: "rows" (one row per beam) or "shared_prefix" (one trie sequence
    # holding every beam, common prefixes once; lossless, the same decisions as rows).
    layout: str = "rows"
    # The paper's memory-efficient DSBD: one input beam per round and one output beam at the
    # round's end (module docstring); not beam sampling's law.
    memory_efficient: bool = False
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


@dataclass
class LiveBeam:
    beam: Beam
    feed: list[int]  # target tokens not yet cached: the newest token
    path: list[int]  # shared-prefix layout: the beam's cached target positions
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
    scan: StopScan | None = field(default=None, repr=False)  # the stop rule's scan of tokens


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
    ctx: DecodingContext,
    live: list[LiveBeam],
    depth: int,
    params: Params,
    pool: BeamPool,
    draws: Draws,
) -> tuple[list[DraftNode], list[DraftLevel]]:
    """Beam-sample `depth` levels with the draft; returns the root nodes and the levels."""
    draft = ctx.draft
    assert draft is not None
    tokens, parents, bases, skip = chain_nodes([lv.draft_feed for lv in live])
    base_paths = [lv.draft_path for lv in live]
    roots = [
        DraftNode(
            parent=b,
            token=lv.feed[-1],
            tokens=lv.beam.tokens,
            score=lv.beam.score,
            finished=False,
            scan=lv.beam.scan,
        )
        for b, lv in enumerate(live)
    ]
    previous = roots
    levels: list[DraftLevel] = []
    for level in range(1, depth + 1):
        logits, paths = shared_forward(draft, tokens, parents, bases, base_paths, logits_from=skip)
        for node, path in zip(previous, paths[skip:], strict=True):
            node.path = path
        logq = torch.log_softmax(logits.double(), dim=-1)
        beam_scores = to_device(
            torch.tensor(
                [float("-inf") if n.finished else n.score for n in previous], dtype=logq.dtype
            ),
            logq.device,
        )
        q = joint_distribution(
            beam_scores[:, None] + logq, ctx.temperature, params.top_k, params.top_p
        )
        drawn = draws.sample(q, params.width)
        # The draws and their log joint probabilities reach the host in one read (float64
        # holds both exactly).
        flat, kept = torch.stack([drawn.double(), q[drawn].log()]).tolist()
        picks = [int(x) for x in flat]
        vocab = logq.shape[-1]
        nodes = []
        for x, score in zip(picks, kept, strict=True):
            row, token = divmod(x, vocab)
            up = previous[row]
            seq = up.tokens + [token]
            scan = pool.scan(up.scan, seq)
            nodes.append(DraftNode(row, token, seq, score, pool.stop.finished(scan), up, scan=scan))
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
    rounds: dict[str, list] = {"levels": [], "widths": [], "accepted": [], "final_width": []}
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
