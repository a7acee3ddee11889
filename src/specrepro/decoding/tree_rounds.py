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

import contextlib
import functools
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError, commit
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import greedy, probs_from_logits, sample
from specrepro.engine.tree import (
    DraftTree,
    accept_greedy,
    accept_sampling,
    ancestor_mask,
    sample_without_replacement,
    to_device,
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

    levels: int  # draft levels in the tree
    checks: list[tuple[int, float]] = field(default_factory=list)  # (level, H) for DDD
    # Levels the head drafted, `levels` included: ddd_async may draft past the level where its
    # rule stops while the flag is still on its way to the host, and drops those levels.
    drafted: int | None = None


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
    rounds: dict[str, list] = {
        "levels": [], "drafted": [], "tree_size": [], "accepted": [], "checks": []
    }  # fmt: skip
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
                to_device(torch.tensor(head_tokens), head.device),
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
                positions=tree.device_positions(committed, ctx.target.device),
                tree_mask=tree.device_mask(ctx.target.device),
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
        tokens = tree.host_tokens()  # read by the acceptance already
        accepted = [tokens[node] for node in path]
        rounds["levels"].append(stats.levels)
        rounds["drafted"].append(stats.levels if stats.drafted is None else stats.drafted)
        rounds["tree_size"].append(tree.size)  # tokens verified, the root included
        rounds["accepted"].append(len(accepted))
        rounds["checks"].append([[level, h] for level, h in stats.checks])
        done = commit(ctx, generated, accepted + [bonus], result)
        head_tokens = accepted + [bonus]
        rows = to_device(torch.tensor([0] + path), verified.hidden.device)
        head_features = verified.hidden.index_select(0, rows)
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
        return children_of(self.parents)


def children_of(parents: list[int] | tuple[int, ...]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in parents]
    for i in range(1, len(parents)):
        out[parents[i]].append(i)
    return out


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
    kids = children_of(parents)
    depth = [0] * len(parents)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
    anc = ancestor_mask(list(parents))
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
            return torch.tensor(values, dtype=torch.long).to(device)

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
                span_tail=span.to(device),
            )
        )
        if d:
            cached += nodes
    return StaticBuffers(
        tuple(expansions), anc.to(device), torch.tensor(depth, dtype=torch.long).to(device)
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


# -- where a draft level must not sync -----------------------------------------------------------

_level_region: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext


def level_region() -> AbstractContextManager[object]:
    """The context one draft level's device work (head forward, top-k, beam update) runs in:
    nothing, unless a check swaps one in. ddd's reads and ddd_async's polls sit outside it."""
    return _level_region()


@contextlib.contextmanager
def checked_levels(region: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
    """Run every draft level inside `region()` meanwhile (bench gpu-check: CUDA sync debug
    mode "error", which turns any host sync inside a level into an exception)."""
    global _level_region
    before = _level_region
    _level_region = region
    try:
        yield
    finally:
        _level_region = before


# -- the dynamic EAGLE-2 / DDD tree ------------------------------------------------------------


@dataclass
class DepthRule:
    """DDD's stopping rule: after level s in `check_levels`, stop when
    H = logsumexp(beam cumulative log-probs) < threshold, so the tree has s levels.

    `late` (ddd_async) reads each check's flag without a host sync: the pair (H, flag) is copied
    to the host without blocking, and the head drafts further levels until the copy has landed
    (polled between levels, never read before); then, when the flag says stop, the levels
    drafted after s are dropped. Whatever the copy's timing, the tree is the one the rule gives
    (that of `ddd`); only the levels drafted and dropped vary.
    """

    check_levels: tuple[int, ...]
    threshold: float
    late: bool = False


class FlagReader(Protocol):
    """A check's (H, flag) on its way to the host."""

    def ready(self) -> bool:
        """Whether value() can return without waiting for the device."""
        ...

    def value(self) -> tuple[float, bool]:
        """(H, stop), waiting for the copy if it has not landed."""
        ...


class HostRead:
    """Reads the pair when asked: on a GPU that read is a sync (ddd's, at each check)."""

    def __init__(self, record: torch.Tensor) -> None:
        self.record = record

    def ready(self) -> bool:
        return True

    def value(self) -> tuple[float, bool]:
        h, flag = self.record.tolist()
        return h, flag != 0.0


class EventLike(Protocol):
    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class CopiedRead:
    """A check's pair in host memory that a copy still queued on the device fills in, and an
    event recorded after that copy: ready() polls the event, value() waits on it, so the host
    never reads the buffer before the copy has filled it (earlier, it can hold a stale or
    half-written value)."""

    def __init__(self, host: torch.Tensor, event: EventLike) -> None:
        self.host = host
        self.event = event

    @classmethod
    def start(cls, record: torch.Tensor) -> CopiedRead:
        """Queue a non-blocking copy of `record` (on a CUDA device) into pinned memory."""
        host = torch.empty(record.shape, dtype=record.dtype, pin_memory=True)
        host.copy_(record, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(record.device))
        return cls(host, event)

    def ready(self) -> bool:
        return self.event.query()

    def value(self) -> tuple[float, bool]:
        self.event.synchronize()
        h, flag = self.host.tolist()
        return h, flag != 0.0


def late_reader(record: torch.Tensor) -> FlagReader:
    """ddd_async's reader: a pinned copy on a GPU; on the CPU the value is there already.
    (Looked up at each check, so a test can put a copy that stays in flight in its place.)"""
    return CopiedRead.start(record) if record.is_cuda else HostRead(record)


class DepthWatch:
    """The DDD checks of one round, in level order: the ones still on their way to the host,
    and the level where the rule stopped the tree (None while it has not)."""

    def __init__(self, rule: DepthRule | None, stats: RoundStats) -> None:
        self.rule = rule
        self.stats = stats
        self.pending: deque[tuple[int, FlagReader]] = deque()
        self.stop_at: int | None = None

    def check(self, level: int, beam_scores: torch.Tensor) -> None:
        rule = self.rule
        if rule is None or level not in rule.check_levels or self.stop_at is not None:
            return
        h = torch.logsumexp(beam_scores, dim=0)
        # H and the flag travel together: one read (or copy) per check, and the flag is the
        # device's own comparison, so ddd and ddd_async decide on identical bits.
        record = torch.stack([h, (h < rule.threshold).to(h.dtype)])
        if not rule.late:
            self._apply(level, HostRead(record))
            return
        self.pending.append((level, late_reader(record)))

    def poll(self, wait: bool = False) -> None:
        """Act on the checks whose values have landed, oldest first (all of them, waiting,
        when `wait`); a check whose value has not landed is never read."""
        while self.pending and self.stop_at is None and (wait or self.pending[0][1].ready()):
            level, reader = self.pending.popleft()
            self._apply(level, reader)
        if self.stop_at is not None:
            # Checks of levels past the stop are not part of this round (ddd never makes them).
            self.pending.clear()

    def _apply(self, level: int, reader: FlagReader) -> None:
        h, stop = reader.value()
        self.stats.checks.append((level, h))
        if stop:
            self.stop_at = level


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
    root = torch.tensor([start.root], dtype=torch.long, device=tokens.device)
    return DraftTree(
        torch.cat([root, tokens[kept]]), tree_parents, token_list=[start.root] + token_list
    )
