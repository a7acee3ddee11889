"""Turning logits into distributions and tokens, with an explicit generator for determinism."""

from __future__ import annotations

import torch


def probs_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax at temperature T (> 0), in float32."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator) -> int:
    return int(torch.multinomial(probs, 1, generator=generator).item())


def greedy(logits: torch.Tensor) -> int:
    return int(torch.argmax(logits).item())


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(p - q, 0)); falls back to p when the residual mass vanishes numerically."""
    r = torch.clamp(p - q, min=0.0)
    mass = r.sum()
    if mass <= 0:
        return p
    return r / mass


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
