"""The dynamic EAGLE-2 / DDD draft tree: a beam over cumulative draft log-probs, level by
level (stopped early by DDD's depth rule), then reranked into the tree the target verifies."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from specrepro.engine.drafter import DraftInput, RoundStats
from specrepro.engine.host_reads import DepthRule, DepthWatch, level_region
from specrepro.engine.runner import ModelRunner
from specrepro.engine.tree import DraftTree

if TYPE_CHECKING:
    from specrepro.decoding.base import DecodingContext


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
    when `rule` stops it), then the root and the best `total_tokens - 1` candidates form the
    tree: `total_tokens` counts the root, as the reference code's does, so the target verifies
    exactly `total_tokens` tokens when the beam drafted enough."""
    device = head.device
    committed = start.committed
    logp = torch.log_softmax(start.logits.float(), dim=-1)
    scores, tok = torch.topk(logp, top_k)
    # Candidates in creation order, one entry per level; a candidate's parent is an earlier one
    # (index 0 = the root).
    cand_tokens, cand_scores = [tok], [scores]
    cand_parents = [torch.zeros(top_k, dtype=torch.long, device=device)]
    beam_index = torch.arange(1, top_k + 1, device=device)  # global ids of the beam's nodes
    beam_tokens, beam_scores = tok, scores
    beam_features = start.feature.expand(top_k, -1)
    beam_ancestors = torch.zeros(top_k, 0, dtype=torch.bool, device=device)
    eye = torch.eye(top_k, dtype=torch.bool, device=device)
    stats = RoundStats(levels=1)
    watch = DepthWatch(rule, stats)
    n_cand = 1 + top_k
    level = 1
    watch.check(level, beam_scores)
    while level < max_levels and watch.stop_at is None:
        watch.poll()
        if watch.stop_at is not None:
            break
        with level_region():
            span = torch.cat(
                [
                    torch.ones(top_k, committed, dtype=torch.bool, device=device),
                    beam_ancestors,
                    eye,
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
            cand_tokens.append(child_tok.flatten())
            cand_scores.append(child_scores)
            cand_parents.append(beam_index[:, None].expand(top_k, top_k).reshape(-1))
            chosen = torch.topk(child_scores, top_k).indices
            slot = chosen // top_k  # which beam node each new beam node descends from
            beam_index = n_cand + chosen
            n_cand += top_k * top_k
            beam_tokens = child_tok.flatten()[chosen]
            beam_scores = child_scores[chosen]
            beam_features = out.hidden[slot]
            beam_ancestors = torch.cat([beam_ancestors[slot], eye[slot]], dim=1)
        level += 1
        watch.check(level, beam_scores)
    watch.poll(wait=True)
    stats.levels = level if watch.stop_at is None else watch.stop_at
    stats.drafted = level
    kept = slice(0, stats.levels)
    tree = _rerank(
        start, cand_tokens[kept], cand_scores[kept], cand_parents[kept], total_tokens - 1
    )
    return tree, stats


def _rerank(
    start: DraftInput,
    cand_tokens: list[torch.Tensor],
    cand_scores: list[torch.Tensor],
    cand_parents: list[torch.Tensor],
    candidates: int,
) -> DraftTree:
    """Keep the best `candidates` candidates. A child never scores above its parent and comes
    after it, so a stable descending sort keeps every kept node's parent: a connected tree."""
    tokens = torch.cat(cand_tokens)
    scores = torch.cat(cand_scores)
    parents = torch.cat(cand_parents)
    best = torch.sort(scores, descending=True, stable=True).indices[:candidates]
    kept = torch.sort(best).values
    # The tree's shape and tokens reach the host in one read (one sync on a GPU).
    kept_list, parent_list, token_list = torch.stack([kept, parents[kept], tokens[kept]]).tolist()
    node_of = {0: 0} | {cand + 1: i + 1 for i, cand in enumerate(kept_list)}
    tree_parents = [-1] + [node_of[p] for p in parent_list]
    # The root is prepended on the device (a host list copied there would block).
    on_device = torch.cat([tokens.new_full((1,), start.root), tokens[kept]])
    return DraftTree(on_device, tree_parents, token_list=[start.root] + token_list)
