"""DSBD's drafting: beam sampling `depth` levels of a forest with the draft model, from the
live beams (its cache a trie, so every drafted node stays addressable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from specrepro.engine.beams import (
    Beam,
    BeamPool,
    Draws,
)
from specrepro.engine.forest import shared_forward
from specrepro.engine.joint import Joint
from specrepro.engine.level_draws import draw_level, require_finite_joint
from specrepro.engine.stopping import StopScan
from specrepro.engine.tree import to_device

if TYPE_CHECKING:
    from specrepro.decoding.base import DecodingContext


class ForestParams(Protocol):
    """The parameters of a DSBD round that the engine reads (decoding/dsbd.py's Params)."""

    width: int
    w_thres: float
    min_width: int
    refill: str
    memory_efficient: bool
    top_k: int
    top_p: float


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
    q: Joint  # the draft's joint over (previous-level node, token)
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
    params: ForestParams,
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
        drawn = draw_level(
            draws, beam_scores[:, None] + logq, ctx.temperature, params.top_k, params.top_p,
            params.width,
        )  # fmt: skip
        require_finite_joint(drawn.log_joint, "dsbd draft", draft)
        picks = drawn.picks
        vocab = logq.shape[-1]
        nodes = []
        for x, score in zip(picks, drawn.log_joint, strict=True):
            row, token = divmod(x, vocab)
            up = previous[row]
            seq = up.tokens + [token]
            scan = pool.scan(up.scan, seq)
            nodes.append(DraftNode(row, token, seq, score, pool.stop.finished(scan), up, scan=scan))
        levels.append(DraftLevel(nodes, drawn.joint, picks))
        if level == depth or all(n.finished for n in nodes):
            break
        tokens = [n.token for n in nodes]
        parents = [-1] * len(nodes)
        bases = list(range(len(nodes)))
        base_paths = [previous[n.parent].path for n in nodes]
        skip = 0
        previous = nodes
    return roots, levels
