"""The Q4_1 blocks of a GGUF file, mapped onto the modules of the model transformers loaded.

transformers dequantises a GGUF to floats (and, for LLaMA-style attention, permutes the rows of
the query and key projections back to its own order). For the int4 engine mode we go back to
the file: every Q4_1 tensor's codes, scales and minima, with the same row order as the loaded
model. Each mapping is checked: the blocks, dequantised, must equal the loaded weight bit for
bit, so no name or permutation mistake can go unnoticed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from specrepro.engine.int4 import (
    GROUP,
    Q4Blocks,
    int4_supported,
    quantise_q4_1,
    to_int4,
)

# GGUF tensor name (after "blk.{i}.") -> the LLaMA module path in transformers (after
# "model.layers.{i}.").
LLAMA_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
Q4_1_BLOCK_BYTES = 20  # float16 d, float16 m, 16 bytes of two 4-bit codes each


class GGUFMappingError(RuntimeError):
    """A GGUF tensor does not match the weight transformers loaded for it."""


def parse_q4_1(raw: np.ndarray, k: int) -> Q4Blocks:
    """Rows of raw Q4_1 bytes [N, K / 32 * 20] -> codes [N, K], scales and minima [N, K / 32]."""
    n = raw.shape[0]
    blocks = np.ascontiguousarray(raw).reshape(n, k // GROUP, Q4_1_BLOCK_BYTES)
    scales = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    minima = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    packed = blocks[..., 4:]
    # Byte j holds code j in its low nibble and code j + 16 in its high nibble.
    codes = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).reshape(n, k)
    return Q4Blocks(
        torch.from_numpy(codes.astype(np.int32)),
        torch.from_numpy(scales),
        torch.from_numpy(minima),
    )


def _row_orders(n: int, heads: int) -> list[torch.Tensor | None]:
    """The row orders to try: for LLaMA's q/k projections first the one transformers gives
    them (per head, the two rotary halves interleaved in the file are split), then the file's
    own (None: no reordering)."""
    if heads and n % (2 * heads) == 0:
        rows = torch.arange(n).view(heads, n // heads // 2, 2)
        return [rows.transpose(1, 2).reshape(n), None]
    return [None]


def _reorder(blocks: Q4Blocks, order: torch.Tensor) -> Q4Blocks:
    return Q4Blocks(blocks.codes[order], blocks.scales[order], blocks.minima[order])


def gguf_q4_1_blocks(path: Path, model: nn.Module) -> dict[str, Q4Blocks]:
    """Every Q4_1 tensor of the file, keyed by the loaded model's module name, in its row
    order; raises GGUFMappingError when a tensor matches no loaded weight exactly."""
    import gguf  # optional: only the int4 mode over a GGUF file needs it

    config = model.config.get_text_config()
    modules = dict(model.named_modules())
    heads = {"attn_q": config.num_attention_heads}
    heads["attn_k"] = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    found: dict[str, Q4Blocks] = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        if tensor.tensor_type != gguf.GGMLQuantizationType.Q4_1:
            continue
        parts = tensor.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in LLAMA_NAMES:
            raise GGUFMappingError(f"{path.name}: no module for Q4_1 tensor {tensor.name!r}")
        name = f"model.layers.{parts[1]}.{LLAMA_NAMES[parts[2]]}"
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise GGUFMappingError(f"{path.name}: {tensor.name!r} -> {name!r} is not a Linear")
        blocks = parse_q4_1(np.asarray(tensor.data), module.in_features)
        weight = module.weight.detach().float()
        for order in _row_orders(module.out_features, heads.get(parts[2], 0)):
            candidate = blocks if order is None else _reorder(blocks, order)
            if torch.equal(candidate.dequantised(), weight):
                found[name] = candidate
                break
        else:
            raise GGUFMappingError(
                f"{path.name}: {tensor.name!r} dequantised differs from the loaded {name!r}"
            )
    return found


def quantise_model_int4(model: nn.Module, gguf_file: Path | None) -> dict:
    """Put every supported Linear of `model` on the int4 kernel: the GGUF's own Q4_1 blocks
    where the file has them, Q4_1 made from the float weights for the rest (other layers and
    models that do not come from a GGUF). The output projection stays float (the GGUF keeps
    it in 8 bits, which the 4-bit kernel cannot hold). Returns
    how many layers took each way."""
    from_file = gguf_q4_1_blocks(gguf_file, model) if gguf_file is not None else {}
    output = model.get_output_embeddings()
    report = {"from_gguf": 0, "requantised": 0, "float": 0}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if module is output or not int4_supported(module):
            report["float"] += 1
            continue
        blocks = from_file.get(name)
        if blocks is None:
            blocks = quantise_q4_1(module.weight)
            with torch.no_grad():  # code that reads .weight sees the values the kernel holds
                module.weight.copy_(blocks.dequantised())
            report["requantised"] += 1
        else:
            report["from_gguf"] += 1
        to_int4(module, blocks)
    return report
