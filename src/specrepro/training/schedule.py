"""What every student's training loop shares: the held-out split and the learning-rate schedule."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def split_holdout(items: list[T], fraction: float, rng: random.Random) -> tuple[list[T], list[T]]:
    """(held out, train) after a seeded shuffle; at least one held out when fraction > 0."""
    items = items[:]
    rng.shuffle(items)
    n_hold = max(1, int(len(items) * fraction)) if fraction > 0 else 0
    return items[:n_hold], items[n_hold:] or items


def warmup_cosine(lr: float, steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 5% of steps, then cosine decay to zero."""
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return lr_at


def optimizer_step(
    opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor, lr: float
) -> None:
    """One update at learning rate `lr`, gradients clipped to norm 1."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
