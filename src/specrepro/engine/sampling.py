"""Turning logits into distributions and tokens, with an explicit generator for determinism.

None of these read a device value on the host except `sample` and `greedy`, whose token the
caller needs there anyway (`draw` is `sample` without the read).
"""

from __future__ import annotations

import torch


def probs_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax at temperature T (> 0), in float32."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One draw from `probs` (exact for any finite distribution).

    A non-finite distribution (from NaN logits) draws from the uniform instead of crashing
    inside multinomial; the runner's ensure_finite(), called before any token is committed,
    then raises an error that names the model.
    """
    return int(draw(probs, generator).item())


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`sample`'s draw left on the device (a [1] long tensor): the same generator call, read
    later or fed to the next forward as it is."""
    finite = torch.isfinite(probs).all()
    safe = torch.where(finite, probs, torch.ones_like(probs))
    return torch.multinomial(safe, 1, generator=generator)


def greedy(logits: torch.Tensor) -> int:
    return int(torch.argmax(logits).item())


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(p - q, 0)); p itself when the residual mass vanishes numerically (p <= q
    everywhere can only happen by rounding, as rejection implies p(x) < q(x) somewhere)."""
    r = torch.clamp(p - q, min=0.0)
    mass = r.sum()
    return torch.where(mass > 0, r / mass.clamp_min(torch.finfo(r.dtype).tiny), p)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
