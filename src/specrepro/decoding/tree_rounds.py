"""The round loop of the EAGLE family (eagle, eagle2, ddd, ddd_async), and the two tree drafters.

Invariant between rounds: the target's cache holds every committed token except the newest (the
tree's root); the head's cache holds one entry per committed position t < L, the pair
(embed(x_{t+1}), f_t) with f_t the target's own final-norm feature. A round feeds the head the
pairs of the tokens committed last round, drafts a tree over the head's cache (masks over the
cached levels, positions by depth), verifies it in one target forward, keeps the accepted path in
the target's cache and crops the head's drafted levels, whose features were the head's guesses.

Depth, everywhere in this project, is the number of draft levels (the EAGLE-2 paper's "depth 6"
is its code's depth=5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError, commit
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import greedy, probs_from_logits, sample
from specrepro.engine.tree import (
    DraftTree,
    accept_greedy,
    accept_sampling,
    ancestor_mask,
    positions,
    sample_without_replacement,
)

# EAGLE-1's default tree (its choices.py, `mc_sim_7b_63`): 25 nodes below the root, depth 5.
# Each entry is a path of child ranks from the root ([0, 1]: the root's best child's 2nd child).
EAGLE1_TREE: tuple[tuple[int, ...], ...] = (
    (0,), (1,), (2,), (3,), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0),
    (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0),
    (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2), (0, 0, 0, 0, 0), (0, 0, 0, 0, 1),
)  # fmt: skip


@dataclass
class RoundStats:
    """What a drafter reports about one round (recorded per round in the result's extra)."""

    levels: int
    checks: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (level, H) for DDD


@dataclass
class DraftInput:
    root: int  # the newest committed token
    logits: torch.Tensor  # [V] the head's next-token logits at the root
    feature: torch.Tensor  # [H] the head's predicted feature at the root
    committed: int  # head cache length = target cache length at the start of the round


Drafter = Callable[[DecodingContext, ModelRunner, DraftInput], tuple[DraftTree, RoundStats]]


def generate_with_trees(
    ctx: DecodingContext, prompt_ids: list[int], drafter: Drafter, method: str
) -> GenerationResult:
    head = ctx.head
    if head is None:
        raise MethodError(f"{method} needs an EAGLE head; the pair names none")
    result = GenerationResult(tokens=[], target_forwards=0)
    rounds: dict[str, list] = {"levels": [], "tree_size": [], "accepted": [], "checks": []}
    generated: list[int] = []
    # The target reads the prompt and chooses the first token, as vanilla's first step does.
    with ctx.timer.section("verify"):
        out = ctx.target.forward(prompt_ids, logits_from=len(prompt_ids) - 1, want_hidden=True)
        first = _choose(ctx, out.logits[-1])
        ctx.target.ensure_finite()
    result.target_forwards += 1
    result.prefill_forwards = 1
    done = commit(ctx, generated, [first], result)
    head_tokens, head_features, root = prompt_ids[1:] + [first], out.hidden, first
    while not done:
        committed = ctx.target.cache_len
        with ctx.timer.section("draft"):
            fed = head.forward(
                head_tokens,
                features=head_features,
                logits_from=len(head_tokens) - 1,
                want_hidden=True,
            )
            tree, stats = drafter(
                ctx, head, DraftInput(root, fed.logits[-1], fed.hidden[-1], committed)
            )
        with ctx.timer.section("verify"):
            verified = ctx.target.forward(
                tree.tokens,
                positions=positions(tree.parents, committed, ctx.target.device),
                tree_mask=ancestor_mask(tree.parents, ctx.target.device),
                want_hidden=True,
            )
            if ctx.temperature == 0:
                path, bonus = accept_greedy(tree, verified.logits)
            else:
                probs = probs_from_logits(verified.logits, ctx.temperature)
                path, bonus = accept_sampling(tree, probs, ctx.generator)
            ctx.target.ensure_finite()
            head.ensure_finite()
        result.target_forwards += 1
        ctx.target.keep(list(range(committed + 1)) + [committed + node for node in path])
        head.crop(committed)
        accepted = tree.tokens[path].tolist() if path else []
        rounds["levels"].append(stats.levels)
        rounds["tree_size"].append(tree.size - 1)
        rounds["accepted"].append(len(accepted))
        rounds["checks"].append([[level, float(h)] for level, h in stats.checks])
        done = commit(ctx, generated, accepted + [bonus], result)
        head_tokens = accepted + [bonus]
        head_features = verified.hidden[[0] + path]
        root = bonus
    result.tokens = generated
    result.draft_forwards = head.forwards
    result.extra = {"rounds": rounds}
    return result


def _choose(ctx: DecodingContext, logits: torch.Tensor) -> int:
    if ctx.temperature == 0:
        return greedy(logits)
    return sample(probs_from_logits(logits, ctx.temperature), ctx.generator)


# -- the static EAGLE-1 tree -------------------------------------------------------------------


@dataclass(frozen=True)
class StaticTree:
    """A tree of child ranks, in level order, with what drafting it needs precomputed."""

    parents: list[int]  # node 0 = root
    ranks: list[int]  # rank of each node among its siblings (root: -1)
    depth: list[int]

    @classmethod
    def from_choices(cls, choices: tuple[tuple[int, ...], ...]) -> StaticTree:
        paths = sorted({tuple(c) for c in choices}, key=lambda p: (len(p), p))
        index = {(): 0}
        parents, ranks, depth = [-1], [-1], [0]
        for path in paths:
            if path[:-1] not in index:
                raise MethodError(f"tree path {list(path)} has no parent path in the tree")
            index[path] = len(parents)
            parents.append(index[path[:-1]])
            ranks.append(path[-1])
            depth.append(len(path))
        tree = cls(parents, ranks, depth)
        for node, kids in enumerate(tree.children()):
            if sorted(ranks[k] for k in kids) != list(range(len(kids))):
                raise MethodError(f"tree node {node}: child ranks must be 0..k-1")
        return tree

    def children(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.parents]
        for i in range(1, len(self.parents)):
            out[self.parents[i]].append(i)
        return out


def draft_static_tree(
    ctx: DecodingContext, head: ModelRunner, start: DraftInput, shape: StaticTree
) -> tuple[DraftTree, RoundStats]:
    """Grow `shape` level by level: each expanded node's children are its top-k draft tokens
    (T=0) or k tokens sampled without replacement from the head's distribution (T>0)."""
    kids = shape.children()
    device = head.device
    tokens = torch.empty(len(shape.parents), dtype=torch.long, device=device)
    tokens[0] = start.root
    sampled_from: dict[int, torch.Tensor] = {}
    features = {0: start.feature}
    cached: list[int] = []  # expanded nodes, in the order their entries sit in the head cache

    def choose_children(nodes: list[int], logits: torch.Tensor) -> None:
        k = max(len(kids[n]) for n in nodes)
        if ctx.temperature == 0:
            picked = torch.topk(logits, k, dim=-1).indices
        else:
            q = probs_from_logits(logits, ctx.temperature)
            picked = sample_without_replacement(q, k, ctx.generator)
        for row, node in enumerate(nodes):
            order = sorted(kids[node], key=lambda c: shape.ranks[c])
            tokens[torch.tensor(order, device=device)] = picked[row, : len(order)]
            if ctx.temperature > 0:
                sampled_from[node] = q[row]

    choose_children([0], start.logits.view(1, -1))
    levels = max(shape.depth)
    for level in range(1, levels):
        expand = [n for n, d in enumerate(shape.depth) if d == level and kids[n]]
        if not expand:
            break
        anc = ancestor_mask(shape.parents)
        span = torch.zeros(
            len(expand), start.committed + len(cached) + len(expand), dtype=torch.bool
        )
        span[:, : start.committed] = True
        for row, node in enumerate(expand):
            for col, other in enumerate(cached):
                span[row, start.committed + col] = bool(anc[node, other])
            span[row, start.committed + len(cached) + row] = True
        out = head.forward(
            tokens[expand],
            features=torch.stack([features[shape.parents[n]] for n in expand]),
            positions=torch.full((len(expand),), start.committed + level - 1, device=device),
            span_mask=span.to(device),
            want_hidden=True,
        )
        for row, node in enumerate(expand):
            features[node] = out.hidden[row]
        cached += expand
        choose_children(expand, out.logits)
    return DraftTree(tokens, list(shape.parents), sampled_from), RoundStats(levels=levels)


# -- the dynamic EAGLE-2 / DDD tree ------------------------------------------------------------


@dataclass
class DepthRule:
    """DDD's stopping rule: after level s in `check_levels`, stop when
    H = logsumexp(beam cumulative log-probs) < threshold. `late` reads the flag one level later
    (no host sync at the check; the extra level is drafted and then dropped)."""

    check_levels: tuple[int, ...]
    threshold: float
    late: bool = False


def draft_dynamic_tree(
    ctx: DecodingContext,
    head: ModelRunner,
    start: DraftInput,
    top_k: int,
    max_levels: int,
    total_tokens: int,
    rule: DepthRule | None = None,
) -> tuple[DraftTree, RoundStats]:
    """EAGLE-2: a width-top_k beam over cumulative draft log-probs, `max_levels` levels (fewer
    when `rule` stops it), then the best `total_tokens` candidates form the tree."""
    device = head.device
    committed = start.committed
    logp = torch.log_softmax(start.logits.float(), dim=-1)
    scores, tok = torch.topk(logp, top_k)
    # Candidates in creation order; a candidate's parent is an earlier one (index 0 = the root).
    cand_tokens, cand_scores = [tok], [scores]
    cand_parents = [torch.zeros(top_k, dtype=torch.long, device=device)]
    beam_index = torch.arange(1, top_k + 1, device=device)  # global ids of the beam's nodes
    beam_tokens, beam_scores = tok, scores
    beam_features = start.feature.expand(top_k, -1)
    beam_ancestors = torch.zeros(top_k, 0, dtype=torch.bool, device=device)
    stats = RoundStats(levels=1)
    pending: torch.Tensor | None = None  # a late DDD flag, read after the next level
    n_cand = 1 + top_k
    level = 1
    if rule is not None and level in rule.check_levels:
        pending = _check(rule, beam_scores, level, stats)
        if pending is not None and not rule.late and bool(pending):
            return _rerank(start, cand_tokens, cand_scores, cand_parents, total_tokens), stats
    while level < max_levels:
        span = torch.cat(
            [
                torch.ones(top_k, committed, dtype=torch.bool, device=device),
                beam_ancestors,
                torch.eye(top_k, dtype=torch.bool, device=device),
            ],
            dim=1,
        )
        out = head.forward(
            beam_tokens,
            features=beam_features,
            positions=torch.full((top_k,), committed + level - 1, device=device),
            span_mask=span,
            want_hidden=True,
        )
        child_logp, child_tok = torch.topk(torch.log_softmax(out.logits, dim=-1), top_k, dim=-1)
        child_scores = (beam_scores[:, None] + child_logp).flatten()
        if pending is not None and rule is not None and rule.late:
            # The check of the level before, read now that its copy has landed.
            stop = bool(pending)
            pending = None
            if stop:
                break
        cand_tokens.append(child_tok.flatten())
        cand_scores.append(child_scores)
        cand_parents.append(beam_index.repeat_interleave(top_k))
        chosen = torch.topk(child_scores, top_k).indices
        slot = chosen // top_k  # which beam node each new beam node descends from
        beam_index = n_cand + chosen
        n_cand += top_k * top_k
        beam_tokens = child_tok.flatten()[chosen]
        beam_scores = child_scores[chosen]
        beam_features = out.hidden[slot]
        beam_ancestors = torch.cat(
            [beam_ancestors[slot], torch.eye(top_k, dtype=torch.bool, device=device)[slot]], dim=1
        )
        level += 1
        stats.levels = level
        if rule is not None and level in rule.check_levels:
            pending = _check(rule, beam_scores, level, stats)
            if not rule.late and bool(pending):
                break
    return _rerank(start, cand_tokens, cand_scores, cand_parents, total_tokens), stats


def _check(
    rule: DepthRule, beam_scores: torch.Tensor, level: int, stats: RoundStats
) -> torch.Tensor:
    h = torch.logsumexp(beam_scores, dim=0)
    stats.checks.append((level, h))
    flag = h < rule.threshold
    if rule.late and flag.device.type == "cuda":
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        return host
    return flag


def _rerank(
    start: DraftInput,
    cand_tokens: list[torch.Tensor],
    cand_scores: list[torch.Tensor],
    cand_parents: list[torch.Tensor],
    total_tokens: int,
) -> DraftTree:
    """Keep the best `total_tokens` candidates. A child never scores above its parent and comes
    after it, so a stable descending sort keeps every kept node's parent: a connected tree."""
    tokens = torch.cat(cand_tokens)
    scores = torch.cat(cand_scores)
    parents = torch.cat(cand_parents)
    best = torch.sort(scores, descending=True, stable=True).indices[:total_tokens]
    kept = torch.sort(best).values
    kept_list = kept.tolist()
    node_of = {0: 0} | {cand + 1: i + 1 for i, cand in enumerate(kept_list)}
    tree_parents = [-1] + [node_of[p] for p in parents[kept].tolist()]
    root = torch.tensor([start.root], dtype=torch.long, device=tokens.device)
    return DraftTree(torch.cat([root, tokens[kept]]), tree_parents)
