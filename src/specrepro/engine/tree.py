"""Draft trees: masks, positions, paths and the exact acceptance rules (docs/engine.md#trees).

A tree is stored in level order: node 0 is the root (the newest committed token, not yet in the
target's cache), and every node's parent comes before it. The same structure serves the static
EAGLE tree and the dynamic EAGLE-2 / DDD trees.

Acceptance keeps the output distributed exactly as the target's:
- T=0: follow the child equal to the target's argmax while there is one; the argmax at the last
  node is the bonus token. This is the vanilla greedy continuation.
- T>0: multi-draft rejection sampling over each node's children, in draft order. A child drawn
  from a distribution q (sampled children, drawn without replacement) is accepted with
  probability min(1, p(x)/q(x)); on rejection p becomes norm(max(p - q, 0)) and x is removed
  from q before the next sibling (SpecInfer; recursive rejection sampling). A child chosen
  deterministically (top-k of the draft) is the same rule with q a point mass: accepted with
  probability p(x), otherwise x is removed from p. Using the draft's soft probabilities as q for
  deterministically chosen children, as EAGLE's reference code does, is not exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specrepro.engine.sampling import residual, sample


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [N] long, level order, tokens[0] is the root
    parents: list[int]  # [N], parents[0] == -1, parents[i] < i
    # parent index -> the distribution its children were sampled from (without replacement, in
    # child order). Parents absent here chose their children deterministically.
    sampled_from: dict[int, torch.Tensor] = field(default_factory=dict)
    # `tokens` on the host, when a drafter has read them anyway (acceptance then needs no read).
    token_list: list[int] | None = None
    # The verification's [N, N] ancestor mask and [N] depths on the device, when a drafter keeps
    # them per tree shape (a static tree); otherwise built from `parents` per round.
    mask: torch.Tensor | None = None
    depth: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.parents or self.parents[0] != -1:
            raise ValueError("node 0 must be the root (parent -1)")
        if any(not 0 <= p < i for i, p in enumerate(self.parents) if i):
            raise ValueError("every node's parent must come before it")
        if self.tokens.numel() != len(self.parents):
            raise ValueError("tokens and parents differ in length")

    @property
    def size(self) -> int:
        return len(self.parents)

    def depths(self) -> list[int]:
        return depths(self.parents)

    def children(self) -> list[list[int]]:
        return children(self.parents)

    def host_tokens(self) -> list[int]:
        """The tokens as a list (one host read, the first time only)."""
        if self.token_list is None:
            self.token_list = self.tokens.tolist()
        return self.token_list

    def device_mask(self, device: torch.device) -> torch.Tensor:
        if self.mask is not None:
            return self.mask
        return to_device(ancestor_mask(self.parents), device)

    def device_positions(self, offset: int, device: torch.device) -> torch.Tensor:
        """Position ids of the nodes (offset + depth), on the device."""
        if self.depth is not None:
            return self.depth + offset
        return to_device(positions(self.parents, offset), device)


def to_device(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a tensor built on the host to `device` without a host sync.

    A copy from pageable memory to a GPU blocks until the copy is done (a sync point);
    one from pinned memory, non-blocking, is only queued on the stream. The pinned block comes
    from torch's caching host allocator, which keeps it until the queued copy has completed.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def depths(parents: list[int]) -> list[int]:
    out = [0] * len(parents)
    for i in range(1, len(parents)):
        out[i] = out[parents[i]] + 1
    return out


def children(parents: list[int]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in parents]
    for i in range(1, len(parents)):
        out[parents[i]].append(i)
    return out


def ancestor_mask(parents: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """[N, N] bool: True where node j is node i or one of its ancestors."""
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i in range(1, n):
        mask[i] |= mask[parents[i]]
    return to_device(mask, device)


def positions(parents: list[int], offset: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Position ids: the root at `offset`, each node at offset + its depth."""
    return to_device(torch.tensor(depths(parents), dtype=torch.long) + offset, device)


def paths(parents: list[int]) -> list[list[int]]:
    """Every root-to-leaf path, as node indices."""
    kids = children(parents)
    out = []
    for leaf in (i for i in range(len(parents)) if not kids[i]):
        path = [leaf]
        while parents[path[-1]] != -1:
            path.append(parents[path[-1]])
        out.append(path[::-1])
    return out


def accept_greedy(tree: DraftTree, logits: torch.Tensor) -> tuple[list[int], int]:
    """Longest path whose every token is the target's argmax; returns (nodes after the root on
    that path, bonus token). logits: [N, V], row i = the target's next-token logits at node i."""
    choice_t = torch.argmax(logits, dim=-1)
    if tree.token_list is None:
        # Both in one host read (one sync on a GPU) rather than two.
        both = torch.cat([choice_t, tree.tokens.to(choice_t.device)]).tolist()
        choice, tree.token_list = both[: tree.size], both[tree.size :]
    else:
        choice = choice_t.tolist()
    tokens = tree.token_list
    kids = tree.children()
    node, path = 0, []
    while True:
        nxt = next((c for c in kids[node] if tokens[c] == choice[node]), None)
        if nxt is None:
            return path, choice[node]
        path.append(nxt)
        node = nxt


def accept_sampling(
    tree: DraftTree, probs: torch.Tensor, generator: torch.Generator
) -> tuple[list[int], int]:
    """Multi-draft rejection sampling down the tree (see module doc); returns (accepted nodes
    after the root, the corrected or bonus token). probs: [N, V] target probabilities.

    Each tried child is one host read: a child's uniform draw happens only when its sibling
    before it was rejected, so the generator's stream (and the output at a given seed) depends
    on reading every test before the next draw."""
    tokens = tree.host_tokens()
    kids = tree.children()
    node, path = 0, []
    while True:
        p = probs[node]
        accepted = None
        q = tree.sampled_from.get(node)
        q = None if q is None else q.clone()
        for child in kids[node]:
            x = tokens[child]
            u = torch.rand((), generator=generator, device=p.device)
            if q is None:
                if u <= p[x]:
                    accepted = child
                    break
                p = _without(p, x)
            else:
                q_now = q / q.sum()
                # Both tests in one host read; the draw u above is made either way.
                skip, take = torch.stack([q_now[x] <= 0, u * q_now[x] <= p[x]]).tolist()
                if skip:  # drawn only because fewer tokens than children had mass
                    continue
                if take:
                    accepted = child
                    break
                p = residual(p, q_now)
                q[x] = 0
        if accepted is None:
            return path, sample(p, generator)
        path.append(accepted)
        node = accepted


def _without(p: torch.Tensor, x: int) -> torch.Tensor:
    """p with token x removed, renormalised (the residual of p against a point mass at x)."""
    p = p.clone()
    p[x] = 0
    return p / p.sum()


def sample_without_replacement(
    probs: torch.Tensor, k: int, generator: torch.Generator
) -> torch.Tensor:
    """k distinct tokens in the order sequential sampling without replacement draws them
    (Gumbel-top-k). probs: [..., V]; returns [..., k] long. Runs on the device, no host read."""
    u = torch.rand(probs.shape, generator=generator, device=probs.device).clamp_(min=1e-20)
    gumbel = -torch.log(-torch.log(u))
    keys = torch.log(probs) + gumbel
    return torch.topk(keys, k, dim=-1).indices
