"""Forests of draft nodes over cached beams: one forward scores every node (docs/engine.md).

A forest is a flat list of nodes, each node's parent before it; a node with parent -1 starts a
chain on top of a cached beam, its base. Two cache layouts hold the beams:

- rows (`rows_forward`): one cache row per beam (the batch the `beam` method also uses). Each
  node goes into its base's row; rows are padded to equal length and every row gets its own
  tree mask. Afterwards `keep_rows` gives each surviving beam its row plus its accepted path.
- shared (`shared_forward`): one sequence holds every beam's history as a trie, so the prompt
  and common prefixes are stored once: DSBD's `layout: shared_prefix` (lossless; not the
  paper's memory-efficient DSBD, which keeps one beam). Each node sees its base's cached
  positions and its own ancestors (a span mask); `keep_paths` keeps the union of the surviving
  paths.

Both return, per node, the logits of the target at that node and the node's path (the cached
positions it sees, ending with itself), and give the same logits up to float rounding. The
forest holds only uncached tokens and drafts: DSBD caches the prompt through the runner's plain
causal forward first (its paths are then the cached positions, O(P) per node, with no P x P
mask or O(P^2) ancestor lists). Their
inputs are built on the host and copied from pinned memory, so a forward queues no sync.
"""

from __future__ import annotations

import torch

from specrepro.engine.runner import ModelRunner
from specrepro.engine.tree import to_device


def chains(parents: list[int]) -> list[list[int]]:
    """Per node, its ancestors within the forest and itself, root first."""
    out: list[list[int]] = []
    for i, parent in enumerate(parents):
        if not -1 <= parent < i:
            raise ValueError(f"node {i}: parent {parent} must be -1 or an earlier node")
        out.append((out[parent] if parent >= 0 else []) + [i])
    return out


def shared_forward(
    runner: ModelRunner,
    tokens: list[int],
    parents: list[int],
    bases: list[int],
    base_paths: list[list[int]],
    logits_from: int = 0,
) -> tuple[torch.Tensor, list[list[int]]]:
    """Score a forest over a trie cache. Returns logits [N - logits_from, V] and each node's
    path (cache positions, its base's path first)."""
    past = runner.cache_len
    n = len(tokens)
    chain = chains(parents)
    paths = [base_paths[bases[i]] + [past + j for j in chain[i]] for i in range(n)]
    mask = torch.zeros(n, past + n, dtype=torch.bool)
    for i, path in enumerate(paths):
        mask[i, path] = True
    positions = torch.tensor([len(path) - 1 for path in paths])
    device = runner.device
    out = runner.forward(
        to_device(torch.tensor(tokens, dtype=torch.long), device),
        positions=to_device(positions, device),
        span_mask=to_device(mask, device),
        logits_from=logits_from,
    )
    return out.logits, paths


def keep_paths(runner: ModelRunner, paths: list[list[int]]) -> list[list[int]]:
    """Keep only the cached positions on `paths` (gathered in order); returns the paths in the
    new positions."""
    kept = sorted({pos for path in paths for pos in path})
    runner.keep(kept)
    where = {pos: i for i, pos in enumerate(kept)}
    return [[where[pos] for pos in path] for path in paths]


def rows_forward(
    runner: ModelRunner,
    tokens: list[int],
    parents: list[int],
    bases: list[int],
    logits_from: int = 0,
) -> tuple[torch.Tensor, list[list[int]]]:
    """Score a forest over a cache of one row per beam (node i goes to row bases[i]).

    Returns logits [N - logits_from, V] and each node's path as positions in its row after the
    cached prefix (the prefix itself is the whole row). Padding slots see only themselves and
    are never seen. The first `logits_from` nodes (a prompt before its last token) get no
    logits; they must lie in their rows' leading columns.
    """
    past = runner.cache_len
    rows = max(bases) + 1
    chain = chains(parents)
    column: list[int] = []
    counts = [0] * rows
    for base in bases:
        column.append(counts[base])
        counts[base] += 1
    width = max(counts)
    ids = torch.zeros(rows, width, dtype=torch.long)
    positions = torch.full((rows, width), past, dtype=torch.long)
    mask = torch.zeros(rows, width, past + width, dtype=torch.bool)
    mask[:, :, :past] = True
    mask[:, torch.arange(width), past + torch.arange(width)] = True  # padding sees itself
    paths = []
    for i, token in enumerate(tokens):
        row, col = bases[i], column[i]
        ids[row, col] = token
        positions[row, col] = past + len(chain[i]) - 1
        path = [past + column[j] for j in chain[i]]
        mask[row, col, path] = True
        paths.append(path)
    first = min(column[logits_from:], default=width)
    if any(col >= first for col in column[:logits_from]):
        raise ValueError("nodes without logits must come before every node with logits in a row")
    device = runner.device
    out = runner.forward(
        to_device(ids, device),
        positions=to_device(positions, device),
        span_mask=to_device(mask, device),
        logits_from=first,
    )
    wanted = slice(logits_from, None)
    where = to_device(torch.tensor([bases[wanted], column[wanted]], dtype=torch.long), device)
    logits = out.logits[where[0], where[1] - first]
    return logits, paths


def keep_rows(runner: ModelRunner, rows: list[int], paths: list[list[int]], past: int) -> None:
    """Row r becomes old row rows[r]'s first `past` positions plus its positions paths[r] (the
    paths of `rows_forward`, all of one length)."""
    runner.select_rows(rows, prefix=past, tail=paths)
