"""An EAGLE head run k steps ahead on its own predicted features, all positions at once.

When the head drafts level j of a tree it reads its own feature from level j - 1, not the
target's. Run over a training sequence, unrolled step j at position t is the chain anchored at
a = t - j: the target's features up to a (its cache), then the head's own predictions. Step j's
input at t is (token x_{t+1}, the step j - 1 output at t - 1), and it attends to step 0's inputs
at positions <= t - j and to step l's input at position t - j + l for l = 1..j: exactly the keys
the head's cache holds when it drafts that chain (EAGLE-3's "training-time test" mask). The
steps share one cache of keys and values (step j appends its block), so step j costs one pass
of the layer, and gradients flow through every step.

Tokens are teacher-forced (the corpus's): the rate at step k - 1 is the head's agreement k
tokens ahead given that the k - 1 tokens before were accepted, which is what a tree's depth-k
acceptance asks of it. A draft model reads only tokens, so the same conditional agreement for a
draft is its one-step agreement (nothing of its own compounds).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache


def unroll_mask(length: int, step: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, 1, length, (step + 1) * length] additive mask of step `step`'s queries over the keys
    of steps 0..step (module docstring). A query whose chain would start before position 0
    (t < step) still sees its own key, so that no row is empty; callers drop it."""
    t = torch.arange(length, device=device)[:, None]
    s = torch.arange(length, device=device)[None, :]
    blocks = [s <= t - step] + [s == t - step + level for level in range(1, step + 1)]
    allowed = torch.cat(blocks, dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.view(1, 1, length, -1)


def unrolled_features(
    head: nn.Module, ids: torch.Tensor, features: torch.Tensor, steps: int, noise: float = 0.0
) -> list[torch.Tensor]:
    """The head's predicted features [B, W - 1, H] at unrolled steps 0..steps-1 (an EAGLE-1/2
    or EAGLE-3 head: the latter's step 0 reads the target's fused layers, wider than H).

    ids [B, W], features [B, W, H] (the target's): step 0 reads (ids[:, t + 1], features[:, t])
    plus uniform noise in [-noise / 2, noise / 2] on the features, step j the step j - 1
    prediction at t - 1. Position t of step j is meaningful only for t >= j."""
    inputs = features[:, :-1].float()
    if noise > 0:
        inputs = inputs + (torch.rand_like(inputs) - 0.5) * noise
    tokens = ids[:, 1:]
    batch, length = tokens.shape
    positions = torch.arange(length, device=ids.device).expand(batch, -1)
    cache = DynamicCache()
    outputs = []
    for step in range(steps):
        mask = unroll_mask(length, step, head.dtype, ids.device)
        out = head(tokens, inputs, positions, cache=cache, attention_mask=mask, logits_to_keep=0)
        predicted = out.hidden_states[-1]
        outputs.append(predicted.float())
        # The next step at t reads this step's prediction at t - 1 (position 0: no chain).
        inputs = torch.cat([torch.zeros_like(predicted[:, :1]), predicted[:, :-1]], dim=1)
    return outputs
