"""The interface of a tree drafter: what a round hands it and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
