"""4-bit weight-only linear layers on PyTorch's int4 CPU kernel, in GGUF's Q4_1 block format.

Q4_1 stores each block of 32 input weights of a row as 4-bit codes q with a scale d and a
minimum m: w = d * q + m. PyTorch's `_weight_int4pack_mm_for_cpu` (group size 32) computes
w = (q - 8) * scale + zero, so a Q4_1 block maps onto it with scale = d and zero = m + 8 d; the
kernel is fast only with bfloat16 inputs, scales and zeros (in float32 or float16 it takes
100-400x longer on a 2-core CPU), so the scales and zeros are rounded from the GGUF's float16 to
bfloat16 (`max_weight_error` measures how far that moves each weight) and each layer's input
is rounded to bfloat16 on the way in. Everything around these layers (norms, attention, the
output projection) stays float32: with bfloat16 there, a row's attention result depends on
how many rows a forward verifies, and speculative decoding stops matching vanilla (tested).
Like `packed.py`, the layer's forward is swapped in place.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUP = 32  # Q4_1's block length along the input dimension
INNER_K_TILES = 2
KERNEL_DTYPE = torch.bfloat16


@dataclass
class Q4Blocks:
    """One weight [N, K] in Q4_1 blocks: codes [N, K] in 0..15, scales and minima [N, K/32]."""

    codes: torch.Tensor
    scales: torch.Tensor
    minima: torch.Tensor

    def dequantised(self) -> torch.Tensor:
        """d * q + m per block, in float32: the values GGUF readers produce."""
        n, k = self.codes.shape
        w = self.codes.view(n, k // GROUP, GROUP).float() * self.scales[..., None]
        return (w + self.minima[..., None]).view(n, k)


def quantise_q4_1(weight: torch.Tensor) -> Q4Blocks:
    """Q4_1 the way llama.cpp makes it: per block, m = min, d = (max - min) / 15, q = round."""
    n, k = weight.shape
    blocks = weight.detach().float().view(n, k // GROUP, GROUP)
    lo, hi = blocks.amin(-1), blocks.amax(-1)
    scales = (hi - lo) / 15
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = ((blocks - lo[..., None]) / safe[..., None]).round().clamp(0, 15)
    return Q4Blocks(codes.to(torch.int32).view(n, k), scales, lo)


def kernel_scales_zeros(blocks: Q4Blocks) -> torch.Tensor:
    """[K / 32, N, 2]: the kernel's (scale, zero) per group and output row, in its dtype."""
    zero = blocks.minima + 8 * blocks.scales
    pairs = torch.stack([blocks.scales, zero], -1).transpose(0, 1).contiguous()
    return pairs.to(KERNEL_DTYPE)


def kernel_weight(blocks: Q4Blocks) -> torch.Tensor:
    """The weight the int4 kernel multiplies by, (q - 8) * scale + zero, in float32."""
    n, k = blocks.codes.shape
    pairs = kernel_scales_zeros(blocks).float().transpose(0, 1)
    w = (blocks.codes.view(n, k // GROUP, GROUP).float() - 8) * pairs[..., 0, None]
    return (w + pairs[..., 1, None]).view(n, k)


def max_weight_error(blocks: Q4Blocks) -> float:
    """Largest |kernel weight - Q4_1 value| over the tensor."""
    return float((kernel_weight(blocks) - blocks.dequantised()).abs().max())


def int4_supported(module: nn.Linear) -> bool:
    k = module.in_features
    return k % GROUP == 0 and k % (INNER_K_TILES * 16) == 0 and module.out_features % 8 == 0


def _int4_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(-1, x.shape[-1]).to(KERNEL_DTYPE).contiguous()
    y = torch._weight_int4pack_mm_for_cpu(flat, self._int4_weight, GROUP, self._int4_scales)
    y = y.to(x.dtype).view(*x.shape[:-1], -1)
    return y if self.bias is None else y + self.bias


def to_int4(module: nn.Linear, blocks: Q4Blocks) -> None:
    """Swap `module`'s forward for the int4 kernel over `blocks`; its float `.weight` stays
    for code that reads it (and for training, which the kernel cannot do)."""
    if module.weight.device.type != "cpu":
        raise ValueError("the int4 engine mode runs on the CPU only")
    module._int4_weight = torch._convert_weight_to_int4pack_for_cpu(blocks.codes, INNER_K_TILES)
    module._int4_scales = kernel_scales_zeros(blocks)
    module.forward = types.MethodType(_int4_forward, module)
