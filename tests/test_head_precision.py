"""The EAGLE head keeps RoPE in float32 at any dtype, nothing passes the deprecated
`past_key_values`, and saved configs carry the top-level rope keys published heads have."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import build_head, head_config_for, load_head, save_head
from specrepro.models.loader import add_legacy_rope_keys, legacy_rope_keys

THETA = 100000.0
FAR = torch.arange(1995, 2005)  # positions well past 1,000, where rounded frequencies drift
# RoPE attention depends on relative positions: tokens at 1995.. that see tokens at 0.. expose a
# frequency error as it grows with the distance.
SPAN = torch.cat([torch.arange(8), FAR])


def target_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,  # head_dim 32: frequencies down to theta^-(30/32)
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rope_theta=THETA,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval().to(dtype)


@pytest.fixture(scope="module")
def fp32_pair():
    target = target_model()
    torch.manual_seed(5)
    head = build_head(head_config_for(target), target)
    # Random init gives near-uniform attention, which no rotation changes; peak it.
    with torch.no_grad():
        for proj in (head.layers[0].self_attn.q_proj, head.layers[0].self_attn.k_proj):
            proj.weight.mul_(20.0)
    return target, head


def head_at(dtype: torch.dtype, fp32_pair):
    """The fp32 head's weights in `dtype`, over the target's modules in `dtype`."""
    target, head = fp32_pair
    low = copy.deepcopy(target).to(dtype)
    cast = build_head(head_config_for(target), low)
    cast.load_state_dict(head.head_state_dict(), strict=False)
    return cast


def head_features(head, positions: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(2)
    n = len(positions)
    ids = torch.randint(0, 32, (1, n))
    feats = torch.randn(1, n, 64)
    with torch.no_grad():
        out = head(ids, feats, positions.view(1, -1), cache=None, logits_to_keep=n)
    return out.hidden_states[0].float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rope_stays_float32_in_a_half_precision_head(fp32_pair, dtype: torch.dtype) -> None:
    _, ref = fp32_pair
    head = head_at(dtype, fp32_pair)
    assert head.fc.weight.dtype == dtype
    assert head.rotary.inv_freq.dtype == torch.float32
    torch.testing.assert_close(head.rotary.inv_freq, ref.rotary.inv_freq, atol=0, rtol=0)
    # A later cast (or device move) must not round them either.
    head.to(dtype)
    assert head.rotary.inv_freq.dtype == torch.float32
    pos = FAR.view(1, -1)
    cos, sin = head.rotary(torch.zeros(1, dtype=torch.float32), pos)
    cos_ref, sin_ref = ref.rotary(torch.zeros(1, dtype=torch.float32), pos)
    torch.testing.assert_close(cos, cos_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, sin_ref, atol=1e-6, rtol=0)
    # In the head's dtype the tables differ only by that dtype's rounding of cos/sin (<= 4e-3
    # for bfloat16), where rounded frequencies would be off by up to ~0.5 at position 2,000.
    cos_low, _ = head.rotary(torch.zeros(1, dtype=dtype), pos)
    assert (cos_low.float() - cos_ref).abs().max() < 4e-3
    rounded = ref.rotary.inv_freq.to(dtype).float()
    drift = (FAR[:, None].float() * (rounded - ref.rotary.inv_freq)).abs().max()
    assert drift > 0.1  # what the test guards against


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_head_matches_fp32_far_into_the_sequence(fp32_pair, dtype) -> None:
    _, ref = fp32_pair
    head = head_at(dtype, fp32_pair)
    want = head_features(ref, SPAN)
    got = head_features(head, SPAN)
    err = (got - want).abs().max()
    # The same head with its frequencies rounded to `dtype`, as a plain `.to(dtype)` did.
    rounded = head_at(dtype, fp32_pair)
    rounded.rotary.inv_freq = ref.rotary.inv_freq.to(dtype).float()
    err_rounded = (head_features(rounded, SPAN) - want).abs().max()
    assert err < 0.05 * want.abs().max()
    assert err < err_rounded / 4


def test_the_runner_passes_no_deprecated_cache_argument(fp32_pair) -> None:
    target, head = fp32_pair
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        runner = ModelRunner(target)
        out = runner.forward([1, 2, 3], want_hidden=True)
        runner.forward([4])
        head_runner = ModelRunner(head, "head")
        head_runner.forward([2, 3, 4], features=out.hidden, want_hidden=True)
        head_runner.forward([5], features=out.hidden[-1:])
    assert runner.cache_len == 4 and head_runner.cache_len == 4


def test_a_saved_head_config_has_the_published_rope_keys(fp32_pair, tmp_path) -> None:
    target, head = fp32_pair
    save_head(head, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["rope_theta"] == THETA
    assert raw["rope_scaling"] is None
    assert raw["rope_parameters"]["rope_theta"] == THETA
    loaded = load_head(tmp_path, target)
    assert loaded.config.rope_parameters["rope_theta"] == THETA
    torch.testing.assert_close(loaded.rotary.inv_freq, head.rotary.inv_freq)
    torch.testing.assert_close(head_features(loaded, SPAN), head_features(head, SPAN))


def test_legacy_rope_keys_of_a_scaled_rope_read_back_the_same(tmp_path) -> None:
    target = target_model()
    target.config.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": THETA}
    target.save_pretrained(tmp_path)
    add_legacy_rope_keys(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["rope_theta"] == THETA
    assert raw["rope_scaling"] == {"type": "linear", "rope_type": "linear", "factor": 2.0}
    again = LlamaForCausalLM.from_pretrained(tmp_path)
    assert again.config.rope_parameters["rope_theta"] == THETA
    assert again.config.rope_parameters["factor"] == 2.0
    assert legacy_rope_keys({"rope_parameters": {"full_attention": {}}}) == {}
