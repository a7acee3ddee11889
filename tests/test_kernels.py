"""The engine's kernels: prepacked oneDNN linears (every run) and the int4 engine mode.

Speculative verification is bitwise vanilla decoding only if a row's result does not depend on
how many rows a forward computes; these tests hold the kernels to that, and the real-target
tests (test_sps, test_eagle_real, and the int4 one here) decide on whole generations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from specrepro.engine.int4 import (
    GROUP,
    Q4Blocks,
    kernel_weight,
    max_weight_error,
    quantise_q4_1,
    to_int4,
)
from specrepro.engine.packed import pack_linear, pack_linears
from specrepro.engine.runner import ModelRunner
from specrepro.models.gguf_q4 import parse_q4_1
from tests.conftest import tiny_llama
from tests.helpers import chat_ids, decoder_for
from tests.test_sps import truncated_draft


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_packed_row_does_not_depend_on_how_many_rows_run(dtype) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(576, 1536, dtype=dtype)
    reference = layer(torch.zeros(1, 576, dtype=dtype))  # before packing: PyTorch's own path
    assert pack_linear(layer) and not pack_linear(layer)
    x = torch.randn(1, 16, 576, dtype=dtype)
    with torch.inference_mode():
        full = layer(x)
        for rows in (1, 2, 3, 5, 8, 13):
            assert torch.equal(layer(x[:, :rows]), full[:, :rows]), rows
        plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(full, plain, rtol=tolerance, atol=tolerance)
    assert reference.shape == (1, 1536)


@pytest.fixture
def pack_tiny(monkeypatch):
    """Pack the tiny test layers too (they sit below the size that gains from packing)."""
    import specrepro.engine.packed as packed

    monkeypatch.setattr(packed, "MIN_PACK_WEIGHTS", 0)


def test_a_packed_layer_falls_back_for_training_and_changed_weights(pack_tiny) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    pack_linear(layer)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()  # autograd recording: F.linear, so gradients flow
    assert x.grad is not None and layer.weight.grad is not None
    with torch.no_grad():
        layer.weight.mul_(2)
        stale = layer(x)
    torch.testing.assert_close(stale, torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_small_layers_are_left_on_pytorchs_path() -> None:
    assert not pack_linear(nn.Linear(32, 32))


def test_runner_packs_once_and_keeps_the_logits(pack_tiny) -> None:
    model = tiny_llama(vocab_size=64, seed=3, hidden=32)
    plain = ModelRunner(model, "plain", pack=False)
    tokens = [5, 9, 2, 7, 1, 3]
    expected = plain.forward(tokens).logits
    assert not any("forward" in m.__dict__ for m in model.modules())
    packed = ModelRunner(model, "packed")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all("forward" in m.__dict__ for m in linears)
    assert pack_linears(model) == 0  # already packed: a second runner adds nothing
    torch.testing.assert_close(packed.forward(tokens).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_deep_copy_of_a_packed_model_computes_and_packs_again(pack_tiny) -> None:
    import copy

    model = tiny_llama(vocab_size=64, seed=4, hidden=32)
    tokens = [5, 9, 2, 7]
    expected = ModelRunner(model, "packed").forward(tokens).logits
    clone = copy.deepcopy(model)  # oneDNN's opaque tensors cannot be copied: not carried
    torch.testing.assert_close(
        ModelRunner(clone, "unpacked", pack=False).forward(tokens).logits, expected
    )
    assert pack_linears(clone) > 0


def _q4_1_bytes(blocks: Q4Blocks) -> np.ndarray:
    """Rows of GGUF Q4_1 bytes for `blocks`, written the way llama.cpp lays them out."""
    n, k = blocks.codes.shape
    codes = blocks.codes.view(n, k // GROUP, GROUP).numpy().astype(np.uint8)
    nibbles = codes[..., :16] | (codes[..., 16:] << 4)
    d = blocks.scales.numpy().astype(np.float16)[..., None].view(np.uint8)
    m = blocks.minima.numpy().astype(np.float16)[..., None].view(np.uint8)
    return np.concatenate([d, m, nibbles], axis=-1).reshape(n, -1)


def test_q4_1_bytes_parse_back_to_their_blocks() -> None:
    torch.manual_seed(0)
    weight = torch.randn(8, 64)
    made = quantise_q4_1(weight)
    made = Q4Blocks(made.codes, made.scales.half().float(), made.minima.half().float())
    parsed = parse_q4_1(_q4_1_bytes(made), 64)
    assert torch.equal(parsed.codes, made.codes)
    assert torch.equal(parsed.scales, made.scales) and torch.equal(parsed.minima, made.minima)
    # Q4_1 rounds each weight to its block's grid: at most half a step away.
    step = made.scales.repeat_interleave(GROUP, dim=1)
    assert ((made.dequantised() - weight).abs() <= step / 2 + 1e-3).all()


def test_the_int4_layer_multiplies_by_its_kernel_weight_and_rows_are_independent() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(128, 64, bias=False)
    blocks = quantise_q4_1(layer.weight)
    to_int4(layer, blocks)
    x = torch.randn(9, 128)
    with torch.inference_mode():
        y = layer(x)
        for rows in (1, 2, 4, 8):
            assert torch.equal(layer(x[:rows]), y[:rows]), rows
    expected = x.bfloat16().float() @ kernel_weight(blocks).T
    torch.testing.assert_close(y, expected, rtol=2e-2, atol=5e-2)
    # The only change from the Q4_1 values: scales and zeros rounded to bfloat16.
    assert 0 < max_weight_error(blocks) < 0.02 * float(blocks.scales.max()) * 15


@pytest.fixture(scope="module")
def int4_target(default_config: dict):
    from pathlib import Path

    from specrepro.config import model_spec
    from specrepro.models.loader import load_model, load_tokenizer

    spec = model_spec(default_config, default_config["pairs"]["smollm2"]["target"])
    cache = Path(default_config["models"]["cache_dir"])
    model, _ = load_model(spec, "int4", "cpu", cache)
    return model, load_tokenizer(spec, cache)


@pytest.mark.slow
def test_int4_mode_takes_every_q4_1_tensor_from_the_gguf(int4_target) -> None:
    model, _ = int4_target
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    on_int4 = [n for n, m in linears.items() if "_int4_weight" in m.__dict__]
    assert len(on_int4) == 210 and len(linears) == 211  # every projection; the lm_head stays
    assert model.dtype == torch.float32  # only the int4 layers' inputs are bfloat16


@pytest.mark.slow
def test_int4_sps_greedy_equals_int4_vanilla_on_the_real_target(int4_target) -> None:
    model, tokenizer = int4_target
    draft = truncated_draft(model, layers=4)
    eos = {tokenizer.eos_token_id}
    vanilla = decoder_for(model, None, "vanilla", 0.0, eos=eos)
    prompts = ["What is the capital of France?", "Write a short poem about autumn leaves."]
    for text in prompts:
        ids = chat_ids(tokenizer, text)
        ref = vanilla.generate(ids, 48, seed=0)[0].tokens
        for gamma in (2, 5):
            got, _ = decoder_for(model, draft, "sps", 0.0, eos=eos, gamma=gamma).generate(
                ids, 48, seed=0
            )
            assert got.tokens == ref, (text, gamma)
