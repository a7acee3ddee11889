"""Linear layers in oneDNN's prepacked layout: a few rows cost about what one row costs.

At batch 1 a decoder is memory-bound, so verifying N draft tokens should cost about one token's
forward. PyTorch's default float32 CPU path does not get there (two rows cost about 1.7x one
row); oneDNN with the weight reordered once into its blocked layout reads the weight once for a
handful of rows and is faster even for one row (`python -m specrepro.bench verify-cost` prints
the table). The packed kernel also gives a row the same result whatever the number of rows it
runs with (tested), so a verified token's projections equal one-token decoding's bit for bit.

`pack_linears` swaps each `nn.Linear`'s forward in place instead of replacing the module, so a
module shared by two models (an EAGLE head's lm_head is the target's) is packed once and
everything that reads `.weight` still sees the original parameter. A packed forward falls back
to `F.linear` when autograd is recording or the weight has changed since it was packed (a
runner packs it again). The packed copy costs memory: each linear weight is held twice.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

# The row count the weight layout is chosen for: a speculative round verifies a handful of
# tokens; with this layout float32 results of a row do not depend on how many rows run.
PACK_ROWS = 8
PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
# Below this many weights a layer is call-overhead-bound and oneDNN's call costs more than
# PyTorch's (tiny test models ran about 35% slower packed).
MIN_PACK_WEIGHTS = 1 << 16


def packing_available(model: nn.Module) -> bool:
    """True when `pack_linears` would pack this model: CPU weights, float32 or bfloat16, a
    PyTorch built with oneDNN."""
    param = next(model.parameters(), None)
    return (
        param is not None
        and param.device.type == "cpu"
        and param.dtype in PACKABLE_DTYPES
        and torch.backends.mkldnn.is_available()
    )


class PackedWeight:
    """oneDNN's copy of a linear layer's weight, valid while that weight is unchanged.

    A deep copy of a packed module gets None instead (oneDNN's opaque tensors cannot be
    copied): the copy computes with `F.linear` until a runner packs it again.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS)
        self._source = (weight.data_ptr(), weight.dtype, weight._version)

    def matches(self, weight: torch.Tensor) -> bool:
        return self._source == (weight.data_ptr(), weight.dtype, weight._version)

    def __deepcopy__(self, memo: dict) -> None:
        return None


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    packed = self._packed
    if (
        packed is None
        or not packed.matches(self.weight)
        or x.dtype != self.weight.dtype
        or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
    ):
        return F.linear(x, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(
        x.contiguous(), packed.tensor, self.bias, "none", [], ""
    )


def pack_linear(module: nn.Linear) -> bool:
    """Pack one linear layer in place; False when it is packed already (with its current
    weight), too small to gain, or runs on another kernel (the int4 one)."""
    if "_int4_weight" in module.__dict__ or module.weight.numel() < MIN_PACK_WEIGHTS:
        return False
    packed = module.__dict__.get("_packed")
    if packed is not None and packed.matches(module.weight):
        return False
    with torch.no_grad():
        module._packed = PackedWeight(module.weight)
    module.forward = types.MethodType(_packed_forward, module)
    return True


def pack_linears(model: nn.Module) -> int:
    """Pack every `nn.Linear` of a CPU float32/bfloat16 model; returns how many were packed
    now (0 elsewhere: on a GPU, in another dtype, or when already packed)."""
    if not packing_available(model):
        return 0
    return sum(pack_linear(m) for m in model.modules() if isinstance(m, nn.Linear))
