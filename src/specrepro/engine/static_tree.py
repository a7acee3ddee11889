"""EAGLE-1's static draft tree: its shape from paths of child ranks, the device buffers a shape
needs (built once per shape and device), and the drafter that grows it level by level."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from specrepro.decoding.base import MethodError
from specrepro.engine.drafter import DraftInput, RoundStats
from specrepro.engine.host_reads import level_region
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import probs_from_logits
from specrepro.engine.tree import (
    DraftTree,
    ancestor_mask,
    children,
    depths,
    sample_without_replacement,
    to_device,
)

if TYPE_CHECKING:
    from specrepro.decoding.base import DecodingContext


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
        for node, kids in enumerate(children(parents)):
            if sorted(ranks[k] for k in kids) != list(range(len(kids))):
                raise MethodError(f"tree node {node}: child ranks must be 0..k-1")
        return cls(parents, ranks, depth)


@dataclass(frozen=True)
class Expansion:
    """One level of a static tree whose nodes get children, as device index tensors.

    `nodes` (depth d) are fed to the head together (expansion 0 is the root, whose logits come
    from the round's first head forward); their children are written with
    tokens[child_nodes] = picked[child_rows, child_ranks], where picked[row] is node row's top-k.
    """

    depth: int
    node_list: tuple[int, ...]
    nodes: torch.Tensor  # [n] long
    feature_of: torch.Tensor  # [n] long: each node's parent, whose predicted feature it reads
    k: int  # children of the widest node
    child_nodes: torch.Tensor  # [c] long
    child_rows: torch.Tensor  # [c] long
    child_ranks: torch.Tensor  # [c] long
    # [n, cached + n] bool: which of the head's entries of this round (earlier expansions, then
    # these nodes) each node sees; the committed prefix, visible to all, is prepended per round.
    span_tail: torch.Tensor


@dataclass(frozen=True)
class StaticBuffers:
    expansions: tuple[Expansion, ...]
    mask: torch.Tensor  # [N, N] bool: the verification's ancestor mask
    depth: torch.Tensor  # [N] long


@functools.lru_cache(maxsize=32)
def static_buffers(
    parents: tuple[int, ...], ranks: tuple[int, ...], device: torch.device
) -> StaticBuffers:
    """Every index and mask a static tree's round needs, built once per shape and device: a
    round then builds no tensor from a Python list (each such tensor is a blocking copy, a
    sync, on a GPU)."""
    parent_list = list(parents)
    kids = children(parent_list)
    depth = depths(parent_list)
    anc = ancestor_mask(parent_list)
    expansions = []
    cached: list[int] = []  # expanded nodes, in the order their entries sit in the head cache
    for d in range(max(depth)):
        nodes = [n for n in range(len(parents)) if depth[n] == d and kids[n]]
        if not nodes:
            break
        child_nodes, rows, ranks_used = [], [], []
        for row, node in enumerate(nodes):
            for child in kids[node]:
                child_nodes.append(child)
                rows.append(row)
                ranks_used.append(ranks[child])
        seen = cached if d else []
        span = torch.zeros(len(nodes), len(seen) + len(nodes), dtype=torch.bool)
        for row, node in enumerate(nodes):
            if seen:
                span[row, : len(seen)] = anc[node, seen]
            span[row, len(seen) + row] = True

        def on_device(values: list[int]) -> torch.Tensor:
            return to_device(torch.tensor(values, dtype=torch.long), device)

        expansions.append(
            Expansion(
                depth=d,
                node_list=tuple(nodes),
                nodes=on_device(nodes),
                feature_of=on_device([max(parents[n], 0) for n in nodes]),
                k=max(len(kids[n]) for n in nodes),
                child_nodes=on_device(child_nodes),
                child_rows=on_device(rows),
                child_ranks=on_device(ranks_used),
                span_tail=to_device(span, device),
            )
        )
        if d:
            cached += nodes
    return StaticBuffers(
        tuple(expansions),
        to_device(anc, device),
        to_device(torch.tensor(depth, dtype=torch.long), device),
    )


def draft_static_tree(
    ctx: DecodingContext, head: ModelRunner, start: DraftInput, shape: StaticTree
) -> tuple[DraftTree, RoundStats]:
    """Grow `shape` level by level: each expanded node's children are its top-k draft tokens
    (T=0) or k tokens sampled without replacement from the head's distribution (T>0)."""
    device = head.device
    bufs = static_buffers(tuple(shape.parents), tuple(shape.ranks), device)
    size = len(shape.parents)
    tokens = torch.full((size,), start.root, dtype=torch.long, device=device)
    features = start.feature.new_empty(size, start.feature.shape[-1])
    features[0] = start.feature
    sampled_from: dict[int, torch.Tensor] = {}

    def choose_children(expansion: Expansion, logits: torch.Tensor) -> None:
        if ctx.temperature == 0:
            picked = torch.topk(logits, expansion.k, dim=-1).indices
        else:
            q = probs_from_logits(logits, ctx.temperature)
            picked = sample_without_replacement(q, expansion.k, ctx.generator)
            for row, node in enumerate(expansion.node_list):
                sampled_from[node] = q[row]
        chosen = picked[expansion.child_rows, expansion.child_ranks]
        tokens.index_copy_(0, expansion.child_nodes, chosen)

    choose_children(bufs.expansions[0], start.logits.view(1, -1))
    for expansion in bufs.expansions[1:]:
        n = len(expansion.node_list)
        with level_region():
            visible = torch.ones(n, start.committed, dtype=torch.bool, device=device)
            out = head.forward(
                tokens[expansion.nodes],
                features=features[expansion.feature_of],
                positions=torch.full((n,), start.committed + expansion.depth - 1, device=device),
                span_mask=torch.cat([visible, expansion.span_tail], dim=1),
                want_hidden=True,
            )
            features.index_copy_(0, expansion.nodes, out.hidden)
            choose_children(expansion, out.logits)
    tree = DraftTree(tokens, list(shape.parents), sampled_from, mask=bufs.mask, depth=bufs.depth)
    return tree, RoundStats(levels=max(shape.depth))
